package localbroker

import (
	"crypto/tls"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// tcpListener is mochi's TCP listener with one difference: every
// connection is a corkConn, so that the release loop can gather the acks
// of a whole commit into one write per client.
type tcpListener struct {
	id, addr string
	tls      *tls.Config // nil for plain TCP
	l        net.Listener
	log      *slog.Logger
	end      atomic.Bool
	mu       sync.Mutex
}

func newTCPListener(id, addr string, tc *tls.Config) *tcpListener {
	return &tcpListener{id: id, addr: addr, tls: tc}
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
	for {
		conn, err := t.l.Accept()
		if err != nil {
			return
		}
		if t.end.Load() {
			conn.Close()
			return
		}
		go func() {
			if err := establish(t.id, &corkConn{Conn: conn}); err != nil {
				// Clients come and go; their reasons are not warnings.
				t.log.Debug("client connection ended", "remote", conn.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

func (t *tcpListener) Close(closeClients listeners.CloseFn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.end.CompareAndSwap(false, true) {
		closeClients(t.id)
	}
	if t.l != nil {
		t.l.Close()
	}
}

// corkConn buffers writes while corked and sends them in one write when
// uncorked. The release loop corks the connections of a batch's
// publishers, lets mochi write their acks, then uncorks: one system call
// per client per commit instead of one per message.
type corkConn struct {
	net.Conn
	mu     sync.Mutex
	corked bool
	buf    []byte
}

// corkLimit bounds what a corked connection holds before writing anyway.
const corkLimit = 32 << 10

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		return c.Conn.Write(p)
	}
	c.buf = append(c.buf, p...)
	if len(c.buf) >= corkLimit {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (c *corkConn) cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

func (c *corkConn) uncork() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	if err := c.flushLocked(); err != nil {
		c.Conn.Close() // the client's read loop sees it and cleans up
	}
}

func (c *corkConn) flushLocked() error {
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	if cap(c.buf) > 4<<10 {
		c.buf = nil // do not keep big buffers per idle client
	} else {
		c.buf = c.buf[:0]
	}
	return err
}

// Close sends what is buffered first: mochi writes a DISCONNECT and then
// closes, possibly while corked.
func (c *corkConn) Close() error {
	c.mu.Lock()
	c.corked = false
	c.flushLocked()
	c.mu.Unlock()
	return c.Conn.Close()
}
