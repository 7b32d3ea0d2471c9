package bridge

// This file holds flushConn, the upstream connection's write buffer, which
// turns a backlog of PUBLISHes into a few large writes, and keeps the
// first bytes the upstream answers with.
import (
	"bufio"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// flushConn gathers writes to the upstream connection: the forwarding loop
// flushes when it is about to wait (for the queue, for a window slot), so
// a backlog goes out in a few large writes instead of one system call per
// PUBLISH. Anything written by paho itself (PINGREQ, acks) is flushed
// within flushDelay at the latest. Writes are serialised, as paho needs.
type flushConn struct {
	net.Conn
	mu    sync.Mutex
	w     *bufio.Writer
	timer *time.Timer
	err   error

	// The first bytes the upstream sent, kept to tell what a CONNACK that
	// paho cannot parse said (see handshakeError).
	headMu   sync.Mutex
	head     []byte
	headFull atomic.Bool
}

// headLen is how much of the upstream's first bytes flushConn keeps: an
// MQTT 3.1.1 CONNACK, whole.
const headLen = 4

const flushDelay = time.Millisecond

func newFlushConn(c net.Conn) *flushConn {
	f := &flushConn{Conn: c, w: bufio.NewWriterSize(c, 32<<10)}
	f.timer = time.AfterFunc(time.Hour, func() { f.Flush() })
	f.timer.Stop()
	return f
}

// Read reads from the connection, keeping the first headLen bytes.
func (f *flushConn) Read(p []byte) (int, error) {
	n, err := f.Conn.Read(p)
	if n > 0 && !f.headFull.Load() {
		f.headMu.Lock()
		f.head = append(f.head, p[:min(n, headLen-len(f.head))]...)
		f.headFull.Store(len(f.head) == headLen)
		f.headMu.Unlock()
	}
	return n, err
}

// firstBytes returns up to headLen bytes the upstream sent first.
func (f *flushConn) firstBytes() []byte {
	f.headMu.Lock()
	defer f.headMu.Unlock()
	return append([]byte(nil), f.head...)
}

func (f *flushConn) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return 0, f.err
	}
	wasEmpty := f.w.Buffered() == 0
	n, err := f.w.Write(p)
	if err != nil {
		f.err = err
		return n, err
	}
	if wasEmpty && f.w.Buffered() > 0 {
		f.timer.Reset(flushDelay)
	}
	return n, nil
}

// Flush writes out what is buffered.
func (f *flushConn) Flush() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	if f.w.Buffered() > 0 {
		f.err = f.w.Flush()
	}
	return f.err
}

func (f *flushConn) Close() error {
	f.timer.Stop()
	f.Flush()
	return f.Conn.Close()
}
