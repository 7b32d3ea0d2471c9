package bridge

// This file holds the upstream connection as the bridge sees it, for
// every protocol: dialing (transport.go), the handshake (the protocol's, in
// mqtt5.go or mqtt311.go) with the choice of resuming the session, the
// subscriptions, reading again from the cursor when the messages in flight
// were lost, the birth message, the backoff between failed rounds of URLs,
// the watchdog that ends a stuck connection, and the link state (setDown,
// publishState, StateTopic).
// Failing over across URLs and going back to the first is Run's loop, in
// bridge.go.
import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net/url"
	"time"

	"github.com/ralph-gateway/ralph/queue"
)

// connect dials u and performs the MQTT handshake. The returned context is
// cancelled when the connection goes down.
func (b *Bridge) connect(ctx context.Context, u *url.URL) (upstream, context.Context, error) {
	dctx, cancel := context.WithTimeout(ctx, b.cfg.ConnectTimeout)
	defer cancel()
	dial := func(ctx context.Context) (*flushConn, error) {
		conn, err := b.dial(ctx, u)
		if err == nil {
			b.conn = conn // the forwarding loop flushes it
		}
		return conn, err
	}
	down, setDown := context.WithCancelCause(ctx)
	b.mu.Lock()
	first := b.status.URL == ""
	b.mu.Unlock()
	// Resume the upstream session, even after a restart of Ralph, so that
	// downlink messages sent meanwhile arrive. The one exception: QoS 2
	// forwarding after a restart, when the upstream may still hold PUBREC
	// state for packet ids a new session would reuse (and would silently
	// drop those messages as duplicates).
	clean := first && b.forwardsQoS2()
	p := connectParams{clean: clean, down: down, setDown: setDown, dial: dial, username: b.cfg.Username, password: b.cfg.Password}
	b.renewAt = time.Time{}
	if b.cfg.Credentials != nil {
		now := time.Now()
		var expires time.Time
		p.username, p.password, expires = b.cfg.Credentials(u.Hostname(), now)
		// Renew well before the upstream drops the connection.
		b.renewAt = now.Add(expires.Sub(now) * 9 / 10)
	}
	c, err := b.sess.connect(dctx, p)
	if err != nil {
		setDown(err)
		return nil, nil, err
	}
	up := c.up
	go func() {
		select {
		case <-up.done():
			setDown(errors.New("connection closed"))
		case <-down.Done():
		}
	}()
	if err := b.subscribe(dctx, up); err != nil {
		setDown(err)
		up.disconnect()
		return nil, nil, err
	}
	b.maxPacket.Store(c.maxPacket)
	if !c.resumed {
		// Whatever was in flight went with the old session: read it again.
		b.resetWindow()
		for _, l := range b.lanes {
			l.Consumer.Rewind()
			l.buf = nil
		}
	}
	if b.cfg.StateTopic != "" {
		// QoS 0: a QoS 1 publish here would be taken for a queued message
		// by the session. The will (QoS 1) covers the other side.
		if _, err := up.publish(dctx, &queue.Message{Topic: b.cfg.StateTopic, Payload: []byte("online"), Retain: true}, ticket{}); err != nil {
			b.log.Warn("publishing the upstream state topic", "topic", b.cfg.StateTopic, "err", err)
		}
	}
	b.mu.Lock()
	b.status.Connected, b.status.URL, b.status.Since, b.status.LastError = true, u.Redacted(), time.Now(), ""
	b.mu.Unlock()
	b.publishState()
	attrs := []any{"url", u.Redacted(), "protocol", b.protocol(), "session_present", c.sessionPresent}
	if b.cfg.Proxy != nil {
		attrs = append(attrs, "proxy", b.cfg.Proxy.Host) // not its credentials
	}
	b.log.Info("upstream connected", attrs...)
	return up, down, nil
}

// protocol is the MQTT version the bridge speaks, as configured.
func (b *Bridge) protocol() string {
	if b.cfg.Protocol == "" {
		return ProtocolMQTT5
	}
	return b.cfg.Protocol
}

// protocolError is a failed handshake that says the upstream does not
// speak the bridge's version of MQTT, or seems not to.
type protocolError struct {
	msg string
	// The upstream said so in a CONNACK: it will not change its mind
	// soon, so the bridge backs off to ReconnectMax at once.
	explicit bool
}

func (e *protocolError) Error() string { return e.msg }

func (b *Bridge) forwardsQoS2() bool {
	for _, r := range b.cfg.Forward {
		if r.QoS == 2 {
			return true
		}
	}
	return false
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
// link state as JSON: {"state":"online"|"offline","since":...,"url":...,
// "error":...,"backlog":[...]}, backlog as Backlog reports it. It is
// published when the link changes, and every stateEvery while the
// backlog changes.
func StateTopic(name string) string { return "$SYS/ralph/bridges/" + name + "/state" }

// publishState announces the link state locally, retained, when it
// changes (not at every failed attempt of an outage).
func (b *Bridge) publishState() {
	if b.cfg.Local == nil {
		return
	}
	lanes := b.laneStats()
	b.mu.Lock()
	st := struct {
		State   string    `json:"state"`
		Since   time.Time `json:"since"`
		URL     string    `json:"url,omitempty"`
		Error   string    `json:"error,omitempty"`
		Backlog []Backlog `json:"backlog"`
	}{"offline", b.status.Since, b.status.URL, b.status.LastError, Backlogs(lanes, time.Now())}
	if b.status.Connected {
		st.State = "online"
	}
	b.announcedErr = b.status.LastError
	b.announcedBacklog = b.announcedBacklog[:0]
	for _, l := range lanes {
		b.announcedBacklog = append(b.announcedBacklog, l.Messages)
	}
	b.mu.Unlock()
	payload, _ := json.Marshal(st)
	if err := b.cfg.Local.Announce(StateTopic(b.cfg.Name), payload); err != nil {
		b.log.Warn("publishing the link state locally", "err", err)
	}
}
