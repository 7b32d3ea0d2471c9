package localbroker

// corkConn is every client connection's write side. mochi writes each
// packet with a write call of its own, from the client's writer (its
// deliveries), its reader (acks) and the release loop, one at a time
// under the client's lock. corkConn gathers them: a write is appended
// to a buffer, and one flusher goroutine, started when the buffer stops
// being empty and gone when it is empty again, writes what has gathered
// meanwhile in one system call. A subscriber taking a burst thus gets it
// in a few large writes, and the goroutines delivering to it are not
// held up by its socket; an idle connection holds no buffer and no
// goroutine. The buffer is bounded: past writeBehindLimit a write waits
// until the flusher takes the buffer. mochi's writes wait as long as it
// takes; Ralph's own deliveries (deliver.go) only while the client keeps
// up.
//
// The release loop corks the connections of a commit's publishers while
// mochi writes their acks, and uncorks them after: the acks go out
// together even when a flusher would have taken the first alone.

import (
	"errors"
	"net"
	"sync"
	"time"
)

// writeBehindLimit bounds what a connection gathers before a write
// waits; corkLimit what a corked one gathers before it is written anyway.
const (
	writeBehindLimit = 64 << 10
	corkLimit        = 32 << 10
)

// keepBuffer is the largest buffer an idle connection keeps for reuse.
const keepBuffer = 4 << 10

type corkConn struct {
	net.Conn
	mu       sync.Mutex
	drained  sync.Cond // the flusher stopped
	corked   bool
	buf      []byte  // written, not yet handed to the socket
	flushing bool    // the flusher goroutine runs
	err      error   // the socket's write failed: every write after fails
	linger           // how it closes: see linger.go
	in       inbound // its read side: see inbound.go

	// room is made for a write waiting for the buffer to empty, and
	// closed when the flusher takes it; taken is when it last did.
	room  chan struct{}
	taken time.Time
}

func newCorkConn(c net.Conn) *corkConn {
	cc := &corkConn{Conn: c}
	cc.drained.L = &cc.mu
	return cc
}

func (c *corkConn) Write(p []byte) (int, error) {
	if err := c.write(p, 0); err != nil {
		return 0, err
	}
	return len(p), nil
}

// offer writes p, a whole packet, unless the client is not keeping up:
// its socket has not taken the full buffer within patience since it last
// took one. It reports whether p was written.
func (c *corkConn) offer(p []byte, patience time.Duration) bool {
	return c.write(p, patience) == nil
}

// errNotKeepingUp is why offer did not write.
var errNotKeepingUp = errors.New("the client is not keeping up")

// write appends p, waiting while the buffer is full, with a patience of
// 0 as long as it takes.
func (c *corkConn) write(p []byte, patience time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.err == nil && len(c.buf) >= writeBehindLimit {
		c.kickLocked() // corked or not: it is full
		if c.room == nil {
			c.room = make(chan struct{})
		}
		room, until := c.room, c.taken.Add(patience)
		c.mu.Unlock()
		ok := waitRoom(room, patience, until)
		c.mu.Lock()
		if !ok {
			return errNotKeepingUp
		}
	}
	if c.err != nil {
		return c.err
	}
	c.buf = append(c.buf, p...)
	if c.mayWriteLocked() {
		c.kickLocked()
	}
	return nil
}

// waitRoom waits for room to close, with a patience until the time given.
func waitRoom(room chan struct{}, patience time.Duration, until time.Time) bool {
	if patience == 0 {
		<-room
		return true
	}
	wait := time.Until(until)
	if wait <= 0 {
		return false
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-room:
		return true
	case <-t.C:
		return false
	}
}

// mayWriteLocked reports whether what is gathered is to be written now.
func (c *corkConn) mayWriteLocked() bool { return !c.corked || len(c.buf) >= corkLimit }

// kickLocked starts the flusher if there is something to write and it
// is not running.
func (c *corkConn) kickLocked() {
	if c.flushing || len(c.buf) == 0 || c.err != nil {
		return
	}
	c.flushing = true
	go c.flush()
}

// flush writes what gathers until nothing is left.
func (c *corkConn) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	var spare []byte
	for len(c.buf) > 0 && c.err == nil && c.mayWriteLocked() {
		out := c.buf
		c.buf = spare[:0]
		c.tookLocked()
		c.mu.Unlock()
		_, err := c.Conn.Write(out)
		c.mu.Lock()
		if err != nil {
			c.err = err
			c.Conn.Close() // the client's reader sees it and cleans up
			c.tookLocked() // nothing more is written: nobody waits
		}
		if cap(out) <= keepBuffer {
			spare = out
		} else {
			spare = nil
		}
	}
	if len(c.buf) == 0 && cap(c.buf) > keepBuffer {
		c.buf = nil // an idle client keeps no big buffer
	}
	c.flushing = false
	c.drained.Broadcast()
}

// tookLocked wakes the writes waiting for room.
func (c *corkConn) tookLocked() {
	c.taken = time.Now()
	if c.room != nil {
		close(c.room)
		c.room = nil
	}
}

func (c *corkConn) cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

func (c *corkConn) uncork() {
	c.mu.Lock()
	c.corked = false
	c.kickLocked()
	c.mu.Unlock()
}

// closeFlushWait bounds how long Close waits for what is gathered to be
// written: a client that does not read must not hold the close up.
const closeFlushWait = time.Second

// Close sends what is gathered first: mochi writes a DISCONNECT and then
// closes, possibly while corked. Then it closes gracefully (linger.go).
func (c *corkConn) Close() error {
	c.mu.Lock()
	c.corked = false
	if len(c.buf) > 0 || c.flushing {
		c.Conn.SetWriteDeadline(time.Now().Add(closeFlushWait))
		c.kickLocked()
		for c.flushing {
			c.drained.Wait()
		}
	}
	c.mu.Unlock()
	return c.closeGracefully(c.Conn)
}
