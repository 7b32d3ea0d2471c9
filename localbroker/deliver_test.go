package localbroker

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/internal/mqtttest"
)

// TestQoS0FanInLosesNothing has ten publishers send QoS 0 messages as
// fast as they can to one subscriber that reads all the time, but more
// slowly than they publish. It must get every message, each publisher's
// in order, and nothing may be counted as dropped. mochi's queue for the
// subscriber overflowed under this load and dropped thousands. (A
// minute's patience: a loaded machine may hold the reader up for more
// than the second a subscriber that keeps up is given.)
func TestQoS0FanInLosesNothing(t *testing.T) {
	for _, ver := range versions {
		t.Run(ver.name, func(t *testing.T) {
			e := start(t, func(o *Options) { o.patience = time.Minute })
			sub := mqtttest.Dial(t, e.addr, "sub", ver.v)
			sub.Subscribe("fan/#", 0)
			const pubs, n = 10, 3000
			payload := strings.Repeat("p", 1024)
			var wg sync.WaitGroup
			for p := range pubs {
				pub := mqtttest.Dial(t, e.addr, fmt.Sprintf("pub%d", p), ver.v)
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range n {
						pub.Publish(0, 0, fmt.Sprintf("fan/%d", p), []byte(strconv.Itoa(i)+" "+payload))
					}
				}()
			}
			next := make([]int, pubs)
			for got := 0; got < pubs*n; got++ {
				if got%50 == 0 {
					time.Sleep(time.Millisecond) // a slower reader than the publishers
				}
				pk, err := sub.TryRead(10 * time.Second)
				if err != nil {
					t.Fatalf("after %d of %d messages (dropped %v): %v", got, pubs*n, e.b.Stats().DeliveriesDropped, err)
				}
				p, _ := strconv.Atoi(strings.TrimPrefix(pk.TopicName, "fan/"))
				seq, _, _ := strings.Cut(string(pk.Payload), " ")
				if want := strconv.Itoa(next[p]); seq != want {
					t.Fatalf("publisher %d: got message %s, want %s", p, seq, want)
				}
				next[p]++
			}
			wg.Wait()
			if d := e.b.Stats().DeliveriesDropped; d != [3]uint64{} {
				t.Fatalf("dropped %v, want none", d)
			}
		})
	}
}

// subscribe5 subscribes c to filter with a subscription identifier (0:
// none) and options.
func subscribe5(t *testing.T, c *mqtttest.Raw, id uint16, sub packets.Subscription) {
	t.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: id, Filters: packets.Subscriptions{sub}}
	if sub.Identifier > 0 {
		pk.Properties.SubscriptionIdentifier = []int{sub.Identifier}
	}
	c.Write(pk)
	if ack := c.Read(5 * time.Second); ack.FixedHeader.Type != packets.Suback || ack.ReasonCodes[0] != sub.Qos {
		t.Fatalf("subscribing to %s: %+v", sub.Filter, ack)
	}
}

// TestQoS0DeliveryIsMochis checks what Ralph's own QoS 0 delivery
// (deliver.go) writes against what mochi's would: one message for
// overlapping subscriptions, with their identifiers; No Local; the
// remaining expiry; the client's maximum packet size; no properties for
// MQTT 3.1.1.
func TestQoS0DeliveryIsMochis(t *testing.T) {
	e := start(t)
	both := mqtttest.Dial(t, e.addr, "both", 5)
	subscribe5(t, both, 1, packets.Subscription{Filter: "d/#", Identifier: 7})
	subscribe5(t, both, 2, packets.Subscription{Filter: "d/+", Identifier: 3})
	self := mqtttest.Dial(t, e.addr, "self", 5)
	subscribe5(t, self, 1, packets.Subscription{Filter: "d/#", NoLocal: true})
	small := mqtttest.New(t, e.addr, 5)
	small.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5,
		Connect:    packets.ConnectParams{ProtocolName: []byte("MQTT"), Keepalive: 60, ClientIdentifier: "small", Clean: true},
		Properties: packets.Properties{MaximumPacketSize: 100}})
	if pk := small.Read(5 * time.Second); pk.FixedHeader.Type != packets.Connack || pk.ReasonCode != 0 {
		t.Fatalf("connack %+v", pk)
	}
	subscribe5(t, small, 1, packets.Subscription{Filter: "d/#"})
	old := mqtttest.Dial(t, e.addr, "old", 4)
	old.Subscribe("d/#", 0)

	big := strings.Repeat("b", 200)
	self.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "d/x", Payload: []byte(big),
		Properties: packets.Properties{MessageExpiryInterval: 60, ContentType: "text/plain", User: []packets.UserProperty{{Key: "k", Val: "v"}}}})
	self.Publish(0, 0, "d/y", []byte("small"))

	pk := both.Read(5 * time.Second)
	if pk.TopicName != "d/x" || string(pk.Payload) != big || pk.FixedHeader.Qos != 0 || pk.FixedHeader.Retain {
		t.Fatalf("both got %q %d bytes qos %d retain %v, want d/x", pk.TopicName, len(pk.Payload), pk.FixedHeader.Qos, pk.FixedHeader.Retain)
	}
	p := pk.Properties
	if !slices.Equal(p.SubscriptionIdentifier, []int{3, 7}) || p.MessageExpiryInterval < 59 || p.MessageExpiryInterval > 60 ||
		p.ContentType != "text/plain" || len(p.User) != 1 || p.User[0] != (packets.UserProperty{Key: "k", Val: "v"}) || p.TopicAlias != 0 {
		t.Fatalf("both got properties %+v", p)
	}
	if pk := both.Read(5 * time.Second); pk.TopicName != "d/y" || !slices.Equal(pk.Properties.SubscriptionIdentifier, []int{3, 7}) {
		t.Fatalf("both got %q %v next, want d/y once for both subscriptions", pk.TopicName, pk.Properties.SubscriptionIdentifier)
	}
	if pk := small.Read(5 * time.Second); pk.TopicName != "d/y" {
		t.Fatalf("small got %q %d bytes, want only d/y, which fits its maximum packet size", pk.TopicName, len(pk.Payload))
	}
	pk = old.Read(5 * time.Second)
	if pk.TopicName != "d/x" || string(pk.Payload) != big {
		t.Fatalf("old got %q", pk.TopicName)
	}
	if pk := old.Read(5 * time.Second); pk.TopicName != "d/y" {
		t.Fatalf("old got %q, want d/y", pk.TopicName)
	}
	for name, c := range map[string]*mqtttest.Raw{"both": both, "self (No Local)": self, "small": small, "old": old} {
		if pk, err := c.TryRead(200 * time.Millisecond); err == nil {
			t.Errorf("%s got %q as well", name, pk.TopicName)
		}
	}
}

// connect5With connects a clean MQTT 5 client with the properties given.
func connect5With(t *testing.T, addr, id string, props packets.Properties) *mqtttest.Raw {
	t.Helper()
	c := mqtttest.New(t, addr, 5)
	c.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5,
		Connect:    packets.ConnectParams{ProtocolName: []byte("MQTT"), Keepalive: 60, ClientIdentifier: id, Clean: true},
		Properties: props})
	if pk := c.Read(5 * time.Second); pk.FixedHeader.Type != packets.Connack || pk.ReasonCode != 0 {
		t.Fatalf("connack %+v", pk)
	}
	return c
}

// TestQoS0TopicAliases: a client that takes topic aliases gets the topic
// with a new alias once, then the alias alone.
func TestQoS0TopicAliases(t *testing.T) {
	e := start(t)
	sub := connect5With(t, e.addr, "sub", packets.Properties{TopicAliasMaximum: 1})
	subscribe5(t, sub, 1, packets.Subscription{Filter: "a/#"})
	pub := mqtttest.Dial(t, e.addr, "pub", 5)
	for _, topic := range []string{"a/1", "a/1", "a/2", "a/1"} {
		pub.Publish(0, 0, topic, []byte(topic))
	}
	want := []struct {
		topic string
		alias uint16
	}{{"a/1", 1}, {"", 1}, {"a/2", 0}, {"", 1}} // one alias only: a/2 goes without
	for i, w := range want {
		pk := sub.Read(5 * time.Second)
		if pk.TopicName != w.topic || pk.Properties.TopicAlias != w.alias {
			t.Fatalf("message %d (%s): topic %q alias %d, want %q alias %d", i, pk.Payload, pk.TopicName, pk.Properties.TopicAlias, w.topic, w.alias)
		}
	}
}

// TestQoS0LostAliasDisconnects: a subscriber that stopped reading while
// new topic aliases were due is disconnected once one of them is
// dropped; its publisher goes on.
func TestQoS0LostAliasDisconnects(t *testing.T) {
	e := start(t)
	stuck := connect5With(t, e.addr, "stuck", packets.Properties{TopicAliasMaximum: 65535})
	subscribe5(t, stuck, 1, packets.Subscription{Filter: "a/#"})
	pub := mqtttest.Dial(t, e.addr, "pub", 5)
	payload := make([]byte, 1024)
	closed := func() bool {
		cl, ok := e.b.srv.Clients.Get("stuck")
		return !ok || cl.Closed()
	}
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; !closed(); i++ {
		if time.Now().After(deadline) {
			t.Fatalf("still connected after %d messages, %v dropped", i, e.b.Stats().DeliveriesDropped)
		}
		pub.Publish(0, 0, fmt.Sprintf("a/%d", i), payload) // a new alias each
	}
	if d := e.b.Stats().DeliveriesDropped[0]; d == 0 {
		t.Fatal("disconnected with nothing dropped")
	}
	if !strings.Contains(e.logs.String(), `msg="disconnecting a subscriber that stopped reading: a topic alias it was to learn was dropped" client=stuck`) {
		t.Fatalf("log:\n%s", e.logs)
	}
}

// TestQoS1ExpiredWhileAway: a QoS 1 message whose expiry passes while
// its subscriber is away is not delivered when it returns; one that has
// not expired is, with what is left of its interval.
func TestQoS1ExpiredWhileAway(t *testing.T) {
	e := start(t)
	session := packets.Properties{SessionExpiryInterval: 300, SessionExpiryIntervalFlag: true}
	away := mqtttest.New(t, e.addr, 5)
	connect := func(c *mqtttest.Raw, clean bool) {
		c.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5,
			Connect:    packets.ConnectParams{ProtocolName: []byte("MQTT"), Keepalive: 60, ClientIdentifier: "away", Clean: clean},
			Properties: session})
		if pk := c.Read(5 * time.Second); pk.FixedHeader.Type != packets.Connack || pk.ReasonCode != 0 {
			t.Fatalf("connack %+v", pk)
		}
	}
	connect(away, true)
	subscribe5(t, away, 1, packets.Subscription{Filter: "e/#", Qos: 1})
	away.Close()
	pub := mqtttest.Dial(t, e.addr, "pub", 5)
	for i, expiry := range []uint32{1, 60} {
		pub.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: uint16(i + 1),
			TopicName: fmt.Sprintf("e/%d", expiry), Payload: []byte("x"), Properties: packets.Properties{MessageExpiryInterval: expiry}})
		if ack := pub.Read(5 * time.Second); ack.FixedHeader.Type != packets.Puback {
			t.Fatalf("got %+v, want PUBACK", ack)
		}
	}
	// mochi drops expired messages in flight once a second.
	inflight := func() int {
		cl, ok := e.b.srv.Clients.Get("away")
		if !ok {
			t.Fatal("the session is gone")
		}
		return cl.State.Inflight.Len()
	}
	for deadline := time.Now().Add(10 * time.Second); inflight() != 1; {
		if time.Now().After(deadline) {
			t.Fatalf("%d messages in flight for the absent subscriber, want 1: the expired one was kept", inflight())
		}
		time.Sleep(50 * time.Millisecond)
	}
	back := mqtttest.New(t, e.addr, 5)
	connect(back, false)
	pk := back.Read(5 * time.Second)
	if pk.TopicName != "e/60" || pk.Properties.MessageExpiryInterval == 0 || pk.Properties.MessageExpiryInterval > 60 {
		t.Fatalf("got %q with expiry %d, want e/60 with at most 60", pk.TopicName, pk.Properties.MessageExpiryInterval)
	}
	if pk, err := back.TryRead(300 * time.Millisecond); err == nil {
		t.Fatalf("got %q as well", pk.TopicName)
	}
}
