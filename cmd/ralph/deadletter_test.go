package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ralph-gateway/ralph/gateway"
	"github.com/ralph-gateway/ralph/internal/mqtttest"
)

// TestDeadLetter: a message larger than the upstream's maximum packet
// size goes to the local dead-letter topic, counted, instead of blocking
// the queue; the messages behind it are forwarded.
func TestDeadLetter(t *testing.T) {
	port := mqtttest.FreePort(t)
	mqtttest.StartMosquittoConf(t, port, t.TempDir(), fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\nmax_packet_size 2000\n", port))
	c := mqtttest.Subscribe(t, fmt.Sprintf("127.0.0.1:%d", port), "collector", "edge/#", nil)
	s := newSetup(t, fmt.Sprintf("127.0.0.1:%d", port), "")
	p := startRalph(t, s.config, s.addr)
	waitStatus(t, s, "the bridge connected", func(st gateway.Status) bool { return st.Bridges[0].Connected })

	dl := mqtttest.Dial(t, s.addr, "ops", 5)
	dl.Subscribe("$SYS/ralph/bridges/up/deadletter", 1)
	big := "big-" + strings.Repeat("x", 5000)
	publish(t, s.addr, "dev", 5, "sensors/a", []string{"a-000000", big, "a-000001"})
	got := c.WaitAll(t, []string{"a-000000", "a-000001"}, 10*time.Second)
	for _, m := range got {
		if m.Payload == big {
			t.Fatal("the oversized message reached the upstream")
		}
	}
	pk := dl.Read(10 * time.Second)
	props := map[string]string{}
	for _, u := range pk.Properties.User {
		props[u.Key] = u.Val
	}
	if string(pk.Payload) != big || props["topic"] != "sensors/a" || !strings.Contains(props["reason"], "maximum packet size of 2000") {
		t.Fatalf("dead letter: %d bytes, properties %v", len(pk.Payload), props)
	}
	// The upstream's ack of the last message may still be on its way.
	waitStatus(t, s, "one dead-lettered, two forwarded, nothing queued", func(st gateway.Status) bool {
		b := st.Bridges[0]
		return b.DeadLetter == 1 && b.Forwarded == 2 && b.Queued == 0
	})
	out, _ := ralphCmd(t, "status", "--config", s.config)
	if want := "  dead-lettered: 1 over the upstream's packet size or limits, 0 downlink with an invalid local topic\n"; !strings.Contains(out, want) {
		t.Errorf("ralph status does not say %q:\n%s", want, out)
	}
	p.stop()
}
