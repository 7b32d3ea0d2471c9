package bridge

// This file holds trackedSession, the wrapper around paho's in-memory
// session state that reports each forwarded PUBLISH's final
// acknowledgement to the bridge.
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
	mu      sync.Mutex
	seq     uint64
	window  chan struct{}
	abandon chan struct{}
	added   bool
}

func (s *trackedSession) handOver(seq uint64, window, abandon chan struct{}) {
	s.mu.Lock()
	s.seq, s.window, s.abandon, s.added = seq, window, abandon, false
	s.mu.Unlock()
}

func (s *trackedSession) handedOver() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.added
}

func (s *trackedSession) AddToSession(ctx context.Context, p session.Packet, resp chan<- packets.ControlPacket) error {
	if p.Type() != packets.PUBLISH {
		return s.State.AddToSession(ctx, p, resp)
	}
	done := make(chan packets.ControlPacket, 1)
	if err := s.State.AddToSession(ctx, p, done); err != nil {
		return err
	}
	s.mu.Lock()
	seq, window, abandon := s.seq, s.window, s.abandon
	s.added = true
	s.mu.Unlock()
	go func() {
		select {
		case cp := <-done:
			<-window
			s.b.completed(seq, cp)
			select {
			case resp <- cp:
			default:
			}
		case <-abandon:
		}
	}()
	return nil
}

var _ session.SessionManager = (*trackedSession)(nil)
