package main

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ralph-gateway/ralph/gateway"
	"github.com/ralph-gateway/ralph/internal/mqtttest"
)

// TestUpstreamFlapping: Mosquitto is restarted every second or two while
// ten devices publish steadily: every acknowledged message arrives, in
// order per device, with duplicates within a window per reconnect.
func TestUpstreamFlapping(t *testing.T) {
	const window = 32
	up := newMosquitto(t)
	s := newSetup(t, up.addr(), fmt.Sprintf("max_inflight = %d", window))
	p := startRalph(t, s.config, s.addr)

	stop := make(chan struct{})
	var mu sync.Mutex
	var want []string
	var wg sync.WaitGroup
	for d := range 10 {
		c := mqtttest.Dial(t, s.addr, fmt.Sprintf("dev%d", d), 5)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				payload := fmt.Sprintf("d%d-%06d", d, i)
				if acked, err := c.PublishAll("sensors/a", 1, []string{payload}, 1); err != nil || len(acked) != 1 {
					t.Errorf("dev%d: publish %s: %v", d, payload, err)
					return
				}
				mu.Lock()
				want = append(want, payload)
				mu.Unlock()
				time.Sleep(10 * time.Millisecond) // pacing: about 1,000 msgs/s in all
			}
		}()
	}
	restarts := 0
	for _, pause := range []time.Duration{1500, 1000, 2000, 1000, 1500} {
		time.Sleep(pause * time.Millisecond)
		up.stop()
		time.Sleep(200 * time.Millisecond)
		up.start(t)
		restarts++
	}
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()

	got := up.collector().WaitAll(t, want, 60*time.Second)
	dups := verify(t, got, want, edgeTopic("a"))
	t.Logf("%d messages through %d upstream restarts, %d duplicates", len(want), restarts, dups)
	if dups > restarts*window {
		t.Fatalf("%d duplicates: more than a window (%d) per restart", dups, window)
	}
	p.stop()
}

// TestFailoverBetweenMosquittos: with two upstreams, the bridge uses the
// first, fails over to the second when the first is killed, and goes back
// after primary_retry once it returns; nothing is lost on the way.
func TestFailoverBetweenMosquittos(t *testing.T) {
	a, b := newMosquitto(t), newMosquitto(t)
	s := newSetup(t, a.addr(), `primary_retry = "1s"`)
	cfg, _ := os.ReadFile(s.config)
	os.WriteFile(s.config, []byte(strings.Replace(string(cfg),
		fmt.Sprintf(`urls = ["mqtt://%s"]`, a.addr()), fmt.Sprintf(`urls = ["mqtt://%s", "mqtt://%s"]`, a.addr(), b.addr()), 1)), 0o644)
	p := startRalph(t, s.config, s.addr)

	first := publish(t, s.addr, "dev", 5, "sensors/a", payloads("a", 0, 100))
	a.collector().WaitAll(t, first, 10*time.Second)

	a.m.Kill()
	second := publish(t, s.addr, "dev", 5, "sensors/a", payloads("a", 100, 100))
	b.collector().WaitAll(t, second, 20*time.Second)
	waitStatus(t, s, "connected to the second", func(st gateway.Status) bool {
		return st.Bridges[0].Connected && st.Bridges[0].URL == "mqtt://"+b.addr()
	})

	a.start(t)
	waitStatus(t, s, "back on the first", func(st gateway.Status) bool {
		return st.Bridges[0].Connected && st.Bridges[0].URL == "mqtt://"+a.addr()
	})
	third := publish(t, s.addr, "dev", 5, "sensors/a", payloads("a", 200, 100))
	a.collector().WaitAll(t, third, 10*time.Second)
	p.stop()
}
