package bridge

import (
	"bytes"
	"context"
	"net/url"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/ralph-gateway/ralph/internal/mqtttest"
	"github.com/ralph-gateway/ralph/queue"
)

// TestStopWithMessagesInFlight: stopping a bridge (as a shutdown or a
// reload does) while its upstream holds a full window of messages
// unacknowledged leaves no goroutine behind, and the Bridge itself can be
// collected. Each message in flight has a goroutine waiting for its
// acknowledgement; the way out must end them all.
func TestStopWithMessagesInFlight(t *testing.T) {
	const window = 8
	up := mqtttest.StartMochi(t, "127.0.0.1:0", nil)
	up.Stall.Store(true) // connected, acknowledges nothing
	q, err := queue.Open(queue.Options{Dir: t.TempDir(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	cons, err := q.Consumer("up", queue.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range seqPayloads("s", 3*window) {
		if err := q.Append(context.Background(), &queue.Message{Topic: "t", Payload: []byte(p), QoS: 1, Arrived: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	u, _ := url.Parse("mqtt://" + up.Addr)
	cfg := Config{
		Name: "up", URLs: []*url.URL{u}, ClientID: "ralph-stop", MaxInflight: window,
		KeepAlive: 30 * time.Second, ReconnectMin: 20 * time.Millisecond, ReconnectMax: 100 * time.Millisecond,
		SessionExpiry: time.Hour, Forward: []Rule{{Filter: "#", QoS: 1}}, Logger: quiet,
	}

	baseline := runtime.NumGoroutine()
	b := New(cfg, []Lane{{Consumer: cons}})
	collected := make(chan struct{})
	runtime.AddCleanup(b, func(ch chan struct{}) { close(ch) }, collected)
	ctx, cancel := context.WithCancel(context.Background())
	finished := make(chan struct{})
	go func() { defer close(finished); b.Run(ctx) }()
	waitFor(t, "a full window in flight", func() bool { return b.Stats().Inflight == window })
	if got := b.forwarded.Load(); got != 0 {
		t.Fatalf("%d forwarded by a stalled upstream", got)
	}
	cancel()
	select {
	case <-finished:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context was cancelled")
	}
	b = nil

	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			var stacks bytes.Buffer
			pprof.Lookup("goroutine").WriteTo(&stacks, 1)
			t.Fatalf("%d goroutines left behind by a stopped bridge (%d before it started, %d now); every goroutine:\n%s",
				runtime.NumGoroutine()-baseline, baseline, runtime.NumGoroutine(), stacks.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	for {
		runtime.GC()
		select {
		case <-collected:
			return
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			var stacks bytes.Buffer
			pprof.Lookup("goroutine").WriteTo(&stacks, 1)
			kept := "none of them names the bridge"
			if strings.Contains(stacks.String(), "ralph/bridge.") {
				kept = "some name the bridge"
			}
			t.Fatalf("the stopped Bridge is still reachable after Run returned (goroutines: %s):\n%s", kept, stacks.String())
		}
	}
}
