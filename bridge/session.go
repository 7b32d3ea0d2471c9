package bridge

// This file holds trackedSession, the MQTT 5 session: paho.golang's
// in-memory session state, kept across connections, plus a report of
// each forwarded PUBLISH's final acknowledgement to the bridge.
import (
	"context"
	"sync"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho/session"
	"github.com/eclipse/paho.golang/paho/session/state"
)

// trackedSession is paho's in-memory session state plus a report of each
// PUBLISH's final acknowledgement, which paho's asynchronous send does not
// give.
type trackedSession struct {
	*state.State
	b *Bridge

	// Set by the forwarding goroutine around each asynchronous publish; the
	// session's AddToSession runs on that same goroutine.
	mu    sync.Mutex
	t     ticket
	added bool
}

func newSession5(b *Bridge) *trackedSession {
	return &trackedSession{State: state.NewInMemory(), b: b}
}

func (s *trackedSession) handOver(t ticket) {
	s.mu.Lock()
	s.t, s.added = t, false
	s.mu.Unlock()
}

func (s *trackedSession) handedOver() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.added
}

func (s *trackedSession) close() { s.State.Close() }

func (s *trackedSession) AddToSession(ctx context.Context, p session.Packet, resp chan<- packets.ControlPacket) error {
	if p.Type() != packets.PUBLISH {
		return s.State.AddToSession(ctx, p, resp)
	}
	done := make(chan packets.ControlPacket, 1)
	if err := s.State.AddToSession(ctx, p, done); err != nil {
		return err
	}
	s.mu.Lock()
	t := s.t
	s.added = true
	s.mu.Unlock()
	go func() {
		select {
		case cp := <-done:
			switch a := cp.Content.(type) {
			case *packets.Puback:
				s.b.answered(t, a.ReasonCode)
			case *packets.Pubcomp:
				s.b.answered(t, a.ReasonCode)
			case *packets.Pubrec: // a refusal (0x80 and up) ends a QoS 2 flow at PUBREC
				s.b.answered(t, a.ReasonCode)
			default: // the client shut down before an answer: resent later
				<-t.window
			}
			select {
			case resp <- cp:
			default:
			}
		case <-t.abandon:
		}
	}()
	return nil
}

var _ session.SessionManager = (*trackedSession)(nil)
