package queue

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/ralph-gateway/ralph/internal/powercut"
)

// filled returns a closed queue in a fresh dir holding n messages for
// consumer "up".
func filled(t *testing.T, n int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "db")
	q := openTest(t, dir)
	if _, err := q.Consumer("up", ConsumerOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := q.Append(context.Background(), msg("t", strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func payloadsIn(t *testing.T, q *Queue, n int) []string {
	t.Helper()
	c, err := q.Consumer("up", ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return payloadsOf(readN(t, c, n))
}

func want(n int) string {
	var s []string
	for i := range n {
		s = append(s, strconv.Itoa(i))
	}
	return strings.Join(s, " ")
}

// TestReopenWithEmptyFiles recreates what a power cut just after Badger
// created its next memtable and value-log files leaves (the files, empty,
// since nothing in them was synced): Badger alone refuses to open it
// ("while opening fid: N err: Create a new file").
func TestReopenWithEmptyFiles(t *testing.T) {
	dir := filled(t, 50)
	for _, name := range []string{"00099.mem", "000099.vlog", "DISCARD"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	q := openTest(t, dir)
	defer q.Close()
	if got := strings.Join(payloadsIn(t, q, 50), " "); got != want(50) {
		t.Fatalf("after reopening: %s", got)
	}
	rec := q.Recovery()
	if rec.DB != "" || len(rec.Files) != 3 {
		t.Fatalf("recovery %+v, want the three empty files set aside and the database kept", rec)
	}
	for _, f := range rec.Files {
		if filepath.Dir(f) != LostFound(dir) {
			t.Errorf("%s is not in %s", f, LostFound(dir))
		}
		if fi, err := os.Stat(f); err != nil || fi.Size() != 0 {
			t.Errorf("set-aside file %s: %v", f, err)
		}
	}
	if l, _ := SetAsides(dir); len(l) != 0 {
		t.Fatalf("set-aside databases %+v, want none", l)
	}
}

// TestSetAsideBeyondRepair: a database that does not open is moved aside
// whole, the queue starts empty, and the copy is listed until acknowledged.
func TestSetAsideBeyondRepair(t *testing.T) {
	cases := []struct {
		name   string
		break_ func(t *testing.T, dir string)
		reason string
	}{
		{"garbage manifest", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "MANIFEST"), []byte("not a manifest"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "manifest has bad magic"},
		{"open keeps dying", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(LostFound(dir), attemptsFile), []byte("3\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "3 starts in a row ended while the database was being opened"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := filled(t, 20)
			tc.break_(t, dir)
			q := openTest(t, dir)
			rec := q.Recovery()
			if s := q.Stats(); s.Head != 1 || s.Oldest != 1 {
				t.Fatalf("queue after setting aside: head %d oldest %d, want an empty queue", s.Head, s.Oldest)
			}
			if _, err := q.Consumer("up", ConsumerOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := q.Append(context.Background(), msg("t", "new")); err != nil {
				t.Fatal(err)
			}
			q.Close()
			if rec.DB == "" {
				t.Fatal("the database was not set aside")
			}
			l, err := SetAsides(dir)
			if err != nil || len(l) != 1 || l[0].Path != rec.DB || l[0].Acknowledged || !strings.Contains(l[0].Reason, tc.reason) {
				t.Fatalf("set-asides %+v (%v), want %s unacknowledged, reason containing %q", l, err, rec.DB, tc.reason)
			}
			if n, err := AcknowledgeSetAsides(dir); n != 1 || err != nil {
				t.Fatalf("acknowledged %d: %v", n, err)
			}
			if l, _ := SetAsides(dir); len(l) != 1 || !l[0].Acknowledged {
				t.Fatalf("after acknowledging: %+v", l)
			}
			// Reopened, the new database is kept and nothing more is set aside.
			q = openTest(t, dir)
			defer q.Close()
			if got := payloadsIn(t, q, 1); got[0] != "new" {
				t.Fatalf("reopened: %v", got)
			}
			if l, _ := SetAsides(dir); len(l) != 1 || q.Recovery().DB != "" {
				t.Fatalf("a healthy database was set aside: %+v", l)
			}
			// The copy still holds its messages.
			if tc.name == "open keeps dying" {
				old := openTest(t, rec.DB)
				defer old.Close()
				if got := strings.Join(payloadsIn(t, old, 20), " "); got != want(20) {
					t.Fatalf("the set-aside copy holds %s", got)
				}
			}
		})
	}
}

// TestLockedIsNotSetAside: a database another process holds is not broken.
func TestLockedIsNotSetAside(t *testing.T) {
	dir := filled(t, 5)
	q := openTest(t, dir)
	defer q.Close()
	_, err := Open(Options{Dir: dir, Logger: q.log})
	if err == nil || !strings.Contains(err.Error(), "Cannot acquire directory lock") {
		t.Fatalf("second open: %v, want the lock error", err)
	}
	if l, _ := SetAsides(dir); len(l) != 0 {
		t.Fatalf("a locked database was set aside: %+v", l)
	}
}

// TestUnreadableRecordSkipped: a record a power cut left unreadable (its
// index entry on disk, its value not) is skipped and counted, and does
// not stop the consumer's cursor.
func TestUnreadableRecordSkipped(t *testing.T) {
	q := openTest(t, t.TempDir())
	defer q.Close()
	c, _ := q.Consumer("up", ConsumerOptions{})
	for i := range 3 {
		if err := q.Append(context.Background(), msg("t", strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	// Message 2's batch, with a record of zeros, as after a cut that kept
	// the batch's key but not its value.
	err := q.db.Update(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixBatch}})
		defer it.Close()
		it.Seek(seekKey(2))
		return txn.Set(it.Item().KeyCopy(nil), appendRecord(nil, make([]byte, 40)))
	})
	if err != nil {
		t.Fatal(err)
	}
	got := readN(t, c, 2)
	if p := payloadsOf(got); strings.Join(p, " ") != "0 2" {
		t.Fatalf("read %v, want 0 2", p)
	}
	for _, m := range got {
		c.Ack(m.Seq)
	}
	if c.Cursor() != 4 || c.Backlog() != 0 || q.Stats().Corrupt != 1 {
		t.Fatalf("cursor %d, backlog %d, corrupt %d; want 4, 0, 1", c.Cursor(), c.Backlog(), q.Stats().Corrupt)
	}
}

// TestUpgradeFromSingleEntries opens a data dir written by the queue
// before batches (testdata/layout1.txt) and checks that it is rewritten in
// place, losing nothing: the consumer resumes where it was, messages and
// the broker's state read back whole, and the byte count comes to zero
// once everything is acknowledged.
func TestUpgradeFromSingleEntries(t *testing.T) {
	root := t.TempDir()
	if out, err := exec.Command("tar", "-xzf", "testdata/layout1.tgz", "-C", root).CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	dir := filepath.Join(root, "db")
	q := openTest(t, dir)
	c, err := q.Consumer("bridge/up", ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Cursor() != 101 || c.Backlog() != 200 {
		t.Fatalf("cursor %d, backlog %d: want 101, 200", c.Cursor(), c.Backlog())
	}
	got := readN(t, c, 200)
	for i, m := range got {
		n := 100 + i
		want := fmt.Sprintf("m%03d", n)
		if n%10 == 0 {
			want += strings.Repeat("x", 2000)
		}
		if m.Seq != uint64(n+1) || string(m.Payload) != want || m.Topic != fmt.Sprintf("sensors/%d", n%7) ||
			m.Origin != "dev" || !m.Arrived.Equal(time.Unix(1700000000+int64(n), 0)) || fmt.Sprint(m.UserProperties) != "[{k v}]" {
			t.Fatalf("message %d after the upgrade: %+v", n, m)
		}
	}
	var retained string
	q.KV("retained").Scan(func(k string, v []byte) error { retained += k + "=" + string(v); return nil })
	if retained != "sensors/0=retained-value" {
		t.Fatalf("retained messages after the upgrade: %q", retained)
	}
	var single int
	q.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixMsg}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			single++
		}
		return nil
	})
	if single != 0 {
		t.Fatalf("%d single-message entries left after the upgrade", single)
	}
	for _, m := range got {
		c.Ack(m.Seq)
	}
	waitFor(t, "everything acknowledged deleted", func() bool { s := q.Stats(); return s.Oldest == 301 && s.Bytes == 0 })
	// A new append after the upgrade takes the next number, and survives a reopen.
	if err := q.Append(context.Background(), msg("t", "new")); err != nil {
		t.Fatal(err)
	}
	q.Close()
	q = openTest(t, dir)
	defer q.Close()
	c, _ = q.Consumer("bridge/up", ConsumerOptions{})
	if m := readN(t, c, 1)[0]; m.Seq != 301 || string(m.Payload) != "new" {
		t.Fatalf("after reopening: %d %q", m.Seq, m.Payload)
	}
}

// TestPowerCutKeepsCursors: acknowledgements are made durable within
// stateSyncEvery even when no append follows, so that after a power cut a
// bridge does not resend what its upstream already has.
func TestPowerCutKeepsCursors(t *testing.T) {
	if os.Getenv("RALPH_CURSOR_CHILD") != "" {
		cursorChild()
		return
	}
	fs := powercut.Mount(t)
	dir := filepath.Join(fs.Dir(), "db")
	cmd, out := startChild(t, "TestPowerCutKeepsCursors", "RALPH_CURSOR_CHILD="+dir)
	line, _ := bufio.NewReader(out).ReadString('\n')
	if line != "acked\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child said %q", line)
	}
	time.Sleep(3 * stateSyncEvery)
	cmd.Process.Kill()
	cmd.Wait()
	fs.Cut()
	q := openTest(t, dir)
	defer q.Close()
	c, err := q.Consumer("up", ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Cursor() != 101 || c.Backlog() != 0 {
		t.Fatalf("after the cut: cursor %d, backlog %d; want 101, 0 (the acknowledgements were lost)", c.Cursor(), c.Backlog())
	}
}

func cursorChild() {
	q, err := Open(Options{Dir: os.Getenv("RALPH_CURSOR_CHILD"), MaxSyncsPerSecond: 10, MinFree: -1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil {
		var c *Consumer
		if c, err = q.Consumer("up", ConsumerOptions{}); err == nil {
			for i := range 100 {
				if err = q.Append(context.Background(), msg("t", strconv.Itoa(i))); err != nil {
					break
				}
			}
			var msgs []*Message
			if err == nil {
				msgs, err = c.Read(context.Background(), 100)
			}
			for _, m := range msgs {
				c.Ack(m.Seq)
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fmt.Println("acked")
	select {}
}

// TestPowerCutAfterGC: value-log GC moves the live values of the files it
// collects (here a retained message kept among a drained backlog) and
// deletes those files; a power cut right after must find the values in
// their new place, which is only so if the moves were synced before the
// old files went.
func TestPowerCutAfterGC(t *testing.T) {
	if dir := os.Getenv("RALPH_GC_CHILD"); dir != "" {
		gcChild(dir)
		return
	}
	fs := powercut.Mount(t)
	dir := filepath.Join(fs.Dir(), "db")
	cmd, out := startChild(t, "TestPowerCutAfterGC", "RALPH_GC_CHILD="+dir)
	line, _ := bufio.NewReader(out).ReadString('\n')
	cmd.Process.Kill() // at once: the power goes right after the GC
	cmd.Wait()
	if line != "collected\n" {
		t.Fatalf("child said %q", line)
	}
	fs.Cut()
	q := openTest(t, dir)
	defer q.Close()
	var got []string
	q.KV("retained").Scan(func(k string, v []byte) error {
		got = append(got, fmt.Sprintf("%s:%d", k, len(v)))
		return nil
	})
	if fmt.Sprint(got) != fmt.Sprintf("[big:%d]", 2*valueThreshold) {
		t.Fatalf("retained after GC and a power cut: %v, want big:%d", got, 2*valueThreshold)
	}
}

// gcChild stores a value in the value log's first file, buries it under a
// backlog, drains it, and says "collected" once GC has deleted that file.
func gcChild(dir string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	q, err := Open(Options{Dir: dir, MinFree: -1, Logger: openTestLogger})
	if err != nil {
		fail(err)
	}
	c, err := q.Consumer("up", ConsumerOptions{})
	if err != nil {
		fail(err)
	}
	if err := q.KV("retained").Set("big", make([]byte, 2*valueThreshold)); err != nil {
		fail(err)
	}
	if err := fillBacklog(q); err != nil {
		fail(err)
	}
	for done := 0; done < backlogSize; {
		msgs, err := c.Read(context.Background(), 4096)
		if err != nil {
			fail(err)
		}
		for _, m := range msgs {
			c.Ack(m.Seq)
		}
		done += len(msgs)
	}
	first := filepath.Join(dir, "000001.vlog")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		if _, err := os.Stat(first); errors.Is(err, fs.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			fail(fmt.Errorf("%s was never collected", first))
		}
	}
	fmt.Println("collected")
	select {}
}

// TestInspectSetsNothingAside: opened to be read, a database that does not
// open is an error and nothing around it changes.
func TestInspectSetsNothingAside(t *testing.T) {
	dir := filled(t, 5)
	if err := os.WriteFile(filepath.Join(dir, "MANIFEST"), []byte("not a manifest"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(LostFound(dir))
	_, err := Open(Options{Dir: dir, Inspect: true, Logger: openTestLogger})
	if err == nil || !strings.Contains(err.Error(), "manifest has bad magic") {
		t.Fatalf("inspecting a broken database: %v, want the manifest error", err)
	}
	if _, err := os.Stat(LostFound(dir)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("inspecting made %s: %v", LostFound(dir), err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "MANIFEST")); string(b) != "not a manifest" {
		t.Fatal("inspecting changed the database")
	}
}
