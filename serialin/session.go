package serialin

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"go.bug.st/serial"

	"github.com/ralph-gateway/ralph/internal/topic"
	"github.com/ralph-gateway/ralph/serialin/line"
)

// ackMemory is how many acknowledged publish ids a port remembers to
// recognise a board's resends.
const ackMemory = 256

// mqttKeepAlive is the keepalive of the in-process connection; the
// session pings at half of it.
const mqttKeepAlive = 60 * time.Second

// session is one open device: the board on the line and the MQTT
// connection that carries its traffic. One goroutine (loop) owns all of
// its state; readers feed it through channels.
type session struct {
	p   *Port
	out chan<- []byte // frames to write to the board
	dev string
	mq  *mqttConn

	recvMax int // publishes the broker accepts unacknowledged

	pubs     map[uint16]uint64   // QoS 1 publishes being stored: id → content hash
	stale    map[uint16]bool     // of those, the ones sent before the board's last HELLO
	subs     map[uint16]bool     // ids of (un)subscriptions awaiting the broker
	acked    map[uint16]ackEntry // recently acknowledged publishes by id
	ackRing  [ackMemory]ackEntry // the same, oldest first from ackNext
	ackNext  int
	ackSeq   uint64
	down     []*outMsg          // MSGs sent to the board, not yet acked, in the order sent
	waiting  []*outMsg          // MSGs not sent yet: beyond the window, or no room to write
	resuming []*packets.Publish // the broker's resends after a reconnect, until put in order
	fenced   bool               // a PINGREQ marks the end of those resends
	boardMax int                // the board's receive buffer, from its HELLO

	online    bool
	askedName bool // sent an unsolicited HELLO to a board heard without one
	board     string
	firmware  string
	boot      string    // from the board's HELLO
	heard     time.Time // last valid frame
	pinged    time.Time
	mqttPing  time.Time
	logTokens float64
	logTime   time.Time
	logMissed int
}

type outMsg struct {
	id    uint16
	frame []byte
	sent  time.Time
}

type lineEvent struct {
	line []byte
	err  error
}

// serve runs a session on an open device until the device fails or ctx is
// done. The MQTT connection is re-established if the broker drops it; the
// device stays open, since reopening it may reset the board.
func (p *Port) serve(ctx context.Context, port serial.Port, dev string) error {
	lines := make(chan lineEvent)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := line.NewReader(liveReader{port, dev, stop}, p.opts.MaxLine)
		for {
			l, err := r.ReadLine()
			ev := lineEvent{err: err}
			if err == nil {
				ev.line = bytes.Clone(l)
			}
			select {
			case lines <- ev:
			case <-stop:
				return
			}
			if err != nil && !errors.Is(err, line.ErrTooLong) {
				return
			}
		}
	}()
	// Frames to the board go through a queue to their own goroutine: a
	// board that stops reading (native USB CDC then blocks the writes)
	// must not stall the session. When the queue is full, frames are
	// dropped; the protocol's resends make up for them.
	out := make(chan []byte, writeQueue)
	written := make(chan struct{})
	go func() {
		defer close(written)
		for {
			select {
			case f := <-out:
				select {
				case <-stop:
					return
				default:
				}
				if _, err := port.Write(f); err != nil {
					p.log.Debug("writing to the board", "err", err)
				}
			case <-stop:
				return
			}
		}
	}()
	defer func() {
		close(stop)
		// A write to a board that does not read may block for good (and
		// closing the device does not end it). The device is closed only
		// after the last write: its descriptor must not be reused under a
		// write still going.
		select {
		case <-written:
			port.Close()
		case <-time.After(2 * time.Second):
			p.log.Warn("a write to the board is stuck (it is not reading); the device will be closed when the write returns")
			go func() { <-written; port.Close() }()
		}
		wg.Wait() // the reader sees stop within livenessCheck
	}()

	s := &session{p: p, out: out, dev: dev, acked: make(map[uint16]ackEntry), logTokens: logBurst}
	s.sayHello()
	for {
		err := s.connected(ctx, lines)
		var gone deviceError
		if errors.As(err, &gone) || ctx.Err() != nil {
			return err
		}
		p.log.Warn("connection to the broker lost; reconnecting", "err", err)
		sleep(ctx, p.opts.Poll)
	}
}

// liveReader reads a serial port and notices when its device node is
// gone. A hangup usually ends a read at once, but not always: a pty whose
// master is held open elsewhere, or an adapter whose driver is slow to
// report the unplug, can leave a read waiting for good.
type liveReader struct {
	port serial.Port
	dev  string
	stop <-chan struct{}
}

const livenessCheck = 500 * time.Millisecond

func (r liveReader) Read(b []byte) (int, error) {
	for {
		n, err := r.port.Read(b)
		if n > 0 || err != nil {
			return n, err
		}
		if _, err := os.Stat(r.dev); err != nil {
			return 0, fmt.Errorf("device node gone: %w", err)
		}
		select {
		case <-r.stop:
			return 0, errStopped
		default:
		}
	}
}

var errStopped = errors.New("serialin: port stopped")

// deviceError is a failure of the serial device, which ends the session.
type deviceError struct{ error }

// connected connects to the broker and runs the session loop until the
// device or the connection fails.
func (s *session) connected(ctx context.Context, lines <-chan lineEvent) error {
	p := s.p
	conn := p.opts.Dial()
	sessionExpiry := uint32(0xFFFFFFFF)
	// The window is kept here, not by the broker: mochi (2.7.9) forgets a
	// message it held back for a client's receive maximum once it sends
	// it, so it would be neither resent nor kept across an unplug.
	recvMax := uint16(65535)
	c := p.connectPacket(p.ClientID())
	c.KeepAlive = uint16(mqttKeepAlive / time.Second)
	c.Properties = &packets.Properties{SessionExpiryInterval: &sessionExpiry, ReceiveMaximum: &recvMax}
	c.WillFlag, c.WillQOS, c.WillRetain = true, 1, true
	c.WillTopic, c.WillMessage, c.WillProperties = p.opts.StatusTopic, s.statusJSON("offline"), &packets.Properties{}
	var err error
	if s.recvMax, err = connect(conn, c); err != nil {
		conn.Close()
		return err
	}
	s.recvMax = min(s.recvMax, 256)
	s.mq = newMQTTConn(conn)
	pkts := make(chan *packets.ControlPacket)
	readErr := make(chan error, 1)
	stop := make(chan struct{})
	go func() {
		for {
			cp, err := packets.ReadPacket(conn)
			if err != nil {
				readErr <- err
				return
			}
			select {
			case pkts <- cp:
			case <-stop:
				return
			}
		}
	}()
	// The broker resends its unacknowledged messages on the new
	// connection, and answers none of the old connection's requests.
	s.pubs, s.stale, s.subs = make(map[uint16]uint64), make(map[uint16]bool), make(map[uint16]bool)
	s.down, s.waiting, s.resuming = nil, nil, nil
	s.mqttPing = time.Now()
	// mochi resends a session's unacknowledged messages on reconnect in an
	// order that is only right to the second. It sends them all before it
	// reads anything from us, so they end at the answer to this PINGREQ;
	// until then messages are held and then sorted by packet id.
	s.fenced = true
	s.mq.send(&packets.Pingreq{})
	if s.online {
		s.publishStatus("online")
	}
	defer func() {
		close(stop)
		s.mq.close()
	}()

	tick := time.NewTicker(min(250*time.Millisecond, p.opts.Resend/2))
	defer tick.Stop()
	for {
		in := lines
		if len(s.pubs) >= s.recvMax {
			in = nil // the queue is behind: stop reading, the board waits
		}
		select {
		case <-ctx.Done():
			s.goOffline("gateway stopping")
			s.mq.send(&packets.Disconnect{ReasonCode: packets.DisconnectNormalDisconnection})
			return ctx.Err()
		case ev := <-in:
			if ev.err != nil {
				if errors.Is(ev.err, line.ErrTooLong) {
					s.p.n.oversize.Add(1)
					s.p.log.Warn("board sent a line over the limit; skipped it", "max_line", p.opts.MaxLine)
					continue
				}
				s.goOffline("device gone")
				s.mq.send(&packets.Disconnect{ReasonCode: packets.DisconnectNormalDisconnection})
				return deviceError{ev.err}
			}
			s.handleLine(ev.line)
		case cp := <-pkts:
			if err := s.handlePacket(cp); err != nil {
				return err
			}
		case err := <-readErr:
			return fmt.Errorf("reading from the broker: %w", err)
		case now := <-tick.C:
			s.timers(now)
		}
	}
}

// writeQueue is how many frames may wait to be written to the board.
const writeQueue = 256

// write queues a frame for the board, or drops it if the board has not
// been reading. A write error means the device is gone; the reader sees
// that too and ends the session.
func (s *session) write(frame []byte) {
	select {
	case s.out <- frame:
	default:
		s.p.n.unwritten.Add(1)
	}
}

func (s *session) handleLine(l []byte) {
	f, err := line.Parse(l)
	switch {
	case errors.Is(err, line.ErrNotFrame):
		s.boardLog(l)
		return
	case errors.Is(err, line.ErrChecksum):
		s.p.n.badCRC.Add(1)
		s.p.log.Debug("frame with a bad checksum dropped", "err", err)
		return
	case err != nil:
		s.malformed(f, err)
		return
	}
	s.p.n.frames.Add(1)
	s.heard = time.Now()
	if f.Verb != "HELLO" {
		if s.board == "" && !s.askedName {
			// Its HELLO was lost (sent before the port was open, say): an
			// unsolicited HELLO makes the board send it again.
			s.askedName = true
			s.sayHello()
		}
		s.goOnline()
	}
	switch f.Verb {
	case "HELLO":
		h, err := line.ParseHello(f, true)
		if err != nil {
			s.malformed(f, err)
			return
		}
		s.hello(h)
	case "PUB":
		pub, err := line.ParsePublish(f)
		if err != nil {
			if pub.ID != 0 {
				s.p.log.Info("refused a publish", "id", pub.ID, "err", err)
				s.nak(pub.ID, "invalid")
				return
			}
			s.malformed(f, err)
			return
		}
		s.publish(pub, f)
	case "SUB", "UNSUB":
		sub, err := line.ParseSubscribe(f, f.Verb == "UNSUB")
		if err != nil {
			if sub.ID != 0 {
				s.nak(sub.ID, "invalid")
				return
			}
			s.malformed(f, err)
			return
		}
		s.subscribe(sub, f.Verb)
	case "ACK":
		if len(f.Fields) < 1 {
			s.malformed(f, errors.New("ACK without an id"))
			return
		}
		id, err := line.ParseID(f.Fields[0], false)
		if err != nil {
			s.malformed(f, err)
			return
		}
		s.boardAcked(id)
	case "PING":
		s.write(line.Append(nil, "PONG"))
	case "PONG":
	default:
		s.malformed(f, fmt.Errorf("unknown verb %q", f.Verb))
	}
}

func (s *session) malformed(f line.Frame, err error) {
	s.p.n.malformed.Add(1)
	s.p.log.Debug("malformed frame dropped", "verb", f.Verb, "err", err)
}

// sayHello sends the gateway's HELLO.
func (s *session) sayHello() {
	s.write(line.Hello{Name: s.p.opts.Name, MaxLine: s.p.opts.MaxLine}.Append(nil, false))
}

// ack tells the board its publish id is stored.
func (s *session) ack(id uint16) {
	s.write(line.Append(nil, "ACK", strconv.Itoa(int(id))))
}

func (s *session) nak(id uint16, reason string) {
	s.p.countNAK(reason)
	s.write(line.Append(nil, "NAK", strconv.Itoa(int(id)), reason))
}

func (s *session) hello(h line.Hello) {
	restarted := h.Boot == "" || h.Boot != s.boot || h.Name != s.board
	if prev := s.p.Status().Board; prev != "" && prev != h.Name {
		// The port's session (its subscriptions, the messages waiting for
		// it) belongs to the port: a different board inherits it.
		s.p.log.Warn("a different board on this port; it takes over the port's subscriptions and pending messages",
			"board", h.Name, "was", prev)
	}
	s.board, s.firmware, s.boardMax, s.boot = h.Name, h.Firmware, h.MaxLine, h.Boot
	s.p.setStatus(func(st *Status) { st.Board, st.Firmware = h.Name, h.Firmware })
	if restarted {
		// The board has (re)started: its ids start again, so neither what
		// it had acknowledged nor what is being stored for it must be
		// taken for its new publishes. A HELLO with the same boot is the
		// same run introducing itself again (HELLOs crossed on the line).
		clear(s.acked)
		for id := range s.pubs {
			s.stale[id] = true
		}
	}
	s.p.log.Info("board said hello", "board", h.Name, "firmware", h.Firmware, "version", h.Version, "restarted", restarted)
	s.sayHello()
	s.goOnline()
	for _, m := range s.down {
		s.resend(m, time.Now())
	}
}

// brokerTopic maps a board's topic or filter to the broker's: relative to
// the prefix, or absolute with a leading "/" where allowed.
func (s *session) brokerTopic(t string) (string, bool) {
	if abs, ok := strings.CutPrefix(t, "/"); ok {
		return abs, s.p.opts.AbsoluteTopics
	}
	return s.p.opts.TopicPrefix + t, true
}

// boardTopic maps a broker topic to the board's view.
func (s *session) boardTopic(t string) string {
	if rel, ok := strings.CutPrefix(t, s.p.opts.TopicPrefix); ok && rel != "" {
		return rel
	}
	return "/" + t
}

func contentHash(f line.Frame) uint64 {
	h := fnv.New64a()
	for _, x := range f.Fields[1:] {
		h.Write([]byte(x))
		h.Write([]byte{','})
	}
	return h.Sum64()
}

func (s *session) publish(pub line.Publish, f line.Frame) {
	if pub.QoS > 1 {
		s.nak(pub.ID, "invalid")
		return
	}
	t, ok := s.brokerTopic(pub.Topic)
	if !ok {
		s.p.log.Info("refused a publish outside the port's prefix", "topic", pub.Topic)
		if pub.QoS == 1 {
			s.nak(pub.ID, "denied")
		}
		return
	}
	if err := topic.ValidateName(t); err != nil {
		s.p.log.Info("refused a publish", "topic", t, "err", err)
		if pub.QoS == 1 {
			s.nak(pub.ID, "invalid")
		}
		return
	}
	out := &packets.Publish{Topic: t, Payload: pub.Payload, QoS: pub.QoS, Retain: pub.Retain, Properties: &packets.Properties{}}
	if pub.QoS == 0 {
		s.mq.send(out)
		s.p.n.published.Add(1)
		return
	}
	if pub.ID == 0 {
		s.nak(0, "invalid")
		return
	}
	h := contentHash(f)
	if prev, ok := s.pubs[pub.ID]; ok {
		if prev == h && !s.stale[pub.ID] {
			s.p.n.dups.Add(1) // a resend while the first is being stored: its ACK follows
		}
		// Otherwise the id is still taken by an earlier publish (of a board
		// since rebooted, say): ignored, not refused, the board sends it
		// again once the id is free.
		return
	}
	if s.subs[pub.ID] {
		return // taken by a subscription: as above
	}
	if prev, ok := s.acked[pub.ID]; ok && prev.hash == h {
		s.p.n.dups.Add(1)
		s.ack(pub.ID)
		return
	}
	out.PacketID = pub.ID
	s.pubs[pub.ID] = h
	s.mq.send(out)
}

func (s *session) subscribe(sub line.Subscribe, verb string) {
	t, ok := s.brokerTopic(sub.Filter)
	if !ok {
		s.nak(sub.ID, "denied")
		return
	}
	if err := topic.ValidateFilter(t); err != nil {
		s.p.log.Info("refused a subscription", "filter", t, "err", err)
		s.nak(sub.ID, "invalid")
		return
	}
	if _, busy := s.pubs[sub.ID]; busy || s.subs[sub.ID] {
		return // the id is taken: the board sends it again
	}
	s.subs[sub.ID] = true
	if verb == "UNSUB" {
		s.mq.send(&packets.Unsubscribe{PacketID: sub.ID, Topics: []string{t}, Properties: &packets.Properties{}})
		return
	}
	s.mq.send(&packets.Subscribe{PacketID: sub.ID, Properties: &packets.Properties{},
		Subscriptions: []packets.SubOptions{{Topic: t, QoS: min(sub.QoS, 1)}}})
}

// nakReason maps an MQTT reason code to the protocol's NAK reasons.
func nakReason(code byte) string {
	switch code {
	case packets.PubackNotAuthorized:
		return "denied"
	case packets.PubackQuotaExceeded:
		return "full"
	case packets.PubackTopicNameInvalid:
		return "invalid"
	}
	return "error"
}

func (s *session) handlePacket(cp *packets.ControlPacket) error {
	switch pk := cp.Content.(type) {
	case *packets.Puback:
		h, ok := s.pubs[pk.PacketID]
		if !ok {
			return nil
		}
		stale := s.stale[pk.PacketID]
		delete(s.pubs, pk.PacketID)
		delete(s.stale, pk.PacketID)
		if stale {
			// Sent by the board before it said HELLO again; telling the
			// new session about it could ack a new publish with its id.
			s.p.n.published.Add(1)
			return nil
		}
		if pk.ReasonCode >= 0x80 {
			s.p.log.Warn("broker refused a board's publish", "id", pk.PacketID, "reason", fmt.Sprintf("0x%02X", pk.ReasonCode))
			s.nak(pk.PacketID, nakReason(pk.ReasonCode))
			return nil
		}
		s.remember(pk.PacketID, h)
		s.p.n.published.Add(1)
		s.ack(pk.PacketID)
	case *packets.Suback:
		delete(s.subs, pk.PacketID)
		if len(pk.Reasons) == 0 || pk.Reasons[0] >= 0x80 {
			code := byte(0x80)
			if len(pk.Reasons) > 0 {
				code = pk.Reasons[0]
			}
			s.nak(pk.PacketID, nakReason(code))
			return nil
		}
		s.write(line.Append(nil, "SUBACK", fmt.Sprint(pk.PacketID), fmt.Sprint(pk.Reasons[0])))
	case *packets.Unsuback:
		delete(s.subs, pk.PacketID)
		s.write(line.Append(nil, "UNSUBACK", fmt.Sprint(pk.PacketID)))
	case *packets.Publish:
		if s.fenced {
			s.resuming = append(s.resuming, pk)
			return nil
		}
		s.deliver(pk)
	case *packets.Pingresp:
		if s.fenced {
			s.fenced = false
			for _, pk := range inIDOrder(s.resuming) {
				s.deliver(pk)
			}
			s.resuming = nil
		}
	case *packets.Disconnect:
		return fmt.Errorf("broker disconnected the port: reason 0x%02X", pk.ReasonCode)
	default:
		return fmt.Errorf("unexpected %s from the broker", cp.PacketType())
	}
	return nil
}

// inIDOrder sorts publishes by packet id, which the broker hands out in
// sequence, starting after the widest gap between ids so that a sequence
// that wrapped past 65535 stays in order.
func inIDOrder(pks []*packets.Publish) []*packets.Publish {
	if len(pks) < 2 {
		return pks
	}
	slices.SortFunc(pks, func(a, b *packets.Publish) int { return cmp.Compare(a.PacketID, b.PacketID) })
	start, widest := 0, 65536-int(pks[len(pks)-1].PacketID)+int(pks[0].PacketID)
	for i := 1; i < len(pks); i++ {
		if gap := int(pks[i].PacketID) - int(pks[i-1].PacketID); gap > widest {
			start, widest = i, gap
		}
	}
	return append(pks[start:], pks[:start]...)
}

// remember records an acknowledged publish so that a resend of it is
// acked again instead of stored twice.
func (s *session) remember(id uint16, h uint64) {
	// The entry leaving the ring is forgotten unless its id has been
	// acknowledged again since.
	if old := s.ackRing[s.ackNext]; old.seq != 0 && s.acked[old.id].seq == old.seq {
		delete(s.acked, old.id)
	}
	s.ackSeq++
	e := ackEntry{id: id, hash: h, seq: s.ackSeq}
	s.ackRing[s.ackNext] = e
	s.ackNext = (s.ackNext + 1) % ackMemory
	s.acked[id] = e
}

// ackEntry is an acknowledged publish: its id, content hash and the order
// it was acknowledged in.
type ackEntry struct {
	id   uint16
	hash uint64
	seq  uint64
}

// deliver sends a message from the broker to the board, within the
// window for QoS 1.
func (s *session) deliver(pk *packets.Publish) {
	id := pk.PacketID
	if pk.QoS == 0 {
		id = 0
	}
	frame := line.Publish{ID: id, QoS: min(pk.QoS, 1), Retain: pk.Retain, Topic: s.boardTopic(pk.Topic), Payload: pk.Payload}.Append(nil, "MSG")
	if limit := s.lineLimit(); len(frame)-1 > limit {
		s.p.n.tooLong.Add(1)
		s.p.log.Warn("message too long for the board's line; dropped", "topic", pk.Topic, "bytes", len(frame)-1, "max_line", limit)
		if pk.QoS > 0 {
			s.mq.send(&packets.Puback{PacketID: pk.PacketID, Properties: &packets.Properties{}})
		}
		return
	}
	if pk.QoS == 0 {
		s.write(frame)
		s.p.n.delivered.Add(1)
		return
	}
	if i := s.inFlight(id); i >= 0 { // the broker's resend of one in flight
		s.down[i].frame = frame
		return
	}
	s.waiting = append(s.waiting, &outMsg{id: id, frame: frame})
	s.pump(time.Now())
}

func (s *session) inFlight(id uint16) int {
	for i, m := range s.down {
		if m.id == id {
			return i
		}
	}
	return -1
}

// pump sends waiting MSGs while the window and the write queue have
// room. A MSG's first sending is never dropped, so that a later one cannot
// overtake it; resends may be.
func (s *session) pump(now time.Time) {
	for len(s.waiting) > 0 && len(s.down) < s.p.opts.Window {
		m := s.waiting[0]
		select {
		case s.out <- m.frame:
		default:
			return // the board is not reading: try again at the next tick
		}
		m.sent = now
		s.down = append(s.down, m)
		s.waiting = s.waiting[1:]
	}
}

func (s *session) lineLimit() int {
	if s.boardMax > 0 {
		return min(s.boardMax, s.p.opts.MaxLine)
	}
	return s.p.opts.MaxLine
}

func (s *session) resend(m *outMsg, now time.Time) {
	m.sent = now
	s.write(m.frame)
}

func (s *session) boardAcked(id uint16) {
	i := s.inFlight(id)
	if i < 0 {
		return // a late second ACK
	}
	s.down = append(s.down[:i], s.down[i+1:]...)
	s.mq.send(&packets.Puback{PacketID: id, Properties: &packets.Properties{}})
	s.p.n.delivered.Add(1)
	s.pump(time.Now())
}

func (s *session) timers(now time.Time) {
	for _, m := range s.down {
		if now.Sub(m.sent) >= s.p.opts.Resend {
			s.p.n.resent.Add(1)
			s.resend(m, now)
		}
	}
	s.pump(now)
	silent := now.Sub(s.heard)
	if s.online && silent >= s.p.opts.OfflineAfter {
		s.goOffline("board silent")
	}
	if silent >= s.p.opts.OfflineAfter/2 && now.Sub(s.pinged) >= s.p.opts.OfflineAfter/2 {
		s.pinged = now
		s.write(line.Append(nil, "PING"))
	}
	if now.Sub(s.mqttPing) >= mqttKeepAlive/2 {
		s.mqttPing = now
		s.mq.send(&packets.Pingreq{})
	}
}

func (s *session) goOnline() {
	if s.online {
		return
	}
	s.online = true
	s.p.log.Info("board online", "board", s.board, "device", s.dev)
	s.p.setStatus(func(st *Status) {
		st.Online, st.Board, st.Firmware, st.Since = true, s.board, s.firmware, time.Now()
	})
	s.publishStatus("online")
}

func (s *session) goOffline(why string) {
	if !s.online {
		return
	}
	s.online = false
	s.p.log.Info("board offline", "board", s.board, "why", why)
	s.p.setStatus(func(st *Status) { st.Online, st.Since = false, time.Now() })
	s.publishStatus("offline")
}

func (s *session) statusJSON(state string) []byte {
	b, _ := json.Marshal(struct {
		State    string    `json:"state"`
		Board    string    `json:"board,omitempty"`
		Firmware string    `json:"firmware,omitempty"`
		Device   string    `json:"device,omitempty"`
		Since    time.Time `json:"since"`
	}{state, s.board, s.firmware, s.dev, time.Now().UTC().Truncate(time.Second)})
	return b
}

func (s *session) publishStatus(state string) {
	if s.mq == nil {
		return
	}
	s.mq.send(&packets.Publish{Topic: s.p.opts.StatusTopic, Payload: s.statusJSON(state), Retain: true, Properties: &packets.Properties{}})
}

// Board log lines are rate-limited: a board printing in a tight loop must
// not flood the journal.
const (
	logRate  = 20  // lines per second
	logBurst = 100 // lines at once
)

func (s *session) boardLog(l []byte) {
	s.p.n.logLines.Add(1)
	now := time.Now()
	s.logTokens = min(logBurst, s.logTokens+now.Sub(s.logTime).Seconds()*logRate)
	s.logTime = now
	if s.logTokens < 1 {
		s.logMissed++
		return
	}
	s.logTokens--
	text := strings.ToValidUTF8(string(l), "\uFFFD")
	if s.logMissed > 0 {
		s.p.log.Info("board log lines skipped (rate limit)", "lines", s.logMissed)
		s.logMissed = 0
	}
	s.p.log.Info("board: "+text, "board", s.board)
	if s.p.opts.LogTopic != "" {
		s.mq.send(&packets.Publish{Topic: s.p.opts.LogTopic, Payload: []byte(text), Properties: &packets.Properties{}})
	}
}

// connectPacket is an MQTT 5 CONNECT as the port's user.
func (p *Port) connectPacket(clientID string) *packets.Connect {
	c := &packets.Connect{ProtocolName: "MQTT", ProtocolVersion: 5, ClientID: clientID, Properties: &packets.Properties{}}
	if p.opts.User != "" {
		c.UsernameFlag, c.Username = true, p.opts.User
	}
	return c
}

// announceAbsent publishes the offline status for a device that is not
// there, through a short-lived connection.
func (p *Port) announceAbsent() {
	s := &session{p: p}
	conn := p.opts.Dial()
	c := p.connectPacket(p.ClientID() + "-status")
	c.CleanStart = true
	if _, err := connect(conn, c); err != nil {
		conn.Close()
		p.log.Warn("cannot announce the port offline", "err", err)
		return
	}
	s.mq = newMQTTConn(conn)
	s.publishStatus("offline")
	s.mq.send(&packets.Disconnect{ReasonCode: packets.DisconnectNormalDisconnection})
	s.mq.close()
}
