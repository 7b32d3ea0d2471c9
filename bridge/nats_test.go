package bridge

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/internal/mqtttest"
	"github.com/ralph-gateway/ralph/queue"
)

// TestNATSForbiddenTopics: nats-server's MQTT gateway closes the
// connection on a topic with "." or " ". With the nats preset's
// TopicBytes, such messages go to the dead-letter topic and the ones
// behind them are forwarded, in order, without a reconnect.
func TestNATSForbiddenTopics(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	startNATS(t, addr)
	c := subscribe311(t, addr, "collector", "edge/#", 1)
	q, lb := startLocal(t)
	cons, err := q.Consumer("up", queue.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	local := mqtttest.Dial(t, lb.Addrs()[0], "ops", 5)
	local.Subscribe(DeadLetterTopic("up"), 1)
	u, _ := url.Parse("mqtt://" + addr)
	b, _ := runBridge(t, Config{
		Name: "up", Protocol: ProtocolMQTT311, URLs: []*url.URL{u}, ClientID: "ralph-nats", MaxInflight: 16,
		KeepAlive: 30 * time.Second, ReconnectMin: 20 * time.Millisecond, ReconnectMax: 100 * time.Millisecond,
		Forward: []Rule{{Filter: "sensors/#", RemotePrefix: "edge/", QoS: 1}}, Limits: Limits{TopicBytes: ". "},
		Local: lb, Logger: quiet,
	}, cons)
	waitFor(t, "the bridge connected", func() bool { return b.Stats().Connected })
	for _, m := range []struct{ topic, payload string }{
		{"sensors/a", "m1"}, {"sensors/v1.2", "dot"}, {"sensors/b", "m2"}, {"sensors/my room", "space"}, {"sensors/c", "m3"},
	} {
		if err := q.Append(context.Background(), &queue.Message{Topic: m.topic, Payload: []byte(m.payload), QoS: 1, Origin: "dev", Arrived: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	checkInOrder(t, c.waitDistinct(t, "edge/", 3, 20*time.Second), []string{"m1", "m2", "m3"})
	for _, want := range []struct{ topic, payload, reason string }{
		{"sensors/v1.2", "dot", `topic "edge/sensors/v1.2" holds ".", which the upstream cannot carry`},
		{"sensors/my room", "space", `topic "edge/sensors/my room" holds " ", which the upstream cannot carry`},
	} {
		pk := local.Read(10 * time.Second)
		if pk.FixedHeader.Type != packets.Publish {
			t.Fatalf("local subscriber got packet type %d, want the dead letter %s", pk.FixedHeader.Type, want.payload)
		}
		local.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
		props := map[string]string{}
		for _, p := range pk.Properties.User {
			props[p.Key] = p.Val
		}
		if string(pk.Payload) != want.payload || props["topic"] != want.topic || props["reason"] != want.reason {
			t.Fatalf("dead letter %q with %v; want %q, topic %q, reason %q", pk.Payload, props, want.payload, want.topic, want.reason)
		}
	}
	if s := b.Stats(); s.DeadLetter != 2 || s.Reconnects != 0 {
		t.Fatalf("%d dead letters, %d reconnects; want 2 and 0", s.DeadLetter, s.Reconnects)
	}
}
