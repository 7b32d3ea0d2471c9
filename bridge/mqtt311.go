package bridge

// This file holds the MQTT 3.1.1 upstream, on paho.mqtt.golang: the
// handshake (on the connection the bridge dials, a persistent session,
// the will, no automatic reconnection: reconnecting and failing over are
// the bridge's), publishing (what 3.1.1 cannot carry of a message's MQTT
// 5 properties is dropped and counted), subscribing, and the downlink,
// acknowledged by hand once stored. The messages in flight and their
// acknowledgements are the store's, in store311.go.
import (
	"context"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/ralph-gateway/ralph/queue"
)

// session311 is a bridge's MQTT 3.1.1 session: the store of the messages
// in flight, handed to each connection's client.
type session311 struct {
	b     *Bridge
	store *store311
}

func newSession311(b *Bridge) *session311 { return &session311{b: b, store: newStore311(b)} }

func (s *session311) close() { s.store.drop() }

func (s *session311) connect(ctx context.Context, p connectParams) (connected, error) {
	if p.clean {
		// A clean session in MQTT 3.1.1 ends with its connection: the
		// downlink messages of the next outage would be lost. So clean
		// the old session on a connection of its own, then open a
		// persistent one.
		u, _, err := s.handshake(ctx, p, true)
		if err != nil {
			return connected{}, err
		}
		u.disconnect()
	}
	u, present, err := s.handshake(ctx, p, false)
	if err != nil {
		return connected{}, err
	}
	// The store resends what was in flight, whether or not the upstream
	// kept the session: nothing to read again unless it was wiped.
	return connected{up: u, resumed: !p.clean, sessionPresent: present}, nil
}

// handshake dials and connects one client.
func (s *session311) handshake(ctx context.Context, p connectParams, clean bool) (*upstream311, bool, error) {
	b := s.b
	conn, err := p.dial(ctx)
	if err != nil {
		return nil, false, err
	}
	u := &upstream311{s: s, store: s.store.view(), closed: make(chan struct{})}
	opts := mqtt.NewClientOptions().
		// The client dials nothing: it is handed the bridge's connection
		// (TLS and write batching included). Its broker list is required
		// but only names that connection.
		AddBroker("tcp://" + conn.RemoteAddr().String()).
		SetCustomOpenConnectionFn(func(*url.URL, mqtt.ClientOptions) (net.Conn, error) { return conn, nil }).
		SetProtocolVersion(4). // 3.1.1, without falling back to 3.1
		SetClientID(b.cfg.ClientID).
		SetCleanSession(clean).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetKeepAlive(b.cfg.KeepAlive).
		SetConnectTimeout(b.cfg.ConnectTimeout).
		SetStore(u.store).
		SetOrderMatters(true).
		SetAutoAckDisabled(true). // a downlink message is acknowledged once stored
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { s.downlink(p, m) }).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			u.end()
			if !clean { // the cleaning connection's end is no loss
				p.setDown(err)
			}
		})
	if p.username != "" {
		opts.SetUsername(p.username)
	}
	if p.password != nil {
		opts.SetPassword(string(p.password))
	}
	if b.cfg.StateTopic != "" {
		opts.SetBinaryWill(b.cfg.StateTopic, []byte("offline"), 1, true)
	}
	u.cli = mqtt.NewClient(opts)
	tok := u.cli.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		conn.Close() // ends the handshake
		<-tok.Done()
	}
	if err := tok.Error(); err != nil {
		conn.Close()
		return nil, false, connectError311(tok.(*mqtt.ConnectToken).ReturnCode(), err, ctx)
	}
	return u, tok.(*mqtt.ConnectToken).SessionPresent(), nil
}

// connectError311 explains a failed MQTT 3.1.1 handshake.
func connectError311(rc byte, err error, ctx context.Context) error {
	switch {
	case rc == packets.ErrRefusedBadProtocolVersion:
		return &protocolError{msg: "upstream refused MQTT 3.1.1 (CONNACK 0x01: unacceptable protocol version)", explicit: true}
	case rc > packets.Accepted && rc < packets.ErrNetworkError:
		return fmt.Errorf("connect refused: return code %#x (%s)", rc, returnCode311(rc))
	case ctx.Err() != nil:
		return fmt.Errorf("MQTT 3.1.1 handshake: %w", context.Cause(ctx))
	}
	// paho.mqtt.golang wraps the cause after its own "network Error".
	if multi, ok := err.(interface{ Unwrap() []error }); ok {
		if errs := multi.Unwrap(); len(errs) > 0 {
			err = errs[len(errs)-1]
		}
	}
	return fmt.Errorf("MQTT 3.1.1 handshake: %w", err)
}

// upstream311 is a connection of paho.mqtt.golang's client.
type upstream311 struct {
	s      *session311
	store  *storeView
	cli    mqtt.Client
	closed chan struct{}
	once   sync.Once
}

func (u *upstream311) end() { u.once.Do(func() { close(u.closed) }) }

func (u *upstream311) publish(ctx context.Context, m *queue.Message, t ticket) (bool, error) {
	if hasProperties(m) {
		u.s.b.propertiesDropped.Add(1)
	}
	if m.QoS == 0 {
		tok, err := u.send(ctx, m)
		if err != nil {
			return false, err
		}
		return false, wait311(ctx, tok)
	}
	// Publish returns once its writer has taken the PUBLISH, in call
	// order; its token is not waited for: the store reports the PUBACK or
	// PUBCOMP, after a resend on a later connection too.
	u.store.handOver(t)
	tok, err := u.send(ctx, m)
	if err != nil {
		return u.store.withdraw(), err
	}
	inFlight := u.store.handedOver()
	select {
	case <-tok.Done():
		return inFlight, tok.Error() // refused at once (not connected), or answered already
	default:
		return inFlight, nil
	}
}

// send calls Publish on a goroutine of its own and waits for it or for
// ctx, which ends with the connection: a Publish that was waiting for the
// client's writer when the connection died waits out a 30 s timeout
// (paho.mqtt.golang's), which must not hold up the reconnection.
func (u *upstream311) send(ctx context.Context, m *queue.Message) (mqtt.Token, error) {
	res := make(chan mqtt.Token, 1)
	go func() { res <- u.cli.Publish(m.Topic, m.QoS, m.Retain, m.Payload) }()
	select {
	case tok := <-res:
		return tok, nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// hasProperties reports whether m carries MQTT 5 properties, which a
// 3.1.1 PUBLISH has no room for.
func hasProperties(m *queue.Message) bool {
	return len(m.UserProperties) > 0 || m.ExpiryInterval > 0 || m.ContentType != "" ||
		m.ResponseTopic != "" || len(m.CorrelationData) > 0 || m.PayloadFormat != 0
}

func (u *upstream311) subscribe(ctx context.Context, rules []SubRule) ([]byte, error) {
	filters := make(map[string]byte, len(rules))
	for _, r := range rules {
		filters[r.Filter] = max(filters[r.Filter], r.QoS)
	}
	tok := u.cli.SubscribeMultiple(filters, nil) // nil: messages go to the default handler, downlink
	if err := wait311(ctx, tok); err != nil {
		return nil, err
	}
	granted := tok.(*mqtt.SubscribeToken).Result()
	codes := make([]byte, len(rules))
	for i, r := range rules {
		codes[i] = granted[r.Filter]
	}
	return codes, nil
}

// disconnectQuiesce is how long Disconnect waits for its DISCONNECT to be
// written.
const disconnectQuiesce = 250 * time.Millisecond

func (u *upstream311) disconnect() {
	u.cli.Disconnect(uint(disconnectQuiesce / time.Millisecond))
	u.end()
}

func (u *upstream311) done() <-chan struct{} { return u.closed }

// wait311 waits for a token, or for ctx.
func wait311(ctx context.Context, tok mqtt.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// downlink stores a message from the upstream locally (Bridge.downlink)
// and only then acknowledges it. It runs on the client's one delivery
// goroutine (SetOrderMatters), so messages are stored in the order they
// came.
func (s *session311) downlink(p connectParams, msg mqtt.Message) {
	if p.down.Err() != nil {
		return // the connection is going: unacknowledged, the upstream resends it
	}
	m := &queue.Message{Payload: msg.Payload(), QoS: msg.Qos(), Retain: msg.Retained()}
	if _, err := s.b.downlink(p, msg.Topic(), m); err != nil {
		return
	}
	msg.Ack()
}
