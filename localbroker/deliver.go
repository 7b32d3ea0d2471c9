package localbroker

// Ralph delivers QoS 0 publishes itself. mochi delivers a publish on its
// publisher's reading goroutine into a queue for each subscriber, which
// the subscriber's writer goroutine empties, and drops what does not fit
// in the queue. Ten publishers easily outrun one writer, so a subscriber
// that read everything as fast as it came still lost messages, and each
// delivery cost a lookup that builds fresh maps, a copy of the packet,
// an encoding and a hand-over between goroutines.
//
// Here the publisher's goroutine encodes the message once for each
// protocol version and appends it to each subscriber's connection
// (conn.go), whose flusher writes it behind. When a subscriber's buffer is
// full, the publisher waits: its reads stop and TCP slows the device
// down, as a single-threaded broker would. A subscriber that has stopped
// reading must not stop its publishers, though: a delivery waits only
// while the subscriber's socket took its last buffer less than
// slowSubscriber ago, and is dropped (and counted) after that.
//
// What Ralph delivers is what mochi would (publishToClient): one message
// per client whatever its overlapping subscriptions, No Local, the ACL's
// read rule, subscription identifiers, the remaining expiry interval, the
// client's maximum packet size, topic aliases (mochi's, shared with its
// deliveries); never the retain flag, as only non-retained publishes come
// this way. Retained publishes, and topics that shared subscriptions
// match, go through mochi as before.
//
// A dropped delivery that would have told the client a new topic alias
// ends the connection: the client would read every later message under
// that alias as another topic's. It has taken nothing for a second.

import (
	"errors"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// slowSubscriber is how long a subscriber's socket may take to accept a
// full buffer (64 KiB) before its QoS 0 deliveries are dropped rather
// than waited for.
const slowSubscriber = time.Second

// encodings holds one message's encodings while it is delivered: by
// protocol version (3.1 and 3.1.1 are the same for a PUBLISH), and a
// scratch buffer for a subscription with identifiers of its own.
type encodings struct {
	v4, v5, own []byte
}

var encodingsPool = sync.Pool{New: func() any { return new(encodings) }}

// deliverQoS0 delivers pk, a QoS 0 publish that is not retained, to its
// local subscribers. It returns false, having done nothing, if mochi is
// to deliver it instead.
func (b *Broker) deliverQoS0(pk packets.Packet) bool {
	found := b.subs.lookup(pk.TopicName)
	if found.mochi {
		return false
	}
	if len(found.subs) == 0 {
		return true
	}
	out := pk
	out.FixedHeader = packets.FixedHeader{Type: packets.Publish}
	out.Properties.TopicAlias, out.Properties.TopicAliasFlag = 0, false
	out.Properties.SubscriptionIdentifier = nil
	if pk.Expiry > 0 {
		out.Properties.MessageExpiryInterval = uint32(max(pk.Expiry-time.Now().Unix(), 1)) // [MQTT-3.3.2-6]
	}
	enc := encodingsPool.Get().(*encodings)
	defer func() {
		enc.v4, enc.v5, enc.own = enc.v4[:0], enc.v5[:0], enc.own[:0]
		encodingsPool.Put(enc)
	}()
	for _, s := range found.subs {
		cl, ok := b.srv.Clients.Get(s.client)
		if !ok || cl.Closed() || cl.Net.Conn == nil || s.sub.NoLocal && pk.Origin == cl.ID { // [MQTT-3.8.3-3]
			continue
		}
		if !b.mayRead(cl, pk.TopicName) {
			continue
		}
		p, alias := enc.forClient(cl, s.ids, &out)
		if limit := cl.Properties.Props.MaximumPacketSize; limit > 0 && len(p) > int(limit) {
			continue // [MQTT-3.1.2-24]: as if sent
		}
		if !b.write(cl, p) {
			b.dropped[0].Add(1)
			if alias {
				b.log.Warn("disconnecting a subscriber that stopped reading: a topic alias it was to learn was dropped", "client", cl.ID, "topic", pk.TopicName)
				go cl.Stop(errAliasLost)
			}
		}
	}
	return true
}

// forClient returns the encoding of out for cl and the identifiers of
// its subscription, and whether it tells cl a new topic alias.
func (e *encodings) forClient(cl *mqtt.Client, ids []int, out *packets.Packet) ([]byte, bool) {
	out.ProtocolVersion = cl.Properties.ProtocolVersion
	if out.ProtocolVersion != 5 {
		if len(e.v4) == 0 {
			e.v4 = appendPublish(e.v4, out)
		}
		return e.v4, false
	}
	var alias uint16
	var known bool
	if cl.Properties.Props.TopicAliasMaximum > 0 {
		alias, known = cl.State.TopicAliases.Outbound.Set(out.TopicName)
	}
	if len(ids) == 0 && alias == 0 {
		if len(e.v5) == 0 {
			e.v5 = appendPublish(e.v5, out)
		}
		return e.v5, false
	}
	own := *out
	own.Properties.SubscriptionIdentifier = ids
	if alias > 0 {
		own.Properties.TopicAlias, own.Properties.TopicAliasFlag = alias, true
		if known {
			own.TopicName = "" // [MQTT-3.3.2-12]
		}
	}
	e.own = appendPublish(e.own[:0], &own)
	return e.own, alias > 0 && !known
}

// errAliasLost is why a subscriber is disconnected whose new topic alias
// was dropped.
var errAliasLost = errors.New("not keeping up: a topic alias was dropped")

// write appends p to cl's connection, waiting while cl keeps up.
func (b *Broker) write(cl *mqtt.Client, p []byte) bool {
	if c, ok := cl.Net.Conn.(*corkConn); ok {
		return c.offer(p, b.patience)
	}
	// Every connection is a corkConn (served, Dial); this is not reached.
	_, err := cl.Net.Conn.Write(p)
	return err == nil
}
