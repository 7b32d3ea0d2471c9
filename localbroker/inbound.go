package localbroker

// The read side of every client connection, and Ralph's first pass over
// a publish. mochi reads a connection one packet at a time, decodes each
// into its 800-byte packet, runs its packet handler and its hook chain,
// and hands a publish to Ralph's ingest hook, which stores it and tells
// mochi to drop it (its QoS 1 ack and deliveries wait for the commit: see
// release.go). That first pass was most of Ralph's user time under a
// QoS 1 load, for a packet mochi then throws away.
//
// So a connection reads the socket into a buffer of its own and splits
// it into packets. Once the client's session is established, a QoS 0 or
// 1 publish that fits the buffer is decoded with mochi's codec, checked
// as mochi checks it, and ingested here, on mochi's reader goroutine,
// without mochi seeing it. Every other packet is handed on to mochi
// untouched, whole, and alone: mochi reads again only once it has
// processed everything handed to it, so packets are processed in the
// order they came, whichever side processes them. Anything Ralph does not
// take (a publish that does not decode or validate, QoS 2, one larger
// than the buffer, a malformed length) is mochi's, which refuses it as it
// always did.

import (
	"net"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// readBuffer is what a connection reads the socket into; a publish up to
// readLimit grows it, and it is back to readBuffer once emptied by a read
// smaller than that. A larger publish is read by mochi, as it arrives.
const (
	readBuffer = 2 << 10
	readLimit  = 64 << 10
)

// mochiReadBuffer is mochi's own read buffer, which now holds only the
// packets handed on to it.
const mochiReadBuffer = 256

type inbound struct {
	b  *Broker // set once the session is established: Ralph's first pass
	cl *mqtt.Client

	buf   []byte // buf[r:w] is read and neither ingested nor handed on
	r, w  int
	last  int   // how much the last read from the socket brought
	err   error // the socket's, after the bytes read with it
	pass  int   // what remains to hand on of the packet mochi is reading
	raw   bool  // a malformed length, or the socket failed: the rest is mochi's
	fresh bool  // a packet was ingested since the deadline was renewed

	keepalive time.Duration // 1.5 keep alives, in whole seconds as mochi has it
}

// ingestPublishes starts Ralph's first pass on the connection of cl, at
// the start of its session: on mochi's reader goroutine, before its first
// read of the session.
func (c *corkConn) ingestPublishes(b *Broker, cl *mqtt.Client) {
	c.in.b, c.in.cl = b, cl
	if ka := time.Duration(cl.State.Keepalive); ka > 0 {
		c.in.keepalive = (ka + ka/2) * time.Second // [MQTT-3.1.2-22]
	}
}

// readPackets is Read: it ingests what it may and gives mochi the rest.
func (c *corkConn) readPackets(p []byte) (int, error) {
	in := &c.in
	for in.pass == 0 && !in.raw {
		if c.closing.Load() {
			return 0, net.ErrClosed
		}
		size, body, ok := in.header()
		switch {
		case in.raw:
		case !ok:
			c.fill(in.w - in.r + 1)
		case !in.mayIngest(size):
			in.pass = size
		case in.w-in.r < size:
			c.fill(size)
		case in.ingest(in.buf[in.r:in.r+size], body):
			in.r += size
			in.fresh = true
		default:
			in.pass = size
		}
	}
	return c.handOn(p)
}

// handOn gives mochi what it reads next of the packet it is reading.
func (c *corkConn) handOn(p []byte) (int, error) {
	in := &c.in
	want := len(p)
	if !in.raw {
		want = min(want, in.pass)
	}
	var n int
	var err error
	if in.r < in.w {
		n = copy(p[:want], in.buf[in.r:in.w])
		in.r += n
	} else if in.err != nil {
		return 0, in.err
	} else {
		n, err = c.Conn.Read(p[:want]) // nothing buffered: straight in
	}
	if !in.raw {
		in.pass -= n
	}
	return n, err
}

// header returns the size of the buffered packet's whole and where its
// body starts, or false if its fixed header is not all buffered (or its
// length is malformed: then raw).
func (in *inbound) header() (size, body int, ok bool) {
	b := in.buf[in.r:in.w]
	n := 0
	for i := 1; i < len(b) && i <= 4; i++ {
		n |= int(b[i]&0x7f) << (7 * (i - 1))
		if b[i] < 0x80 {
			return 1 + i + n, 1 + i, true
		}
	}
	if len(b) > 4 {
		in.raw = true // a fifth length byte: mochi refuses it
	}
	return 0, 0, false
}

// mayIngest reports whether the packet at r, of size bytes, is Ralph's.
func (in *inbound) mayIngest(size int) bool {
	if in.b == nil || size > readLimit {
		return false
	}
	hb := in.buf[in.r]
	return hb>>4 == packets.Publish && (hb>>1)&3 < 2
}

// fill reads the socket until at least need bytes are buffered. If the
// socket fails first, what is buffered is mochi's, to read before the
// error, as it would have without Ralph in front.
func (c *corkConn) fill(need int) {
	in := &c.in
	for in.w-in.r < need {
		if in.err != nil {
			in.raw = true
			return
		}
		in.room(need)
		if in.fresh && in.keepalive > 0 {
			c.SetDeadline(time.Now().Add(in.keepalive))
		}
		in.fresh = false
		n, err := c.Conn.Read(in.buf[in.w:])
		in.w += n
		in.last = n
		if err != nil {
			in.err = err
		}
	}
}

// room makes room for need bytes from r: the unread bytes move to the
// front, and the buffer grows if it must, or shrinks if it may.
func (in *inbound) room(need int) {
	if in.r == in.w {
		in.r, in.w = 0, 0
		if cap(in.buf) > readBuffer && in.last < readBuffer {
			in.buf = nil
		}
	}
	if in.buf == nil {
		in.buf = make([]byte, max(readBuffer, need))
	}
	if len(in.buf)-in.r >= need {
		return
	}
	if need > len(in.buf) {
		grown := make([]byte, max(need, min(2*len(in.buf), readLimit)))
		in.w = copy(grown, in.buf[in.r:in.w])
		in.buf, in.r = grown, 0
		return
	}
	in.w = copy(in.buf, in.buf[in.r:in.w])
	in.r = 0
}

// ingest decodes, checks and ingests a publish, raw, whose body starts at
// start, as mochi's read loop and processPublish would up to its
// OnPublish hooks. It reports false for a publish mochi must see, one it
// refuses or ignores, having changed nothing mochi would not change the
// same way. (mochi also answers a QoS
// 1 publish reusing the packet id of a QoS 2 one not yet released with a
// PUBREC "packet identifier in use"; a client that does that breaks the
// protocol, and Ralph stores and acknowledges it as QoS 1.)
func (in *inbound) ingest(raw []byte, start int) bool {
	b, cl := in.b, in.cl
	if cl.Closed() {
		return false
	}
	var pk packets.Packet
	if pk.FixedHeader.Decode(raw[0]) != nil {
		return false
	}
	body := append([]byte(nil), raw[start:]...) // the stored message keeps it
	pk.FixedHeader.Remaining = len(body)
	pk.ProtocolVersion = cl.Properties.ProtocolVersion
	caps := b.srv.Options.Capabilities
	if pk.PublishDecode(body) != nil || pk.PublishValidate(caps.TopicAliasMaximum) != packets.CodeSuccess ||
		!mqtt.IsValidFilter(pk.TopicName, true) {
		return false
	}
	if pk.Properties.TopicAliasFlag && pk.Properties.TopicAlias > 0 { // [MQTT-3.3.2-11]
		// An alias not set resolves to no topic, as it will for mochi.
		if pk.TopicName = cl.State.TopicAliases.Inbound.Set(pk.Properties.TopicAlias, pk.TopicName); pk.TopicName == "" {
			return false
		}
		pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = 0, false // resolved: a later remapping must not change it
	}
	pk.Origin = cl.ID
	pk.Created = time.Now().Unix()
	if e := mochiMinimum(caps.MaximumMessageExpiryInterval, int64(pk.Properties.MessageExpiryInterval)); e > 0 {
		pk.Expiry = pk.Created + e
	}
	info := b.srv.Info
	atomic.AddInt64(&info.BytesReceived, int64(len(raw)))
	atomic.AddInt64(&info.PacketsReceived, 1)
	atomic.AddInt64(&info.MessagesReceived, 1)

	b.readFirst.Add(1)
	if pk, ingested := b.ingest(cl, pk); ingested == nil {
		// A QoS 0 publish Ralph does not deliver (retained, or to shared
		// subscriptions): mochi does, skipping the ingest hook.
		pk.Connect.ClientIdentifier = releaseMark
		if err := b.srv.InjectPacket(cl, pk); err != nil {
			b.log.Error("delivering a publish", "client", cl.ID, "topic", pk.TopicName, "err", err)
		}
	}
	return true
}

// mochiMinimum is how mochi (2.7.9) caps a message's expiry by the
// server's maximum: the smaller of the two that are set, so that a
// message without one gets the maximum.
func mochiMinimum(limit, expiry int64) int64 {
	if limit == 0 || expiry != 0 && expiry < limit {
		return expiry
	}
	return limit
}
