package serialin

// What the board sends: its lines, parsed and handled. A frame is
// dispatched by its verb: HELLO (re)introduces the board, PUB and
// SUB/UNSUB go to the broker under the port's topic prefix, ACK ends the
// delivery of a MSG (delivery.go). Acknowledged publish ids are remembered
// to recognise the board's resends; a line that is not a frame is the
// board's log output.

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/ralph-gateway/ralph/internal/topic"
	"github.com/ralph-gateway/ralph/serialin/line"
)

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

// ackMemory is how many acknowledged publish ids a port remembers to
// recognise a board's resends.
const ackMemory = 256

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
