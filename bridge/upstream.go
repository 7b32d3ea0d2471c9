package bridge

// This file holds what the bridge needs of a version of MQTT: a session
// (per Bridge, it outlives connections and holds the messages in flight)
// that connects, and the upstream connection it returns, which publishes
// in order, subscribes and disconnects. Everything else (the queue, the
// window, pacing, routing, dead letters, the link state, failover and
// backoff, the downlink's rules and loop safety) is the bridge's, shared
// by both versions. MQTT 5 is mqtt5.go (paho.golang), MQTT 3.1.1
// mqtt311.go (paho.mqtt.golang).
import (
	"context"
	"fmt"

	"github.com/ralph-gateway/ralph/queue"
)

// Protocol versions a bridge can speak upstream (Config.Protocol).
const (
	ProtocolMQTT5   = "5"
	ProtocolMQTT311 = "3.1.1"
)

// upstreamSession is a bridge's protocol state across connections.
type upstreamSession interface {
	// connect dials with p.dial and performs the MQTT handshake (ctx
	// bounds both). The connection reports its end through p.setDown.
	connect(ctx context.Context, p connectParams) (connected, error)
	// close drops what the session holds; the bridge has stopped.
	close()
}

// connectParams are what a handshake needs beyond the Config.
type connectParams struct {
	clean   bool                    // start a new upstream session
	down    context.Context         // done when the connection is down
	setDown context.CancelCauseFunc // ends the connection, with why
	// dial opens a connection to the URL being tried (TCP or TLS).
	dial func(context.Context) (*flushConn, error)
	// The credentials for this connection (Config.Credentials may make
	// new ones for each).
	username string
	password []byte // nil: none
}

// connected is the outcome of a handshake.
type connected struct {
	up upstream
	// resumed: the session resends the messages that were in flight, so
	// the bridge need not read them again from its cursor.
	resumed bool
	// sessionPresent is what the upstream said (for the log).
	sessionPresent bool
	// maxPacket is the upstream's Maximum Packet Size; 0 for none.
	maxPacket uint32
}

// upstream is one connection to the upstream broker.
type upstream interface {
	// publish sends m, with its topic, QoS and retain flag as they go
	// upstream, after everything published before it. QoS 0: it returns
	// once m is written. QoS 1 and 2: it returns inFlight once m is in the
	// session, which then calls Bridge.answered(t, code) when the upstream
	// acknowledges it (PUBACK, PUBCOMP), unless t.abandon closes first;
	// not inFlight, m was not sent.
	publish(ctx context.Context, m *queue.Message, t ticket) (inFlight bool, err error)
	// subscribe asks for the rules' filters; it returns one code per
	// rule (0x80 and up: refused).
	subscribe(ctx context.Context, rules []SubRule) ([]byte, error)
	// disconnect sends DISCONNECT and closes the connection.
	disconnect()
	// done is closed when the connection has ended.
	done() <-chan struct{}
}

// ticket is a QoS 1 or 2 message in flight: its place in the queue and
// the window slot it holds.
type ticket struct {
	lane    *lane
	seq     uint64
	window  chan struct{} // the window it holds a slot of
	abandon chan struct{} // closed when that window is given up (see resetWindow)
}

// newSession returns the session for cfg.Protocol.
func newSession(b *Bridge) upstreamSession {
	switch b.cfg.Protocol {
	case ProtocolMQTT5, "":
		return newSession5(b)
	case ProtocolMQTT311:
		return newSession311(b)
	}
	panic(fmt.Sprintf("bridge %s: unknown protocol %q (want %q or %q)", b.cfg.Name, b.cfg.Protocol, ProtocolMQTT5, ProtocolMQTT311))
}
