package localbroker

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// A connection the broker closes is closed gracefully, the way an HTTP
// server closes one (a lingering close): the broker's side is shut for
// writing (the client reads everything sent, then end of file) and what
// the client still sends is read and thrown away for a while, then the
// socket is closed. Closed at once, a socket that receives more answers
// with a reset: a client that was still answering earlier packets (say,
// PUBRELs for the PUBRECs before a DISCONNECT 0x93) then fails to write,
// and may lose the DISCONNECT, with its reason, unread. mochi sees the
// connection closed as before: its reads fail from the moment Close is
// called.
type linger struct {
	closing atomic.Bool
	rmu     sync.Mutex // held by a read in progress, then by the drain
}

const (
	lingerTime  = 2 * time.Second
	lingerBytes = 1 << 20
)

// Read is the connection's, until Close; then it fails, and what it read
// meanwhile is dropped.
func (c *corkConn) Read(p []byte) (int, error) {
	// The lock is mochi's reader's alone but for the drain, which takes it
	// only once closing.
	if c.closing.Load() || !c.rmu.TryLock() {
		return 0, net.ErrClosed
	}
	n, err := c.readPackets(p)
	c.rmu.Unlock()
	if c.closing.Load() {
		return 0, net.ErrClosed
	}
	return n, err
}

// SetDeadline and SetReadDeadline are mochi's keepalive; once closing,
// the drain's deadline stands.
func (c *corkConn) SetDeadline(t time.Time) error {
	if c.closing.Load() {
		return nil
	}
	return c.Conn.SetDeadline(t)
}

func (c *corkConn) SetReadDeadline(t time.Time) error {
	if c.closing.Load() {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

// closeGracefully closes conn (the connection under c) as described
// above, if it can be shut for writing (TCP, TLS); at once otherwise.
func (l *linger) closeGracefully(conn net.Conn) error {
	if !l.closing.CompareAndSwap(false, true) {
		return nil
	}
	cw, ok := conn.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return conn.Close()
	}
	conn.SetReadDeadline(time.Now()) // a read in progress returns now
	go func() {
		l.rmu.Lock() // once that read has returned
		defer l.rmu.Unlock()
		conn.SetReadDeadline(time.Now().Add(lingerTime))
		io.Copy(io.Discard, io.LimitReader(conn, lingerBytes))
		conn.Close()
	}()
	return nil
}
