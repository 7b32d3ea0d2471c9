package queue

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/ralph-gateway/ralph/internal/powercut"
)

var debugQueue *Queue

var openTestLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

func openTest(t testing.TB, dir string, opts ...func(*Options)) *Queue {
	t.Helper()
	o := Options{Dir: dir, Logger: openTestLogger}
	for _, f := range opts {
		f(&o)
	}
	q, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	debugQueue = q
	return q
}

func msg(topic, payload string) *Message {
	return &Message{Topic: topic, Payload: []byte(payload), QoS: 1, Origin: "dev1", Arrived: time.Now()}
}

func readN(t *testing.T, c *Consumer, n int) []*Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []*Message
	for len(out) < n {
		msgs, err := c.Read(ctx, n-len(out))
		if err != nil {
			t.Fatalf("read after %d of %d messages: %v", len(out), n, err)
		}
		out = append(out, msgs...)
	}
	return out
}

func TestAppendReadInOrder(t *testing.T) {
	q := openTest(t, t.TempDir())
	defer q.Close()
	c, err := q.Consumer("up", ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if err := q.Append(context.Background(), msg(fmt.Sprintf("t/%d", i), strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	got := readN(t, c, 100)
	for i, m := range got {
		if m.Topic != fmt.Sprintf("t/%d", i) || string(m.Payload) != strconv.Itoa(i) {
			t.Fatalf("message %d: got %q %q", i, m.Topic, m.Payload)
		}
		if i > 0 && m.Seq != got[i-1].Seq+1 {
			t.Fatalf("message %d: seq %d after %d", i, m.Seq, got[i-1].Seq)
		}
	}
}

func TestMessageRoundTrip(t *testing.T) {
	q := openTest(t, t.TempDir())
	defer q.Close()
	c, _ := q.Consumer("up", ConsumerOptions{})
	in := &Message{
		Topic: "a/b", Payload: []byte{0, 1, 2, 255}, QoS: 2, Retain: true, Origin: "esp32-7",
		Arrived: time.Unix(1700000000, 123456789), ContentType: "application/json",
		ResponseTopic: "r/t", CorrelationData: []byte("cd"), PayloadFormat: 1, ExpiryInterval: 3600,
		UserProperties: []UserProperty{{"k", "v"}, {"k", "w"}},
	}
	if err := q.Append(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	out := readN(t, c, 1)[0]
	if fmt.Sprint(*in) != fmt.Sprint(*out) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", *out, *in)
	}
}

func TestGroupCommitBatches(t *testing.T) {
	q := openTest(t, t.TempDir())
	defer q.Close()
	const writers, each = 64, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := q.Append(context.Background(), msg("t", fmt.Sprintf("%d-%d", w, i))); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	s := q.Stats()
	if s.Appended != writers*each {
		t.Fatalf("appended %d, want %d", s.Appended, writers*each)
	}
	// With 64 concurrent appenders every commit should carry many of them;
	// one fsync per append would mean no group commit at all.
	if s.Syncs*4 > s.Appended {
		t.Fatalf("%d fsyncs for %d appends: group commit is not batching", s.Syncs, s.Appended)
	}
	t.Logf("%d appends in %d commits, %d fsyncs", s.Appended, s.Commits, s.Syncs)
}

func TestAckOutOfOrderAndCursorPersists(t *testing.T) {
	dir := t.TempDir()
	q := openTest(t, dir)
	c, _ := q.Consumer("up", ConsumerOptions{})
	for i := range 10 {
		q.Append(context.Background(), msg("t", strconv.Itoa(i)))
	}
	msgs := readN(t, c, 10)
	// Ack 0,1,2 and 5,6: the cursor stops at 3.
	for _, i := range []int{1, 0, 2, 5, 6} {
		c.Ack(msgs[i].Seq)
	}
	if got, want := c.Cursor(), msgs[3].Seq; got != want {
		t.Fatalf("cursor %d, want %d", got, want)
	}
	if got := c.Backlog(); got != 5 {
		t.Fatalf("backlog %d, want 5", got)
	}
	// A rewind re-reads the unacknowledged ones only.
	c.Rewind()
	again := readN(t, c, 5)
	var got []string
	for _, m := range again {
		got = append(got, string(m.Payload))
	}
	if strings.Join(got, ",") != "3,4,7,8,9" {
		t.Fatalf("after rewind read %v, want 3,4,7,8,9", got)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}

	q = openTest(t, dir)
	defer q.Close()
	c, err := q.Consumer("up", ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Cursor(), msgs[3].Seq; got != want {
		t.Fatalf("cursor after reopen %d, want %d", got, want)
	}
	// Out-of-order acks are not persisted: 5 and 6 come back (at-least-once).
	re := readN(t, c, 7)
	if string(re[0].Payload) != "3" || string(re[6].Payload) != "9" {
		t.Fatalf("after reopen read %q..%q, want 3..9", re[0].Payload, re[6].Payload)
	}
	// New messages continue the sequence.
	q.Append(context.Background(), msg("t", "10"))
	if m := readN(t, c, 1)[0]; m.Seq != msgs[9].Seq+1 || string(m.Payload) != "10" {
		t.Fatalf("next message seq %d %q, want %d \"10\"", m.Seq, m.Payload, msgs[9].Seq+1)
	}
}

// TestSavedFollowsWrites: Saved reports the cursor once it is in the
// store, never before, and its channel tells when it moves.
func TestSavedFollowsWrites(t *testing.T) {
	q := openTest(t, t.TempDir())
	defer q.Close()
	c, _ := q.Consumer("up", ConsumerOptions{PersistEvery: 4})
	for i := range 10 {
		q.Append(context.Background(), msg("t", strconv.Itoa(i)))
	}
	msgs := readN(t, c, 10)
	if got, _ := c.Saved(); got != msgs[0].Seq {
		t.Fatalf("saved %d before any ack, want %d", got, msgs[0].Seq)
	}
	for _, m := range msgs[:5] {
		c.Ack(m.Seq)
	}
	stored := func(c *Consumer) uint64 {
		var pos uint64
		if err := q.db.View(func(txn *badger.Txn) error {
			item, err := txn.Get(c.key())
			if err != nil {
				return err
			}
			return item.Value(func(b []byte) error { pos = binary.BigEndian.Uint64(b); return nil })
		}); err != nil {
			t.Fatal(err)
		}
		return pos
	}
	deadline := time.After(10 * time.Second)
	for {
		got, saved := c.Saved()
		if s := stored(c); got > s {
			t.Fatalf("saved %d, but the store holds %d", got, s)
		}
		if got == msgs[5].Seq {
			break
		}
		select {
		case <-saved:
		case <-deadline:
			t.Fatalf("saved %d, want %d after 5 acks", got, msgs[5].Seq)
		}
	}
	// Closed and registered again before its final cursor is written, it
	// resumes there, but what is saved is still what the store holds.
	for _, m := range msgs[5:8] {
		c.Ack(m.Seq)
	}
	c.Close()
	c2, err := q.Consumer("up", ConsumerOptions{PersistEvery: 4})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := c2.Saved()
	if s := stored(c2); got > s || c2.Cursor() != msgs[8].Seq {
		t.Fatalf("registered again: saved %d, store %d, cursor %d; want saved at most the store, cursor %d", got, s, c2.Cursor(), msgs[8].Seq)
	}
}

func TestNewConsumerStartsAtHead(t *testing.T) {
	q := openTest(t, t.TempDir())
	defer q.Close()
	a, _ := q.Consumer("a", ConsumerOptions{})
	q.Append(context.Background(), msg("t", "old"))
	b, _ := q.Consumer("b", ConsumerOptions{})
	q.Append(context.Background(), msg("t", "new"))
	if m := readN(t, b, 1)[0]; string(m.Payload) != "new" {
		t.Fatalf("new consumer read %q, want \"new\"", m.Payload)
	}
	if m := readN(t, a, 2); string(m[0].Payload) != "old" {
		t.Fatalf("old consumer read %q first, want \"old\"", m[0].Payload)
	}
	if _, err := q.Consumer("a", ConsumerOptions{}); err == nil || !strings.Contains(err.Error(), "already registered") {
		t.Fatalf("second registration of a: %v", err)
	}
}

func TestDeletesWhatEveryConsumerAcked(t *testing.T) {
	q := openTest(t, t.TempDir())
	defer q.Close()
	a, _ := q.Consumer("a", ConsumerOptions{})
	b, _ := q.Consumer("b", ConsumerOptions{})
	for i := range 20 {
		q.Append(context.Background(), msg("t", strconv.Itoa(i)))
	}
	for _, m := range readN(t, a, 20) {
		a.Ack(m.Seq)
	}
	bm := readN(t, b, 20)
	for _, m := range bm[:5] {
		b.Ack(m.Seq)
	}
	waitFor(t, "5 deleted", func() bool { return q.Stats().Deleted == 5 })
	// Deleted messages are gone; the rest are still readable.
	b.Rewind()
	if m := readN(t, b, 15); string(m[0].Payload) != "5" {
		t.Fatalf("b re-read %q first, want \"5\"", m[0].Payload)
	}
	// Once b is unregistered, nothing holds the rest back.
	b.Close()
	waitFor(t, "20 deleted", func() bool { return q.Stats().Deleted == 20 })
	if s := q.Stats(); s.Oldest != s.Head {
		t.Fatalf("oldest %d, head %d: want equal after deleting all", s.Oldest, s.Head)
	}
}

func TestNoConsumersStillStoresThenReleases(t *testing.T) {
	q := openTest(t, t.TempDir())
	defer q.Close()
	if err := q.Append(context.Background(), msg("t", "x")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "released", func() bool { return q.Stats().Deleted == 1 })
}

func TestAppendAfterClose(t *testing.T) {
	q := openTest(t, t.TempDir())
	q.Close()
	if err := q.Append(context.Background(), msg("t", "x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v, want ErrClosed", err)
	}
	if err := q.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second close: %v, want ErrClosed", err)
	}
}

func TestIntervalDurability(t *testing.T) {
	q := openTest(t, t.TempDir(), func(o *Options) { o.Durability = Interval; o.SyncInterval = 5 * time.Millisecond })
	defer q.Close()
	for range 10 {
		if err := q.Append(context.Background(), msg("t", "x")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "a periodic fsync", func() bool { return q.Stats().Syncs > 0 })
	if s := q.Stats(); s.Syncs >= 10 {
		t.Fatalf("%d fsyncs for 10 appends in interval mode", s.Syncs)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			if debugQueue != nil {
				t.Logf("stats: %+v", debugQueue.Stats())
			}
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestCrashLosesNothingAppended runs appenders in a child process, kills it
// with SIGKILL mid-stream, and checks every append the child saw return is
// in the reopened queue.
// TestCrashLosesNothingAppended kills a child process appending from 16
// goroutines, three times, and checks that every append that returned is
// still stored: after a SIGKILL (the page cache survives) and after a
// power cut (only what was fsynced survives, on LazyFS). The child paces
// its fsyncs and mixes payloads under and over the value threshold, so
// that both of Badger's logs must be synced.
func TestCrashLosesNothingAppended(t *testing.T) {
	if os.Getenv("RALPH_QUEUE_CHILD") != "" {
		crashChild()
		return
	}
	for _, tc := range []struct {
		name string
		dir  func(t *testing.T) (string, func())
	}{
		{"SIGKILL", func(t *testing.T) (string, func()) { return t.TempDir(), func() {} }},
		{"power cut", func(t *testing.T) (string, func()) {
			fs := powercut.Mount(t)
			return fs.Dir(), fs.Cut
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, cut := tc.dir(t)
			dir := filepath.Join(root, "db")
			for round := range 3 {
				acked := crashRound(t, dir, round, 1000+round*1500)
				cut()
				q := openTest(t, dir)
				if rec := q.Recovery(); rec.DB != "" {
					t.Fatalf("round %d: the database was set aside: %+v", round, rec)
				}
				c, err := q.Consumer(fmt.Sprintf("check%d", round), ConsumerOptions{})
				if err != nil {
					t.Fatal(err)
				}
				// The checker consumer is new, so it starts at the head; walk the
				// whole log directly instead.
				stored := make(map[string]bool)
				s := q.Stats()
				msgs, _, err := c.load(s.Oldest, s.Head, int(s.Head-s.Oldest))
				if err != nil {
					t.Fatal(err)
				}
				for _, m := range msgs {
					stored[strings.TrimRight(string(m.Payload), "x")] = true
				}
				missing := 0
				for p := range acked {
					if !stored[p] {
						missing++
					}
				}
				if missing > 0 {
					t.Fatalf("round %d: %d of %d acknowledged appends missing after %s", round, missing, len(acked), tc.name)
				}
				c.Close()
				q.Close()
			}
		})
	}
}

// crashRound runs the child on dir until it has acknowledged n appends,
// SIGKILLs it and returns what it acknowledged.
func crashRound(t *testing.T, dir string, round, n int) map[string]bool {
	t.Helper()
	cmd, out := startChild(t, "TestCrashLosesNothingAppended", "RALPH_QUEUE_CHILD="+dir, "RALPH_QUEUE_ROUND="+strconv.Itoa(round))
	acked := make(map[string]bool)
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		acked[sc.Text()] = true
		if len(acked) == n {
			cmd.Process.Signal(syscall.SIGKILL)
			break
		}
	}
	go io.Copy(io.Discard, out)
	cmd.Wait()
	if len(acked) < n {
		t.Fatalf("round %d: child acked only %d appends before exiting", round, len(acked))
	}
	return acked
}

// startChild runs this test binary's test (which acts as a child when it
// sees env) and returns it with its standard output.
func startChild(t *testing.T, test string, env ...string) (*exec.Cmd, io.Reader) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, out
}

func crashChild() {
	q, err := Open(Options{Dir: os.Getenv("RALPH_QUEUE_CHILD"), MaxSyncsPerSecond: 100, MinFree: -1, // LazyFS reports no free space
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	// A consumer that never acks keeps every message stored.
	if _, err := q.Consumer("hold", ConsumerOptions{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	round := os.Getenv("RALPH_QUEUE_ROUND")
	var mu sync.Mutex
	w := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				p := fmt.Sprintf("r%s-g%d-%d", round, g, i)
				pad := 0
				if i%4 == 0 {
					pad = 2 * valueThreshold // into the value log
				}
				if err := q.Append(context.Background(), msg("t", p+strings.Repeat("x", pad))); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				mu.Lock()
				w.WriteString(p + "\n")
				w.Flush()
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

func FuzzDecodeMessage(f *testing.F) {
	f.Add(encodeMessage(nil, msg("a/b", "hello")))
	f.Add(encodeMessage(nil, &Message{Topic: "x", UserProperties: []UserProperty{{"k", "v"}}, ExpiryInterval: 7}))
	f.Add([]byte{1, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(1, b)
		if err != nil {
			return
		}
		// Whatever decodes must encode back to something that decodes the same.
		m2, err := decodeMessage(1, encodeMessage(nil, m))
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if fmt.Sprint(*m) != fmt.Sprint(*m2) {
			t.Fatalf("round trip differs:\n%+v\n%+v", *m, *m2)
		}
	})
}

func BenchmarkAppend(b *testing.B) {
	for _, writers := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			q := openTest(b, b.TempDir())
			defer q.Close()
			payload := make([]byte, 64)
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						m := &Message{Topic: "bench/t", Payload: payload, QoS: 1, Arrived: time.Now()}
						if err := q.Append(context.Background(), m); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			s := q.Stats()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			b.ReportMetric(float64(s.Syncs)/float64(b.N), "fsyncs/op")
		})
	}
}

func TestKV(t *testing.T) {
	dir := t.TempDir()
	q := openTest(t, dir)
	kv := q.KV("retained")
	for k, v := range map[string]string{"a/b": "1", "a/c": "2", "z": "3"} {
		if err := kv.Set(k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	if err := kv.Delete("a/c"); err != nil {
		t.Fatal(err)
	}
	// Another store's keys and the queue's own stay apart.
	q.KV("other").Set("a/b", []byte("x"))
	q.Append(context.Background(), msg("t", "m"))
	q.Close()

	q = openTest(t, dir)
	defer q.Close()
	var got []string
	err := q.KV("retained").Scan(func(k string, v []byte) error {
		got = append(got, k+"="+string(v))
		return nil
	})
	if err != nil || strings.Join(got, ",") != "a/b=1,z=3" {
		t.Fatalf("after reopen: %v %v, want a/b=1,z=3", got, err)
	}
}

// TestPacedSyncs: appends arriving one at a time from 100 devices that do
// not wait for each other share fsyncs: once every device has been heard
// from, never more than MaxSyncsPerSecond of them, and every append still
// completes, in order.
func TestPacedSyncs(t *testing.T) {
	const perSecond, devices, rounds = 20, 100, 3
	q := openTest(t, t.TempDir(), func(o *Options) { o.MaxSyncsPerSecond = perSecond })
	defer q.Close()
	var mu sync.Mutex
	var done []int
	all := make(chan struct{})
	var start time.Time
	var before Stats
	for i := range devices * (rounds + 1) {
		if i == devices { // the first round heard from everyone
			start, before = time.Now(), q.Stats()
		}
		m := msg("t", strconv.Itoa(i))
		m.Origin = fmt.Sprintf("sensor-%d", i%devices) // each every 100 ms
		q.AppendAsync([]*Message{m}, func(err error) {
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			done = append(done, i)
			if len(done) == devices*(rounds+1) {
				close(all)
			}
			mu.Unlock()
		})
		time.Sleep(time.Millisecond)
	}
	<-all
	elapsed := time.Since(start)
	s := q.Stats()
	// Beyond the interval's rounds: the last.
	if n, limit := s.SyncRounds-before.SyncRounds, uint64(elapsed.Seconds()*perSecond)+2; n > limit {
		t.Fatalf("%d fsync rounds in %v, want at most %d (%d a second)", n, elapsed, limit, perSecond)
	}
	for i, v := range done {
		if v != i {
			t.Fatalf("completion %d was append %d: out of order", i, v)
		}
	}
	if s.Appended != devices*(rounds+1) {
		t.Fatalf("appended %d, want %d", s.Appended, devices*(rounds+1))
	}
	t.Logf("%d appends in %v: %d commits, %d fsync rounds, %d sync calls", s.Appended-before.Appended, elapsed,
		s.Commits-before.Commits, s.SyncRounds-before.SyncRounds, s.Syncs-before.Syncs)
}

// TestPacedWindowDoesNotWait: publishers with a window (one, or eight, in
// flight, then they wait) send nothing more until acknowledged, so the
// committer must not sit out the pacing interval for them: 100 windows at
// one sync a second would take 100 s.
func TestPacedWindowDoesNotWait(t *testing.T) {
	for _, tc := range []struct{ publishers, window int }{{1, 1}, {1, 8}, {4, 8}} {
		t.Run(fmt.Sprintf("%d×%d", tc.publishers, tc.window), func(t *testing.T) {
			q := openTest(t, t.TempDir(), func(o *Options) { o.MaxSyncsPerSecond = 1 })
			defer q.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var wg sync.WaitGroup
			for p := range tc.publishers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for w := range 100 {
						errs := make(chan error, tc.window)
						for i := range tc.window {
							m := msg("t", fmt.Sprintf("%d-%d", w, i))
							m.Origin = fmt.Sprintf("dev-%d", p)
							q.AppendAsync([]*Message{m}, func(err error) { errs <- err })
						}
						for range tc.window {
							select {
							case err := <-errs:
								if err != nil {
									t.Error(err)
									return
								}
							case <-ctx.Done():
								t.Errorf("publisher %d: window %d of 100 still waiting after 20 s: the committer waits out the interval for publishers that have stopped", p, w)
								return
							}
						}
					}
				}()
			}
			wg.Wait()
		})
	}
}

// TestPacingStateBounded: what pacing remembers of origins and rounds
// stays bounded by the rounds in flight and the origins heard from lately,
// however many rounds pass, also when no commit ever waits (a disk that
// is idle each time, as with one sensor a second).
func TestPacingStateBounded(t *testing.T) {
	var finished atomic.Uint64
	a := newArrivals(100*time.Millisecond, &finished)
	now := time.Now()
	for i := range 10000 {
		now = now.Add(time.Second)
		a.add(fmt.Sprintf("dev-%d", i), now)
		r := a.handOff(now)
		if len(a.byRound) > 2 || len(a.origins) > 2 {
			t.Fatalf("after %d rounds: %d rounds and %d origins kept", i+1, len(a.byRound), len(a.origins))
		}
		finished.Store(r) // acknowledged before the next append
	}
}

// TestStatsAfterReopen: a queue that never deleted anything counts the
// same messages after a reopen as before.
func TestStatsAfterReopen(t *testing.T) {
	dir := t.TempDir()
	q := openTest(t, dir)
	if _, err := q.Consumer("up", ConsumerOptions{}); err != nil { // holds the messages
		t.Fatal(err)
	}
	for i := range 3 {
		if err := q.Append(context.Background(), msg("t", fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	before := q.Stats()
	q.Close()
	q = openTest(t, dir)
	defer q.Close()
	after := q.Stats()
	if before.Oldest != 1 || before.Head != 4 || after.Oldest != before.Oldest || after.Head != before.Head {
		t.Fatalf("oldest, head: %d, %d before the reopen, %d, %d after; want 1, 4 both times", before.Oldest, before.Head, after.Oldest, after.Head)
	}
}
