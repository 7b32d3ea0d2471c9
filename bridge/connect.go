package bridge

// This file holds the upstream connection: dialing (TCP or TLS), the MQTT
// handshake with its session resumption, will and birth message, the
// backoff between failed rounds of URLs, what a failed handshake means
// (handshakeError: an upstream that does not speak MQTT 5), the watchdog
// that ends a stuck connection, and the link state (setDown,
// publishState, StateTopic).
// Failing over across URLs and going back to the first is Run's loop, in
// bridge.go.
import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"syscall"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// connect dials u and performs the MQTT handshake. The returned context is
// cancelled when the connection goes down.
func (b *Bridge) connect(ctx context.Context, u *url.URL) (*paho.Client, context.Context, error) {
	dctx, cancel := context.WithTimeout(ctx, b.cfg.ConnectTimeout)
	defer cancel()
	conn, err := b.dial(dctx, u)
	if err != nil {
		return nil, nil, err
	}
	b.conn = conn.(*flushConn)
	down, setDown := context.WithCancelCause(ctx)
	cli := paho.NewClient(paho.ClientConfig{
		ClientID:      b.cfg.ClientID,
		Conn:          conn,
		Session:       b.sess,
		OnClientError: func(err error) { setDown(err) },
		OnServerDisconnect: func(d *paho.Disconnect) {
			setDown(fmt.Errorf("server disconnected: reason %#x %s", d.ReasonCode, reasonString(d)))
		},
		// Downlink messages are acknowledged upstream only once stored.
		EnableManualAcknowledgment: true,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			return b.downlink(down, setDown, pr)
		}},
	})
	expiry := uint32(min(b.cfg.SessionExpiry/time.Second, 1<<32-1))
	b.mu.Lock()
	first := b.status.URL == ""
	b.mu.Unlock()
	// Resume the upstream session, even after a restart of Ralph, so that
	// downlink messages sent meanwhile arrive. The one exception: QoS 2
	// forwarding after a restart, when the upstream may still hold PUBREC
	// state for packet ids a new session would reuse (and would silently
	// drop those messages as duplicates).
	clean := first && b.forwardsQoS2()
	var will *paho.WillMessage
	if b.cfg.StateTopic != "" {
		will = &paho.WillMessage{Topic: b.cfg.StateTopic, Payload: []byte("offline"), QoS: 1, Retain: true}
	}
	ca, err := cli.Connect(dctx, &paho.Connect{
		WillMessage:  will,
		ClientID:     b.cfg.ClientID,
		KeepAlive:    uint16(min(b.cfg.KeepAlive/time.Second, 65535)),
		CleanStart:   clean,
		Properties:   &paho.ConnectProperties{SessionExpiryInterval: &expiry},
		Username:     b.cfg.Username,
		UsernameFlag: b.cfg.Username != "",
		Password:     b.cfg.Password,
		PasswordFlag: b.cfg.Password != nil,
	})
	if err != nil {
		conn.Close()
		setDown(err)
		return nil, nil, handshakeError(ca, err, b.conn.firstBytes())
	}
	go func() {
		select {
		case <-cli.Done():
			setDown(errors.New("connection closed"))
		case <-down.Done():
		}
	}()
	if err := b.subscribe(dctx, cli); err != nil {
		setDown(err)
		cli.Disconnect(&paho.Disconnect{ReasonCode: 0})
		return nil, nil, err
	}
	b.maxPacket.Store(0)
	if ca.Properties != nil && ca.Properties.MaximumPacketSize != nil {
		b.maxPacket.Store(*ca.Properties.MaximumPacketSize)
	}
	if !ca.SessionPresent {
		// Whatever was in flight went with the old session: read it again.
		b.resetWindow()
		b.cons.Rewind()
		b.buf = nil
	}
	if b.cfg.StateTopic != "" {
		// QoS 0: a QoS 1 publish here would be taken for a queued message
		// by the session wrapper. The will (QoS 1) covers the other side.
		if _, err := cli.Publish(dctx, &paho.Publish{Topic: b.cfg.StateTopic, Payload: []byte("online"), Retain: true}); err != nil {
			b.log.Warn("publishing the upstream state topic", "topic", b.cfg.StateTopic, "err", err)
		}
	}
	b.mu.Lock()
	b.status.Connected, b.status.URL, b.status.Since, b.status.LastError = true, u.Redacted(), time.Now(), ""
	b.mu.Unlock()
	b.publishState()
	b.log.Info("upstream connected", "url", u.Redacted(), "session_present", ca.SessionPresent)
	return cli, down, nil
}

// protocolError is a failed handshake that says the upstream does not
// speak MQTT 5, or seems not to.
type protocolError struct {
	msg string
	// The upstream said so in a CONNACK: it will not change its mind
	// soon, so the bridge backs off to ReconnectMax at once.
	explicit bool
}

func (e *protocolError) Error() string { return e.msg }

const mqtt5Only = "this bridge speaks MQTT 5 only; the upstream needs MQTT 5 enabled"

// connackV311 names MQTT 3.1.1's CONNACK return codes.
var connackV311 = [...]string{"connection accepted", "unacceptable protocol version", "identifier rejected", "server unavailable", "bad user name or password", "not authorized"}

// handshakeError explains a failed MQTT handshake: ca is the CONNACK paho
// parsed, if any; head the first bytes the upstream sent.
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
		name := "unknown return code"
		if int(rc) < len(connackV311) {
			name = connackV311[rc]
		}
		return &protocolError{msg: fmt.Sprintf("upstream answered in MQTT 3.1.1 (CONNACK 0x%02x: %s): %s", rc, name, mqtt5Only), explicit: true}
	case ca == nil && len(head) == 0 && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)):
		return &protocolError{msg: "upstream closed the connection after CONNECT without a CONNACK: it may not speak MQTT 5, which this bridge needs"}
	}
	return err
}

func (b *Bridge) forwardsQoS2() bool {
	for _, r := range b.cfg.Forward {
		if r.QoS == 2 {
			return true
		}
	}
	return false
}

func reasonString(d *paho.Disconnect) string {
	if d.Properties != nil {
		return d.Properties.ReasonString
	}
	return ""
}

func (b *Bridge) dial(ctx context.Context, u *url.URL) (net.Conn, error) {
	switch u.Scheme {
	case "mqtt", "tcp":
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", u.Host)
		if err != nil {
			return nil, err
		}
		return newFlushConn(c), nil
	case "mqtts", "ssl", "tls":
		cfg := b.cfg.TLS
		if cfg == nil {
			cfg = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		cfg = cfg.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName = u.Hostname()
		}
		d := tls.Dialer{Config: cfg}
		c, err := d.DialContext(ctx, "tcp", u.Host)
		if err != nil {
			return nil, err
		}
		return newFlushConn(c), nil // its lock serialises paho's writers, as tls.Conn needs
	}
	return nil, fmt.Errorf("unsupported URL scheme %q", u.Scheme)
}

// backoff is exponential with jitter: a random duration in [d/2, d] where d
// doubles per failed round from ReconnectMin up to ReconnectMax.
func (b *Bridge) backoff(attempt int) time.Duration {
	d := b.cfg.ReconnectMin << min(attempt, 30)
	if d > b.cfg.ReconnectMax || d <= 0 {
		d = b.cfg.ReconnectMax
	}
	return jitter(d)
}

// jitter returns a random duration in [d/2, d].
func jitter(d time.Duration) time.Duration { return d/2 + rand.N(d/2+1) }

// watchdog ends a connection that is up but makes no progress: messages
// in flight and no acknowledgement for AckTimeout. A half-open TCP link on
// a cellular modem looks exactly like that until keepalive notices.
func (b *Bridge) watchdog(ctx context.Context, stop context.CancelCauseFunc) {
	t := time.NewTicker(max(b.cfg.AckTimeout/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		window, _ := b.current()
		last := time.Unix(0, b.lastProgress.Load())
		if len(window) > 0 && time.Since(last) > b.cfg.AckTimeout {
			b.log.Warn("upstream stuck", "in_flight", len(window), "since", last)
			stop(errStuck)
			return
		}
	}
}

func (b *Bridge) setDown(err error) {
	var pe *protocolError
	b.mu.Lock()
	changed := b.status.Connected || b.status.Since.IsZero()
	if changed {
		b.status.Since = time.Now()
	}
	b.status.Connected = false
	if err != nil {
		b.status.LastError = err.Error()
	}
	// An upstream that does not speak MQTT 5 is a reason to fix, worth
	// announcing in the middle of an outage too (once).
	changed = changed || errors.As(err, &pe) && b.status.LastError != b.announcedErr
	b.mu.Unlock()
	if changed {
		b.publishState()
	}
}

// StateTopic is the local, retained topic where a bridge publishes its
// link state as JSON: {"state":"online"|"offline","since":...,"url":...,"error":...}.
func StateTopic(name string) string { return "$SYS/ralph/bridges/" + name + "/state" }

// publishState announces the link state locally, retained, when it
// changes (not at every failed attempt of an outage).
func (b *Bridge) publishState() {
	if b.cfg.Local == nil {
		return
	}
	b.mu.Lock()
	st := struct {
		State string    `json:"state"`
		Since time.Time `json:"since"`
		URL   string    `json:"url,omitempty"`
		Error string    `json:"error,omitempty"`
	}{"offline", b.status.Since, b.status.URL, b.status.LastError}
	if b.status.Connected {
		st.State = "online"
	}
	b.announcedErr = b.status.LastError
	b.mu.Unlock()
	payload, _ := json.Marshal(st)
	if err := b.cfg.Local.Announce(StateTopic(b.cfg.Name), payload); err != nil {
		b.log.Warn("publishing the link state locally", "err", err)
	}
}
