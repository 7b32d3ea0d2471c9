package queue

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestSyncSeesNewLogs: a log file Badger creates is synced from the
// first sync after it appears, however soon after a listing it comes (in
// the same tick of the file system's clock, the directory's time does
// not change), and so is the directory that names it; a settled directory
// is neither listed nor synced again.
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
	sync := func(want ...int) int {
		t.Helper()
		calls, err := s.sync(false)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(want, calls) {
			t.Fatalf("%d sync calls, want %v (memtable logs %v)", calls, want, s.mems)
		}
		return calls
	}
	create("00001.mem")
	sync(2) // the log and the directory
	create("00002.mem")
	// As a clock that has not ticked since the listing leaves it:
	if err := os.Chtimes(dir, time.Now(), s.listedMod); err != nil {
		t.Fatal(err)
	}
	sync(3) // 00001 may still hold writes from before 00002; the directory
	for deadline := time.Now().Add(5 * time.Second); sync(1, 2) == 2 || s.listedAt.Sub(s.listedMod) <= dirSettle; {
		if time.Now().After(deadline) {
			t.Fatal("the listing or the directory's sync is never trusted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	listed := s.listedAt
	sync(1)
	if !s.listedAt.Equal(listed) {
		t.Fatal("a settled directory was listed again")
	}
	create("00003.mem")
	sync(3) // 00002, 00003, the directory
	if err := os.Remove(filepath.Join(dir, "00002.mem")); err != nil {
		t.Fatal(err)
	}
	sync(2) // 00003, the directory
	if _, open := s.files["00002.mem"]; open {
		t.Fatal("the descriptor of a deleted log is kept")
	}
}
