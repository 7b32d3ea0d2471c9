package localbroker

// The release loop, where what the queue has made durable is acknowledged
// and delivered, in commit order, on one goroutine; and the other answers
// to a publish that Ralph writes instead of mochi: refusals and denials.

import (
	"errors"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/queue"
)

// release is a QoS 1 or 2 publish handed to the queue, then to the
// release loop; one allocation carries it through.
type release struct {
	cl  *mqtt.Client
	pk  packets.Packet
	msg [1]*queue.Message // what is appended
	err error
}

// releaseLoop acknowledges and delivers stored messages in commit order.
// Each client's acks for what is released together go out in one write,
// once the in-flight records of the deliveries are written.
func (b *Broker) releaseLoop() {
	defer close(b.released)
	var batch []*release
	corked := make(map[*corkConn]struct{})
	for r := range b.release {
		batch = append(batch[:0], r)
	more:
		for len(batch) < 1024 {
			select {
			case r, ok := <-b.release:
				if !ok {
					break more
				}
				batch = append(batch, r)
			default:
				break more
			}
		}
		for _, r := range batch {
			if c, ok := r.cl.Net.Conn.(*corkConn); ok {
				if _, done := corked[c]; !done {
					c.cork()
					corked[c] = struct{}{}
				}
			}
			b.releaseOne(r)
		}
		// The in-flight records of what was just delivered to kept
		// sessions (messages queued for a device that is away, above all)
		// are written before the acks go out: an acknowledged message must
		// reach such a device after a crash too. (A connection that
		// gathers more than corkLimit meanwhile is written anyway.)
		b.sessions.inflight.flush()
		for c := range corked {
			c.uncork()
			delete(corked, c)
		}
		for range batch {
			b.pending.Done()
		}
	}
}

func (b *Broker) releaseOne(r *release) {
	cl, pk := r.cl, r.pk
	b.mu.Lock()
	switch {
	case pk.FixedHeader.Qos == 1:
		if b.inflight[cl]--; b.inflight[cl] <= 0 {
			delete(b.inflight, cl)
		}
	case r.err != nil:
		b.releasedQoS2(cl, pk.PacketID) // refused: no PUBREL will follow
	}
	if pk.FixedHeader.Qos == 2 {
		k := qos2Key{cl.ID, pk.PacketID}
		if newest := b.qos2[k]; newest != nil && newest != cl && !newest.Closed() {
			cl = newest // the publisher reconnected and resent it meanwhile
		}
		delete(b.qos2, k)
	}
	b.mu.Unlock()

	if r.err != nil {
		b.storeFailed.Add(1)
		b.refuse(cl, pk, r.err)
		return
	}
	b.stored.Add(1)
	if pk.FixedHeader.Qos == 1 {
		b.releaseQoS1(cl, pk)
		return
	}
	if !cl.Closed() {
		if err := b.srv.InjectPacket(cl, pk); err == nil {
			return
		}
	}
	// The publisher left before its message was durable, so mochi could not
	// write the ack and would not deliver. The message is stored: deliver it
	// anyway. The device will resend it (at-least-once).
	b.orphaned.Add(1)
	b.relayPacket(cl, pk)
}

// releaseQoS1 acknowledges a stored QoS 1 publish and delivers it. Ralph
// writes the PUBACK itself and delivers through the relay: the same
// bytes and deliveries as mochi's own QoS 1 path, without what that path
// does for an ack that is written at once (in-flight bookkeeping and
// hooks, a packet encoder and a buffer for four bytes), which was a
// tenth of the CPU of a QoS 1 load. A message nobody subscribes to (most,
// on a gateway: the bridges read the queue) is not handed to mochi at all.
func (b *Broker) releaseQoS1(cl *mqtt.Client, pk packets.Packet) {
	if err := writePuback(cl, pk.PacketID); err != nil {
		b.orphaned.Add(1) // the publisher left: it resends (at-least-once)
	}
	if found := b.subs.lookup(pk.TopicName); pk.FixedHeader.Retain || found.mochi || len(found.subs) > 0 {
		b.relayPacket(cl, pk)
	}
}

// writePuback writes a successful PUBACK for packet id: the same four
// bytes for MQTT 3.1.1 and 5, which omits the reason code and properties
// of a success [MQTT-3.4.2.1].
func writePuback(cl *mqtt.Client, id uint16) error {
	cl.Lock() // as mochi's writes are: one packet at a time
	defer cl.Unlock()
	if cl.Closed() || cl.Net.Conn == nil {
		return mqtt.ErrConnectionClosed
	}
	_, err := cl.Net.Conn.Write([]byte{packets.Puback << 4, 2, byte(id >> 8), byte(id)})
	return err
}

// relayPacket delivers a stored message from publisher to local
// subscribers (and keeps it if retained). On the release goroutine only.
func (b *Broker) relayPacket(publisher *mqtt.Client, pk packets.Packet) {
	b.relay.ID = publisher.ID
	b.relay.Properties.ProtocolVersion = publisher.Properties.ProtocolVersion
	if err := b.srv.InjectPacket(b.relay, pk); err != nil {
		b.log.Error("delivering a stored message", "client", publisher.ID, "topic", pk.TopicName, "err", err)
	}
}

// deny answers a publish the ACL refuses: MQTT 5 clients get reason 0x87
// (not authorized) in their PUBACK/PUBREC; MQTT 3.1.1 has no such code, so
// the publish is acknowledged and dropped, as Mosquitto does, rather than
// retried forever. Nothing is stored or delivered.
func (b *Broker) deny(cl *mqtt.Client, pk packets.Packet) {
	b.denied.Add(1)
	b.log.Warn("publish denied by ACL", "client", cl.ID, "user", string(cl.Properties.Username), "topic", pk.TopicName)
	if pk.FixedHeader.Qos == 0 {
		return
	}
	code := packets.CodeSuccess.Code
	if cl.Properties.ProtocolVersion == 5 {
		code = packets.ErrNotAuthorized.Code
	}
	cl.WritePacket(ackFor(pk, code))
}

// ackFor is the first answer to a QoS>0 publish, written by Ralph rather
// than mochi: PUBACK for QoS 1, PUBREC for QoS 2, with a reason code.
func ackFor(pk packets.Packet, code byte) packets.Packet {
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID, ReasonCode: code}
	if pk.FixedHeader.Qos == 2 {
		ack.FixedHeader.Type = packets.Pubrec
	}
	return ack
}

// refuse handles a publish that could not be stored: it is neither
// acknowledged nor delivered. An MQTT 5 QoS 1 publisher gets a PUBACK with a
// failure reason code; every other publisher is disconnected, so that it
// resends once it reconnects. (mochi would acknowledge on any other path.)
func (b *Broker) refuse(cl *mqtt.Client, pk packets.Packet, err error) {
	code, reason := packets.ErrUnspecifiedError, "message could not be stored"
	if errors.Is(err, queue.ErrFull) {
		code, reason = packets.ErrQuotaExceeded, "queue full"
	}
	b.log.Error("publish not stored: refusing it", "client", cl.ID, "topic", pk.TopicName, "qos", pk.FixedHeader.Qos, "err", err)
	if cl.Closed() {
		return
	}
	if cl.Properties.ProtocolVersion == 5 && pk.FixedHeader.Qos == 1 {
		ack := ackFor(pk, code.Code)
		ack.Properties.ReasonString = reason
		if cl.WritePacket(ack) == nil {
			return
		}
	}
	b.disconnected.Add(1)
	b.srv.DisconnectClient(cl, code)
}
