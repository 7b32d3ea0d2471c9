package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/gateway"
	"github.com/ralph-gateway/ralph/internal/mqtttest"
)

// TestPersistentSessionSurvivesKill: a device's persistent session — its
// subscription and the QoS 1 messages queued for it while it was away —
// survives a SIGKILL of ralph.
func TestPersistentSessionSurvivesKill(t *testing.T) {
	up := newMochi(t)
	s := newSetup(t, up.addr(), "")
	p := startRalph(t, s.config, s.addr)
	for _, v := range []byte{4, 5} {
		id := fmt.Sprintf("sleepy-v%d", v)
		dev := mqtttest.DialSession(t, s.addr, id, v, false)
		dev.Subscribe("cmd/"+id, 1)
		dev.Close()
	}
	waitStatus(t, s, "the devices gone", func(st gateway.Status) bool { return st.Clients == 0 })
	// Queued for the offline devices, then ralph dies.
	publish(t, s.addr, "ctl", 5, "cmd/sleepy-v4", []string{"for-v4"})
	publish(t, s.addr, "ctl", 5, "cmd/sleepy-v5", []string{"for-v5"})
	p.kill()

	p = startRalph(t, s.config, s.addr)
	for _, v := range []byte{4, 5} {
		id := fmt.Sprintf("sleepy-v%d", v)
		dev := mqtttest.DialSession(t, s.addr, id, v, false)
		pk := dev.Read(10 * time.Second)
		if pk.FixedHeader.Type != packets.Publish || string(pk.Payload) != fmt.Sprintf("for-v%d", v) {
			t.Fatalf("%s after the restart got type %d %q", id, pk.FixedHeader.Type, pk.Payload)
		}
		dev.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
		// The subscription itself survived: a new message arrives too.
		publish(t, s.addr, "ctl", 5, "cmd/"+id, []string{"again"})
		if pk := dev.Read(10 * time.Second); string(pk.Payload) != "again" {
			t.Fatalf("%s: new message after the restart: %q", id, pk.Payload)
		}
		dev.Close()
	}
	p.stop()
}
