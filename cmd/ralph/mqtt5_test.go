package main

import (
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/internal/mqtttest"
)

// TestWillIsStoredAndForwarded: a device that vanishes leaves its will to
// local subscribers and, like any message, upstream through the bridge.
func TestWillIsStoredAndForwarded(t *testing.T) {
	up := newMochi(t)
	s := newSetup(t, up.addr(), "")
	p := startRalph(t, s.config, s.addr)
	watcher := mqtttest.Dial(t, s.addr, "watcher", 5)
	watcher.Subscribe("sensors/#", 0)

	dev := mqtttest.New(t, s.addr, 5)
	dev.Write(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: "mortal",
			WillFlag: true, WillTopic: "sensors/mortal/status", WillPayload: []byte("gone"), WillQos: 1},
	})
	if ack := dev.Read(5 * time.Second); ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
		t.Fatalf("connect with a will: type %d reason %#x", ack.FixedHeader.Type, ack.ReasonCode)
	}
	dev.Close() // no DISCONNECT: the will goes out

	if pk := watcher.Read(5 * time.Second); pk.TopicName != "sensors/mortal/status" || string(pk.Payload) != "gone" {
		t.Fatalf("local subscriber got %q %q, want the will", pk.TopicName, pk.Payload)
	}
	got := up.collector().WaitAll(t, []string{"gone"}, 10*time.Second)
	if got[len(got)-1].Topic != "edge/sensors/mortal/status" {
		t.Fatalf("upstream got the will on %q", got[len(got)-1].Topic)
	}
	p.stop()
}

// TestSysTopics: $SYS carries mochi's broker figures and Ralph's queue.
func TestSysTopics(t *testing.T) {
	up := newMochi(t)
	up.stop() // the queue keeps what cannot be forwarded
	s := newSetup(t, up.addr(), "")
	p := startRalph(t, s.config, s.addr)
	publish(t, s.addr, "dev", 5, "sensors/a", payloads("a", 0, 3))
	w := mqtttest.Dial(t, s.addr, "watcher", 5)
	w.Subscribe("$SYS/#", 0)
	seen := map[string]string{}
	deadline := time.Now().Add(15 * time.Second)
	for seen["$SYS/ralph/queue/messages"] != "3" || seen["$SYS/broker/clients/connected"] == "" {
		if time.Now().After(deadline) {
			t.Fatalf("$SYS so far: %v", seen)
		}
		pk, err := w.TryRead(time.Until(deadline))
		if err != nil {
			t.Fatalf("$SYS so far: %v (%v)", seen, err)
		}
		seen[pk.TopicName] = string(pk.Payload)
	}
	p.stop()
}
