package queue

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ralph-gateway/ralph/internal/testlog"
)

// TestDiskCheckFailsSafe: when the free space cannot be checked (statfs
// fails: here ENOENT, the data directory renamed away under the running
// queue), the disk counts as having less than MinFree: appends are
// refused, nothing is acknowledged that may not be stored. It is logged
// at warn once for the episode, not per append, and shows in the stats
// (DiskLow, and the statfs error in LastError, which /healthz and
// `ralph status` report). Once statfs works again, so do appends.
func TestDiskCheckFailsSafe(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	logs := new(testlog.Buffer)
	q := openTest(t, dir, func(o *Options) {
		o.MinFree = 1 // any real disk has that
		o.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	defer q.Close()
	c, err := q.Consumer("up", ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Append(context.Background(), msg("t", "before")); err != nil {
		t.Fatal(err)
	}

	away := dir + ".away"
	if err := os.Rename(dir, away); err != nil {
		t.Fatal(err)
	}
	// Back before Close, whatever happens: Badger's close cannot flush
	// into a directory that is not there.
	defer os.Rename(away, dir)
	for _, p := range []string{"while-unknown-1", "while-unknown-2", "while-unknown-3"} {
		if err := q.Append(context.Background(), msg("t", p)); !errors.Is(err, ErrFull) {
			t.Fatalf("append %s with statfs failing: %v, want ErrFull", p, err)
		}
	}
	s := q.Stats()
	wantErr := "statfs " + dir + ": no such file or directory"
	if !s.DiskLow || s.Rejected != 3 || s.Appended != 1 || !strings.Contains(s.LastError, wantErr) {
		t.Fatalf("stats with statfs failing: %+v; want DiskLow, 3 rejected, 1 appended, LastError with %q", s, wantErr)
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	var warned []string
	for _, l := range lines {
		if strings.Contains(l, "free space") {
			warned = append(warned, l)
		}
	}
	if len(warned) != 1 || !strings.Contains(warned[0], "level=WARN") || !strings.Contains(warned[0], wantErr) {
		t.Fatalf("log lines about free space: %q; want one at WARN with %q", warned, wantErr)
	}

	if err := os.Rename(away, dir); err != nil {
		t.Fatal(err)
	}
	if err := q.Append(context.Background(), msg("t", "after")); err != nil {
		t.Fatalf("append with statfs working again: %v", err)
	}
	if s := q.Stats(); s.DiskLow || s.LastError != "" || s.Appended != 2 {
		t.Fatalf("stats with statfs working again: %+v; want not DiskLow, no LastError, 2 appended", s)
	}
	if !strings.Contains(logs.String(), "accepting messages again") {
		t.Fatalf("no log line for the check working again:\n%s", logs)
	}
	got := readN(t, c, 2)
	if string(got[0].Payload) != "before" || string(got[1].Payload) != "after" {
		t.Fatalf("stored: %q, %q; want before, after", got[0].Payload, got[1].Payload)
	}
}
