package serialin

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// mqttConn is a port's MQTT connection to the broker. Packets are written
// by their own goroutine from an unbounded queue: the session loop must
// never block on the broker, since the broker may itself be blocked
// writing to the session. What the queue holds is bounded by the protocol:
// publishes by the broker's receive maximum, acks by the MSG window.
type mqttConn struct {
	conn net.Conn
	mu   sync.Mutex
	q    [][]byte
	wake chan struct{}
	done chan struct{}
}

type packet interface {
	WriteTo(io.Writer) (int64, error)
}

// connect sends CONNECT on conn and waits for CONNACK. It returns the
// broker's receive maximum.
func connect(conn net.Conn, c *packets.Connect) (recvMax int, err error) {
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	defer conn.SetDeadline(time.Time{})
	if _, err := c.WriteTo(conn); err != nil {
		return 0, fmt.Errorf("sending CONNECT: %w", err)
	}
	cp, err := packets.ReadPacket(conn)
	if err != nil {
		return 0, fmt.Errorf("reading CONNACK: %w", err)
	}
	ack, ok := cp.Content.(*packets.Connack)
	if !ok {
		return 0, fmt.Errorf("broker answered CONNECT with %s", cp.PacketType())
	}
	if ack.ReasonCode != packets.ConnackSuccess {
		return 0, fmt.Errorf("broker refused the connection: reason 0x%02X", ack.ReasonCode)
	}
	recvMax = 65535
	if ack.Properties != nil && ack.Properties.ReceiveMaximum != nil {
		recvMax = int(*ack.Properties.ReceiveMaximum)
	}
	return recvMax, nil
}

func newMQTTConn(conn net.Conn) *mqttConn {
	c := &mqttConn{conn: conn, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go c.writeLoop()
	return c
}

func (c *mqttConn) send(pk packet) {
	var b bytes.Buffer
	pk.WriteTo(&b)
	c.mu.Lock()
	c.q = append(c.q, b.Bytes())
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *mqttConn) writeLoop() {
	defer close(c.done)
	for range c.wake {
		c.mu.Lock()
		q := c.q
		c.q = nil
		c.mu.Unlock()
		if len(q) == 0 {
			continue
		}
		if _, err := (*net.Buffers)(&q).WriteTo(c.conn); err != nil {
			c.conn.Close()
			for range c.wake {
			}
			return
		}
	}
}

// close flushes what is queued, then closes the connection.
func (c *mqttConn) close() {
	close(c.wake)
	<-c.done
	c.conn.Close()
}
