package serialin

// What the broker sends, and its way to the board: the answers to the
// board's publishes and subscriptions, and the messages for its
// subscriptions, which go to the board as MSGs, in order and within the
// window, and are resent (by the session's timers) until the board
// acknowledges them.

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/ralph-gateway/ralph/serialin/line"
)

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

type outMsg struct {
	id    uint16
	frame []byte
	sent  time.Time
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
