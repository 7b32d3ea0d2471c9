package localbroker

import (
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/internal/mqtttest"
)

func pubrel(id uint16) packets.Packet {
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: id}
}

// expectDisconnect reads the next packet: a DISCONNECT with code.
func expectDisconnect(t *testing.T, c *mqtttest.Raw, code byte) {
	t.Helper()
	pk, err := c.TryRead(5 * time.Second)
	if err != nil || pk.FixedHeader.Type != packets.Disconnect || pk.ReasonCode != code {
		t.Fatalf("got type %d reason %#x (err %v); want DISCONNECT %#x", pk.FixedHeader.Type, pk.ReasonCode, err, code)
	}
}

// TestQoS2CountsUntilPubrel: a QoS 2 publish counts against Ralph's
// receive maximum from the moment it is read until its PUBREL, as the
// spec has it (test_flow_control2 of the interoperability suite: 257 QoS
// 2 publishes without PUBREL against the default 256). Before, it counted
// only until it was stored, and mochi's own count started after that: the
// 257th was stored and delivered, and with the client's PUBRELs right
// behind it, not refused at all.
func TestQoS2CountsUntilPubrel(t *testing.T) {
	e := start(t)
	sub := mqtttest.Dial(t, e.addr, "sub", 5)
	sub.Subscribe("t/#", 0)
	pub := mqtttest.Dial(t, e.addr, "pub", 5)
	const max = 256 // the default
	for i := 1; i <= max; i++ {
		pub.Publish(uint16(i), 2, "t/x", []byte(fmt.Sprint(i)))
		expectAck(t, pub, packets.Pubrec, uint16(i), 0, 2)
	}
	// One more, then the PUBRELs of all the others: the 257th is over
	// the limit when it is read.
	burst, err := pub.Encode(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2}, PacketID: max + 1, TopicName: "t/x", Payload: []byte("over")})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= max; i++ {
		b, _ := pub.Encode(pubrel(uint16(i)))
		burst = append(burst, b...)
	}
	pub.WriteBytes(burst)
	expectDisconnect(t, pub, packets.ErrReceiveMaximum.Code)
	for i := 1; i <= max; i++ {
		if pk := sub.Read(5 * time.Second); string(pk.Payload) != fmt.Sprint(i) {
			t.Fatalf("delivery %d: %q", i, pk.Payload)
		}
	}
	if pk, err := sub.TryRead(300 * time.Millisecond); err == nil {
		t.Fatalf("subscriber got %q: the publish over the limit was delivered", pk.Payload)
	}
	if s, qs := e.b.Stats(), e.q.Stats(); s.OverReceiveMx != 1 || s.Orphaned != 0 || qs.Appended != max {
		t.Fatalf("OverReceiveMx %d, Orphaned %d, stored %d; want 1, 0, %d", s.OverReceiveMx, s.Orphaned, qs.Appended, max)
	}
}

// TestQoS2CountReleased: with a receive maximum of 2, a PUBREL frees its
// publish's place, and a QoS 2 publish the ACL refuses (PUBREC 0x87, the
// end of its flow) takes none.
func TestQoS2CountReleased(t *testing.T) {
	e := start(t, func(o *Options) {
		o.ReceiveMaximum = 2
		o.Anonymous.Publish = []string{"ok/#"}
	})
	pub := mqtttest.Dial(t, e.addr, "pub", 5)
	for id := uint16(1); id <= 3; id++ {
		pub.Publish(id, 2, "denied", []byte("x"))
		expectAck(t, pub, packets.Pubrec, id, packets.ErrNotAuthorized.Code, 3)
	}
	pub.Publish(4, 2, "ok/4", []byte("x"))
	expectAck(t, pub, packets.Pubrec, 4, 0, 2)
	pub.Publish(5, 2, "ok/5", []byte("x"))
	expectAck(t, pub, packets.Pubrec, 5, 0, 2)
	pub.Write(pubrel(4))
	expectAck(t, pub, packets.Pubcomp, 4, 0, 2)
	pub.Publish(6, 2, "ok/6", []byte("x")) // 5 and 6 unreleased: at the limit
	expectAck(t, pub, packets.Pubrec, 6, 0, 2)
	pub.Publish(7, 2, "ok/7", []byte("x"))
	expectDisconnect(t, pub, packets.ErrReceiveMaximum.Code)
	if s := e.b.Stats(); s.OverReceiveMx != 1 {
		t.Fatalf("OverReceiveMx %d, want 1", s.OverReceiveMx)
	}
}

// TestDisconnectLingers: after the broker's DISCONNECT (here 0x93), what
// the client still sends (PUBRELs for the PUBRECs before it, say, as the
// interoperability suite's client does) is read and dropped rather than
// answered with a reset, which made the client's writes fail and could
// lose the DISCONNECT unread; the client reads the end of the stream.
func TestDisconnectLingers(t *testing.T) {
	e := start(t, func(o *Options) { o.ReceiveMaximum = 1 })
	pub := mqtttest.Dial(t, e.addr, "pub", 5)
	pub.Publish(1, 2, "t", []byte("x"))
	expectAck(t, pub, packets.Pubrec, 1, 0, 2)
	pub.Publish(2, 2, "t", []byte("x"))
	expectDisconnect(t, pub, packets.ErrReceiveMaximum.Code)
	if _, err := pub.TryRead(5 * time.Second); err != io.EOF {
		t.Fatalf("after the DISCONNECT: %v, want EOF", err)
	}
	for i := range 200 {
		if err := pub.TryWrite(pubrel(1)); err != nil {
			t.Fatalf("write %d after the broker's DISCONNECT: %v", i+1, err)
		}
	}
}
