package main

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ralph-gateway/ralph/bridge"
	"github.com/ralph-gateway/ralph/gateway"
	"github.com/ralph-gateway/ralph/internal/mqtttest"
)

// TestTheDayAfter: an outage while a device sends telemetry and another
// raises alarms. Meanwhile the backlog shows per priority in `ralph
// status`, /metrics and the retained state topic; when the link returns
// every alarm arrives before the telemetry backlog has drained, each
// stream in order, each message with the time Ralph received it.
func TestTheDayAfter(t *testing.T) {
	up := newMosquitto(t)
	up.stop()
	s := newSetup(t, up.addr(), `timestamp_property = "ralph-received"
  [[bridge.forward]]
  local = "alarms/#"
  remote_prefix = "edge/"
  priority = 0`)
	p := startRalph(t, s.config, s.addr)

	start := time.Now()
	var alarms, tele []string
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		tele = publish(t, s.addr, "meter", 5, "sensors/power", payloads("t", 0, 3000))
	}()
	go func() {
		defer wg.Done()
		for i := range 60 { // one at a time, spread over the telemetry
			alarms = append(alarms, publish(t, s.addr, "door", 4, "alarms/door", payloads("a", i, 1))...)
			time.Sleep(5 * time.Millisecond)
		}
	}()
	wg.Wait()
	if len(alarms) != 60 || len(tele) != 3000 {
		t.Fatalf("%d alarms and %d telemetry acknowledged, want 60 and 3000", len(alarms), len(tele))
	}

	st := waitStatus(t, s, "the backlog per priority", func(st gateway.Status) bool {
		b := st.Bridges[0].Backlog
		return len(b) == 2 && b[0].Priority == 0 && b[0].Messages == 60 && b[1].Priority == 4 && b[1].Messages == 3000 && !b[0].Counting && !b[1].Counting
	})
	if q := st.Bridges[0].Queued; q != 3060 {
		t.Fatalf("queued %d, want 3060: each message once, whatever its priority", q)
	}
	for _, b := range st.Bridges[0].Backlog {
		if b.ETA != nil || b.DrainRate != 0 || b.OldestAge <= 0 || b.OldestAge > time.Since(start).Seconds()+1 || b.Bytes == 0 {
			t.Fatalf("backlog %+v: want no ETA and no drain rate while the link is down, an oldest age since the test began, bytes", b)
		}
	}
	out, _ := ralphCmd(t, "status", "--addr", s.httpAddr)
	for _, w := range []string{"  priority 0: 60 messages, ", "  priority 4: 3000 messages, ", "draining 0/s, left unknown (not draining)"} {
		if !strings.Contains(out, w) {
			t.Fatalf("ralph status lacks %q:\n%s", w, out)
		}
	}
	_, body := httpGet(t, "http://"+s.httpAddr+"/metrics")
	for _, w := range []string{`ralph_bridge_backlog_messages{bridge="up",priority="0"} 60`, `ralph_bridge_backlog_messages{bridge="up",priority="4"} 3000`} {
		if !strings.Contains(body, w) {
			t.Fatalf("/metrics lacks %q", w)
		}
	}
	// The state topic says it too, within its period.
	watcher := mqtttest.Dial(t, s.addr, "ops", 5)
	watcher.Subscribe(bridge.StateTopic("up"), 0)
	deadline := time.Now().Add(30 * time.Second)
	for {
		pk := watcher.Read(time.Until(deadline))
		var state struct {
			State   string
			Backlog []bridge.Backlog
		}
		if err := json.Unmarshal(pk.Payload, &state); err != nil {
			t.Fatalf("state %q: %v", pk.Payload, err)
		}
		if len(state.Backlog) == 2 && state.Backlog[0].Messages == 60 && state.Backlog[1].Messages == 3000 {
			if state.State != "offline" {
				t.Fatalf("state %q, want offline", state.State)
			}
			break
		}
	}

	up.start(t)
	got := up.collector().WaitAll(t, append(append([]string(nil), alarms...), tele...), 60*time.Second)
	seen := map[string]bool{}
	teleBefore, lastAlarm := 0, 0
	var gotAlarms, gotTele []mqtttest.Received
	for _, m := range got {
		if strings.HasPrefix(m.Payload, "a") {
			gotAlarms = append(gotAlarms, m)
			lastAlarm = teleBefore
		} else {
			gotTele = append(gotTele, m)
			if !seen[m.Payload] {
				teleBefore++
			}
		}
		seen[m.Payload] = true
		at, err := time.Parse(bridge.TimestampLayout, m.Props["ralph-received"])
		if err != nil || at.Before(start.Add(-time.Second)) || at.After(time.Now()) || !strings.HasSuffix(m.Props["ralph-received"], "Z") {
			t.Fatalf("%s: ralph-received %q (%v): want the time it was received, in UTC", m.Payload, m.Props["ralph-received"], err)
		}
	}
	if lastAlarm > len(tele)/10 {
		t.Fatalf("the last alarm arrived after %d of %d telemetry messages: behind the backlog", lastAlarm, len(tele))
	}
	verify(t, gotAlarms, alarms, func(string) string { return "edge/alarms/door" })
	verify(t, gotTele, tele, edgeTopic("power"))
	t.Logf("the last alarm arrived after %d of %d telemetry messages", lastAlarm, len(tele))
	p.stop()
}
