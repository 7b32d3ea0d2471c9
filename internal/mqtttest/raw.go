// Package mqtttest has test helpers shared by Ralph's packages: a raw MQTT
// client that shows exactly which packets a broker sends (and which it
// does not), and helpers to run a real Mosquitto.
package mqtttest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Raw is a bare MQTT connection: it writes the packets the test asks for and
// returns every packet the broker sends, so tests can assert on acks and
// their reason codes byte for byte. It speaks MQTT 3.1.1 (version 4) or 5.
type Raw struct {
	t       testing.TB
	conn    net.Conn
	r       *bufio.Reader
	Version byte

	// Acked counts publishes acknowledged by PublishAll so far, for tests
	// that act in the middle of a stream.
	Acked atomic.Int64
}

// Dial connects to addr and completes the MQTT handshake for clientID,
// with a clean session.
func Dial(t testing.TB, addr, clientID string, version byte) *Raw {
	t.Helper()
	return DialSession(t, addr, clientID, version, true)
}

// DialSession is Dial with the choice of a clean or a persistent session
// (for MQTT 5, persistent means a session expiry of an hour).
func DialSession(t testing.TB, addr, clientID string, version byte, clean bool) *Raw {
	t.Helper()
	r, pk := connect(t, addr, clientID, version, clean, "", "")
	if pk.FixedHeader.Type != packets.Connack || pk.ReasonCode != 0 {
		t.Fatalf("connect %s: got packet type %d reason %#x", clientID, pk.FixedHeader.Type, pk.ReasonCode)
	}
	return r
}

// Login connects with a username and password and returns the CONNACK,
// whatever it says.
func Login(t testing.TB, addr, clientID string, version byte, user, pass string) (*Raw, packets.Packet) {
	t.Helper()
	return connect(t, addr, clientID, version, true, user, pass)
}

// New opens a connection without any MQTT handshake, for tests that
// write their own CONNECT.
func New(t testing.TB, addr string, version byte) *Raw {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &Raw{t: t, conn: c, r: bufio.NewReader(c), Version: version}
}

// Wrap makes a Raw of a connection the test opened itself (an in-process
// one, say), without any MQTT handshake.
func Wrap(t testing.TB, c net.Conn, version byte) *Raw {
	t.Cleanup(func() { c.Close() })
	return &Raw{t: t, conn: c, r: bufio.NewReader(c), Version: version}
}

func connect(t testing.TB, addr, clientID string, version byte, clean bool, user, pass string) (*Raw, packets.Packet) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	r := &Raw{t: t, conn: c, r: bufio.NewReader(c), Version: version}
	t.Cleanup(func() { c.Close() })
	name := "MQTT"
	r.Write(packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: version,
		Connect: packets.ConnectParams{
			ProtocolName:     []byte(name),
			Clean:            clean,
			Keepalive:        60,
			ClientIdentifier: clientID,
			UsernameFlag:     user != "",
			Username:         []byte(user),
			PasswordFlag:     pass != "",
			Password:         []byte(pass),
		},
		Properties: packets.Properties{SessionExpiryInterval: 3600, SessionExpiryIntervalFlag: !clean && version == 5},
	})
	return r, r.Read(5 * time.Second)
}

// Write encodes and sends pk.
func (r *Raw) Write(pk packets.Packet) {
	r.t.Helper()
	if err := r.TryWrite(pk); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// TryWrite encodes and sends pk, returning a write error to the caller.
func (r *Raw) TryWrite(pk packets.Packet) error {
	r.t.Helper()
	b, err := r.Encode(pk)
	if err != nil {
		return err
	}
	_, err = r.conn.Write(b)
	return err
}

// WriteBytes sends b as is: several encoded packets, or garbage.
func (r *Raw) WriteBytes(b []byte) error {
	_, err := r.conn.Write(b)
	return err
}

// Encode returns pk's wire form.
func (r *Raw) Encode(pk packets.Packet) ([]byte, error) {
	pk.ProtocolVersion = r.Version
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Pubrel:
		err = pk.PubrelEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	case packets.Pubrec:
		err = pk.PubrecEncode(&buf)
	case packets.Pubcomp:
		err = pk.PubcompEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	case packets.Unsubscribe:
		err = pk.UnsubscribeEncode(&buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(&buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&buf)
	default:
		err = fmt.Errorf("mqtttest: cannot encode packet type %d", pk.FixedHeader.Type)
	}
	return buf.Bytes(), err
}

// Publish sends a PUBLISH.
func (r *Raw) Publish(id uint16, qos byte, topic string, payload []byte) {
	r.t.Helper()
	r.Write(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		PacketID:    id,
		TopicName:   topic,
		Payload:     payload,
	})
}

// Subscribe subscribes to filter and waits for the SUBACK.
func (r *Raw) Subscribe(filter string, qos byte) {
	r.t.Helper()
	r.Write(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		PacketID:    1,
		Filters:     packets.Subscriptions{{Filter: filter, Qos: qos}},
	})
	if pk := r.Read(5 * time.Second); pk.FixedHeader.Type != packets.Suback || len(pk.ReasonCodes) != 1 || pk.ReasonCodes[0] >= 0x80 {
		r.t.Fatalf("subscribe %s: got packet type %d, codes %v", filter, pk.FixedHeader.Type, pk.ReasonCodes)
	}
}

// Read returns the next packet, failing the test if none arrives in time.
func (r *Raw) Read(timeout time.Duration) packets.Packet {
	r.t.Helper()
	pk, err := r.TryRead(timeout)
	if err != nil {
		r.t.Fatalf("read: %v", err)
	}
	return pk
}

// TryRead returns the next packet or the error that ended the wait: a
// timeout (net.Error with Timeout()) or the connection closing.
func (r *Raw) TryRead(timeout time.Duration) (packets.Packet, error) {
	r.conn.SetReadDeadline(time.Now().Add(timeout))
	var pk packets.Packet
	pk.ProtocolVersion = r.Version
	hb, err := r.r.ReadByte()
	if err != nil {
		return pk, err
	}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		return pk, err
	}
	n, _, err := packets.DecodeLength(r.r)
	if err != nil {
		return pk, err
	}
	pk.FixedHeader.Remaining = n
	body := make([]byte, n)
	if _, err := io.ReadFull(r.r, body); err != nil {
		return pk, err
	}
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Pubrel:
		err = pk.PubrelDecode(body)
	case packets.Pubcomp:
		err = pk.PubcompDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Unsuback:
		err = pk.UnsubackDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	case packets.Pingresp:
	default:
		err = fmt.Errorf("mqtttest: unexpected packet type %d", pk.FixedHeader.Type)
	}
	return pk, err
}

// Close closes the connection.
func (r *Raw) Close() { r.conn.Close() }

// PublishAll publishes each payload to topic at QoS 1 or 2, keeping up to
// inflight publishes unacknowledged, and returns the payloads the broker
// acknowledged (PUBACK, or PUBREC for QoS 2) with success, in ack order. It
// stops at the first error, such as the broker going away, and returns it.
func (r *Raw) PublishAll(topic string, qos byte, payloads []string, inflight int) ([]string, error) {
	tokens := make(chan struct{}, inflight)
	werr := make(chan error, 1)
	stop := make(chan struct{})
	defer close(stop)
	id := func(i int) uint16 { return uint16(i%65535 + 1) }
	go func() {
		for i, p := range payloads {
			select {
			case tokens <- struct{}{}:
			case <-stop:
				return
			}
			err := r.TryWrite(packets.Packet{
				FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
				PacketID:    id(i),
				TopicName:   topic,
				Payload:     []byte(p),
			})
			if err != nil {
				werr <- err
				return
			}
		}
	}()
	var acked []string
	pending := 0
	for len(acked) < len(payloads) || pending > 0 {
		pk, err := r.TryRead(10 * time.Second)
		if err != nil {
			select {
			case we := <-werr:
				return acked, we
			default:
			}
			return acked, err
		}
		switch pk.FixedHeader.Type {
		case packets.Puback, packets.Pubrec:
			if pk.ReasonCode >= 0x80 {
				return acked, fmt.Errorf("publish %d refused with reason %#x", pk.PacketID, pk.ReasonCode)
			}
			i := len(acked)
			if pk.PacketID != id(i) {
				return acked, fmt.Errorf("ack for packet %d, expected %d: out of order", pk.PacketID, id(i))
			}
			acked = append(acked, payloads[i])
			r.Acked.Add(1)
			if qos == 2 {
				pending++
				if err := r.TryWrite(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: pk.PacketID}); err != nil {
					return acked, err
				}
			} else {
				<-tokens
			}
		case packets.Pubcomp:
			pending--
			<-tokens
		case packets.Disconnect:
			return acked, fmt.Errorf("disconnected by the broker: reason %#x", pk.ReasonCode)
		default:
			return acked, fmt.Errorf("unexpected packet type %d", pk.FixedHeader.Type)
		}
	}
	return acked, nil
}
