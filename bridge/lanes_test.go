package bridge

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ralph-gateway/ralph/internal/mqtttest"
	"github.com/ralph-gateway/ralph/queue"
)

var priorityRules = []Rule{
	{Filter: "alarms/#", RemotePrefix: "edge/", QoS: 1, Priority: 0},
	{Filter: "sensors/#", RemotePrefix: "edge/", QoS: 1, Priority: 4},
}

// appendAt stores one message that arrived at the given time.
func (r *rig) appendAt(t *testing.T, topic, payload string, at time.Time, props ...queue.UserProperty) {
	t.Helper()
	m := &queue.Message{Topic: topic, Payload: []byte(payload), QoS: 1, Origin: "dev", Arrived: at, UserProperties: props}
	if err := r.q.Append(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}

// After an outage, every alarm goes before the telemetry backlog, each
// stream in its order, and the backlog shows per priority meanwhile.
func TestPrioritiesAfterOutage(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	r := startBridge(t, addr, priorityRules)
	t0 := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	var alarms, tele []string
	for i := range 2000 {
		at := t0.Add(time.Duration(i) * time.Millisecond)
		if i%20 == 5 {
			p := fmt.Sprintf("alarm%05d", len(alarms))
			alarms = append(alarms, p)
			r.appendAt(t, "alarms/door", p, at)
		}
		p := fmt.Sprintf("tele%05d", i)
		tele = append(tele, p)
		r.appendAt(t, "sensors/temp", p, at)
	}
	var s Stats
	waitFor(t, "the backlog counted", func() bool {
		s = r.b.Stats()
		return len(s.Lanes) == 2 && !s.Lanes[0].Counting && !s.Lanes[1].Counting
	})
	want := []LaneStats{
		{Priority: 0, Messages: 100, Bytes: 100 * uint64(len("alarms/door")+10), Oldest: t0.Add(5 * time.Millisecond), ETA: -1},
		{Priority: 4, Messages: 2000, Bytes: 2000 * uint64(len("sensors/temp")+9), Oldest: t0, ETA: -1},
	}
	if fmt.Sprint(s.Lanes) != fmt.Sprint(want) {
		t.Fatalf("while the link is down, lanes\n%+v\nwant\n%+v", s.Lanes, want)
	}

	up := mqtttest.StartMochi(t, addr, nil)
	got := up.WaitDistinct(t, len(alarms)+len(tele), 30*time.Second)
	var order []string
	seen := map[string]bool{}
	var gotAlarms, gotTele []mqtttest.Received
	for _, m := range got {
		if !seen[m.Payload] {
			seen[m.Payload] = true
			order = append(order, m.Payload)
		}
		if strings.HasPrefix(m.Payload, "alarm") {
			gotAlarms = append(gotAlarms, m)
		} else {
			gotTele = append(gotTele, m)
		}
	}
	// The lanes read in turn as the link comes up: every alarm is among
	// the first messages, well before the telemetry has drained.
	lastAlarm := 0
	for i, p := range order {
		if strings.HasPrefix(p, "alarm") {
			lastAlarm = i
		}
	}
	if lastAlarm >= len(alarms)+16 {
		t.Fatalf("the last alarm went out as message %d of %d: behind the telemetry", lastAlarm+1, len(order))
	}
	checkInOrder(t, gotAlarms, alarms)
	checkInOrder(t, gotTele, tele)

	waitFor(t, "the lanes drained", func() bool {
		s = r.b.Stats()
		return s.Backlog == 0 && s.Lanes[0].Messages == 0 && s.Lanes[1].Messages == 0
	})
	for _, l := range s.Lanes {
		if l.Bytes != 0 || !l.Oldest.IsZero() || l.ETA != 0 {
			t.Fatalf("drained lane %+v: want no bytes, no oldest, ETA 0", l)
		}
	}
}

// An urgent message goes out while the window holds all the bulk it may:
// the bulk lanes cannot fill the urgent lane's reserve.
func TestUrgentNeverWaitsForAFullWindow(t *testing.T) {
	up := mqtttest.StartMochi(t, "127.0.0.1:0", nil)
	stall := "edge/sensors/"
	up.StallPrefix.Store(&stall) // connected, but telemetry is never acknowledged
	r := startBridge(t, up.Addr, priorityRules, func(c *Config) { c.MaxInflight = 16 })
	for i := range 100 {
		r.publish(t, "sensors/temp", fmt.Sprint(i))
	}
	waitFor(t, "the bulk lane's share of the window in flight", func() bool { return r.b.Stats().Inflight == 14 })
	r.publish(t, "alarms/door", "open")
	got := up.WaitDistinct(t, 1, 10*time.Second)
	if got[0].Topic != "edge/alarms/door" || got[0].Payload != "open" {
		t.Fatalf("upstream got %v", got)
	}
	waitFor(t, "the alarm acknowledged, the bulk still in flight", func() bool {
		s := r.b.Stats()
		return s.Inflight == 14 && s.Forwarded == 1
	})
}

func TestTimestampProperty(t *testing.T) {
	up := mqtttest.StartMochi(t, "127.0.0.1:0", nil)
	r := startBridge(t, up.Addr, []Rule{
		{Filter: "sensors/#", QoS: 1, TimestampProperty: "ralph-received"},
		{Filter: "plain/#", QoS: 1},
	})
	at := time.Date(2026, 12, 1, 10, 0, 0, 123_456_789, time.FixedZone("CET", 3600))
	r.appendAt(t, "sensors/temp", "21.5", at, queue.UserProperty{Key: "unit", Value: "C"})
	r.appendAt(t, "plain/x", "y", at)
	got := up.WaitDistinct(t, 2, 10*time.Second)
	want := []mqtttest.Received{
		{Topic: "sensors/temp", Payload: "21.5", QoS: 1, Props: map[string]string{"unit": "C", "ralph-received": "2026-12-01T09:00:00.123Z"}},
		{Topic: "plain/x", Payload: "y", QoS: 1},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("upstream got\n%v\nwant\n%v", got, want)
	}
}
