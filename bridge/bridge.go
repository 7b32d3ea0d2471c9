// Package bridge forwards messages from Ralph's queue to an upstream MQTT
// broker, in MQTT 5 or MQTT 3.1.1: one Bridge per configured upstream,
// each reading the queue through its own consumer, so a slow or absent
// upstream holds back nothing but its own backlog.
//
// Messages are published in queue order with a window of unacknowledged
// ones in flight. Only when the upstream acknowledges a message (PUBACK for
// QoS 1, PUBCOMP for QoS 2, the write itself for QoS 0) is it acknowledged
// in the queue. After a lost connection the session, if it carries them,
// resends the in-flight messages; if it does not, the bridge re-reads from
// its cursor. Delivery is at-least-once: duplicates are bounded by the
// window.
//
// The bridge is the same for both versions; what differs is behind the
// upstream interface (upstream.go). MQTT 5 drives paho.golang's low-level
// client rather than autopaho, whose Publish blocks per message:
// concurrent blocking publishes would race each other onto the wire and
// break ordering. Here one goroutine writes every PUBLISH in order (paho's
// asynchronous send) and a thin wrapper around paho's session state
// reports each acknowledgement. MQTT 3.1.1 drives paho.mqtt.golang, whose
// Publish hands a message to one writer in call order; its store, kept by
// the bridge across connections, reports each acknowledgement and resends
// what was in flight.
package bridge

// This file holds the exported types (Rule, SubRule, Local, Config, Stats,
// Bridge), New, Stats and Run, the loop that connects, forwards and
// reconnects. The connection is in connect.go, forwarding in forward.go,
// the downlink in downlink.go, the protocols in upstream.go (the
// interface), mqtt5.go with session.go and mqtt311.go with store311.go,
// and the write batching in conn.go.
import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ralph-gateway/ralph/configs"
	"github.com/ralph-gateway/ralph/queue"
)

// Rule selects local messages to forward and says how to name them upstream.
type Rule struct {
	Filter       string // local topic filter
	StripPrefix  string // removed from the local topic when present
	RemotePrefix string // then prepended
	Topic        string // or, if set, the upstream topic of every message the rule selects
	QoS          byte   // upstream QoS
	Priority     int    // 0 the most urgent; see lanes.go
	// TimestampProperty, if set, names a user property added to each
	// message forwarded: when it arrived, RFC 3339 in UTC with
	// milliseconds.
	TimestampProperty string
}

// Remote returns the upstream topic for a local one.
func (r Rule) Remote(local string) string {
	if r.Topic != "" {
		return r.Topic
	}
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
	Name     string
	Protocol string     // ProtocolMQTT5 ("" too) or ProtocolMQTT311
	URLs     []*url.URL // tried in order; schemes mqtt, tcp, mqtts, ssl, tls
	ClientID string
	Username string
	Password []byte // nil: no password
	// Credentials, when set, makes the username and password for each
	// connection instead, and says until when the upstream accepts them
	// (an Azure IoT Hub SAS token, say: AzureIoTHub): the bridge
	// reconnects with new ones after nine tenths of that time.
	Credentials    Credentials
	TLS            *tls.Config // for TLS URLs; nil means system roots
	MaxInflight    int
	KeepAlive      time.Duration
	ConnectTimeout time.Duration
	ReconnectMin   time.Duration
	ReconnectMax   time.Duration // also the backoff, at once, after an upstream refuses MQTT 5
	SessionExpiry  time.Duration // MQTT 5 only
	MaxRate        int           // messages per second forwarded at most; 0 for no cap
	Forward        []Rule
	Subscribe      []SubRule
	Local          Local         // downlink and link state go here; required with Subscribe
	StateTopic     string        // upstream topic for a retained "online" birth and "offline" will; "" for none
	PrimaryRetry   time.Duration // connected to a later URL this long, go back to the first; 0 never
	AckTimeout     time.Duration // messages in flight with no acknowledgement this long: reconnect; 0 never
	// ProbeInterval is how often, while it backs off after a round of
	// URLs that did not answer, the bridge checks whether one does
	// (probe.go). 0 for one second.
	ProbeInterval time.Duration
	// Proxy, when set, is an HTTP proxy that every connection goes
	// through, whatever the URL's scheme: CONNECT to the URL's host and
	// port, with Basic credentials when Proxy has a user.
	Proxy *url.URL
	// MaxQoS is the highest QoS the upstream takes: forward and subscribe
	// rules with a higher one use it instead (AWS IoT Core has no QoS 2).
	// 0 for no cap.
	MaxQoS byte
	// Limits are the upstream's limits on a message: one over them is
	// moved to the dead-letter topic rather than sent (DeadLetterTopic).
	Limits Limits
	Logger *slog.Logger
}

// Stats describe a bridge's state and counters.
type Stats struct {
	Connected bool
	URL       string    // upstream currently or last connected
	Since     time.Time // when Connected last changed
	LastError string
	Forwarded uint64 // acknowledged by the upstream
	// Skipped counts messages a lane read that no rule sends anywhere
	// (an empty upstream topic). Those that match no rule never reach
	// the bridge: the lanes' filters pass over them in the queue.
	Skipped    uint64
	Expired    uint64 // MQTT 5 message expiry passed before forwarding
	Rejected   uint64 // refused by the upstream with an error reason code
	Downlinked uint64 // received from the upstream and published locally
	DeadLetter uint64 // too large for the upstream, or over its Limits: moved to the dead-letter topic
	// DownlinkDeadLetter counts messages from the upstream whose local
	// topic (after a subscribe rule's rewrite) is not a valid topic name:
	// moved to the dead-letter topic.
	DownlinkDeadLetter uint64
	// PropertiesDropped counts messages forwarded to an MQTT 3.1.1
	// upstream without MQTT 5 properties they carried (user properties,
	// message expiry, content type, response topic, correlation data,
	// payload format), which 3.1.1 cannot carry.
	PropertiesDropped uint64
	Reconnects        uint64
	Inflight          int
	Backlog           uint64      // the lanes' messages (an upper bound while one is Counting)
	Lanes             []LaneStats // one per priority, most urgent first
}

// Bridge forwards queued messages to one upstream broker.
type Bridge struct {
	cfg   Config
	lanes []*lane // most urgent first
	log   *slog.Logger
	sess  upstreamSession
	acked chan struct{} // a slot of the window came free

	// Owned by the Run goroutine.
	conn    *flushConn // the current upstream connection
	nextAt  time.Time  // with MaxRate, when the next message may go
	renewAt time.Time  // with Credentials, when to reconnect with new ones

	mu               sync.Mutex
	window           chan struct{} // one token per message in flight
	abandon          chan struct{} // closed when the upstream session is lost
	status           Stats
	announcedErr     string   // the LastError the state topic last carried
	announcedBacklog []uint64 // and the lanes' messages

	forwarded, skipped, expired, rejected, downlinked, deadLetter, downlinkDeadLetter, propertiesDropped atomic.Uint64

	maxPacket    atomic.Uint32 // the upstream's Maximum Packet Size; 0 for none
	lastProgress atomic.Int64  // unix nanos of the last ack, or of a send into an empty window
}

// New returns a bridge that reads through lanes (OpenLanes). Call Run to
// start it.
func New(cfg Config, lanes []Lane) *Bridge {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	// Zero values: the configuration's defaults.
	d := configs.DefaultBridge(cfg.Name)
	if cfg.MaxInflight <= 0 {
		cfg.MaxInflight = d.MaxInflight
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = d.ConnectTimeout.Duration
	}
	if cfg.ReconnectMin <= 0 {
		cfg.ReconnectMin = d.ReconnectMin.Duration
	}
	if cfg.ReconnectMax < cfg.ReconnectMin {
		cfg.ReconnectMax = max(cfg.ReconnectMin, d.ReconnectMax.Duration)
	}
	if q := cfg.MaxQoS; q > 0 {
		// Copies: the caller's rules stay as they are.
		cfg.Forward = append([]Rule(nil), cfg.Forward...)
		for i := range cfg.Forward {
			cfg.Forward[i].QoS = min(cfg.Forward[i].QoS, q)
		}
		cfg.Subscribe = append([]SubRule(nil), cfg.Subscribe...)
		for i := range cfg.Subscribe {
			cfg.Subscribe[i].QoS = min(cfg.Subscribe[i].QoS, q)
		}
	}
	b := &Bridge{
		cfg:     cfg,
		lanes:   newLanes(lanes, cfg.MaxInflight),
		acked:   make(chan struct{}, 1),
		log:     cfg.Logger.With("bridge", cfg.Name),
		window:  make(chan struct{}, cfg.MaxInflight),
		abandon: make(chan struct{}),
	}
	b.sess = newSession(b)
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
	s.DownlinkDeadLetter = b.downlinkDeadLetter.Load()
	s.PropertiesDropped = b.propertiesDropped.Load()
	s.Lanes = b.laneStats()
	for i, l := range s.Lanes {
		if l.Counting {
			// Not counted yet: what the lane has not passed, an upper
			// bound (it holds other lanes' messages too).
			s.Backlog += b.lanes[i].Consumer.Backlog()
		} else {
			s.Backlog += l.Messages
		}
	}
	return s
}

func (b *Bridge) laneStats() []LaneStats {
	out := make([]LaneStats, len(b.lanes))
	for i, l := range b.lanes {
		out[i] = l.stats()
	}
	return out
}

// Run connects, forwards and reconnects until ctx is done. On the way out it
// waits briefly for in-flight messages to be acknowledged, so a clean
// shutdown leaves few duplicates behind. Whatever is still in flight when
// it returns is read again from the cursor by the next Bridge on the queue.
func (b *Bridge) Run(ctx context.Context) {
	defer b.release()
	rctx, stopReport := context.WithCancel(ctx)
	reporting := make(chan struct{})
	go func() { defer close(reporting); b.report(rctx) }()
	defer func() { stopReport(); <-reporting }()
	attempt := 0
	refused := false              // an upstream refused the protocol in this round of URLs
	answered := false             // some upstream answered in this round (and failed the bridge)
	reported := map[string]bool{} // protocol failures warned about since the last connection
	for i := 0; ctx.Err() == nil; {
		u := b.cfg.URLs[i]
		up, down, err := b.connect(ctx, u)
		if err != nil {
			b.setDown(err)
			if ctx.Err() != nil {
				return
			}
			var pe *protocolError
			isProto := errors.As(err, &pe)
			refused = refused || isProto && pe.explicit
			var unreachable *unreachableError
			answered = answered || !errors.As(err, &unreachable)
			probe := false
			var wait time.Duration
			if i = (i + 1) % len(b.cfg.URLs); i == 0 { // every URL tried: back off
				wait = b.backoff(attempt)
				if refused {
					// An explicit refusal will not go away in seconds.
					wait = jitter(b.cfg.ReconnectMax)
				}
				attempt++
				probe = !answered
				refused, answered = false, false
			}
			// An upstream that does not speak MQTT 5 says so at every
			// attempt: warn once, not at every retry.
			level := slog.LevelWarn
			if key := u.Redacted() + " " + err.Error(); isProto {
				if reported[key] {
					level = slog.LevelDebug
				}
				reported[key] = true
			}
			b.log.Log(ctx, level, "upstream connection failed", "url", u.Redacted(), "err", err, "retry_in", wait)
			if wait > 0 && probe {
				// Nothing answered: reconnect as soon as something does.
				reached, ok := b.waitOrReachable(ctx, wait)
				if !ok {
					return
				}
				if reached >= 0 {
					i = reached
				}
			} else if wait > 0 && !sleep(ctx, wait) {
				return
			}
			continue
		}
		attempt, refused, answered = 0, false, false
		clear(reported)
		fctx, stop := context.WithCancelCause(down)
		if i > 0 && b.cfg.PrimaryRetry > 0 {
			// Like Mosquitto's round_robin false: a secondary is a fallback.
			t := time.AfterFunc(b.cfg.PrimaryRetry, func() { stop(errBackToPrimary) })
			context.AfterFunc(fctx, func() { t.Stop() })
		}
		if b.cfg.AckTimeout > 0 {
			go b.watchdog(fctx, stop)
		}
		if !b.renewAt.IsZero() {
			t := time.AfterFunc(time.Until(b.renewAt), func() { stop(errRenewCredentials) })
			context.AfterFunc(fctx, func() { t.Stop() })
		}
		err = b.forward(fctx, up)
		stop(nil)
		if errors.Is(err, errRenewCredentials) && ctx.Err() == nil {
			// Planned: let what is in flight be acknowledged first.
			b.log.Info("reconnecting with new credentials before the current ones expire", "url", u.Redacted())
			b.drain(up, 2*time.Second)
			up.disconnect()
			continue
		}
		if errors.Is(err, errBackToPrimary) && ctx.Err() == nil {
			b.log.Info("going back to the first upstream URL", "from", u.Redacted(), "to", b.cfg.URLs[0].Redacted())
			b.setDown(err)
			up.disconnect()
			i = 0
			continue
		}
		if ctx.Err() != nil {
			b.drain(up, 2*time.Second)
			if b.cfg.StateTopic != "" {
				// A clean DISCONNECT discards the will: say it ourselves.
				pctx, cancel := context.WithTimeout(context.Background(), time.Second)
				up.publish(pctx, &queue.Message{Topic: b.cfg.StateTopic, Payload: []byte("offline"), Retain: true}, ticket{})
				cancel()
			}
			up.disconnect()
			b.setDown(errors.New("shut down"))
			return
		}
		b.log.Warn("upstream connection lost", "url", u.Redacted(), "err", err)
		b.setDown(err)
		up.disconnect()
		b.mu.Lock()
		b.status.Reconnects++
		b.mu.Unlock()
		if !sleep(ctx, b.cfg.ReconnectMin) {
			return
		}
	}
}

// release ends what a stopped bridge would leave behind: the goroutine per
// message in flight that waits for its acknowledgement (see
// trackedSession), which would keep the Bridge alive with it, and the
// session state with its copies of those messages.
func (b *Bridge) release() {
	b.resetWindow()
	b.sess.close()
}

var (
	errBackToPrimary    = errors.New("primary_retry elapsed on a secondary upstream")
	errRenewCredentials = errors.New("the upstream credentials expire soon")
	errStuck            = errors.New("connected, but nothing acknowledged for ack_timeout while messages wait: reconnecting")
)

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
