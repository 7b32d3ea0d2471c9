package mqtttest

import (
	"log/slog"
	"net"
	"sync"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// Listener is mochi's TCP listener for the test upstreams, but its Close
// also ends the connections that are not clients yet. mochi's Close waits
// for every connection it was handed, and one still being established (a
// bridge that reconnects as its upstream stops) held it up for good. And
// Close returns once every connection's goroutine has: mochi counts them
// on a WaitGroup it waits on next, which must see no more Adds. Its
// clients see their connections end, without mochi's DISCONNECT: mochi's
// way of finding them (Clients.GetByListener) takes the clients' read
// lock twice over, and hangs when a leaving client asks for the write
// lock in between (localbroker's closeClients says more).
type Listener struct {
	id, addr string
	l        net.Listener

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup // one per conns entry
}

// NewListener returns a listener on addr ("127.0.0.1:0": any port).
func NewListener(id, addr string) *Listener {
	return &Listener{id: id, addr: addr, conns: make(map[net.Conn]struct{})}
}

func (l *Listener) ID() string       { return l.id }
func (l *Listener) Protocol() string { return "tcp" }

// Address is the address listened on, with its port once Init has run.
func (l *Listener) Address() string {
	if l.l != nil {
		return l.l.Addr().String()
	}
	return l.addr
}

func (l *Listener) Init(*slog.Logger) error {
	var err error
	l.l, err = net.Listen("tcp", l.addr)
	return err
}

func (l *Listener) Serve(establish listeners.EstablishFn) {
	for {
		conn, err := l.l.Accept()
		if err != nil {
			return
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			conn.Close()
			return
		}
		l.conns[conn] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go func() {
			defer l.wg.Done()
			establish(l.id, conn)
			conn.Close()
			l.mu.Lock()
			delete(l.conns, conn)
			l.mu.Unlock()
		}()
	}
}

func (l *Listener) Close(listeners.CloseFn) {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		if l.l != nil {
			l.l.Close()
		}
		for c := range l.conns {
			c.Close()
		}
	}
	l.mu.Unlock()
	l.wg.Wait()
}
