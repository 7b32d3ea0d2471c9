package localbroker

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/internal/mqtttest"
	"github.com/ralph-gateway/ralph/internal/testlog"
	"github.com/ralph-gateway/ralph/queue"
)

// connectRM connects an MQTT 5 client with a Receive Maximum (and topic
// aliases allowed, which Ralph must then not use), with a persistent
// session unless clean.
func connectRM(t *testing.T, addr, id string, rm uint16, clean bool) (*mqtttest.Raw, packets.Packet) {
	t.Helper()
	c := mqtttest.New(t, addr, 5)
	props := packets.Properties{ReceiveMaximum: rm, TopicAliasMaximum: 10}
	if !clean {
		props.SessionExpiryInterval, props.SessionExpiryIntervalFlag = 3600, true
	}
	c.Write(packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 5,
		Connect:         packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: clean, Keepalive: 60, ClientIdentifier: id},
		Properties:      props,
	})
	ack := c.Read(5 * time.Second)
	if ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
		t.Fatalf("connect %s: type %d reason %#x", id, ack.FixedHeader.Type, ack.ReasonCode)
	}
	return c, ack
}

// held is how many messages the flow control holds for client id.
func (e *env) held(id string) int {
	s := e.b.flow.lookup(id)
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.held)
}

// waitHeld polls until n messages are held for client id: then every
// delivery to it has been through the flow control. If that does not
// happen, the test goes on to show what the client gets.
func (e *env) waitHeld(t *testing.T, id string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for e.held(id) != n {
		if time.Now().After(deadline) {
			t.Errorf("%d messages held for %s, want %d", e.held(id), id, n)
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// publishN publishes payloads prefix0 .. prefix<n-1> at QoS 1 and waits
// for their acks: then they are all stored and delivered.
func publishN(t *testing.T, pub *mqtttest.Raw, topic, prefix string, from, n int) []string {
	t.Helper()
	var want []string
	for i := from; i < from+n; i++ {
		want = append(want, fmt.Sprintf("%s%d", prefix, i))
	}
	if acked, err := pub.PublishAll(topic, 1, want, 16); err != nil || len(acked) != n {
		t.Fatalf("publish: %d acked, %v", len(acked), err)
	}
	return want
}

// receiver reads a flow-controlled client's deliveries in rounds: a PING
// after what it sent, and what came before the PINGRESP. Acks (and pings)
// are processed in order on the client's connection, and a freed place is
// filled before the next packet is read, so what a round shows is all
// the broker wrote by then.
type receiver struct {
	t       *testing.T
	c       *mqtttest.Raw
	max     int
	got     []string
	unacked []packets.Packet
	dups    int
	comps   int // PUBCOMPs sent in the last round: they free places too
}

func (r *receiver) round() []packets.Packet {
	r.t.Helper()
	r.c.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
	var out []packets.Packet
	r.comps = 0
	for {
		pk := r.c.Read(5 * time.Second)
		switch pk.FixedHeader.Type {
		case packets.Pingresp:
			return out
		case packets.Pubrel:
			r.c.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubcomp}, PacketID: pk.PacketID})
			r.comps++
			continue
		case packets.Publish:
		default:
			r.t.Fatalf("got packet type %d", pk.FixedHeader.Type)
		}
		if pk.FixedHeader.Dup {
			r.dups++
			if !slices.ContainsFunc(r.unacked, func(u packets.Packet) bool {
				return u.PacketID == pk.PacketID && string(u.Payload) == string(pk.Payload)
			}) {
				r.t.Fatalf("resent %q as packet %d, which was not in flight", pk.Payload, pk.PacketID)
			}
			out = append(out, pk)
			continue
		}
		r.unacked = append(r.unacked, pk)
		if len(r.unacked) > r.max {
			r.t.Fatalf("%d unacknowledged deliveries (%s, then %q), receive maximum %d", len(r.unacked), strings.Join(r.got, ","), pk.Payload, r.max)
		}
		if pk.TopicName == "" || pk.Properties.TopicAlias != 0 {
			r.t.Fatalf("delivery %q with topic %q and alias %d: no aliases for a flow-controlled client", pk.Payload, pk.TopicName, pk.Properties.TopicAlias)
		}
		r.got = append(r.got, string(pk.Payload))
		out = append(out, pk)
	}
}

// ackAll acknowledges every delivery in flight.
func (r *receiver) ackAll() {
	for _, pk := range r.unacked {
		if pk.FixedHeader.Qos == 2 {
			r.c.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: pk.PacketID})
		} else {
			r.c.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
		}
	}
	r.unacked = nil
}

// drain acks and reads until n deliveries came, checking the limit all
// along.
func (r *receiver) drain(n int) {
	r.t.Helper()
	for len(r.got) < n {
		comps := r.comps
		r.ackAll()
		if len(r.round()) == 0 && len(r.unacked) == 0 && comps == 0 && r.comps == 0 {
			r.t.Fatalf("stuck after %d of %d deliveries: %v", len(r.got), n, r.got)
		}
	}
}

// TestReceiveMaximumHonoured: a client with Receive Maximum 2 gets two
// unacknowledged messages and no third; each acknowledgement (PUBACK, or
// PUBCOMP at QoS 2) lets one more out, and all come, in order, none twice.
// Before, all twenty were sent at once (test_flow_control1).
func TestReceiveMaximumHonoured(t *testing.T) {
	for _, qos := range []byte{1, 2} {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			e := start(t)
			c, _ := connectRM(t, e.addr, "small", 2, true)
			c.Subscribe("rm/#", qos)
			pub := mqtttest.Dial(t, e.addr, "pub", 5)
			var want []string
			for i := range 20 {
				want = append(want, fmt.Sprint(i))
			}
			for i, p := range want {
				pub.Publish(uint16(i+1), 2, "rm/x", []byte(p))
				expectAck(t, pub, packets.Pubrec, uint16(i+1), 0, 2)
				pub.Write(pubrel(uint16(i + 1)))
				expectAck(t, pub, packets.Pubcomp, uint16(i+1), 0, 2)
			}
			e.waitHeld(t, "small", 18)
			r := &receiver{t: t, c: c, max: 2}
			if got := r.round(); len(got) != 2 {
				t.Fatalf("first round: %d deliveries, want 2", len(got))
			}
			// A QoS 2 delivery's PUBREC does not free its place; its PUBCOMP
			// does.
			if qos == 2 {
				r.c.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: r.unacked[0].PacketID})
				if pk := c.Read(5 * time.Second); pk.FixedHeader.Type != packets.Pubrel {
					t.Fatalf("got type %d, want PUBREL", pk.FixedHeader.Type)
				}
				if got := r.round(); len(got) != 0 {
					t.Fatalf("after a PUBREC: %d more deliveries, want none", len(got))
				}
				r.c.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubcomp}, PacketID: r.unacked[0].PacketID})
				r.unacked = r.unacked[1:]
				if got := r.round(); len(got) != 1 {
					t.Fatalf("after a PUBCOMP: %d more deliveries, want 1", len(got))
				}
			}
			r.drain(len(want))
			if !slices.Equal(r.got, want) {
				t.Fatalf("got %v, want %v", r.got, want)
			}
			r.ackAll()
			if got := r.round(); len(got) != 0 || e.held("small") != 0 {
				t.Fatalf("%d more deliveries, %d held; want none", len(got), e.held("small"))
			}
		})
	}
}

// TestReceiveMaximumAcrossReconnect: a persistent session keeps what it
// held back, and what came while its client was away; on reconnect mochi
// resends what was on the wire (DUP, same packet ids) and the rest follows
// under the new connection's Receive Maximum, in order, none lost.
func TestReceiveMaximumAcrossReconnect(t *testing.T) {
	e := start(t)
	c, _ := connectRM(t, e.addr, "sleepy", 2, false)
	c.Subscribe("rm/#", 1)
	pub := mqtttest.Dial(t, e.addr, "pub", 5)
	want := publishN(t, pub, "rm/x", "m", 0, 10)
	e.waitHeld(t, "sleepy", 8)
	r := &receiver{t: t, c: c, max: 2}
	r.round() // two, unacknowledged
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for e.b.ClientCount() != 1 { // the publisher
		if time.Now().After(deadline) {
			t.Fatal("the subscriber is still connected")
		}
		time.Sleep(2 * time.Millisecond)
	}
	want = append(want, publishN(t, pub, "rm/x", "m", 10, 5)...)
	e.waitHeld(t, "sleepy", 13)

	c, ack := connectRM(t, e.addr, "sleepy", 2, false)
	if !ack.SessionPresent {
		t.Fatal("session not present")
	}
	r.c = c
	if got := r.round(); len(got) != 2 || r.dups != 2 {
		t.Fatalf("after reconnecting: %d deliveries (%d resent), want the 2 in flight resent", len(got), r.dups)
	}
	r.drain(len(want))
	if !slices.Equal(r.got, want) {
		t.Fatalf("got %v, want %v", r.got, want)
	}
}

// TestReceiveMaximumAcrossRestart: held messages are stored with the
// session; after Ralph restarts, the client gets them, in order, still
// within its Receive Maximum.
func TestReceiveMaximumAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	open := func() *env {
		logs := new(testlog.Buffer)
		log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
		q, err := queue.Open(queue.Options{Dir: dir, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		b, err := New(Options{Listen: []string{"127.0.0.1:0"}, Queue: q, Logger: log, Anonymous: ACL{Publish: []string{"#"}, Subscribe: []string{"#"}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Serve(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close(); q.Close() })
		return &env{q: q, b: b, addr: b.Addrs()[0], logs: logs}
	}
	e := open()
	c, _ := connectRM(t, e.addr, "sleepy", 2, false)
	c.Subscribe("rm/#", 1)
	pub := mqtttest.Dial(t, e.addr, "pub", 5)
	want := publishN(t, pub, "rm/x", "m", 0, 10)
	e.waitHeld(t, "sleepy", 8)
	r := &receiver{t: t, c: c, max: 2}
	r.round()
	e.b.Close()
	e.q.Close()

	e = open()
	if n := e.held("sleepy"); n != 8 {
		t.Fatalf("%d messages held after the restart, want 8", n)
	}
	c, _ = connectRM(t, e.addr, "sleepy", 2, false)
	r.c = c
	if got := r.round(); len(got) != 2 || r.dups != 2 {
		t.Fatalf("after the restart: %d deliveries (%d resent), want the 2 in flight resent", len(got), r.dups)
	}
	r.drain(len(want))
	if !slices.Equal(r.got, want) {
		t.Fatalf("got %v, want %v", r.got, want)
	}
}

// TestReceiveMaximumStuckClient: a client that never acknowledges gets
// its Receive Maximum and no more, and holds up nobody: another
// subscriber gets every message, in order, and the publisher every ack.
func TestReceiveMaximumStuckClient(t *testing.T) {
	e := start(t)
	stuck, _ := connectRM(t, e.addr, "stuck", 1, true)
	stuck.Subscribe("rm/#", 1)
	other := mqtttest.Dial(t, e.addr, "other", 5)
	other.Subscribe("rm/#", 1)
	pub := mqtttest.Dial(t, e.addr, "pub", 5)
	want := publishN(t, pub, "rm/x", "m", 0, 200)
	var got []string
	for len(got) < len(want) {
		pk := other.Read(5 * time.Second)
		got = append(got, string(pk.Payload))
		other.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
	}
	if !slices.Equal(got, want) {
		t.Fatalf("other subscriber got %v", got)
	}
	e.waitHeld(t, "stuck", 199)
	r := &receiver{t: t, c: stuck, max: 1}
	if got := r.round(); len(got) != 1 || string(got[0].Payload) != "m0" {
		t.Fatalf("the stuck client got %d deliveries, want m0 alone", len(got))
	}
}

// TestReceiveMaximumOwnPublishes is the interoperability suite's
// test_flow_control1: a client with Receive Maximum 2 subscribes and
// publishes three QoS 1 messages itself, then only reads: it gets its
// three PUBACKs and two PUBLISH packets, no third until it acknowledges
// one, then the third. The second delivery must go out without the
// client writing anything: mochi used to keep it in its write buffer
// behind the third, held back, until the client's next packet.
func TestReceiveMaximumOwnPublishes(t *testing.T) {
	e := start(t)
	c, _ := connectRM(t, e.addr, "self", 2, true)
	c.Subscribe("rm/#", 2)
	for id := uint16(2); id <= 4; id++ {
		c.Publish(id, 1, "rm/x", []byte(fmt.Sprint("message ", id-1)))
	}
	r := &receiver{t: t, c: c, max: 2}
	acks := 0
	for acks < 3 || len(r.unacked) < 2 {
		pk, err := c.TryRead(5 * time.Second)
		switch {
		case err != nil:
			t.Fatalf("after %d PUBACKs and deliveries %v: %v", acks, r.got, err)
		case pk.FixedHeader.Type == packets.Puback:
			acks++
		case pk.FixedHeader.Type == packets.Publish && len(r.unacked) < 2:
			r.unacked = append(r.unacked, pk)
			r.got = append(r.got, string(pk.Payload))
		default:
			t.Fatalf("got type %d %q after %d PUBACKs and deliveries %v", pk.FixedHeader.Type, pk.Payload, acks, r.got)
		}
	}
	e.waitHeld(t, "self", 1)
	if got := r.round(); len(got) != 0 {
		t.Fatalf("a third delivery before any acknowledgement: %q", got[0].Payload)
	}
	c.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: r.unacked[0].PacketID})
	r.unacked = r.unacked[1:]
	if got := r.round(); len(got) != 1 {
		t.Fatalf("after one acknowledgement: %d deliveries, want 1", len(got))
	}
	if want := []string{"message 1", "message 2", "message 3"}; !slices.Equal(r.got, want) {
		t.Fatalf("got %q, want %q", r.got, want)
	}
}
