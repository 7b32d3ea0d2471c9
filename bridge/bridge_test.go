package bridge

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ralph-gateway/ralph/internal/mqtttest"
	"github.com/ralph-gateway/ralph/queue"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type rig struct {
	q    *queue.Queue
	b    *Bridge
	stop func()
}

func startBridge(t *testing.T, upstream string, rules []Rule, opts ...func(*Config)) *rig {
	t.Helper()
	q, err := queue.Open(queue.Options{Dir: t.TempDir(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("mqtt://" + upstream)
	cfg := Config{
		Name: "up", URLs: []*url.URL{u}, ClientID: "ralph-test", MaxInflight: 16,
		KeepAlive: 30 * time.Second, ReconnectMin: 20 * time.Millisecond, ReconnectMax: 100 * time.Millisecond,
		SessionExpiry: time.Hour, Forward: rules, Logger: quiet,
	}
	for _, f := range opts {
		f(&cfg)
	}
	lanes, err := OpenLanes(q, cfg.Name, cfg.Forward, 4)
	if err != nil {
		t.Fatal(err)
	}
	b := New(cfg, lanes)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); b.Run(ctx) }()
	r := &rig{q: q, b: b}
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			q.Close()
		})
	}
	t.Cleanup(r.stop)
	return r
}

func (r *rig) publish(t *testing.T, topic string, payloads ...string) {
	t.Helper()
	for _, p := range payloads {
		m := &queue.Message{Topic: topic, Payload: []byte(p), QoS: 1, Origin: "dev", Arrived: time.Now()}
		if err := r.q.Append(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
}

func seqPayloads(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%05d", prefix, i)
	}
	return out
}

// checkInOrder asserts every payload arrived and, ignoring duplicates, in
// order; it returns the number of duplicates.
func checkInOrder(t *testing.T, got []mqtttest.Received, want []string) int {
	t.Helper()
	pos := make(map[string]int, len(want))
	for i, w := range want {
		pos[w] = i
	}
	seen := make(map[string]bool)
	last, dups := -1, 0
	for _, m := range got {
		i, ok := pos[m.Payload]
		if !ok {
			t.Fatalf("unexpected message %q on %q", m.Payload, m.Topic)
		}
		if seen[m.Payload] {
			dups++
			continue
		}
		seen[m.Payload] = true
		if i < last {
			t.Fatalf("%q arrived after %q: out of order", m.Payload, want[last])
		}
		last = i
	}
	if len(seen) != len(want) {
		t.Fatalf("%d of %d messages arrived", len(seen), len(want))
	}
	return dups
}

func TestForwardRewritesAndFilters(t *testing.T) {
	up := mqtttest.StartMochi(t, "127.0.0.1:0", nil)
	r := startBridge(t, up.Addr, []Rule{
		{Filter: "sensors/#", RemotePrefix: "edge/", QoS: 1},
		{Filter: "local/out/+", StripPrefix: "local/", RemotePrefix: "site/", QoS: 0},
	})
	r.publish(t, "sensors/kitchen/temp", "21.5")
	r.publish(t, "other/topic", "not forwarded")
	r.publish(t, "$SYS/broker/uptime", "never forwarded")
	r.publish(t, "local/out/a", "stripped")
	exp := &queue.Message{Topic: "sensors/old", Payload: []byte("expired"), QoS: 1, Arrived: time.Now().Add(-time.Hour), ExpiryInterval: 60}
	r.q.Append(context.Background(), exp)
	r.publish(t, "sensors/last", "last")
	got := up.WaitDistinct(t, 3, 10*time.Second)
	want := []mqtttest.Received{
		{Topic: "edge/sensors/kitchen/temp", Payload: "21.5", QoS: 1},
		{Topic: "site/out/a", Payload: "stripped", QoS: 0},
		{Topic: "edge/sensors/last", Payload: "last", QoS: 1},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("upstream got\n%v\nwant\n%v", got, want)
	}
	waitFor(t, "queue drained", func() bool { return r.b.Stats().Backlog == 0 })
	s := r.b.Stats()
	if s.Forwarded != 3 || s.Skipped != 0 || s.Expired != 1 || !s.Connected {
		t.Fatalf("stats %+v: want 3 forwarded, 0 skipped (the lane's filter passed over the 2 others), 1 expired, connected", s)
	}
}

func TestUpstreamDownThenUp(t *testing.T) {
	port := mqtttest.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	r := startBridge(t, addr, []Rule{{Filter: "#", QoS: 1}})
	want := seqPayloads("m", 500)
	r.publish(t, "sensors/t", want...)
	waitFor(t, "a failed connection attempt", func() bool { return r.b.Stats().LastError != "" })
	up := mqtttest.StartMochi(t, addr, nil)
	got := up.WaitDistinct(t, len(want), 20*time.Second)
	if dups := checkInOrder(t, got, want); dups != 0 {
		t.Fatalf("%d duplicates with no reconnect", dups)
	}
}

func TestUpstreamFlapping(t *testing.T) {
	port := mqtttest.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	up := mqtttest.StartMochi(t, addr, nil)
	c := up.Collector
	r := startBridge(t, addr, []Rule{{Filter: "#", QoS: 1}})
	want := seqPayloads("f", 3000)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < len(want); i += 100 {
			r.publish(t, "t", want[i:i+100]...)
			time.Sleep(5 * time.Millisecond)
		}
	}()
	// Restart the upstream (losing its sessions) a few times mid-stream.
	for range 4 {
		time.Sleep(60 * time.Millisecond)
		up.Stop()
		up = mqtttest.StartMochi(t, addr, c)
	}
	<-done
	got := c.WaitDistinct(t, len(want), 30*time.Second)
	dups := checkInOrder(t, got, want)
	t.Logf("%d messages, %d duplicates, %d reconnects", len(want), dups, r.b.Stats().Reconnects)
}

func TestResumeFromCursorAfterRestart(t *testing.T) {
	up := mqtttest.StartMochi(t, "127.0.0.1:0", nil)
	dir := t.TempDir()
	u, _ := url.Parse("mqtt://" + up.Addr)
	run := func(payloads []string, wait int) {
		q, err := queue.Open(queue.Options{Dir: dir, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		cons, _ := q.Consumer("up", queue.ConsumerOptions{})
		b := New(Config{Name: "up", URLs: []*url.URL{u}, ClientID: "c", MaxInflight: 8, Forward: []Rule{{Filter: "#", QoS: 1}}, Logger: quiet}, []Lane{{Consumer: cons}})
		ctx, cancel := context.WithCancel(context.Background())
		finished := make(chan struct{})
		go func() { b.Run(ctx); close(finished) }()
		for _, p := range payloads {
			q.Append(context.Background(), &queue.Message{Topic: "t", Payload: []byte(p), QoS: 1, Arrived: time.Now()})
		}
		up.WaitDistinct(t, wait, 10*time.Second)
		waitFor(t, "backlog drained", func() bool { return b.Stats().Backlog == 0 })
		cancel()
		<-finished
		q.Close()
	}
	run(seqPayloads("a", 100), 100)
	run(seqPayloads("b", 100), 200)
	all := append(seqPayloads("a", 100), seqPayloads("b", 100)...)
	if dups := checkInOrder(t, up.Messages(), all); dups != 0 {
		t.Fatalf("%d duplicates after a clean restart", dups)
	}
}

func TestBackoff(t *testing.T) {
	b := New(Config{ReconnectMin: 100 * time.Millisecond, ReconnectMax: time.Second}, nil)
	for attempt, wantMax := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		wantMax *= time.Millisecond
		for range 20 {
			d := b.backoff(attempt)
			if d < wantMax/2 || d > wantMax {
				t.Fatalf("attempt %d: backoff %v outside [%v, %v]", attempt, d, wantMax/2, wantMax)
			}
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestMaxRate: a backlog drains no faster than max_rate allows (the lower
// bound on time is exact; nothing here depends on the machine's speed).
func TestMaxRate(t *testing.T) {
	up := mqtttest.StartMochi(t, "127.0.0.1:0", nil)
	r := startBridge(t, up.Addr, []Rule{{Filter: "#", QoS: 1}}, func(c *Config) { c.MaxRate = 200 })
	want := seqPayloads("r", 100)
	start := time.Now()
	r.publish(t, "t", want...)
	got := up.WaitDistinct(t, len(want), 20*time.Second)
	elapsed := time.Since(start)
	checkInOrder(t, got, want)
	// 99 intervals at 200/s, less a 0.1 s burst allowance: at least 0.395 s.
	if elapsed < 380*time.Millisecond {
		t.Fatalf("100 messages forwarded in %v: faster than max_rate 200/s", elapsed)
	}
}

// TestFailoverAndBackToPrimary: with the first upstream down the bridge
// uses the second; once the first is back it returns to it after
// PrimaryRetry; when the first dies it fails over again. Nothing is lost.
func TestFailoverAndBackToPrimary(t *testing.T) {
	primary := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	secondary := mqtttest.StartMochi(t, "127.0.0.1:0", nil)
	r := startBridge(t, primary, []Rule{{Filter: "#", QoS: 1}}, func(c *Config) {
		u, _ := url.Parse("mqtt://" + secondary.Addr)
		c.URLs = append(c.URLs, u)
		c.PrimaryRetry = 300 * time.Millisecond
	})
	first := seqPayloads("a", 50)
	r.publish(t, "t", first...)
	secondary.WaitDistinct(t, 50, 10*time.Second)

	up := mqtttest.StartMochi(t, primary, nil)
	waitFor(t, "back on the primary", func() bool { return r.b.Stats().Connected && r.b.Stats().URL == "mqtt://"+primary })
	second := seqPayloads("b", 50)
	r.publish(t, "t", second...)
	up.WaitAll(t, second, 10*time.Second)

	up.Stop()
	third := seqPayloads("c", 50)
	r.publish(t, "t", third...)
	got := secondary.WaitAll(t, third, 10*time.Second)
	for _, w := range append(append([]string{}, first...), third...) {
		found := false
		for _, m := range got {
			found = found || m.Payload == w
		}
		if !found {
			t.Fatalf("%s missing on the secondary", w)
		}
	}
}

// TestWatchdog: an upstream that stays connected but acknowledges nothing
// is left after AckTimeout; once it works again everything arrives.
func TestWatchdog(t *testing.T) {
	up := mqtttest.StartMochi(t, "127.0.0.1:0", nil)
	up.Stall.Store(true)
	r := startBridge(t, up.Addr, []Rule{{Filter: "#", QoS: 1}}, func(c *Config) { c.AckTimeout = 300 * time.Millisecond })
	want := seqPayloads("w", 10)
	r.publish(t, "t", want...)
	waitFor(t, "the watchdog to reconnect", func() bool { return r.b.Stats().Reconnects > 0 })
	if e := r.b.Stats().LastError; !strings.Contains(e, "nothing acknowledged") {
		t.Fatalf("last error %q, want the watchdog's", e)
	}
	up.Stall.Store(false)
	checkInOrder(t, up.WaitAll(t, want, 10*time.Second), want)
}

// TestResendLimit: however far the queue's cursor writes fall behind, no
// more than twice the window is ever sent beyond the saved cursor, which
// is what a crash makes the bridge send again. Here the cursor is written
// only every cursor delay (PersistEvery is out of reach), in which time
// the upstream would take far more than that.
func TestResendLimit(t *testing.T) {
	const window, n = 8, 2000
	up := mqtttest.StartMochi(t, "127.0.0.1:0", nil)
	q, err := queue.Open(queue.Options{Dir: t.TempDir(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	cons, err := q.Consumer("up", queue.ConsumerOptions{PersistEvery: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	base, _ := cons.Saved()
	want := seqPayloads("m", n)
	var msgs []*queue.Message
	for _, p := range want {
		msgs = append(msgs, &queue.Message{Topic: "t", Payload: []byte(p), QoS: 1, Arrived: time.Now()})
	}
	if err := q.Append(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("mqtt://" + up.Addr)
	b := New(Config{Name: "up", URLs: []*url.URL{u}, ClientID: "c", MaxInflight: window, Forward: []Rule{{Filter: "#", QoS: 1}}, Logger: quiet}, []Lane{{Consumer: cons}})
	ctx, cancel := context.WithCancel(context.Background())
	finished := make(chan struct{})
	go func() { b.Run(ctx); close(finished) }()
	defer func() { cancel(); <-finished }()

	worst := 0
	deadline := time.Now().Add(30 * time.Second)
	for {
		// Counted before the cursor is read: what arrived was sent no
		// later than the cursor was saved as read.
		got := len(up.Messages())
		saved, _ := cons.Saved()
		worst = max(worst, got-int(saved-base))
		if got >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages arrived", got, n)
		}
		time.Sleep(200 * time.Microsecond)
	}
	if worst > 2*window {
		t.Fatalf("%d messages arrived beyond the saved cursor; want at most %d", worst, 2*window)
	}
	if worst < window {
		t.Fatalf("at most %d messages arrived beyond the saved cursor: the test did not reach the window of %d", worst, window)
	}
	if dups := checkInOrder(t, up.Messages(), want); dups != 0 {
		t.Fatalf("%d duplicates", dups)
	}
}
