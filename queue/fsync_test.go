package queue

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestSyncSeesNewLogs: a log file Badger creates is synced from the
// first sync after it appears, however soon after a listing it comes (in
// the same tick of the file system's clock, the directory's time does
// not change), and a settled directory is not listed again.
func TestSyncSeesNewLogs(t *testing.T) {
	dir := t.TempDir()
	create := func(name string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := newFileSyncer(dir)
	defer s.close()
	sync := func(want int) {
		t.Helper()
		calls, err := s.sync(false)
		if err != nil {
			t.Fatal(err)
		}
		if calls != want {
			t.Fatalf("%d sync calls, want %d (memtable logs %v)", calls, want, s.mems)
		}
	}
	create("00001.mem")
	sync(1)
	create("00002.mem")
	// As a clock that has not ticked since the listing leaves it:
	if err := os.Chtimes(dir, time.Now(), s.listedMod); err != nil {
		t.Fatal(err)
	}
	sync(2) // 00001 may still hold writes from before 00002
	sync(1)
	for deadline := time.Now().Add(5 * time.Second); s.listedAt.Sub(s.listedMod) <= dirSettle; {
		if time.Now().After(deadline) {
			t.Fatal("the listing is never trusted")
		}
		time.Sleep(10 * time.Millisecond)
		sync(1)
	}
	listed := s.listedAt
	sync(1)
	if !s.listedAt.Equal(listed) {
		t.Fatal("a settled directory was listed again")
	}
	create("00003.mem")
	sync(2)
	if err := os.Remove(filepath.Join(dir, "00002.mem")); err != nil {
		t.Fatal(err)
	}
	sync(1)
	if _, open := s.files["00002.mem"]; open {
		t.Fatal("the descriptor of a deleted log is kept")
	}
}
