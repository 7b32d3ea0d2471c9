package main

import (
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/internal/mqtttest"
)

// TestRetainedSurvivesKill: retained messages are kept in the queue's
// database, so a SIGKILLed ralph still has them after a restart; a cleared
// one stays cleared.
func TestRetainedSurvivesKill(t *testing.T) {
	up := newMochi(t)
	s := newSetup(t, up.addr(), "")
	p := startRalph(t, s.config, s.addr)
	dev := mqtttest.Dial(t, s.addr, "dev", 5)
	retain := func(topic, payload string) {
		t.Helper()
		dev.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true}, PacketID: 1, TopicName: topic, Payload: []byte(payload)})
		if ack := dev.Read(5 * time.Second); ack.FixedHeader.Type != packets.Puback || ack.ReasonCode != 0 {
			t.Fatalf("retained publish %s: type %d reason %#x", topic, ack.FixedHeader.Type, ack.ReasonCode)
		}
	}
	retain("config/a", "v1")
	retain("config/b", "gone soon")
	retain("config/b", "") // clears it
	p.kill()

	p = startRalph(t, s.config, s.addr)
	sub := mqtttest.Dial(t, s.addr, "late", 5)
	sub.Subscribe("config/#", 1)
	pk := sub.Read(5 * time.Second)
	if pk.TopicName != "config/a" || string(pk.Payload) != "v1" || !pk.FixedHeader.Retain {
		t.Fatalf("after the restart got %q %q retain=%v, want config/a v1 retained", pk.TopicName, pk.Payload, pk.FixedHeader.Retain)
	}
	if pk.FixedHeader.Qos > 0 {
		sub.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
	}
	if extra, err := sub.TryRead(300 * time.Millisecond); err == nil {
		t.Fatalf("unexpected retained %q %q: the cleared topic came back", extra.TopicName, extra.Payload)
	}
	p.stop()
}
