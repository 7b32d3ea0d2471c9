package localbroker

// Flow control of deliveries by the client's Receive Maximum [MQTT-3.3.4-9]:
// at most that many QoS 1 and 2 PUBLISH packets a client has not
// acknowledged (PUBACK, PUBCOMP, or PUBREC with a failure code).
//
// mochi 2.7.9 has this, but it is off (quotasOff): a message it held back
// is dropped from the session once sent, and the code that sends it can
// deadlock. Ralph holds back the excess itself, per session, in order:
//
//   - mochi delivers as usual: it gives the message a packet id, puts it in
//     the client's in-flight map (stored by the session hook) and queues it
//     for the client's writer. As the writer encodes it (OnPacketEncode), it
//     either goes out, counted as sent, or is held: taken out of mochi's
//     in-flight map, stored under the session's held prefix (its order
//     number in the key, not its packet id, which goes back to mochi), and
//     not written.
//   - When the client's PUBACK or PUBCOMP (or failed PUBREC) frees a place,
//     the oldest held message gets a new packet id, goes back into mochi's
//     in-flight map (and its store), and is written. What is held goes out
//     in the order it was delivered; nothing overtakes it.
//   - What is delivered while the client is away is held at once (mochi
//     would resend it all on reconnect, beyond the limit, and in an order of
//     its own). When the client goes, what mochi had queued for it but not
//     written is held too. So on reconnect mochi resends only what was on
//     the wire (with its packet ids, as it must), and the rest follows as
//     places free, under the new connection's Receive Maximum.
//   - Held messages are kept in the queue's database like the rest of the
//     session: after a restart they are loaded again, in order. What mochi
//     restores itself counts as sent.
//
// A session is flow-controlled while its client set a Receive Maximum
// (MQTT 5); such a client gets no topic aliases from Ralph (a held message
// must carry its topic), and neither does one reconnecting to a session
// that still holds messages. A held message past its expiry is dropped.

import (
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/queue"
)

// gateMark tags a held message as it is written, so that OnPacketEncode
// lets it through. Connect parameters are not part of a PUBLISH.
const gateMark = "\x00ralph:gate"

type flowControl struct {
	srv     *mqtt.Server
	sess    *sessionHook
	kv      *queue.KV // held messages: <client id>\x00<order, 16 hex digits>
	log     *slog.Logger
	maxHeld int   // per session; more are dropped, as mochi drops past MaximumInflight
	expiry  int64 // seconds: the message expiry cap
	order   atomic.Uint64

	mu       sync.RWMutex
	sessions map[string]*flowSession // by client id

	dropped [3]atomic.Uint64 // by QoS
	lastLog atomic.Int64     // unix seconds of the last warning about drops
}

type flowSession struct {
	mu      sync.Mutex
	cl      *mqtt.Client // the connection being served; nil while away
	max     int          // its Receive Maximum; 0: not limited
	open    bool         // what mochi resends is out: new messages may go
	writing bool         // held messages are being written (outside mu)
	seen    bool         // served since Ralph started: sent is known
	// sent: written and not acknowledged, packet id → order (0: unknown).
	sent map[uint16]uint64
	// orders of deliveries in mochi's in-flight map not written yet.
	orders map[uint16]uint64
	held   []heldMsg // in order
}

type heldMsg struct {
	order uint64
	pk    packets.Packet
}

func newFlowControl(q *queue.Queue, sess *sessionHook, log *slog.Logger, maxHeld int, expiry int64) *flowControl {
	return &flowControl{sess: sess, kv: q.KV("held"), log: log, maxHeld: maxHeld, expiry: expiry, sessions: make(map[string]*flowSession)}
}

func heldKey(client string, order uint64) string { return fmt.Sprintf("%s\x00%016x", client, order) }

// load reads the held messages of every session, in order.
func (f *flowControl) load() error {
	var max uint64
	err := f.kv.Scan(func(k string, v []byte) error {
		client, rest, _ := cut(k)
		order, perr := strconv.ParseUint(rest, 16, 64)
		var m storage.Message
		if perr != nil || m.UnmarshalBinary(v) != nil {
			f.log.Warn("skipping an unreadable held message", "client", client, "key", k)
			f.kv.Unreadable()
			return nil
		}
		pk := m.ToPacket()
		pk.FixedHeader.Dup = false
		if e := min(int64(pk.Properties.MessageExpiryInterval), f.expiry); e > 0 {
			pk.Expiry = pk.Created + e
		}
		s := f.sessions[client]
		if s == nil {
			s = newFlowSession()
			f.sessions[client] = s
		}
		s.held = append(s.held, heldMsg{order, pk}) // keys sort by order
		max = maxOf(max, order)
		return nil
	})
	f.order.Store(max)
	return err
}

func maxOf(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

func newFlowSession() *flowSession {
	return &flowSession{sent: make(map[uint16]uint64), orders: make(map[uint16]uint64)}
}

// limited reports whether cl's deliveries are flow-controlled.
func limited(cl *mqtt.Client) bool {
	return !cl.Net.Inline && cl.Properties.ProtocolVersion == 5 && cl.Properties.Props.ReceiveMaximum > 0
}

// session returns cl's session, made if cl is limited.
func (f *flowControl) session(cl *mqtt.Client) *flowSession {
	f.mu.RLock()
	s := f.sessions[cl.ID]
	f.mu.RUnlock()
	if s != nil || !limited(cl) {
		return s
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if s = f.sessions[cl.ID]; s == nil {
		s = newFlowSession()
		f.sessions[cl.ID] = s
	}
	return s
}

func (f *flowControl) lookup(id string) *flowSession {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.sessions[id]
}

// forget drops a session that ends, with its held messages.
func (f *flowControl) forget(id string) {
	f.mu.Lock()
	s := f.sessions[id]
	delete(f.sessions, id)
	f.mu.Unlock()
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range s.held {
		f.kv.Delete(heldKey(id, h.order))
	}
	s.held = nil
}

// published is the session hook's OnQosPublish for a new delivery to cl.
// It reports whether it took the message: held at once, because nobody
// will write it now (the client is away), so that it is not stored as in
// flight.
func (f *flowControl) published(cl *mqtt.Client, pk packets.Packet) bool {
	if cl.Net.Inline || pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Dup {
		return false
	}
	s := f.session(cl)
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	order := f.order.Add(1)
	if s.cl == cl && !cl.Closed() {
		s.orders[pk.PacketID] = order
		return false
	}
	f.hold(s, cl, pk, order, false)
	return true
}

// hold takes pk, delivered to cl, out of mochi's in-flight map into s's
// held messages; stored says whether its in-flight record was written.
// s.mu is held.
func (f *flowControl) hold(s *flowSession, cl *mqtt.Client, pk packets.Packet, order uint64, stored bool) {
	if cur, ok := cl.State.Inflight.Get(pk.PacketID); ok && cur.FixedHeader.Type == packets.Publish {
		pk = cur // as mochi keeps it, before the writer's changes
		if cl.State.Inflight.Delete(pk.PacketID) {
			atomic.AddInt64(&f.srv.Info.Inflight, -1)
		}
	}
	if stored {
		f.sess.dropInflight(cl, pk.PacketID)
	}
	if len(s.held) >= f.maxHeld {
		f.drop(cl, pk)
		return
	}
	f.sess.set(f.kv, heldKey(cl.ID, order), messageRecord(cl.ID, heldKey(cl.ID, order), pk))
	h := heldMsg{order, pk}
	i := sort.Search(len(s.held), func(i int) bool { return s.held[i].order > order })
	s.held = slices.Insert(s.held, i, h)
}

func (f *flowControl) drop(cl *mqtt.Client, pk packets.Packet) {
	atomic.AddInt64(&f.srv.Info.InflightDropped, 1)
	f.dropped[min(pk.FixedHeader.Qos, 2)].Add(1)
	n := f.dropped[1].Load() + f.dropped[2].Load()
	if now := time.Now().Unix(); f.lastLog.Swap(now) < now-10 {
		f.log.Warn("client holds too many unacknowledged messages: dropping new ones for it", "client", cl.ID, "topic", pk.TopicName, "held", f.maxHeld, "dropped_total", n)
	}
}

// flowHook is the flow control's part in mochi's hooks.
type flowHook struct {
	mqtt.HookBase
	f *flowControl
}

func (h *flowHook) ID() string { return "ralph-flow" }

func (h *flowHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnSessionEstablish, mqtt.OnSessionEstablished, mqtt.OnPacketEncode, mqtt.OnPacketProcessed, mqtt.OnStarted:
		return true
	}
	return false
}

// OnStarted forgets the held messages of sessions mochi did not restore.
func (h *flowHook) OnStarted() {
	h.f.mu.RLock()
	var gone []string
	for id := range h.f.sessions {
		if _, ok := h.f.srv.Clients.Get(id); !ok {
			gone = append(gone, id)
		}
	}
	h.f.mu.RUnlock()
	for _, id := range gone {
		h.f.log.Warn("dropping held messages of a session that is gone", "client", id)
		h.f.forget(id)
	}
}

// OnSessionEstablish runs as a client connects, before mochi hands it the
// session it had. What that session has in flight that was never written
// is taken into the held messages, so that mochi resends only what the
// client may have seen; the rest follows as places free.
func (h *flowHook) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	f := h.f
	if cl.Net.Inline {
		return
	}
	if pk.Connect.Clean && !limited(cl) {
		f.forget(cl.ID) // a new session that needs no flow control
		return
	}
	s := f.session(cl)
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if pk.Connect.Clean {
		for _, m := range s.held {
			f.kv.Delete(heldKey(cl.ID, m.order))
		}
		s.held, s.sent, s.orders = nil, make(map[uint16]uint64), make(map[uint16]uint64)
	} else if old, ok := f.srv.Clients.Get(cl.ID); ok && old != cl {
		var kept []packets.Packet
		for _, m := range old.State.Inflight.GetAll(false) {
			switch _, sent := s.sent[m.PacketID]; {
			case m.FixedHeader.Type == packets.Pubrel:
				s.sent[m.PacketID] = 0 // a QoS 2 delivery awaiting PUBCOMP
			case m.FixedHeader.Type != packets.Publish:
			case sent || !s.seen && m.Expiry >= 0:
				kept = append(kept, m) // restored by mochi, or on the wire
			default:
				order, ok := s.orders[m.PacketID]
				if !ok {
					order = f.order.Add(1)
				}
				delete(s.orders, m.PacketID)
				f.hold(s, old, m, order, true)
			}
		}
		s.keepOrder(old, kept)
	}
	s.cl, s.open, s.writing, s.seen = cl, false, false, true
	s.max = 0
	if limited(cl) {
		s.max = int(cl.Properties.Props.ReceiveMaximum)
	}
	if limited(cl) || len(s.held) > 0 {
		cl.State.TopicAliases.Outbound = mqtt.NewOutboundTopicAliases(0)
	}
}

// keepOrder makes mochi resend kept, the messages old had on the wire, in
// the order they were sent: it sorts its in-flight map by the low 16 bits
// of each message's creation time (seconds), in no set order within a
// second. Each gets a creation time of its own, a second apart at most.
// s.mu is held.
func (s *flowSession) keepOrder(old *mqtt.Client, kept []packets.Packet) {
	for _, m := range kept {
		if _, ok := s.sent[m.PacketID]; !ok {
			s.sent[m.PacketID] = 0
		}
	}
	if len(kept) < 2 || len(kept) > 60000 {
		return
	}
	sort.SliceStable(kept, func(i, j int) bool {
		oi, oj := s.sent[kept[i].PacketID], s.sent[kept[j].PacketID]
		if oi != 0 && oj != 0 {
			return oi < oj
		}
		return kept[i].Created < kept[j].Created
	})
	base := kept[0].Created
	if int(uint16(base))+len(kept) > 65535 {
		base += 65536 - int64(uint16(base)) // not across the wrap of the low 16 bits
	}
	for i, m := range kept {
		m.Created = base + int64(i)
		old.State.Inflight.Set(m)
	}
}

// OnSessionEstablished runs once mochi has resent what the session had on
// the wire: new messages may go, and held ones do as places free.
func (h *flowHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	f := h.f
	s := f.lookup(cl.ID)
	if s == nil {
		return
	}
	s.mu.Lock()
	if s.cl != cl {
		s.mu.Unlock()
		return
	}
	inflight := map[uint16]bool{}
	for _, m := range cl.State.Inflight.GetAll(false) {
		switch {
		case m.FixedHeader.Type == packets.Publish && m.Expiry < 0:
			// Held back by mochi's own quota, which taking over the
			// session turned on until now: never written.
			order, ok := s.orders[m.PacketID]
			if !ok {
				order = f.order.Add(1)
			}
			delete(s.orders, m.PacketID)
			f.hold(s, cl, m, order, true)
		case m.FixedHeader.Type == packets.Publish || m.FixedHeader.Type == packets.Pubrel:
			inflight[m.PacketID] = true
		}
	}
	for id := range s.sent {
		if !inflight[id] {
			delete(s.sent, id) // acknowledged, or dropped, before the takeover
		}
	}
	s.open = true
	s.mu.Unlock()
	f.pump(s, cl)
}

// disconnected is the session hook's OnDisconnect for a session that
// stays: what mochi had queued for cl and not written is held.
func (f *flowControl) disconnected(cl *mqtt.Client) {
	s := f.lookup(cl.ID)
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cl != cl {
		return // taken over: the new connection has the session
	}
	s.cl, s.open = nil, false
	for _, m := range cl.State.Inflight.GetAll(false) {
		if _, sent := s.sent[m.PacketID]; m.FixedHeader.Type != packets.Publish || sent {
			continue
		}
		order, ok := s.orders[m.PacketID]
		if !ok {
			order = f.order.Add(1)
		}
		delete(s.orders, m.PacketID)
		f.hold(s, cl, m, order, true)
	}
	clear(s.orders)
}

// OnPacketEncode decides, as the client's writer is about to write a QoS 1
// or 2 PUBLISH, whether it goes out or is held. A held one is not written:
// mochi's writer gets an error it only logs at debug level, for a packet
// of no type.
func (h *flowHook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Qos == 0 {
		return pk
	}
	if pk.Connect.ClientIdentifier == gateMark {
		pk.Connect = packets.ConnectParams{}
		return pk
	}
	f := h.f
	s := f.lookup(cl.ID)
	if s == nil {
		return pk
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	order, ok := s.orders[pk.PacketID]
	delete(s.orders, pk.PacketID)
	switch {
	case pk.FixedHeader.Dup:
		// mochi resending what the session had on the wire (it is on the
		// wire again if this connection is going; else counted).
		if _, ok := s.sent[pk.PacketID]; !ok && s.cl == cl {
			s.sent[pk.PacketID] = 0 // on the wire, in no known order
		}
		return pk
	case s.cl != cl:
		// The session has a newer connection: what this one did not
		// write, the new one gets from mochi's resend or the held messages.
		return packets.Packet{}
	case s.mayWrite():
		s.sent[pk.PacketID] = order
		return pk
	}
	if !ok {
		order = f.order.Add(1)
	}
	f.hold(s, cl, pk, order, true)
	return packets.Packet{}
}

func (s *flowSession) mayWrite() bool {
	if s.writing || len(s.held) > 0 {
		return false
	}
	return s.max == 0 || s.open && len(s.sent) < s.max
}

// OnPacketProcessed frees a place for each acknowledgement of a delivery
// (PUBACK, PUBCOMP, a failed PUBREC) and sends what it can.
func (h *flowHook) OnPacketProcessed(cl *mqtt.Client, pk packets.Packet, _ error) {
	switch pk.FixedHeader.Type {
	case packets.Puback, packets.Pubcomp:
	case packets.Pubrec:
		if pk.ReasonCode < packets.ErrUnspecifiedError.Code {
			return // on to PUBREL and PUBCOMP: still in flight
		}
	default:
		return
	}
	s := h.f.lookup(cl.ID)
	if s == nil {
		return
	}
	s.mu.Lock()
	if s.cl != cl {
		s.mu.Unlock()
		return
	}
	delete(s.sent, pk.PacketID)
	s.mu.Unlock()
	h.f.pump(s, cl)
}

// pump writes the oldest held messages while places are free. One
// goroutine at a time writes them (writing), outside s.mu, so that a slow
// client holds up nobody else; the client's writer holds what comes
// meanwhile.
func (f *flowControl) pump(s *flowSession, cl *mqtt.Client) {
	s.mu.Lock()
	if s.writing {
		s.mu.Unlock()
		return // the goroutine writing looks again when done
	}
	for {
		var out []packets.Packet
		now := time.Now().Unix()
		for s.cl == cl && s.open && !cl.Closed() && len(s.held) > 0 && (s.max == 0 || len(s.sent) < s.max) {
			m := s.held[0]
			if m.pk.Expiry > 0 && m.pk.Expiry < now || f.expiry > 0 && now-m.pk.Created > f.expiry {
				f.kv.Delete(heldKey(cl.ID, m.order)) // expired [MQTT-3.3.2-5]
				s.held = s.held[1:]
				continue
			}
			id, err := cl.NextPacketID()
			if err != nil {
				break // no packet id free: the next acknowledgement frees one
			}
			pk := m.pk
			pk.PacketID, pk.FixedHeader.Dup = uint16(id), false
			if cl.State.Inflight.Set(pk) {
				atomic.AddInt64(&f.srv.Info.Inflight, 1)
			}
			f.sess.storeInflight(cl, pk)
			f.kv.Delete(heldKey(cl.ID, m.order))
			s.held = s.held[1:]
			s.sent[pk.PacketID] = m.order
			pk.Connect.ClientIdentifier = gateMark
			out = append(out, pk)
		}
		if len(s.held) == 0 {
			s.held = nil // let the backing array go
		}
		if len(out) == 0 {
			s.mu.Unlock()
			return
		}
		s.writing = true
		s.mu.Unlock()
		for _, pk := range out {
			// An error: the connection is going; the message is in flight
			// and goes out again on reconnect.
			cl.WritePacket(pk)
		}
		s.mu.Lock()
		s.writing = false
	}
}

// messageRecord is the stored form of an in-flight (or held) message.
func messageRecord(client, key string, pk packets.Packet) *storage.Message {
	props := pk.Properties.Copy(false)
	return &storage.Message{
		ID: key, T: storage.InflightKey, Client: client, Origin: pk.Origin, PacketID: pk.PacketID,
		FixedHeader: pk.FixedHeader, TopicName: pk.TopicName, Payload: pk.Payload, Sent: pk.Created, Created: pk.Created,
		Properties: storage.MessageProperties{
			PayloadFormat: props.PayloadFormat, PayloadFormatFlag: props.PayloadFormatFlag, MessageExpiryInterval: props.MessageExpiryInterval,
			ContentType: props.ContentType, ResponseTopic: props.ResponseTopic, CorrelationData: props.CorrelationData,
			SubscriptionIdentifier: props.SubscriptionIdentifier, User: props.User,
		},
	}
}
