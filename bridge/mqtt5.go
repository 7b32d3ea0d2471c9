package bridge

// This file holds the MQTT 5 upstream, on paho.golang's low-level client:
// the handshake (session resumption with Session Expiry, the will) and
// what a failed one means (handshakeError: an upstream that does not
// speak MQTT 5), publishing with every property, subscribing with
// retain-as-published, and the downlink messages with their properties.
// paho's session state and the report of each acknowledgement are in
// session.go.
import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ralph-gateway/ralph/queue"
)

func (s *trackedSession) connect(ctx context.Context, p connectParams) (connected, error) {
	b := s.b
	conn, err := p.dial(ctx)
	if err != nil {
		return connected{}, err
	}
	cli := paho.NewClient(paho.ClientConfig{
		ClientID:      b.cfg.ClientID,
		Conn:          conn,
		Session:       s,
		OnClientError: func(err error) { p.setDown(err) },
		OnServerDisconnect: func(d *paho.Disconnect) {
			p.setDown(fmt.Errorf("server disconnected: reason %#x %s", d.ReasonCode, reasonString(d)))
		},
		// Downlink messages are acknowledged upstream only once stored.
		EnableManualAcknowledgment: true,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			return downlink5(b, p, pr)
		}},
	})
	expiry := uint32(min(b.cfg.SessionExpiry/time.Second, 1<<32-1))
	var will *paho.WillMessage
	if b.cfg.StateTopic != "" {
		will = &paho.WillMessage{Topic: b.cfg.StateTopic, Payload: []byte("offline"), QoS: 1, Retain: true}
	}
	ca, err := cli.Connect(ctx, &paho.Connect{
		WillMessage:  will,
		ClientID:     b.cfg.ClientID,
		KeepAlive:    uint16(min(b.cfg.KeepAlive/time.Second, 65535)),
		CleanStart:   p.clean,
		Properties:   &paho.ConnectProperties{SessionExpiryInterval: &expiry},
		Username:     p.username,
		UsernameFlag: p.username != "",
		Password:     p.password,
		PasswordFlag: p.password != nil,
	})
	if err != nil {
		conn.Close()
		return connected{}, handshakeError(ca, err, conn.firstBytes())
	}
	c := connected{up: &upstream5{cli: cli, s: s}, resumed: ca.SessionPresent, sessionPresent: ca.SessionPresent}
	if ca.Properties != nil && ca.Properties.MaximumPacketSize != nil {
		c.maxPacket = *ca.Properties.MaximumPacketSize
	}
	return c, nil
}

// upstream5 is a connection of paho.golang's client.
type upstream5 struct {
	cli *paho.Client
	s   *trackedSession
}

func (u *upstream5) publish(ctx context.Context, m *queue.Message, t ticket) (bool, error) {
	pub := publish5(m)
	if pub.QoS == 0 {
		_, err := u.cli.Publish(ctx, pub)
		return false, err
	}
	u.s.handOver(t)
	_, err := u.cli.PublishWithOptions(ctx, pub, paho.PublishOptions{Method: paho.PublishMethod_AsyncSend})
	return u.s.handedOver(), err
}

// publish5 is m as an MQTT 5 PUBLISH, with its properties.
func publish5(m *queue.Message) *paho.Publish {
	p := &paho.Publish{
		Topic:   m.Topic,
		QoS:     m.QoS,
		Retain:  m.Retain,
		Payload: m.Payload,
		Properties: &paho.PublishProperties{
			ContentType:     m.ContentType,
			ResponseTopic:   m.ResponseTopic,
			CorrelationData: m.CorrelationData,
		},
	}
	if m.PayloadFormat != 0 {
		pf := m.PayloadFormat
		p.Properties.PayloadFormat = &pf
	}
	if m.ExpiryInterval > 0 {
		e := m.ExpiryInterval
		p.Properties.MessageExpiry = &e
	}
	for _, u := range m.UserProperties {
		p.Properties.User.Add(u.Key, u.Value)
	}
	return p
}

func (u *upstream5) subscribe(ctx context.Context, rules []SubRule) ([]byte, error) {
	sub := &paho.Subscribe{}
	for _, r := range rules {
		// Retain-as-published: without it the upstream clears the retain
		// flag of messages it forwards to a live subscription.
		sub.Subscriptions = append(sub.Subscriptions, paho.SubscribeOptions{Topic: r.Filter, QoS: r.QoS, RetainAsPublished: r.Retain})
	}
	ack, err := u.cli.Subscribe(ctx, sub)
	if err != nil {
		return nil, err
	}
	return ack.Reasons, nil
}

func (u *upstream5) disconnect()           { u.cli.Disconnect(&paho.Disconnect{ReasonCode: 0}) }
func (u *upstream5) done() <-chan struct{} { return u.cli.Done() }

// downlink5 stores a message from the upstream locally (Bridge.downlink)
// and only then acknowledges it.
func downlink5(b *Bridge, p connectParams, pr paho.PublishReceived) (bool, error) {
	pk := pr.Packet
	m := &queue.Message{Payload: pk.Payload, QoS: pk.QoS, Retain: pk.Retain}
	if pp := pk.Properties; pp != nil {
		m.ContentType, m.ResponseTopic, m.CorrelationData = pp.ContentType, pp.ResponseTopic, pp.CorrelationData
		if pp.PayloadFormat != nil {
			m.PayloadFormat = *pp.PayloadFormat
		}
		if pp.MessageExpiry != nil {
			m.ExpiryInterval = *pp.MessageExpiry
		}
		for _, u := range pp.User {
			m.UserProperties = append(m.UserProperties, queue.UserProperty{Key: u.Key, Value: u.Value})
		}
	}
	matched, err := b.downlink(p, pk.Topic, m)
	if err != nil {
		return false, err
	}
	return matched, pr.Client.Ack(pk)
}

func reasonString(d *paho.Disconnect) string {
	if d.Properties != nil {
		return d.Properties.ReasonString
	}
	return ""
}

const mqtt5Only = `this bridge speaks MQTT 5: set protocol = "3.1.1" on it for an MQTT 3.1.1 upstream, or enable MQTT 5 there`

// connackV311 names MQTT 3.1.1's CONNACK return codes.
var connackV311 = [...]string{"connection accepted", "unacceptable protocol version", "identifier rejected", "server unavailable", "bad user name or password", "not authorized"}

// handshakeError explains a failed MQTT 5 handshake: ca is the CONNACK
// paho parsed, if any; head the first bytes the upstream sent.
func handshakeError(ca *paho.Connack, err error, head []byte) error {
	switch {
	case ca != nil && ca.ReasonCode == 0x84:
		return &protocolError{msg: "upstream refused MQTT 5 (CONNACK reason 0x84: unsupported protocol version): " + mqtt5Only, explicit: true}
	case ca != nil && ca.ReasonCode >= 0x80:
		reason := ""
		if ca.Properties != nil {
			reason = ca.Properties.ReasonString
		}
		return fmt.Errorf("connect refused: reason %#x %s", ca.ReasonCode, reason)
	case ca == nil && len(head) == headLen && head[0] == 0x20 && head[1] == 0x02:
		// An MQTT 3.1.1 CONNACK: two bytes long, where an MQTT 5 one
		// has a property length too. paho reads it as a truncated MQTT 5
		// CONNACK and says EOF.
		rc := head[3]
		if rc == 0x01 {
			return &protocolError{msg: "upstream refused MQTT 5 (CONNACK 0x01: unacceptable protocol version): " + mqtt5Only, explicit: true}
		}
		return &protocolError{msg: fmt.Sprintf("upstream answered in MQTT 3.1.1 (CONNACK 0x%02x: %s): %s", rc, returnCode311(rc), mqtt5Only), explicit: true}
	case ca == nil && len(head) == 0 && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)):
		return &protocolError{msg: `upstream closed the connection after CONNECT without a CONNACK: it may not speak MQTT 5 (set protocol = "3.1.1" on the bridge for an MQTT 3.1.1 upstream)`}
	}
	return err
}

// returnCode311 names an MQTT 3.1.1 CONNACK return code.
func returnCode311(rc byte) string {
	if int(rc) < len(connackV311) {
		return connackV311[rc]
	}
	return "unknown return code"
}
