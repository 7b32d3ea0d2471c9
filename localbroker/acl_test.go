package localbroker

import (
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/crypto/bcrypt"

	"github.com/ralph-gateway/ralph/internal/mqtttest"
)

// readTopics reads PUBLISH packets (acking QoS 1) until none comes for a
// moment, and returns their topics in order.
func readTopics(t *testing.T, c *mqtttest.Raw) []string {
	t.Helper()
	var got []string
	for {
		pk, err := c.TryRead(300 * time.Millisecond)
		if err != nil {
			return got
		}
		if pk.FixedHeader.Type != packets.Publish {
			t.Fatalf("got packet type %d, want PUBLISH", pk.FixedHeader.Type)
		}
		got = append(got, pk.TopicName)
		if pk.FixedHeader.Qos == 1 {
			c.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
		}
	}
}

// TestACLDenyPublish: publish_deny filters, with %u and %c, refuse a
// publish the allow list covers; what they do not match goes through.
func TestACLDenyPublish(t *testing.T) {
	for _, ver := range versions {
		t.Run(ver.name, func(t *testing.T) {
			hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
			e := start(t, func(o *Options) {
				o.Users = []User{{Name: "dev", PasswordHash: hash, ACL: ACL{
					Publish:     []string{"#"},
					Subscribe:   []string{"#"},
					PublishDeny: []string{"secret/#", "home/%u/private", "by/%c"},
				}}}
			})
			watcher := mqtttest.Dial(t, e.addr, "watcher", 5)
			watcher.Subscribe("#", 1)
			dev, pk := mqtttest.Login(t, e.addr, "c1", ver.v, "dev", "pw")
			if pk.ReasonCode != 0 {
				t.Fatalf("login: %#x", pk.ReasonCode)
			}
			var allowed []string
			denied := 0
			for i, tc := range []struct {
				topic string
				ok    bool
			}{
				{"sensors/x", true},
				{"secret/a", false},
				{"secret", false}, // secret/# covers its parent level
				{"home/dev/private", false},
				{"home/other/private", true},
				{"by/c1", false},
				{"by/c2", true},
			} {
				id := uint16(i + 1)
				dev.Publish(id, 1, tc.topic, []byte("x"))
				// MQTT 3.1.1 has no refusal: acknowledged and dropped.
				code := byte(0)
				if !tc.ok && ver.v == 5 {
					code = packets.ErrNotAuthorized.Code
				}
				ack := dev.Read(5 * time.Second)
				if ack.FixedHeader.Type != packets.Puback || ack.PacketID != id || ack.ReasonCode != code {
					t.Fatalf("publish %s: type %d id %d reason %#x, want PUBACK %d %#x", tc.topic, ack.FixedHeader.Type, ack.PacketID, ack.ReasonCode, id, code)
				}
				if tc.ok {
					allowed = append(allowed, tc.topic)
				} else {
					denied++
				}
			}
			if got := readTopics(t, watcher); strings.Join(got, " ") != strings.Join(allowed, " ") {
				t.Fatalf("delivered %v, want %v", got, allowed)
			}
			if s, qs := e.b.Stats(), e.q.Stats(); s.Denied != uint64(denied) || qs.Appended != uint64(len(allowed)) {
				t.Fatalf("denied %d, stored %d; want %d, %d", s.Denied, qs.Appended, denied, len(allowed))
			}
		})
	}
}

// TestACLDenySubscribe: a subscription a subscribe_deny filter covers is
// refused with 0x80 (MQTT 5 too), though the allow list covers it; a wider
// one ("#") is granted, and brings nothing a deny filter matches, retained
// messages included.
func TestACLDenySubscribe(t *testing.T) {
	for _, ver := range versions {
		t.Run(ver.name, func(t *testing.T) {
			e := start(t, func(o *Options) {
				o.Anonymous.SubscribeDeny = []string{"test/nosubscribe", "secret/#", "own/%c/#"}
			})
			pub := mqtttest.Dial(t, e.addr, "pub", 5)
			publish := func(topic string, retain bool) {
				pub.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: retain}, PacketID: 1, TopicName: topic, Payload: []byte("x")})
				if ack := pub.Read(5 * time.Second); ack.FixedHeader.Type != packets.Puback || ack.ReasonCode != 0 {
					t.Fatalf("publish %s: type %d reason %#x", topic, ack.FixedHeader.Type, ack.ReasonCode)
				}
			}
			publish("secret/kept", true)
			publish("public/kept", true)

			sub := mqtttest.Dial(t, e.addr, "me", ver.v)
			for i, tc := range []struct {
				filter string
				ok     bool
			}{
				{"test/nosubscribe", false},
				{"secret/#", false},
				{"secret/+", false},
				{"own/me/x", false},
				{"own/other/x", true},
				{"#", true},
			} {
				id := uint16(i + 1)
				sub.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: id,
					Filters: packets.Subscriptions{{Filter: tc.filter, Qos: 1}}})
				want := byte(1)
				if !tc.ok {
					want = packets.ErrUnspecifiedError.Code
				}
				sa := sub.Read(5 * time.Second)
				if sa.FixedHeader.Type != packets.Suback || sa.PacketID != id || len(sa.ReasonCodes) != 1 || sa.ReasonCodes[0] != want {
					t.Fatalf("subscribe %s: type %d id %d codes %v, want SUBACK %d [%#x]", tc.filter, sa.FixedHeader.Type, sa.PacketID, sa.ReasonCodes, id, want)
				}
				if tc.filter == "#" {
					// The retained messages "#" brings: only the allowed one.
					if pk := sub.Read(5 * time.Second); pk.TopicName != "public/kept" {
						t.Fatalf("retained message on %q delivered", pk.TopicName)
					}
				}
			}
			readTopics(t, sub)
			for _, topic := range []string{"test/nosubscribe", "secret/a", "own/me/x", "public/x", "own/other/x"} {
				publish(topic, false)
			}
			// own/other/x matches two of its subscriptions: one delivery.
			want := "public/x own/other/x"
			if got := strings.Join(readTopics(t, sub), " "); got != want {
				t.Fatalf("delivered %q, want %q", got, want)
			}
		})
	}
}

// TestRefusedSubscriptionCode: a subscription the ACL refuses gets 0x80
// on MQTT 5 over the network (as on 3.1.1, and as the interoperability
// suite expects), but 0x87 (not authorized) in process, where a serial
// port tells its board "denied" by it.
func TestRefusedSubscriptionCode(t *testing.T) {
	e := start(t, func(o *Options) { o.Anonymous.SubscribeDeny = []string{"no/#"} })
	subscribe := func(c *mqtttest.Raw) byte {
		c.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
			Filters: packets.Subscriptions{{Filter: "no/x", Qos: 1}, {Filter: "yes", Qos: 1}}})
		sa := c.Read(5 * time.Second)
		if sa.FixedHeader.Type != packets.Suback || len(sa.ReasonCodes) != 2 || sa.ReasonCodes[1] != 1 {
			t.Fatalf("got type %d codes %v", sa.FixedHeader.Type, sa.ReasonCodes)
		}
		return sa.ReasonCodes[0]
	}
	if got := subscribe(mqtttest.Dial(t, e.addr, "net", 5)); got != packets.ErrUnspecifiedError.Code {
		t.Errorf("over TCP: %#x, want 0x80", got)
	}
	in := mqtttest.Wrap(t, e.b.Dial(), 5)
	in.Write(packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 5,
		Connect:         packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: "serial-x"},
	})
	if pk := in.Read(5 * time.Second); pk.FixedHeader.Type != packets.Connack || pk.ReasonCode != 0 {
		t.Fatalf("in-process connect: type %d reason %#x", pk.FixedHeader.Type, pk.ReasonCode)
	}
	if got := subscribe(in); got != packets.ErrNotAuthorized.Code {
		t.Errorf("in process: %#x, want 0x87", got)
	}
}
