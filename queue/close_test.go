package queue

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
)

// TestCloseCommitsPendingWithinLimits: appends waiting for the committer
// when Close is called are committed within the limits of one commit, in
// as many commits as they need, and every one that was accepted is stored,
// in order. The syncs are held back (the test holds the file syncer) until
// the intake is full, the committer is stuck handing a written batch to a
// full sync queue and Close has begun: 2048 appends of 20 KiB, 40 MiB, are
// then waiting, five times what one Badger entry may hold (a value-log
// file, 8 MiB) and a hundred times what one commit holds. Once released,
// the committer takes them in its loop or in its stop path (its select
// picks either): both gather through the same gatherer, which splits.
func TestCloseCommitsPendingWithinLimits(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	q := openTest(t, dir)
	if _, err := q.Consumer("hold", ConsumerOptions{}); err != nil {
		t.Fatal(err)
	}
	payload := func(i int) []byte {
		p := bytes.Repeat([]byte{byte('a' + i%26)}, 20<<10)
		copy(p, fmt.Sprintf("%06d", i))
		return p
	}

	q.files.mu.Lock() // syncLoop blocks in its first sync
	held := true
	release := func() {
		if held {
			held = false
			q.files.mu.Unlock()
		}
	}
	defer release()

	var mu sync.Mutex
	results := make(map[int]error) // index → the error its done got
	calls := make(map[int]int)     // index → how many times its done was called
	var order []int                // indexes in the order their done was called
	n := 0
	appendOne := func() {
		i := n
		n++
		m := msg("t", "")
		m.Payload = payload(i)
		q.AppendAsync([]*Message{m}, func(err error) {
			mu.Lock()
			results[i] = err
			calls[i]++
			order = append(order, i)
			mu.Unlock()
		})
	}
	// Only this goroutine appends, so with room in the intake an append
	// does not block.
	fill := func() {
		for len(q.reqs) < cap(q.reqs) {
			appendOne()
		}
	}
	// The committer writes what is in the intake and hands the written
	// batches to syncLoop, which takes what has arrived and blocks in its
	// sync; then the sync queue fills, and the committer is stuck handing
	// a batch over. The intake is refilled whenever the committer has
	// emptied it (not while it takes from it: it would not stop).
	waitFor(t, "the committer stuck behind the held sync with the intake full", func() bool {
		if len(q.reqs) == 0 {
			fill()
		}
		return len(q.syncq) == cap(q.syncq) && len(q.reqs) == cap(q.reqs)
	})
	pending := len(q.reqs)

	closed := make(chan error, 1)
	go func() { closed <- q.Close() }()
	waitFor(t, "Close to begin", func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return q.closed
	})
	release()
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(calls) != n {
		t.Fatalf("%d of %d appends had their done called", len(calls), n)
	}
	var accepted []int
	for i := range n {
		if calls[i] != 1 {
			t.Fatalf("append %d: done called %d times", i, calls[i])
		}
		switch err := results[i]; {
		case err == nil:
			accepted = append(accepted, i)
		default:
			t.Errorf("append %d (of %d; %d were waiting at Close): %v", i, n, pending, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for k, i := range order {
		if i != k {
			t.Fatalf("done calls out of order: call %d was for append %d", k, i)
		}
	}

	q = openTest(t, dir)
	defer q.Close()
	c, err := q.Consumer("hold", ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := readN(t, c, len(accepted))
	for k, m := range got {
		if i := accepted[k]; !bytes.Equal(m.Payload, payload(i)) {
			t.Fatalf("message %d after reopening: payload %.6q, want append %d's", k, m.Payload, i)
		}
	}
	if b := c.Backlog(); b != uint64(len(accepted)) {
		t.Fatalf("after reopening: a backlog of %d messages, want the %d accepted", b, len(accepted))
	}
}
