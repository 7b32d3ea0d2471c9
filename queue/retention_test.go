package queue

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// sizeOf is what one test message appended alone (a batch of its own)
// counts against MaxBytes.
func sizeOf(m *Message) int64 { return recordSize(encodeMessage(nil, m)) + batchKeyLen }

func payloadsOf(msgs []*Message) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, string(m.Payload))
	}
	return out
}

func TestFullDropOldest(t *testing.T) {
	per := sizeOf(msg("t", "00"))
	q := openTest(t, t.TempDir(), func(o *Options) { o.MaxBytes = 10 * per; o.OnFull = DropOldest })
	defer q.Close()
	c, _ := q.Consumer("up", ConsumerOptions{})
	for i := range 25 {
		if err := q.Append(context.Background(), msg("t", fmt.Sprintf("%02d", i))); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	got := payloadsOf(readN(t, c, 10))
	if fmt.Sprint(got) != "[15 16 17 18 19 20 21 22 23 24]" {
		t.Fatalf("after dropping, consumer read %v, want the newest ten", got)
	}
	if c.Dropped() != 15 {
		t.Fatalf("consumer dropped %d, want 15", c.Dropped())
	}
	s := q.Stats()
	if s.DroppedFull != 15 || s.Bytes != 10*per || s.Rejected != 0 {
		t.Fatalf("stats %+v: want 15 dropped, %d bytes, none rejected", s, 10*per)
	}
}

func TestFullReject(t *testing.T) {
	per := sizeOf(msg("t", "00"))
	dir := t.TempDir()
	q := openTest(t, dir, func(o *Options) { o.MaxBytes = 10 * per; o.OnFull = Reject })
	c, _ := q.Consumer("up", ConsumerOptions{})
	var refused int
	for i := range 25 {
		err := q.Append(context.Background(), msg("t", fmt.Sprintf("%02d", i)))
		switch {
		case errors.Is(err, ErrFull):
			refused++
		case err != nil:
			t.Fatal(err)
		}
	}
	if refused != 15 {
		t.Fatalf("%d appends refused, want 15", refused)
	}
	got := payloadsOf(readN(t, c, 10))
	if fmt.Sprint(got) != "[00 01 02 03 04 05 06 07 08 09]" {
		t.Fatalf("consumer read %v, want the first ten untouched", got)
	}
	// Acknowledging makes room again.
	c.Rewind()
	for _, m := range readN(t, c, 5) {
		c.Ack(m.Seq)
	}
	waitFor(t, "acknowledged messages deleted", func() bool { return q.Stats().Bytes == 5*per })
	if err := q.Append(context.Background(), msg("t", "25")); err != nil {
		t.Fatalf("append after acks freed room: %v", err)
	}
	q.Close()

	// The byte count survives a restart: the budget still holds.
	q = openTest(t, dir, func(o *Options) { o.MaxBytes = 10 * per; o.OnFull = Reject })
	defer q.Close()
	if _, err := q.Consumer("up", ConsumerOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := q.Stats().Bytes; got != 6*per {
		t.Fatalf("bytes after reopen %d, want %d", got, 6*per)
	}
	for i := range 4 {
		if err := q.Append(context.Background(), msg("t", strconv.Itoa(30+i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Append(context.Background(), msg("t", "99")); !errors.Is(err, ErrFull) {
		t.Fatalf("append beyond the budget after reopen: %v, want ErrFull", err)
	}
}

func TestMaxAge(t *testing.T) {
	q := openTest(t, t.TempDir(), func(o *Options) { o.MaxAge = time.Hour })
	defer q.Close()
	c, _ := q.Consumer("up", ConsumerOptions{})
	old := time.Now().Add(-2 * time.Hour)
	for i := range 3 {
		m := msg("t", "old"+strconv.Itoa(i))
		m.Arrived = old
		q.Append(context.Background(), m)
	}
	q.Append(context.Background(), msg("t", "new"))
	// The next commit deletes what is older than MaxAge.
	q.Append(context.Background(), msg("t", "newer"))
	waitFor(t, "expiry", func() bool { return q.Stats().Expired == 3 })
	got := payloadsOf(readN(t, c, 2))
	if fmt.Sprint(got) != "[new newer]" {
		t.Fatalf("read %v, want [new newer]", got)
	}
	if c.Dropped() != 3 {
		t.Fatalf("consumer dropped %d, want 3", c.Dropped())
	}
}

func TestKeepLocal(t *testing.T) {
	q := openTest(t, t.TempDir(), func(o *Options) { o.KeepLocal = time.Hour })
	defer q.Close()
	old := msg("t", "old")
	old.Arrived = time.Now().Add(-2 * time.Hour)
	q.Append(context.Background(), old)
	q.Append(context.Background(), msg("t", "recent"))
	// No consumer wants either: the old one goes, the recent one stays.
	waitFor(t, "old message released", func() bool { return q.Stats().Deleted == 1 })
	if s := q.Stats(); s.Oldest != s.Head-1 {
		t.Fatalf("oldest %d head %d: want exactly one message kept", s.Oldest, s.Head)
	}
}

func TestDiskLowRefusesAppends(t *testing.T) {
	// Ask for more free space than any test machine has.
	q := openTest(t, t.TempDir(), func(o *Options) { o.MinFree = 1 << 60 })
	defer q.Close()
	err := q.Append(context.Background(), msg("t", "x"))
	if !errors.Is(err, ErrFull) {
		t.Fatalf("append with the disk 'full': %v, want ErrFull", err)
	}
	if s := q.Stats(); !s.DiskLow || s.Rejected != 1 || s.Appended != 0 {
		t.Fatalf("stats %+v: want DiskLow, 1 rejected, 0 appended", s)
	}
}

// TestReclaimAfterDrain: once a large backlog is delivered and deleted,
// its disk space comes back: deleted keys alone would hold their tables
// until a compaction that may never come, and value-log files until GC.
// All but the value-log file being written are given back.
func TestReclaimAfterDrain(t *testing.T) {
	if dir := os.Getenv("RALPH_BACKLOG_CHILD"); dir != "" {
		q, err := Open(Options{Dir: dir, Logger: openTestLogger})
		if err == nil {
			_, err = q.Consumer("up", ConsumerOptions{})
		}
		if err == nil {
			err = fillBacklog(q)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Println("filled")
		select {} // killed: what Badger holds in its memtables is replayed at the next open
	}
	for _, tc := range []struct {
		name string
		fill func(t *testing.T, dir string)
	}{
		{"closed", func(t *testing.T, dir string) {
			q := openTest(t, dir)
			q.Consumer("up", ConsumerOptions{})
			if err := fillBacklog(q); err != nil {
				t.Fatal(err)
			}
			q.Close()
		}},
		{"killed", func(t *testing.T, dir string) {
			cmd, out := startChild(t, "TestReclaimAfterDrain", "RALPH_BACKLOG_CHILD="+dir)
			line, _ := bufio.NewReader(out).ReadString('\n')
			cmd.Process.Kill()
			cmd.Wait()
			if line != "filled\n" {
				t.Fatalf("child said %q", line)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.fill(t, dir)
			full := diskBytes(t, dir)
			q := openTest(t, dir)
			defer q.Close()
			c, _ := q.Consumer("up", ConsumerOptions{})
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			for done := 0; done < backlogSize; {
				msgs, err := c.Read(ctx, 4096)
				if err != nil {
					t.Fatal(err)
				}
				for _, m := range msgs {
					c.Ack(m.Seq)
				}
				done += len(msgs)
			}
			waitFor(t, "space reclaimed", func() bool { return q.Stats().Reclaims == 1 })
			waitFor(t, "every value-log file but the current one collected", func() bool {
				files, _ := filepath.Glob(filepath.Join(dir, "*.vlog"))
				return len(files) == 1
			})
			after := diskBytes(t, dir)
			t.Logf("tables and value log: %d bytes with the backlog, %d after", full, after)
			if after > full/2 {
				t.Fatalf("tables and value log hold %d bytes after the drain, %d with the backlog: space not reclaimed", after, full)
			}
			// The queue goes on working.
			if err := q.Append(context.Background(), msg("t", "after")); err != nil {
				t.Fatal(err)
			}
			if m := readN(t, c, 1)[0]; string(m.Payload) != "after" {
				t.Fatalf("read %q after reclaim", m.Payload)
			}
		})
	}
}

// backlogSize messages of 1 KiB: three value-log files' worth.
const backlogSize = reclaimAfter + 250

func fillBacklog(q *Queue) error {
	payload := make([]byte, 1024)
	for i := 0; i < backlogSize; i += 250 {
		batch := make([]*Message, 250)
		for j := range batch {
			batch[j] = &Message{Topic: "t", Payload: payload, QoS: 1, Arrived: time.Now()}
		}
		if err := q.Append(context.Background(), batch...); err != nil {
			return err
		}
	}
	return nil
}

// diskBytes is the space the tables and value-log files take on disk.
func diskBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	for _, pattern := range []string{"*.sst", "*.vlog"} {
		files, _ := filepath.Glob(filepath.Join(dir, pattern))
		for _, f := range files {
			if st, err := os.Stat(f); err == nil {
				n += st.Sys().(*syscall.Stat_t).Blocks * 512
			}
		}
	}
	return n
}

// TestTransactionLimits: however appends arrive, no commit exceeds what
// Badger takes in one transaction (it would fail with "Txn is too big").
func TestTransactionLimits(t *testing.T) {
	q := openTest(t, t.TempDir())
	defer q.Close()
	c, _ := q.Consumer("up", ConsumerOptions{})
	big := make([]byte, 900) // under the value threshold: counted whole
	errs := make(chan error, 64)
	for range 64 {
		go func() {
			var err error
			for range 50 {
				batch := make([]*Message, 20)
				for i := range batch {
					batch[i] = &Message{Topic: "t", Payload: big, QoS: 1, Arrived: time.Now()}
				}
				if err = q.Append(context.Background(), batch...); err != nil {
					break
				}
			}
			errs <- err
		}()
	}
	for range 64 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if s := q.Stats(); s.Appended != 64*50*20 || s.LastError != "" {
		t.Fatalf("stats %+v: want %d appended, no error", s, 64*50*20)
	}
	// Acknowledge all 64,000 at once: the deletions must be split too.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for done := 0; done < 64*50*20; {
		msgs, err := c.Read(ctx, 2048)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			c.Ack(m.Seq)
		}
		done += len(msgs)
	}
	waitFor(t, "all deleted", func() bool { return q.Stats().Deleted == 64*50*20 })
	if s := q.Stats(); s.LastError != "" || s.Bytes != 0 {
		t.Fatalf("stats %+v: want no error and 0 bytes", s)
	}
	// One append bigger than a transaction is refused, with the limit named.
	huge := make([]*Message, maxBatchMsgs+1)
	for i := range huge {
		huge[i] = msg("t", "x")
	}
	if err := q.Append(context.Background(), huge...); err == nil || !strings.Contains(err.Error(), "exceeds the limit") {
		t.Fatalf("append of %d messages: %v", len(huge), err)
	}
}
