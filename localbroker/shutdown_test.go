package localbroker

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/internal/mqtttest"
)

func connect5(t *testing.T, c *mqtttest.Raw, id string) {
	t.Helper()
	c.Write(packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 5,
		Connect:         packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: id},
	})
	if pk := c.Read(5 * time.Second); pk.FixedHeader.Type != packets.Connack || pk.ReasonCode != 0 {
		t.Fatalf("connect %s: type %d reason %#x", id, pk.FixedHeader.Type, pk.ReasonCode)
	}
}

// TestPublishWhileClosing: a client whose connection Close did not wait
// for (one mochi attached as the broker closed) publishes after Close has
// drained the ingest path. Before, ingest handed the message to the queue
// anyway, and the queue's callback sent on the closed release channel (a
// panic), or its pending.Add raced Close's Wait. Now a QoS 1 or 2
// publisher is told the server is shutting down (DISCONNECT 0x8B, so that
// it resends elsewhere or later), nothing is stored, and a QoS 0 message
// is dropped.
func TestPublishWhileClosing(t *testing.T) {
	for _, qos := range []byte{0, 1, 2} {
		e := start(t)
		if err := e.b.Close(); err != nil {
			t.Fatal(err)
		}
		client, server := net.Pipe()
		ended := make(chan struct{})
		go func() {
			defer close(ended)
			e.b.srv.EstablishConnection(internalListener, server)
		}()
		c := mqtttest.Wrap(t, client, 5)
		connect5(t, c, "late")
		c.Publish(1, qos, "t", []byte("late"))
		if qos > 0 {
			expectDisconnect(t, c, packets.ErrServerShuttingDown.Code)
		} else {
			// Nothing answers a QoS 0 publish: a ping shows it was read.
			c.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
			if pk := c.Read(5 * time.Second); pk.FixedHeader.Type != packets.Pingresp {
				t.Fatalf("got type %d, want PINGRESP", pk.FixedHeader.Type)
			}
		}
		c.Close()
		<-ended     // its session hooks have run
		e.q.Close() // commits what was handed to it
		if s := e.q.Stats(); s.Appended != 0 {
			t.Fatalf("QoS %d: %d messages stored after Close", qos, s.Appended)
		}
	}
}

// TestCloseEndsInProcessClients: Close ends in-process connections, with
// a CONNECT or not yet, and waits for them (mochi's Close waited for such
// a client forever, since no listener of its ends it, and a late one
// could touch the queue after it was closed: a Badger panic); a Dial
// after Close returns a closed connection.
func TestCloseEndsInProcessClients(t *testing.T) {
	e := start(t)
	connected := mqtttest.Wrap(t, e.b.Dial(), 5)
	connect5(t, connected, "serial-a")
	silent := e.b.Dial()
	t.Cleanup(func() { silent.Close() })
	closed := make(chan error, 1)
	go func() { closed <- e.b.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return with in-process clients connected")
	}
	if _, err := connected.TryRead(5 * time.Second); !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("the connected client reads %v, want the end of the connection", err)
	}
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("the client that sent nothing reads %v, want the end of the connection", err)
	}
	late := e.b.Dial()
	defer late.Close()
	late.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := late.Write([]byte{0x10}); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("writing to a connection dialled after Close: %v, want io.ErrClosedPipe", err)
	}
}

// TestListenerClosesItsClients: closing a listener disconnects its
// clients (MQTT 5: server shutting down) with Ralph's closeClients, and
// never calls mochi's, which takes the clients' read lock twice over: a
// leaving client asking for the write lock in between (a thousand
// clients closing as a shutdown began) left the shutdown waiting forever.
func TestListenerClosesItsClients(t *testing.T) {
	e := start(t)
	c := mqtttest.New(t, e.addr, 5)
	connect5(t, c, "closed-on")
	l, ok := e.b.srv.Listeners.Get(e.b.listenIDs[0])
	if !ok {
		t.Fatal("no listener")
	}
	l.Close(func(id string) { t.Errorf("mochi's closeClients(%q) called", id) })
	expectDisconnect(t, c, packets.ErrServerShuttingDown.Code)
}
