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

// TestTopicAliasesAndSharedSubscriptions: topic aliases resolve in order
// even while earlier messages are still being stored (an alias re-mapped
// meanwhile must not change them), and a shared subscription splits the
// messages between its members.
func TestTopicAliasesAndSharedSubscriptions(t *testing.T) {
	up := newMochi(t)
	s := newSetup(t, up.addr(), "")
	p := startRalph(t, s.config, s.addr)

	sub := mqtttest.Dial(t, s.addr, "sub", 5)
	sub.Subscribe("alias/#", 0)
	pub := mqtttest.Dial(t, s.addr, "pub", 5)
	var burst []byte
	for i, m := range []struct{ topic, payload string }{{"alias/a", "1"}, {"", "2"}, {"alias/b", "3"}, {"", "4"}} {
		b, err := pub.Encode(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: uint16(i + 1),
			TopicName: m.topic, Payload: []byte(m.payload),
			Properties: packets.Properties{TopicAlias: 1, TopicAliasFlag: true},
		})
		if err != nil {
			t.Fatal(err)
		}
		burst = append(burst, b...)
	}
	pub.WriteBytes(burst) // all four before the first is stored
	want := []string{"alias/a 1", "alias/a 2", "alias/b 3", "alias/b 4"}
	for _, w := range want {
		pk := sub.Read(5 * time.Second)
		if got := pk.TopicName + " " + string(pk.Payload); got != w {
			t.Fatalf("subscriber got %q, want %q", got, w)
		}
	}

	a := mqtttest.Dial(t, s.addr, "member-a", 5)
	a.Subscribe("$share/g/shared/#", 0)
	b := mqtttest.Dial(t, s.addr, "member-b", 5)
	b.Subscribe("$share/g/shared/#", 0)
	publish(t, s.addr, "dev", 5, "shared/x", payloads("s", 0, 20))
	count := func(c *mqtttest.Raw) int {
		n := 0
		for {
			if _, err := c.TryRead(500 * time.Millisecond); err != nil {
				return n
			}
			n++
		}
	}
	na, nb := count(a), count(b)
	if na+nb != 20 || na == 0 || nb == 0 {
		t.Fatalf("shared subscription: member a got %d, b %d; want 20 split between both", na, nb)
	}
	p.stop()
}
