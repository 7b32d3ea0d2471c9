package localbroker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/internal/mqtttest"
	"github.com/ralph-gateway/ralph/queue"
)

// TestInboundKeepsOrder sends one stream, trickled a few bytes at a
// time, that mixes publishes Ralph ingests itself with packets mochi
// reads: a subscription, a publish larger than Ralph's read limit, a QoS
// 2 publish, a ping, an unsubscription. Each packet must take effect in
// the order sent: the publishes after the SUBSCRIBE reach the subscription
// and the QoS 0 one after the UNSUBSCRIBE does not (a QoS 0 publish is
// delivered as it is read, a QoS 1 or 2 one once stored); all six are
// stored, in order; each is answered.
func TestInboundKeepsOrder(t *testing.T) {
	for _, ver := range versions {
		for _, trickle := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/trickled=%v", ver.name, trickle), func(t *testing.T) {
				e := start(t)
				stored, err := e.q.Consumer("check", queue.ConsumerOptions{})
				if err != nil {
					t.Fatal(err)
				}
				c := mqtttest.Dial(t, e.addr, "orderly", ver.v)
				big := strings.Repeat("b", readLimit+1)
				var stream []byte
				add := func(pk packets.Packet) {
					b, err := c.Encode(pk)
					if err != nil {
						t.Fatal(err)
					}
					stream = append(stream, b...)
				}
				pub := func(id uint16, qos byte, topic, payload string) packets.Packet {
					return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, PacketID: id, TopicName: topic, Payload: []byte(payload)}
				}
				add(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1, Filters: packets.Subscriptions{{Filter: "o/#"}, {Filter: "z/#"}}})
				add(pub(2, 1, "o/1", "a"))
				add(pub(0, 0, "o/2", "b"))
				add(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
				add(pub(3, 1, "o/3", big))
				add(pub(4, 2, "o/4", "d"))
				add(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe, Qos: 1}, PacketID: 5, Filters: packets.Subscriptions{{Filter: "z/#"}}})
				add(pub(0, 0, "z/5", "e"))
				add(pub(6, 1, "o/6", "f"))
				written := make(chan struct{}) // then the test may write too
				go func() {
					defer close(written)
					r := rand.New(rand.NewPCG(1, 2))
					for len(stream) > 0 {
						n := len(stream)
						if trickle {
							n = min(n, 1+r.IntN(7))
						}
						if c.WriteBytes(stream[:n]) != nil {
							return
						}
						stream = stream[n:]
					}
				}()

				var got []string
				delivered := map[string]string{}
				for len(got) < 13 {
					pk, err := c.TryRead(10 * time.Second)
					if err != nil {
						t.Fatalf("after %q: %v\n%s", got, err, e.logs)
					}
					switch pk.FixedHeader.Type {
					case packets.Publish:
						delivered[pk.TopicName] = string(pk.Payload)
						got = append(got, "publish "+pk.TopicName)
					case packets.Pubrec:
						<-written
						c.Write(pubrel(pk.PacketID))
						got = append(got, "pubrec")
					default:
						got = append(got, packets.PacketNames[pk.FixedHeader.Type])
					}
				}
				slices.Sort(got)
				name := func(typ byte) string { return packets.PacketNames[typ] }
				want := []string{name(packets.Suback), name(packets.Puback), name(packets.Puback), name(packets.Puback),
					name(packets.Pingresp), "pubrec", name(packets.Pubcomp), name(packets.Unsuback),
					"publish o/1", "publish o/2", "publish o/3", "publish o/4", "publish o/6"}
				slices.Sort(want)
				if !slices.Equal(got, want) {
					t.Fatalf("got %q, want %q", got, want)
				}
				if delivered["o/3"] != big || delivered["o/1"] != "a" || delivered["o/2"] != "b" || delivered["o/4"] != "d" {
					t.Fatalf("delivered the wrong payloads: o/1 %q, o/2 %q, o/4 %q, o/3 %d bytes", delivered["o/1"], delivered["o/2"], delivered["o/4"], len(delivered["o/3"]))
				}
				if pk, err := c.TryRead(100 * time.Millisecond); err == nil {
					t.Fatalf("then got %s %s", packets.PacketNames[pk.FixedHeader.Type], pk.TopicName)
				}

				var msgs []*queue.Message
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				for len(msgs) < 6 {
					more, err := stored.Read(ctx, 10)
					if err != nil {
						t.Fatalf("stored %d, then: %v", len(msgs), err)
					}
					msgs = append(msgs, more...)
					stored.Ack(more[len(more)-1].Seq)
				}
				if n := e.b.readFirst.Load(); n != 4 {
					t.Fatalf("Ralph read %d of the publishes before mochi, want 4 (not the large one, not QoS 2)", n)
				}
				var topics []string
				for _, m := range msgs {
					topics = append(topics, m.Topic)
				}
				if want := []string{"o/1", "o/2", "o/3", "o/4", "z/5", "o/6"}; !slices.Equal(topics, want) {
					t.Fatalf("stored %q, want %q", topics, want)
				}
			})
		}
	}
}

// FuzzInboundHandsOn: what Ralph does not ingest, here everything, as no
// session is established, the read side hands on to mochi byte for byte
// and in order, however the packets are formed or malformed, cut by the
// socket or read by mochi: what is read through it is what was written,
// and then the writer's end of file.
func FuzzInboundHandsOn(f *testing.F) {
	f.Add([]byte{0xc0, 0x00, 0x30, 0x05, 0x00, 0x01, 't', 'h', 'i', 0xe0, 0x00}, uint8(1), uint8(3))
	f.Add([]byte{0x32, 0x80, 0x01}, uint8(2), uint8(0))                          // truncated
	f.Add([]byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x01, 0x00}, uint8(0), uint8(31)) // a fifth length byte
	f.Add(bytes.Repeat([]byte{0x30, 0x7f}, 300), uint8(15), uint8(7))
	f.Fuzz(func(t *testing.T, stream []byte, cut, readSize uint8) {
		client, server := net.Pipe()
		c := newCorkConn(server)
		defer c.Close()
		go func() {
			defer client.Close()
			for b := stream; len(b) > 0; {
				n := min(len(b), int(cut%16)+1)
				if _, err := client.Write(b[:n]); err != nil {
					return
				}
				b = b[n:]
			}
		}()
		var got []byte
		p := make([]byte, int(readSize%32)+1)
		for {
			n, err := c.Read(p)
			got = append(got, p[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("after %d of %d bytes: %v", len(got), len(stream), err)
			}
		}
		if !bytes.Equal(got, stream) {
			t.Fatalf("read %x, want %x", got, stream)
		}
	})
}

// TestInboundKeepAlive: a client with a keep alive of 1 s that publishes
// every 200 ms (publishes mochi never reads) stays connected for 3 s,
// three times the 1 s within which mochi wants a packet (it rounds one and
// a half keep alives down to whole seconds); once it falls silent it is
// disconnected, no sooner than that.
func TestInboundKeepAlive(t *testing.T) {
	e := start(t)
	c := mqtttest.New(t, e.addr, 4)
	c.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Keepalive: 1, ClientIdentifier: "brief", Clean: true}})
	if pk := c.Read(5 * time.Second); pk.FixedHeader.Type != packets.Connack || pk.ReasonCode != 0 {
		t.Fatalf("connack %+v", pk)
	}
	var last time.Time
	for i := range 15 {
		last = time.Now()
		if err := c.TryWrite(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: uint16(i + 1), TopicName: "ka", Payload: []byte("x")}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		if pk, err := c.TryRead(5 * time.Second); err != nil || pk.FixedHeader.Type != packets.Puback || pk.PacketID != uint16(i+1) {
			t.Fatalf("publish %d: got type %d id %d, %v; want its PUBACK", i, pk.FixedHeader.Type, pk.PacketID, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := c.TryRead(10 * time.Second); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("silent: got %v, want the connection closed", err)
	}
	if waited := time.Since(last); waited < time.Second {
		t.Fatalf("disconnected %v after the last publish, before 1 s was up", waited)
	}
}

// TestInboundRefusals: a publish that Ralph's first pass would take but
// that mochi refuses (a wildcard in its topic, a subscription identifier)
// is handed to mochi, which refuses it at QoS 1 as at QoS 2 (which Ralph
// never takes): MQTT 5 gets a DISCONNECT saying why, and it is not
// stored. A publish to $SYS is dropped by mochi, unstored even where the
// ACL allows it, and the client stays connected.
func TestInboundRefusals(t *testing.T) {
	refused := []struct {
		name string
		pk   packets.Packet
		code packets.Code
	}{
		{"wildcard", packets.Packet{TopicName: "a/+"}, packets.ErrProtocolViolationSurplusWildcard},
		{"subscription identifier", packets.Packet{TopicName: "a/b", Properties: packets.Properties{SubscriptionIdentifier: []int{7}}},
			packets.ErrProtocolViolationSurplusSubID},
	}
	for _, r := range refused {
		for _, qos := range []byte{1, 2} {
			t.Run(fmt.Sprintf("%s/qos%d", r.name, qos), func(t *testing.T) {
				e := start(t, func(o *Options) { o.Anonymous.Publish = []string{"#", "$SYS/#"} })
				c := mqtttest.Dial(t, e.addr, "wild", 5)
				c.Publish(0, 0, "$SYS/x", []byte("x"))
				c.Publish(1, 1, "a/b", []byte("stored")) // acknowledged once it, and all before it, is stored
				if pk := c.Read(5 * time.Second); pk.FixedHeader.Type != packets.Puback {
					t.Fatalf("after a publish to $SYS: got type %d, want PUBACK", pk.FixedHeader.Type)
				}
				pk := r.pk
				pk.FixedHeader = packets.FixedHeader{Type: packets.Publish, Qos: qos}
				pk.PacketID, pk.Payload = 2, []byte("x")
				c.Write(pk)
				expectDisconnect(t, c, r.code.Code)
				if n := e.q.Stats().Appended; n != 1 {
					t.Fatalf("stored %d messages, want 1 (not $SYS/x)", n)
				}
			})
		}
	}
}

// TestInboundTopicAliases: an MQTT 5 publisher that sets a topic alias
// and then publishes by the alias alone, at QoS 1 and 0, is delivered and
// stored under the topic, each time.
func TestInboundTopicAliases(t *testing.T) {
	e := start(t)
	stored, err := e.q.Consumer("check", queue.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sub := mqtttest.Dial(t, e.addr, "sub", 5)
	sub.Subscribe("al/#", 0)
	pub := mqtttest.Dial(t, e.addr, "pub", 5)
	alias := func(id uint16, qos byte, topic, payload string) packets.Packet {
		return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, PacketID: id, TopicName: topic,
			Payload: []byte(payload), Properties: packets.Properties{TopicAlias: 1, TopicAliasFlag: true}}
	}
	pub.Write(alias(1, 1, "al/x", "set"))
	pub.Write(alias(2, 1, "", "by alias"))
	pub.Write(alias(0, 0, "", "by alias at QoS 0"))
	got := map[string]string{}
	for range 3 {
		pk := sub.Read(5 * time.Second)
		got[string(pk.Payload)] = pk.TopicName
	}
	if want := map[string]string{"set": "al/x", "by alias": "al/x", "by alias at QoS 0": "al/x"}; !maps.Equal(got, want) {
		t.Fatalf("delivered %q, want %q", got, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var topics []string
	for len(topics) < 3 {
		msgs, err := stored.Read(ctx, 10)
		if err != nil {
			t.Fatalf("stored %q, then: %v", topics, err)
		}
		for _, m := range msgs {
			topics = append(topics, m.Topic)
		}
		stored.Ack(msgs[len(msgs)-1].Seq)
	}
	if want := []string{"al/x", "al/x", "al/x"}; !slices.Equal(topics, want) {
		t.Fatalf("stored %q, want %q", topics, want)
	}
	if n := e.b.readFirst.Load(); n != 3 {
		t.Fatalf("Ralph read %d of the publishes before mochi, want 3", n)
	}
}

// TestUnknownTopicAlias: a publish by a topic alias the client never set
// has no topic. It is refused, not stored: MQTT 5 QoS 1 gets PUBACK 0x90
// (topic name invalid) and stays connected; at QoS 0, which has no answer,
// the client is disconnected, as for any topic Ralph refuses.
func TestUnknownTopicAlias(t *testing.T) {
	for _, qos := range []byte{1, 2, 0} {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			e := start(t)
			c := mqtttest.Dial(t, e.addr, "forgetful", 5)
			c.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, PacketID: uint16(qos), Payload: []byte("x"),
				Properties: packets.Properties{TopicAlias: 5, TopicAliasFlag: true}})
			if qos == 0 {
				expectDisconnect(t, c, packets.ErrTopicNameInvalid.Code)
			} else {
				pk := c.Read(5 * time.Second)
				if pk.FixedHeader.Type != map[byte]byte{1: packets.Puback, 2: packets.Pubrec}[qos] || pk.ReasonCode != packets.ErrTopicNameInvalid.Code {
					t.Fatalf("got type %d reason %#x, want the ack with %#x", pk.FixedHeader.Type, pk.ReasonCode, packets.ErrTopicNameInvalid.Code)
				}
			}
			if n := e.q.Stats().Appended; n != 0 {
				t.Fatalf("stored %d messages, want none", n)
			}
		})
	}
}
