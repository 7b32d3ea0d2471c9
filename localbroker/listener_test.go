package localbroker

import (
	"bytes"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tcpOf returns the broker's first TCP listener.
func tcpOf(t *testing.T, e *env) *tcpListener {
	t.Helper()
	l, ok := e.b.srv.Listeners.Get(e.b.listenIDs[0])
	if !ok {
		t.Fatal("no listener")
	}
	return l.(*served).Listener.(*tcpListener)
}

// TestNotServing: a listener whose accept loop ends, other than by the
// broker closing it, is reported with why; one that serves is not.
func TestNotServing(t *testing.T) {
	e := start(t)
	if got := e.b.NotServing(); len(got) != 0 {
		t.Fatalf("NotServing of a serving broker = %q", got)
	}
	tcpOf(t, e).l.Close() // the socket fails under the broker
	want := e.addr + ": stopped accepting connections: accept tcp " + e.addr + ": use of closed network connection"
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := e.b.NotServing()
		if len(got) == 1 && got[0] == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("NotServing = %q, want [%q]", got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !strings.Contains(e.logs.String(), "listener stopped accepting connections") {
		t.Errorf("not logged:\n%s", e.logs)
	}
}

// TestAcceptSurvivesEMFILE: out of file descriptors, the listener keeps
// trying; once some are free, clients connect again.
func TestAcceptSurvivesEMFILE(t *testing.T) {
	e := start(t)
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	low := lim
	low.Cur = 256 // enough for the test binary, few enough to exhaust
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	defer syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	var hog []*os.File
	defer func() {
		for _, f := range hog {
			f.Close()
		}
	}()
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			break
		}
		hog = append(hog, f)
	}
	// One descriptor for the client's socket; the broker's accept then
	// has none.
	hog[len(hog)-1].Close()
	hog = hog[:len(hog)-1]
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(e.logs.String(), "cannot accept connections; retrying") {
		if time.Now().After(deadline) {
			t.Fatalf("the broker never hit EMFILE:\n%s", e.logs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, f := range hog[:32] {
		f.Close()
	}
	hog = hog[32:]
	// The connection waiting in the backlog is accepted and served.
	connect := []byte{0x10, 17, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 30, 0, 5, 'a', 'f', 't', 'e', 'r'}
	if _, err := c.Write(connect); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	connack := make([]byte, 4)
	if _, err := io.ReadFull(c, connack); err != nil || !bytes.Equal(connack, []byte{0x20, 2, 0, 0}) {
		t.Fatalf("after the descriptors came back: CONNACK % x, %v", connack, err)
	}
	if got := e.b.NotServing(); len(got) != 0 {
		t.Fatalf("NotServing after EMFILE = %q", got)
	}
}

// TestCloseWithAConnectionBeforeCONNECT: Close ends a connection that has
// sent nothing yet and waits for its goroutine, before mochi waits for its
// clients (under -race, mochi's WaitGroup reported Add racing Wait).
func TestCloseWithAConnectionBeforeCONNECT(t *testing.T) {
	e := start(t)
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tl := tcpOf(t, e)
	deadline := time.Now().Add(5 * time.Second)
	for {
		tl.mu.Lock()
		n := len(tl.conns)
		tl.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the listener holds %d connections, want 1", n)
		}
		time.Sleep(time.Millisecond)
	}
	if err := e.b.Close(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the connection after Close: read %d, %v; want EOF", n, err)
	}
}
