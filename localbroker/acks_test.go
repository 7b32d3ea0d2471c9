package localbroker

import (
	"slices"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/internal/mqtttest"
)

var someUserProps = []packets.UserProperty{{Key: "a", Val: "2"}, {Key: "c", Val: "3"}}

// expectAck reads the next packet and checks its type, packet id, reason
// code and remaining length: 2 is a bare MQTT 5 ack (id only), as sent
// for success without properties; 3 adds a reason code.
func expectAck(t *testing.T, c *mqtttest.Raw, typ byte, id uint16, code byte, remaining int) packets.Packet {
	t.Helper()
	pk := c.Read(5 * time.Second)
	if pk.FixedHeader.Type != typ || pk.PacketID != id || pk.ReasonCode != code || pk.FixedHeader.Remaining != remaining {
		t.Fatalf("got type %d id %d reason %#x remaining length %d (user properties %v); want type %d id %d reason %#x remaining length %d",
			pk.FixedHeader.Type, pk.PacketID, pk.ReasonCode, pk.FixedHeader.Remaining, pk.Properties.User, typ, id, code, remaining)
	}
	return pk
}

// TestAcksCarryNoEchoedProperties: PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK
// and UNSUBACK do not repeat the user properties of the packet they
// answer (mochi copies them; the Eclipse interoperability client rejects
// such a PUBACK, "wrong length 18"); a refusal still carries its reason
// code, and the messages themselves keep their user properties.
func TestAcksCarryNoEchoedProperties(t *testing.T) {
	e := start(t, func(o *Options) { o.Anonymous.Publish = []string{"props/#"} })
	sub := mqtttest.Dial(t, e.addr, "sub", 5)
	sub.Write(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters:    packets.Subscriptions{{Filter: "props/#", Qos: 2}},
		Properties: packets.Properties{User: someUserProps},
	})
	// SUBACK: id, an empty property length, one reason code.
	if pk := expectAck(t, sub, packets.Suback, 1, 0, 4); !slices.Equal(pk.ReasonCodes, []byte{2}) {
		t.Fatalf("SUBACK codes %v, want [2]", pk.ReasonCodes)
	}

	pub := mqtttest.Dial(t, e.addr, "pub", 5)
	publish := func(id uint16, qos byte, topic string) {
		pub.Write(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, PacketID: id,
			TopicName: topic, Payload: []byte("x"), Properties: packets.Properties{User: someUserProps},
		})
	}
	publish(1, 1, "props/q1")
	expectAck(t, pub, packets.Puback, 1, 0, 2)
	publish(2, 2, "props/q2")
	expectAck(t, pub, packets.Pubrec, 2, 0, 2)
	pub.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: 2, Properties: packets.Properties{User: someUserProps}})
	expectAck(t, pub, packets.Pubcomp, 2, 0, 2)
	// Refused by the ACL: the reason code is the answer (no properties).
	publish(3, 1, "elsewhere")
	expectAck(t, pub, packets.Puback, 3, packets.ErrNotAuthorized.Code, 3)

	// The deliveries keep the publisher's user properties; the server's
	// PUBREL to the subscriber's PUBREC is bare too.
	for _, qos := range []byte{1, 2} {
		pk := sub.Read(5 * time.Second)
		if pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Qos != qos || !slices.Equal(pk.Properties.User, someUserProps) {
			t.Fatalf("delivery: type %d qos %d user properties %v; want a QoS %d PUBLISH with %v", pk.FixedHeader.Type, pk.FixedHeader.Qos, pk.Properties.User, qos, someUserProps)
		}
		if qos == 1 {
			sub.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
			continue
		}
		sub.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: pk.PacketID, Properties: packets.Properties{User: someUserProps}})
		expectAck(t, sub, packets.Pubrel, pk.PacketID, 0, 2)
		sub.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubcomp}, PacketID: pk.PacketID})
	}

	sub.Write(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe, Qos: 1}, PacketID: 9,
		Filters:    packets.Subscriptions{{Filter: "props/#"}},
		Properties: packets.Properties{User: someUserProps},
	})
	expectAck(t, sub, packets.Unsuback, 9, 0, 4)
}
