package localbroker

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// tcpListener is mochi's TCP listener with what it lacks: it retries
// transient accept errors (out of file descriptors, say), and its Close
// also ends the connections that are not clients yet.
type tcpListener struct {
	id, addr string
	tls      *tls.Config // nil for plain TCP
	l        net.Listener
	log      *slog.Logger
	end      atomic.Bool
	err      atomic.Pointer[error] // why Serve gave up

	mu    sync.Mutex
	conns map[net.Conn]struct{} // accepted; their establish has not returned
	wg    sync.WaitGroup        // one per conns entry
}

func newTCPListener(id, addr string, tc *tls.Config) *tcpListener {
	return &tcpListener{id: id, addr: addr, tls: tc, conns: make(map[net.Conn]struct{})}
}

func (t *tcpListener) ID() string { return t.id }

func (t *tcpListener) Protocol() string {
	if t.tls != nil {
		return "tls"
	}
	return "tcp"
}

func (t *tcpListener) Address() string {
	if t.l != nil {
		return t.l.Addr().String()
	}
	return t.addr
}

func (t *tcpListener) Init(log *slog.Logger) error {
	t.log = log
	l, err := net.Listen("tcp", t.addr)
	if err == nil && t.tls != nil {
		l = tls.NewListener(l, t.tls)
	}
	t.l = l
	return err
}

func (t *tcpListener) Serve(establish listeners.EstablishFn) {
	var pause time.Duration // after a transient accept error
	for {
		conn, err := t.l.Accept()
		if err != nil {
			if t.end.Load() {
				return
			}
			if !transient(err) {
				t.err.Store(&err)
				t.log.Error("listener stopped accepting connections", "listener", t.id, "err", err)
				return
			}
			// Out of file descriptors, say: wait and try again, as
			// net/http does, rather than stop accepting for good.
			if pause == 0 {
				t.log.Warn("cannot accept connections; retrying", "listener", t.id, "err", err)
			}
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			time.Sleep(pause)
			continue
		}
		pause = 0
		t.mu.Lock()
		if t.end.Load() {
			t.mu.Unlock()
			conn.Close()
			return
		}
		t.conns[conn] = struct{}{}
		t.wg.Add(1)
		t.mu.Unlock()
		go func() {
			defer t.wg.Done()
			defer func() {
				t.mu.Lock()
				delete(t.conns, conn)
				t.mu.Unlock()
			}()
			if err := establish(t.id, conn); err != nil {
				// Clients come and go; their reasons are not warnings.
				t.log.Debug("client connection ended", "remote", conn.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// Close disconnects the listener's clients, stops accepting and ends the
// connections that are not clients yet (no CONNECT read), then waits for
// every connection's goroutine. mochi's Close waits for its clients right
// after this, on a WaitGroup each connection's goroutine adds itself to:
// none may still be starting then.
func (t *tcpListener) Close(closeClients listeners.CloseFn) {
	t.mu.Lock()
	if t.end.CompareAndSwap(false, true) {
		closeClients(t.id)
	}
	if t.l != nil {
		t.l.Close()
	}
	for c := range t.conns {
		c.Close()
	}
	t.mu.Unlock()
	done := make(chan struct{})
	go func() { t.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.log.Warn("connections still ending 5 s after the listener closed", "listener", t.id)
	}
}

// transient reports whether an accept error may pass by itself.
func transient(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// served wraps each listener. Every connection it establishes is a
// corkConn (conn.go): writes behind, the release loop's corking, Ralph's
// own deliveries. And it remembers that its Serve ended while the broker
// was not closing it: then it accepts nobody. The health check reads that
// instead of dialing every listener at every scrape.
type served struct {
	listeners.Listener
	b       *Broker
	closing atomic.Bool
	ended   atomic.Pointer[string] // why Serve ended early
}

func (s *served) Serve(establish listeners.EstablishFn) {
	s.Listener.Serve(func(id string, c net.Conn) error { return establish(id, newCorkConn(c)) })
	if s.closing.Load() {
		return
	}
	why := "stopped accepting connections"
	if t, ok := s.Listener.(*tcpListener); ok {
		if err := t.err.Load(); err != nil {
			why += ": " + (*err).Error()
		}
	}
	s.ended.Store(&why)
}

// Close closes the listener, and disconnects its clients with Ralph's
// closeClients, not mochi's.
func (s *served) Close(listeners.CloseFn) {
	s.closing.Store(true)
	s.Listener.Close(s.b.closeClients)
}

// closeClients disconnects the clients of listener id, server shutting
// down, as mochi's own does, but not through mochi's (2.7.9)
// Clients.GetByListener. That takes the clients' read lock twice over,
// and when a client that is leaving asks for the write lock in between,
// neither ever gets it: the shutdown hung, with a thousand clients
// closing their connections as it began.
func (b *Broker) closeClients(id string) {
	for _, cl := range b.srv.Clients.GetAll() {
		if cl.Net.Listener == id && !cl.Closed() {
			b.srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
		}
	}
}

// NotServing lists the listeners that stopped accepting connections, as
// "address: why".
func (b *Broker) NotServing() []string {
	var out []string
	for _, id := range b.listenIDs {
		l, ok := b.srv.Listeners.Get(id)
		if !ok {
			continue
		}
		if s, ok := l.(*served); ok {
			if why := s.ended.Load(); why != nil {
				out = append(out, s.Address()+": "+*why)
			}
		}
	}
	return out
}
