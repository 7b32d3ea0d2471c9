// Package bridge forwards messages from Ralph's queue to an upstream MQTT 5
// broker: one Bridge per configured upstream, each reading the queue through
// its own consumer, so a slow or absent upstream holds back nothing but its
// own backlog.
//
// Messages are published in queue order with a window of unacknowledged
// ones in flight. Only when the upstream acknowledges a message (PUBACK for
// QoS 1, PUBCOMP for QoS 2, the write itself for QoS 0) is it acknowledged
// in the queue. After a lost connection the upstream session, if it
// survived, carries the in-flight messages; if it did not, the bridge
// re-reads from its cursor. Delivery is at-least-once: duplicates are
// bounded by the window.
//
// The bridge drives paho.golang's low-level client rather than autopaho,
// whose Publish blocks per message: concurrent blocking publishes would
// race each other onto the wire and break ordering. Here one goroutine
// writes every PUBLISH in order (paho's asynchronous send) and a thin
// wrapper around paho's session state reports each acknowledgement.
package bridge

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session"
	"github.com/eclipse/paho.golang/paho/session/state"

	"github.com/ralph-gateway/ralph/internal/topic"
	"github.com/ralph-gateway/ralph/queue"
)

// Rule selects local messages to forward and says how to name them upstream.
type Rule struct {
	Filter       string // local topic filter
	StripPrefix  string // removed from the local topic when present
	RemotePrefix string // then prepended
	QoS          byte   // upstream QoS
}

// Remote returns the upstream topic for a local one.
func (r Rule) Remote(local string) string {
	return r.RemotePrefix + strings.TrimPrefix(local, r.StripPrefix)
}

// SubRule brings upstream messages down to the local broker.
type SubRule struct {
	Filter      string // upstream topic filter
	StripPrefix string // removed from the upstream topic when present
	LocalPrefix string // then prepended
	QoS         byte   // subscription QoS
	Retain      bool   // keep the retain flag locally
}

// Local returns the local topic for an upstream one.
func (r SubRule) Local(remote string) string {
	return r.LocalPrefix + strings.TrimPrefix(remote, r.StripPrefix)
}

// Local is the local broker: Publish stores a downlink message durably
// and delivers it; Announce delivers a retained status message without
// storing it.
type Local interface {
	Publish(ctx context.Context, m *queue.Message) error
	Announce(topic string, payload []byte) error
}

// OriginPrefix marks messages that came down from a bridge: no bridge
// forwards them upstream again, so two gateways (or a gateway and a cloud
// rule) can never bounce a message between them.
const OriginPrefix = "$bridge/"

// Config configures a Bridge.
type Config struct {
	Name           string
	URLs           []*url.URL // tried in order; schemes mqtt, tcp, mqtts, ssl, tls
	ClientID       string
	Username       string
	Password       []byte      // nil: no password
	TLS            *tls.Config // for TLS URLs; nil means system roots
	MaxInflight    int
	KeepAlive      time.Duration
	ConnectTimeout time.Duration
	ReconnectMin   time.Duration
	ReconnectMax   time.Duration
	SessionExpiry  time.Duration
	MaxRate        int // messages per second forwarded at most; 0 for no cap
	Forward        []Rule
	Subscribe      []SubRule
	Local          Local         // downlink and link state go here; required with Subscribe
	StateTopic     string        // upstream topic for a retained "online" birth and "offline" will; "" for none
	PrimaryRetry   time.Duration // connected to a later URL this long, go back to the first; 0 never
	AckTimeout     time.Duration // messages in flight with no acknowledgement this long: reconnect; 0 never
	Logger         *slog.Logger
}

// Stats describe a bridge's state and counters.
type Stats struct {
	Connected  bool
	URL        string    // upstream currently or last connected
	Since      time.Time // when Connected last changed
	LastError  string
	Forwarded  uint64 // acknowledged by the upstream
	Skipped    uint64 // matched no forward rule
	Expired    uint64 // MQTT 5 message expiry passed before forwarding
	Rejected   uint64 // refused by the upstream with an error reason code
	Downlinked uint64 // received from the upstream and published locally
	DeadLetter uint64 // too large for the upstream: moved to the dead-letter topic
	Reconnects uint64
	Inflight   int
	Backlog    uint64
}

// Bridge forwards queued messages to one upstream broker.
type Bridge struct {
	cfg  Config
	cons *queue.Consumer
	log  *slog.Logger
	sess *trackedSession

	// Owned by the Run goroutine.
	buf    []*queue.Message // read from the queue, not yet handed to the upstream
	conn   *flushConn       // the current upstream connection
	nextAt time.Time        // with MaxRate, when the next message may go

	mu      sync.Mutex
	window  chan struct{} // one token per message in flight
	abandon chan struct{} // closed when the upstream session is lost
	status  Stats

	forwarded, skipped, expired, rejected, downlinked, deadLetter atomic.Uint64
	maxPacket                                                     atomic.Uint32 // the upstream's Maximum Packet Size; 0 for none
	lastProgress                                                  atomic.Int64  // unix nanos of the last ack, or of a send into an empty window
}

// New returns a bridge that reads through cons. Call Run to start it.
func New(cfg Config, cons *queue.Consumer) *Bridge {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxInflight <= 0 {
		cfg.MaxInflight = 32
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	if cfg.ReconnectMin <= 0 {
		cfg.ReconnectMin = time.Second
	}
	if cfg.ReconnectMax < cfg.ReconnectMin {
		cfg.ReconnectMax = max(cfg.ReconnectMin, time.Minute)
	}
	b := &Bridge{
		cfg:     cfg,
		cons:    cons,
		log:     cfg.Logger.With("bridge", cfg.Name),
		window:  make(chan struct{}, cfg.MaxInflight),
		abandon: make(chan struct{}),
	}
	b.sess = &trackedSession{State: state.NewInMemory(), b: b}
	return b
}

// Stats returns the bridge's state and counters.
func (b *Bridge) Stats() Stats {
	b.mu.Lock()
	s := b.status
	s.Inflight = len(b.window)
	b.mu.Unlock()
	s.Forwarded = b.forwarded.Load()
	s.Skipped = b.skipped.Load()
	s.Expired = b.expired.Load()
	s.Rejected = b.rejected.Load()
	s.Downlinked = b.downlinked.Load()
	s.DeadLetter = b.deadLetter.Load()
	s.Backlog = b.cons.Backlog()
	return s
}

// Run connects, forwards and reconnects until ctx is done. On the way out it
// waits briefly for in-flight messages to be acknowledged, so a clean
// shutdown leaves few duplicates behind.
func (b *Bridge) Run(ctx context.Context) {
	attempt := 0
	for i := 0; ctx.Err() == nil; {
		u := b.cfg.URLs[i]
		cli, down, err := b.connect(ctx, u)
		if err != nil {
			b.setDown(err)
			if ctx.Err() != nil {
				return
			}
			b.log.Warn("upstream connection failed", "url", u.Redacted(), "err", err)
			if i = (i + 1) % len(b.cfg.URLs); i == 0 { // every URL tried: back off
				if !sleep(ctx, b.backoff(attempt)) {
					return
				}
				attempt++
			}
			continue
		}
		attempt = 0
		fctx, stop := context.WithCancelCause(down)
		if i > 0 && b.cfg.PrimaryRetry > 0 {
			// Like Mosquitto's round_robin false: a secondary is a fallback.
			t := time.AfterFunc(b.cfg.PrimaryRetry, func() { stop(errBackToPrimary) })
			context.AfterFunc(fctx, func() { t.Stop() })
		}
		if b.cfg.AckTimeout > 0 {
			go b.watchdog(fctx, stop)
		}
		err = b.forward(fctx, cli)
		stop(nil)
		if errors.Is(err, errBackToPrimary) && ctx.Err() == nil {
			b.log.Info("going back to the first upstream URL", "from", u.Redacted(), "to", b.cfg.URLs[0].Redacted())
			b.setDown(err)
			cli.Disconnect(&paho.Disconnect{ReasonCode: 0})
			i = 0
			continue
		}
		if ctx.Err() != nil {
			b.drain(cli, 2*time.Second)
			if b.cfg.StateTopic != "" {
				// A clean DISCONNECT discards the will: say it ourselves.
				pctx, cancel := context.WithTimeout(context.Background(), time.Second)
				cli.Publish(pctx, &paho.Publish{Topic: b.cfg.StateTopic, Payload: []byte("offline"), Retain: true})
				cancel()
			}
			cli.Disconnect(&paho.Disconnect{ReasonCode: 0})
			b.setDown(errors.New("shut down"))
			return
		}
		b.log.Warn("upstream connection lost", "url", u.Redacted(), "err", err)
		b.setDown(err)
		cli.Disconnect(&paho.Disconnect{ReasonCode: 0})
		b.mu.Lock()
		b.status.Reconnects++
		b.mu.Unlock()
		if !sleep(ctx, b.cfg.ReconnectMin) {
			return
		}
	}
}

var (
	errBackToPrimary = errors.New("primary_retry elapsed on a secondary upstream")
	errStuck         = errors.New("connected, but nothing acknowledged for ack_timeout while messages wait: reconnecting")
)

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

// backoff is exponential with jitter: a random duration in [d/2, d] where d
// doubles per failed round from ReconnectMin up to ReconnectMax.
func (b *Bridge) backoff(attempt int) time.Duration {
	d := b.cfg.ReconnectMin << min(attempt, 30)
	if d > b.cfg.ReconnectMax || d <= 0 {
		d = b.cfg.ReconnectMax
	}
	return d/2 + rand.N(d/2+1)
}

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
		if ca != nil && ca.ReasonCode >= 0x80 {
			reason := ""
			if ca.Properties != nil {
				reason = ca.Properties.ReasonString
			}
			return nil, nil, fmt.Errorf("connect refused: reason %#x %s", ca.ReasonCode, reason)
		}
		return nil, nil, err
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

// readBatch is how many messages the bridge reads from the queue at once
// (at least its window).
const readBatch = 256

// forward publishes queued messages in order until the connection or ctx
// ends.
func (b *Bridge) forward(ctx context.Context, cli *paho.Client) error {
	for {
		if len(b.buf) == 0 {
			b.conn.Flush() // about to wait for the queue
			// Reading more than a window at a time spreads the cost of a
			// read transaction (and its seek) over more messages.
			msgs, err := b.cons.Read(ctx, max(b.cfg.MaxInflight, readBatch))
			if err != nil {
				return context.Cause(ctx)
			}
			b.buf = msgs
		}
		m := b.buf[0]
		pub := b.route(m)
		if pub != nil && tooLarge(pub, b.maxPacket.Load()) {
			if err := b.deadLetterMsg(ctx, m); err != nil {
				return err
			}
			pub = nil
		}
		if pub == nil {
			b.cons.Ack(m.Seq)
			b.buf = b.buf[1:]
			continue
		}
		if err := b.pace(ctx); err != nil {
			return err
		}
		window, abandon := b.current()
		select {
		case window <- struct{}{}:
		default:
			b.conn.Flush() // about to wait for an acknowledgement
			select {
			case window <- struct{}{}:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
		if pub.QoS == 0 {
			_, err := cli.Publish(ctx, pub)
			<-window
			if err != nil {
				return err
			}
			b.forwarded.Add(1)
			b.cons.Ack(m.Seq)
			b.buf = b.buf[1:]
			continue
		}
		if len(window) == 1 { // the window was empty: the clock starts now
			b.lastProgress.Store(time.Now().UnixNano())
		}
		b.sess.handOver(m.Seq, window, abandon)
		_, err := cli.PublishWithOptions(ctx, pub, paho.PublishOptions{Method: paho.PublishMethod_AsyncSend})
		if b.sess.handedOver() {
			b.buf = b.buf[1:] // in the session now; its ack will come
		} else {
			<-window
		}
		if err != nil {
			return err
		}
	}
}

// pace holds the forwarding loop to MaxRate messages per second. Pacing
// the single ordered loop keeps the order: live messages wait behind the
// backlog rather than overtaking it. Up to a tenth of a second's worth may
// go in a burst after an idle spell.
func (b *Bridge) pace(ctx context.Context) error {
	if b.cfg.MaxRate <= 0 {
		return nil
	}

	interval := time.Second / time.Duration(b.cfg.MaxRate)
	now := time.Now()
	if floor := now.Add(-100 * time.Millisecond); b.nextAt.Before(floor) {
		b.nextAt = floor
	}
	if wait := b.nextAt.Sub(now); wait > 0 {
		b.conn.Flush() // about to wait for the rate limit
		if !sleep(ctx, wait) {
			return context.Cause(ctx)
		}
	}
	b.nextAt = b.nextAt.Add(interval)
	return nil
}

func (b *Bridge) forwardsQoS2() bool {
	for _, r := range b.cfg.Forward {
		if r.QoS == 2 {
			return true
		}
	}
	return false
}

// subscribe asks the upstream for the subscribe rules' topics. With a
// resumed session the subscriptions exist already; asking again is
// harmless and covers a changed configuration.
func (b *Bridge) subscribe(ctx context.Context, cli *paho.Client) error {
	if len(b.cfg.Subscribe) == 0 {
		return nil
	}
	sub := &paho.Subscribe{}
	for _, r := range b.cfg.Subscribe {
		// Retain-as-published: without it the upstream clears the retain
		// flag of messages it forwards to a live subscription.
		sub.Subscriptions = append(sub.Subscriptions, paho.SubscribeOptions{Topic: r.Filter, QoS: r.QoS, RetainAsPublished: r.Retain})
	}
	ack, err := cli.Subscribe(ctx, sub)
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	for i, code := range ack.Reasons {
		if code >= 0x80 && i < len(b.cfg.Subscribe) {
			b.log.Warn("upstream refused a subscription", "filter", b.cfg.Subscribe[i].Filter, "reason", fmt.Sprintf("%#x", code))
		}
	}
	return nil
}

// downlink publishes a message from the upstream locally and only then
// acknowledges it upstream. If it cannot be stored the connection is
// dropped unacknowledged, so the upstream sends it again later.
func (b *Bridge) downlink(ctx context.Context, setDown context.CancelCauseFunc, pr paho.PublishReceived) (bool, error) {
	p := pr.Packet
	for _, r := range b.cfg.Subscribe {
		if !topic.Match(r.Filter, p.Topic) {
			continue
		}
		m := &queue.Message{
			Topic:   r.Local(p.Topic),
			Payload: p.Payload,
			QoS:     min(p.QoS, r.QoS),
			Retain:  r.Retain && p.Retain,
			Origin:  OriginPrefix + b.cfg.Name,
			Arrived: time.Now(),
		}
		if pp := p.Properties; pp != nil {
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
		if topic.ValidateName(m.Topic) != nil {
			break
		}
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := b.cfg.Local.Publish(pctx, m)
		cancel()
		if err != nil {
			b.log.Error("downlink message not stored: reconnecting so the upstream resends it", "topic", p.Topic, "err", err)
			setDown(fmt.Errorf("downlink: %w", err))
			return false, err
		}
		b.downlinked.Add(1)
		return true, pr.Client.Ack(p)
	}
	// Matched by no rule (an overlapping subscription of the session, say):
	// acknowledge and drop.
	b.log.Debug("downlink message matches no subscribe rule", "topic", p.Topic)
	return false, pr.Client.Ack(p)
}

// DeadLetterTopic is the local topic where a bridge puts messages its
// upstream cannot take (larger than its Maximum Packet Size), with the
// original topic and the reason as user properties. Retrying them would
// block everything queued behind them forever.
func DeadLetterTopic(name string) string { return "$SYS/ralph/bridges/" + name + "/deadletter" }

// tooLarge reports whether pub's PUBLISH packet would exceed max bytes,
// counted generously (fixed header, length, packet id, properties).
func tooLarge(pub *paho.Publish, max uint32) bool {
	if max == 0 {
		return false
	}
	n := 16 + len(pub.Topic) + len(pub.Payload)
	if p := pub.Properties; p != nil {
		n += 8 + len(p.ContentType) + len(p.ResponseTopic) + len(p.CorrelationData)
		for _, u := range p.User {
			n += 5 + len(u.Key) + len(u.Value)
		}
	}
	return n > int(max)
}

func (b *Bridge) deadLetterMsg(ctx context.Context, m *queue.Message) error {
	reason := fmt.Sprintf("larger than the upstream's maximum packet size of %d bytes", b.maxPacket.Load())
	b.log.Warn("message dead-lettered", "topic", m.Topic, "bytes", len(m.Payload), "reason", reason, "dead_letter_topic", DeadLetterTopic(b.cfg.Name))
	b.deadLetter.Add(1)
	if b.cfg.Local == nil {
		return nil
	}
	dl := *m
	dl.Topic, dl.Origin, dl.Retain = DeadLetterTopic(b.cfg.Name), OriginPrefix+b.cfg.Name, false
	dl.UserProperties = append(append([]queue.UserProperty(nil), m.UserProperties...),
		queue.UserProperty{Key: "topic", Value: m.Topic}, queue.UserProperty{Key: "reason", Value: reason})
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return b.cfg.Local.Publish(pctx, &dl)
}

// route applies the forward rules: the first that matches wins. It returns
// nil for a message that is not to be forwarded.
func (b *Bridge) route(m *queue.Message) *paho.Publish {
	if strings.HasPrefix(m.Origin, OriginPrefix) {
		b.skipped.Add(1) // came down from a bridge: never back up
		return nil
	}
	for _, r := range b.cfg.Forward {
		if !topic.Match(r.Filter, m.Topic) {
			continue
		}
		remaining := uint32(0)
		if m.ExpiryInterval > 0 {
			elapsed := time.Since(m.Arrived)
			if m.Expired(time.Now()) {
				b.expired.Add(1)
				return nil
			}
			remaining = m.ExpiryInterval - uint32(elapsed/time.Second)
		}
		p := &paho.Publish{
			Topic:   r.Remote(m.Topic),
			QoS:     r.QoS,
			Retain:  m.Retain,
			Payload: m.Payload,
			Properties: &paho.PublishProperties{
				ContentType:     m.ContentType,
				ResponseTopic:   m.ResponseTopic,
				CorrelationData: m.CorrelationData,
			},
		}
		if p.Topic == "" {
			b.skipped.Add(1)
			return nil
		}
		if m.PayloadFormat != 0 {
			pf := m.PayloadFormat
			p.Properties.PayloadFormat = &pf
		}
		if remaining > 0 {
			p.Properties.MessageExpiry = &remaining
		}
		for _, u := range m.UserProperties {
			p.Properties.User.Add(u.Key, u.Value)
		}
		return p
	}
	b.skipped.Add(1)
	return nil
}

// completed handles the upstream's final answer for a message.
func (b *Bridge) completed(seq uint64, cp packets.ControlPacket) {
	var code byte
	switch p := cp.Content.(type) {
	case *packets.Puback:
		code = p.ReasonCode
	case *packets.Pubcomp:
		code = p.ReasonCode
	case *packets.Pubrec:
		code = p.ReasonCode
	default:
		return // the client shut down before an answer: resent later
	}
	b.lastProgress.Store(time.Now().UnixNano())
	if code >= 0x80 {
		// Retrying a message the upstream refuses would block everything
		// behind it; count it and move on.
		b.rejected.Add(1)
		b.log.Warn("upstream refused a message", "seq", seq, "reason", fmt.Sprintf("%#x", code))
	} else {
		b.forwarded.Add(1)
	}
	b.cons.Ack(seq)
}

func (b *Bridge) current() (chan struct{}, chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.window, b.abandon
}

// resetWindow forgets every message in flight; they are read again.
func (b *Bridge) resetWindow() {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.abandon)
	b.abandon = make(chan struct{})
	b.window = make(chan struct{}, b.cfg.MaxInflight)
}

// drain waits up to d for in-flight messages to be acknowledged.
func (b *Bridge) drain(cli *paho.Client, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		window, _ := b.current()
		if len(window) == 0 {
			return
		}
		select {
		case <-cli.Done():
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (b *Bridge) setDown(err error) {
	b.mu.Lock()
	changed := b.status.Connected || b.status.Since.IsZero()
	if changed {
		b.status.Since = time.Now()
	}
	b.status.Connected = false
	if err != nil {
		b.status.LastError = err.Error()
	}
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
	b.mu.Unlock()
	payload, _ := json.Marshal(st)
	if err := b.cfg.Local.Announce(StateTopic(b.cfg.Name), payload); err != nil {
		b.log.Warn("publishing the link state locally", "err", err)
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// trackedSession is paho's in-memory session state plus a report of each
// PUBLISH's final acknowledgement, which paho's asynchronous send does not
// give.
type trackedSession struct {
	*state.State
	b *Bridge

	// Set by the forwarding goroutine around each asynchronous publish; the
	// session's AddToSession runs on that same goroutine.
	mu      sync.Mutex
	seq     uint64
	window  chan struct{}
	abandon chan struct{}
	added   bool
}

func (s *trackedSession) handOver(seq uint64, window, abandon chan struct{}) {
	s.mu.Lock()
	s.seq, s.window, s.abandon, s.added = seq, window, abandon, false
	s.mu.Unlock()
}

func (s *trackedSession) handedOver() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.added
}

func (s *trackedSession) AddToSession(ctx context.Context, p session.Packet, resp chan<- packets.ControlPacket) error {
	if p.Type() != packets.PUBLISH {
		return s.State.AddToSession(ctx, p, resp)
	}
	done := make(chan packets.ControlPacket, 1)
	if err := s.State.AddToSession(ctx, p, done); err != nil {
		return err
	}
	s.mu.Lock()
	seq, window, abandon := s.seq, s.window, s.abandon
	s.added = true
	s.mu.Unlock()
	go func() {
		select {
		case cp := <-done:
			<-window
			s.b.completed(seq, cp)
			select {
			case resp <- cp:
			default:
			}
		case <-abandon:
		}
	}()
	return nil
}

var _ session.SessionManager = (*trackedSession)(nil)
