package queue

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func alarmsOnly(topic, _ string) bool { return strings.HasPrefix(topic, "alarm/") }

// interleaved appends n messages, alternating alarm/i and tele/i, one
// append each, with 5-byte payloads, arrived one millisecond apart from
// t0.
func interleaved(t *testing.T, q *Queue, n int, t0 time.Time) {
	t.Helper()
	for i := range n {
		m := msg(fmt.Sprintf("tele/%d", i), "xxxxx")
		if i%2 == 0 {
			m.Topic = fmt.Sprintf("alarm/%d", i)
		}
		m.Arrived = t0.Add(time.Duration(i) * time.Millisecond)
		if err := q.Append(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
}

func waitCounted(t *testing.T, c *Consumer) Pending {
	t.Helper()
	var p Pending
	waitFor(t, "the backlog counted", func() bool { p = c.Pending(); return !p.Counting })
	return p
}

func TestFilterReadsAndCountsItsOwn(t *testing.T) {
	q := openTest(t, t.TempDir())
	defer q.Close()
	c, err := q.Consumer("alarms", ConsumerOptions{Filter: alarmsOnly})
	if err != nil {
		t.Fatal(err)
	}
	all, err := q.Consumer("all", ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_700_000_000, 0)
	interleaved(t, q, 10, t0)

	// alarm/0 … alarm/8: 5 messages of 7 or 8 bytes of topic and 5 of payload.
	want := Pending{Messages: 5, Bytes: 7 + 5 + 4*(7+5), Oldest: t0}
	if p := waitCounted(t, c); p != want {
		t.Fatalf("pending %+v, want %+v", p, want)
	}
	if p := waitCounted(t, all); p.Messages != 10 || p.Bytes != 5*12+5*11 || !p.Oldest.Equal(t0) {
		t.Fatalf("unfiltered pending %+v, want 10 messages, 115 bytes, oldest %v", p, t0)
	}
	got := readN(t, c, 5)
	var topics []string
	for _, m := range got {
		topics = append(topics, m.Topic)
	}
	if s := strings.Join(topics, " "); s != "alarm/0 alarm/2 alarm/4 alarm/6 alarm/8" {
		t.Fatalf("read %s", s)
	}
	// Read but not acknowledged: still pending, the oldest is what was read.
	if p := c.Pending(); p != want {
		t.Fatalf("after reading: pending %+v, want %+v", p, want)
	}
	c.Ack(got[0].Seq)
	c.Ack(got[1].Seq)
	want = Pending{Messages: 3, Bytes: 3 * 12, Oldest: t0.Add(4 * time.Millisecond)}
	if p := c.Pending(); p != want {
		t.Fatalf("after two acks: pending %+v, want %+v", p, want)
	}
	for _, m := range got[2:] {
		c.Ack(m.Seq)
	}
	if p := c.Pending(); p != (Pending{}) {
		t.Fatalf("after every ack: pending %+v, want none", p)
	}
	// The telemetry in between was passed over, acknowledged: only the
	// last one, after the last alarm, is still ahead of the cursor.
	if cur := c.Cursor(); cur != got[4].Seq+1 {
		t.Fatalf("cursor %d, want %d", cur, got[4].Seq+1)
	}
}

// The log stored before a consumer registers is counted by a scan, and
// acknowledgements during the scan neither count twice nor go missing.
func TestPendingCountsTheStoredLog(t *testing.T) {
	dir := t.TempDir()
	q := openTest(t, dir)
	c, err := q.Consumer("alarms", ConsumerOptions{Filter: alarmsOnly})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_700_000_000, 0)
	interleaved(t, q, 2000, t0)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}

	// The first round holds the scan at its first batch until told.
	scanning, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	for round := range 3 {
		q = openTest(t, dir)
		if round == 0 {
			q.scanPause = func() {
				once.Do(func() { close(scanning); <-resume })
			}
		}
		c, err = q.Consumer("alarms", ConsumerOptions{Filter: alarmsOnly})
		if err != nil {
			t.Fatal(err)
		}
		// New alarms are counted as they come, before the scan has
		// counted the old ones; then acknowledge the next 100 old alarms
		// before the scan has got to them.
		if round == 0 {
			select {
			case <-scanning:
			case <-time.After(10 * time.Second):
				t.Fatal("the scan of the stored log did not start")
			}
		}
		for range 10 {
			if err := q.Append(context.Background(), msg("alarm/new", "xxxxx")); err != nil {
				t.Fatal(err)
			}
		}
		for _, m := range readN(t, c, 100) {
			c.Ack(m.Seq)
		}
		left := uint64(1000 - 100*(round+1) + 10*(round+1))
		if round == 0 {
			if p := c.Pending(); p.Messages != 10 || !p.Counting {
				t.Fatalf("with the scan held: pending %+v, want the 10 new alarms, counting", p)
			}
			close(resume)
		}
		p := waitCounted(t, c)
		oldest := t0.Add(time.Duration(200*(round+1)) * time.Millisecond)
		if p.Messages != left || !p.Oldest.Equal(oldest) {
			t.Fatalf("round %d: pending %+v, want %d messages, oldest %v", round, p, left, oldest)
		}
		// Let the cursor reach the disk, as it does within a second.
		waitFor(t, "the cursor persisted", func() bool {
			q.mu.Lock()
			defer q.mu.Unlock()
			return c.persisted == c.cursor
		})
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// Messages deleted unacknowledged (MaxAge here) leave the tally.
func TestPendingAfterDrops(t *testing.T) {
	q := openTest(t, t.TempDir(), func(o *Options) { o.MaxAge = time.Hour })
	defer q.Close()
	c, err := q.Consumer("alarms", ConsumerOptions{Filter: alarmsOnly})
	if err != nil {
		t.Fatal(err)
	}
	interleaved(t, q, 10, time.Now().Add(-2*time.Hour)) // old: expired at the next commit
	interleaved(t, q, 4, time.Now())
	waitFor(t, "the old messages expired", func() bool { return q.Stats().Expired == 10 })
	if p := waitCounted(t, c); p.Messages != 2 || p.Bytes != 24 {
		t.Fatalf("pending %+v, want 2 messages, 24 bytes", p)
	}
	if got := readN(t, c, 2); got[0].Topic != "alarm/0" || got[1].Topic != "alarm/2" || !got[0].Arrived.After(time.Now().Add(-time.Hour)) {
		t.Fatalf("read %s, %s", got[0].Topic, got[1].Topic)
	}
}

func TestFamilyInheritsTheLowestCursor(t *testing.T) {
	dir := t.TempDir()
	// A consumer of its own keeps every message stored meanwhile.
	keep := func(q *Queue) {
		if _, err := q.Consumer("keeper", ConsumerOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	q := openTest(t, dir)
	keep(q)
	whole, err := q.Consumer("b", ConsumerOptions{Family: "b"})
	if err != nil {
		t.Fatal(err)
	}
	interleaved(t, q, 10, time.Now())
	for _, m := range readN(t, whole, 3) {
		whole.Ack(m.Seq)
	}
	whole.Close()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}

	// Divided in two: each part starts where the whole left off.
	q = openTest(t, dir)
	keep(q)
	alarms, err := q.Consumer("b/alarms", ConsumerOptions{Family: "b", Filter: alarmsOnly})
	if err != nil {
		t.Fatal(err)
	}
	rest, err := q.Consumer("b/rest", ConsumerOptions{Family: "b", Filter: func(topic, origin string) bool { return !alarmsOnly(topic, origin) }})
	if err != nil {
		t.Fatal(err)
	}
	if a, r := alarms.Cursor(), rest.Cursor(); a != 4 || r != 4 {
		t.Fatalf("cursors %d and %d, want 4 and 4", a, r)
	}
	if err := q.ForgetFamily("b"); err != nil {
		t.Fatal(err)
	}
	for _, m := range readN(t, alarms, 3) { // alarm/4, 6, 8
		alarms.Ack(m.Seq)
	}
	rest.Ack(readN(t, rest, 1)[0].Seq) // tele/3
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}

	// Merged again: the whole starts at the slower part, not where it
	// had been (ForgetFamily deleted that).
	q = openTest(t, dir)
	defer q.Close()
	keep(q)
	whole, err = q.Consumer("b", ConsumerOptions{Family: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if cur := whole.Cursor(); cur != 5 {
		t.Fatalf("merged cursor %d, want 5 (tele/5's)", cur)
	}
	if _, err := q.Consumer("c/x", ConsumerOptions{Family: "b"}); err == nil {
		t.Fatal("a consumer outside its family was registered")
	}
}
