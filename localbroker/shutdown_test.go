package localbroker

import (
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/internal/mqtttest"
)

// TestPublishWhileClosing: a client whose connection mochi's Close did
// not wait for (an in-process one established while the broker closed)
// publishes after Close has drained the ingest path. Before, ingest handed
// the message to the queue anyway, and the queue's callback sent on the
// closed release channel (a panic), or its pending.Add raced Close's
// Wait. Now a QoS 1 or 2 publisher is told the server is shutting down
// (DISCONNECT 0x8B, so that it resends elsewhere or later), nothing is
// stored, and a QoS 0 message is dropped.
func TestPublishWhileClosing(t *testing.T) {
	for _, qos := range []byte{0, 1, 2} {
		e := start(t)
		if err := e.b.Close(); err != nil {
			t.Fatal(err)
		}
		c := mqtttest.Wrap(t, e.b.Dial(), 5)
		c.Write(packets.Packet{
			FixedHeader:     packets.FixedHeader{Type: packets.Connect},
			ProtocolVersion: 5,
			Connect:         packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: "late"},
		})
		if pk := c.Read(5 * time.Second); pk.FixedHeader.Type != packets.Connack {
			t.Fatalf("got type %d, want CONNACK", pk.FixedHeader.Type)
		}
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
		e.q.Close() // commits what was handed to it
		if s := e.q.Stats(); s.Appended != 0 {
			t.Fatalf("QoS %d: %d messages stored after Close", qos, s.Appended)
		}
	}
}
