// Package localbroker is the MQTT broker devices on the local network talk
// to. It embeds mochi-mqtt and adds what makes Ralph a store-and-forward
// gateway: every publish is appended to the durable queue before the device
// is acknowledged or anyone receives it.
//
// The ingest path is pipelined. mochi reads a client's packets on one
// goroutine and calls the OnPublish hook on it, so blocking there until the
// fsync would allow one message per fsync per client. Instead the hook hands
// the message to the queue's group committer and tells mochi to drop it
// (packets.ErrRejectPacket: no ack, no delivery, and the client's reads go
// on). When the queue reports the batch durable, one release goroutine
// acknowledges and delivers the messages in arrival order: a QoS 1 PUBACK
// Ralph writes itself, a QoS 2 publish re-injected with
// Server.InjectPacket for mochi's PUBREC/PUBREL path, and deliveries
// through mochi by a relay client. A single, ordered release path keeps
// each client's acknowledgements in the order it published
// [MQTT-4.6.0-2].
//
// QoS 0 messages are delivered at once and appended without waiting: they
// carry no acknowledgement to delay, and MQTT orders deliveries only within
// a QoS level. Ralph delivers them itself (deliver.go), with backpressure
// to the publisher.
package localbroker

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/configs"
	"github.com/ralph-gateway/ralph/internal/listen"
	"github.com/ralph-gateway/ralph/queue"
)

// Options configure a Broker.
type Options struct {
	Listen         []string     // plain TCP addresses to listen on, e.g. "127.0.0.1:1883"
	Listeners      []Listener   // TLS and WebSocket listeners (and more TCP ones)
	Queue          *queue.Queue // where every publish is stored
	MaxPacketSize  int          // bytes; 0 means no limit
	ReceiveMaximum int          // QoS>0 publishes a client may have unacknowledged; 0: the config's default
	Users          []User
	// AllowAnonymous admits clients without a username on non-loopback
	// listeners too; loopback listeners always admit them.
	AllowAnonymous bool
	Anonymous      ACL // what clients without a username may do
	Limits         Limits
	Logger         *slog.Logger

	// patience replaces slowSubscriber (deliver.go), for tests whose
	// reader a loaded machine may hold up for longer than that.
	patience time.Duration
}

// Limits protect the broker from clients; zero values mean the
// configuration's defaults (configs.Default).
type Limits struct {
	MaxClients       int           // connections at once
	MaxKeepAlive     time.Duration // longer (or no) keepalives are cut to it
	MaxTopicLength   int           // bytes
	MaxTopicLevels   int
	MaxMessageExpiry time.Duration // MQTT 5 message expiry cap
}

// Listener is a TLS or WebSocket listener (or a plain TCP one).
type Listener struct {
	Kind    string      // "tcp", "tls" or "ws" (WebSocket; wss when TLS is set)
	Address string      // host:port
	TLS     *tls.Config // certificates, and client verification if wanted
	// CertUsername (TLS listeners that verify client certificates): the
	// common name of the client's certificate is its username, which must
	// be one of the Users; no password is asked for.
	CertUsername bool
}

// Stats are counters since the broker started.
type Stats struct {
	Stored        uint64 // publishes appended to the queue
	StoreFailed   uint64 // publishes that could not be stored (not acknowledged, not delivered if QoS>0)
	Orphaned      uint64 // stored publishes whose client left before its ack: delivered, not acked
	Duplicates    uint64 // QoS 2 resends suppressed while the first copy was being stored
	Disconnected  uint64 // clients disconnected because their publish could not be stored
	OverReceiveMx uint64 // clients disconnected for exceeding their receive maximum
	AuthFailed    uint64 // connections refused: bad credentials, or anonymous where not allowed
	Denied        uint64 // publishes refused by the ACL
	BadTopic      uint64 // publishes without a topic (an alias never set), and publishes and subscriptions over the topic length or level limits
	// DeliveriesDropped counts, by QoS, messages not delivered to a
	// subscriber because it was too far behind: its socket had taken
	// nothing for a second (QoS 0, deliver.go), or more writes were
	// pending for it than mochi queues (retained and shared QoS 0, and
	// QoS 1 and 2), or more messages held back by its Receive Maximum
	// than a session keeps (QoS 1 and 2).
	DeliveriesDropped [3]uint64
}

// Broker is the embedded local MQTT broker.
type Broker struct {
	srv    *mqtt.Server
	q      *queue.Queue
	log    *slog.Logger
	inline *mqtt.Client // delivers in-process publishes and announcements
	// relay delivers released QoS 1 messages, on the release goroutine
	// only: an inline client whose ID and protocol version are set to each
	// message's publisher's, which mochi gives the message (No Local, and
	// expiry, which mochi applies to MQTT 5 messages only).
	relay    *mqtt.Client
	flow     *flowControl // holds back deliveries beyond a client's Receive Maximum
	sessions *sessionHook // persistent sessions in the queue's database
	recvMx   int
	limits   Limits
	// patience is how long a QoS 0 delivery waits for a subscriber's
	// socket to take its buffer (deliver.go).
	patience time.Duration

	access    atomic.Pointer[access] // users and ACLs; replaced whole by SetUsers
	loopback  map[string]bool        // listener id → bound to a loopback address
	certUser  map[string]bool        // listener id → the client certificate names the user
	listenIDs []string
	subs      *subscriberCache

	release  chan *release
	released chan struct{}
	pending  sync.WaitGroup // appends not yet released
	dials    sync.WaitGroup // goroutines of in-process connections

	mu sync.Mutex
	// inflight counts what each connection has unacknowledged against
	// Ralph's receive maximum: QoS 1 publishes until their PUBACK (they
	// are handed to the queue and not yet released), QoS 2 publishes until
	// their PUBREL (awaitRel holds their packet ids) or their refusal.
	inflight map[*mqtt.Client]int
	awaitRel map[*mqtt.Client]map[uint16]bool
	qos2     map[qos2Key]*mqtt.Client // QoS 2 publishes being stored → newest connection to ack
	closed   bool                     // Close was called
	pipes    map[net.Conn]bool        // the broker's ends of in-process connections
	// draining: Close is waiting for what was handed to the queue; ingest
	// hands over nothing more. Set once mochi's Close has returned, so that
	// the wills of the clients it disconnects are still stored.
	draining bool

	stored, storeFailed, orphaned, duplicates, disconnected, overRecvMx, authFailed, denied, badTopic atomic.Uint64
	dropped                                                                                           [3]atomic.Uint64 // deliveries, by QoS
	readFirst                                                                                         atomic.Uint64    // publishes ingested before mochi saw them (inbound.go); for tests
}

type qos2Key struct {
	client string
	id     uint16
}

// releaseMark tags a packet re-injected after it was stored. Clients cannot
// set Connect parameters on a PUBLISH, so the mark cannot be forged; the
// hook clears it before mochi delivers the packet.
const releaseMark = "\x00ralph:stored"

// New creates a broker and binds its listeners. Call Serve to start
// accepting clients.
func New(opts Options) (*Broker, error) {
	if opts.Queue == nil {
		return nil, errors.New("localbroker: no queue")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	d := configs.Default().Broker
	if opts.ReceiveMaximum <= 0 {
		opts.ReceiveMaximum = d.ReceiveMaximum
	}
	l := &opts.Limits
	l.MaxClients = cmp.Or(l.MaxClients, d.MaxClients)
	l.MaxKeepAlive = cmp.Or(l.MaxKeepAlive, d.MaxKeepAlive.Duration)
	l.MaxTopicLength = cmp.Or(l.MaxTopicLength, d.MaxTopicLength)
	l.MaxTopicLevels = cmp.Or(l.MaxTopicLevels, d.MaxTopicLevels)
	l.MaxMessageExpiry = cmp.Or(l.MaxMessageExpiry, d.MaxMessageExpiry.Duration)
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = uint32(opts.MaxPacketSize)
	caps.ReceiveMaximum = uint16(min(opts.ReceiveMaximum, 65535))
	caps.MaximumClientWritesPending = 8192
	caps.MaximumClients = int64(opts.Limits.MaxClients)
	caps.MaximumMessageExpiryInterval = int64(opts.Limits.MaxMessageExpiry / time.Second)
	srv := mqtt.New(&mqtt.Options{
		Capabilities:           caps,
		Logger:                 slog.New(warnOnly{opts.Logger.Handler()}),
		SysTopicResendInterval: 10, // its $SYS refresh reads MemStats: not every second
		// Every packet is written as it comes. mochi otherwise gathers a
		// client's writes while more are queued for it and sends them with
		// its next write; a delivery the flow control holds back is no
		// write (flow.go), so the one before it would wait for whatever
		// comes next. Measured: the same delivery rate, about 1 µs more
		// system time a delivery.
		ClientNetWriteBufferSize: 1,
		ClientNetReadBufferSize:  mochiReadBuffer, // Ralph's is in front (inbound.go)
	})
	b := &Broker{
		srv:      srv,
		q:        opts.Queue,
		log:      opts.Logger,
		recvMx:   int(caps.ReceiveMaximum),
		limits:   opts.Limits,
		patience: cmp.Or(opts.patience, slowSubscriber),
		release:  make(chan *release, 4096),
		released: make(chan struct{}),
		inflight: make(map[*mqtt.Client]int),
		awaitRel: make(map[*mqtt.Client]map[uint16]bool),
		qos2:     make(map[qos2Key]*mqtt.Client),
		pipes:    make(map[net.Conn]bool),
		subs:     newSubscriberCache(srv),
		loopback: make(map[string]bool),
		certUser: make(map[string]bool),
	}
	b.SetUsers(opts.Users, opts.Anonymous, opts.AllowAnonymous)
	b.inline = srv.NewClient(nil, "local", "ralph-inline", true)
	b.relay = srv.NewClient(nil, "local", "", true)
	if err := srv.AddHook(&acksHook{}, nil); err != nil {
		return nil, fmt.Errorf("localbroker: %w", err)
	}
	if err := srv.AddHook(&authHook{b: b}, nil); err != nil {
		return nil, fmt.Errorf("localbroker: %w", err)
	}
	if err := srv.AddHook(&limitsHook{b: b}, nil); err != nil {
		return nil, fmt.Errorf("localbroker: %w", err)
	}
	if err := srv.AddHook(&ingestHook{b: b}, nil); err != nil {
		return nil, fmt.Errorf("localbroker: %w", err)
	}
	if err := srv.AddHook(&subscriptionsHook{c: b.subs}, nil); err != nil {
		return nil, fmt.Errorf("localbroker: %w", err)
	}
	if err := srv.AddHook(&retainedHook{kv: opts.Queue.KV("retained"), log: opts.Logger}, nil); err != nil {
		return nil, fmt.Errorf("localbroker: %w", err)
	}
	sess := newSessionHook(opts.Queue, opts.Logger)
	b.sessions = sess
	sess.flow = newFlowControl(opts.Queue, sess, opts.Logger, int(caps.MaximumInflight), caps.MaximumMessageExpiryInterval)
	sess.flow.srv = srv
	b.flow = sess.flow
	if err := sess.flow.load(); err != nil {
		return nil, fmt.Errorf("localbroker: loading held messages: %w", err)
	}
	if err := srv.AddHook(sess, nil); err != nil {
		return nil, fmt.Errorf("localbroker: %w", err)
	}
	if err := srv.AddHook(&flowHook{f: sess.flow}, nil); err != nil {
		return nil, fmt.Errorf("localbroker: %w", err)
	}
	all := opts.Listeners
	for _, addr := range opts.Listen {
		all = append(all, Listener{Kind: "tcp", Address: addr})
	}
	for i, l := range all {
		id := fmt.Sprintf("%s%d", l.Kind, i)
		var ml listeners.Listener
		switch l.Kind {
		case "tcp", "tls":
			ml = newTCPListener(id, l.Address, l.TLS)
		case "ws":
			ml = listeners.NewWebsocket(listeners.Config{ID: id, Address: l.Address, TLSConfig: l.TLS})
		default:
			srv.Close()
			return nil, fmt.Errorf("localbroker: unknown listener kind %q", l.Kind)
		}
		b.loopback[id] = listen.Loopback(l.Address)
		b.certUser[id] = l.CertUsername
		if err := srv.AddListener(&served{Listener: ml, b: b}); err != nil {
			srv.Close()
			return nil, fmt.Errorf("localbroker: listen on %s (%s): %w", l.Address, l.Kind, err)
		}
		b.listenIDs = append(b.listenIDs, id)
	}
	go b.releaseLoop()
	return b, nil
}

// Serve starts accepting clients on every listener and returns.
func (b *Broker) Serve() error {
	if err := b.srv.Serve(); err != nil {
		return fmt.Errorf("localbroker: %w", err)
	}
	return nil
}

// Addrs returns the addresses the broker listens on, with actual ports.
func (b *Broker) Addrs() []string {
	var out []string
	for _, id := range b.listenIDs {
		if l, ok := b.srv.Listeners.Get(id); ok {
			out = append(out, l.Address())
		}
	}
	return out
}

// Close disconnects every client, stops the listeners and waits until every
// message handed to the queue has been released, so that the queue can be
// closed after it.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	pipes := make([]net.Conn, 0, len(b.pipes))
	for p := range b.pipes {
		pipes = append(pipes, p)
	}
	b.mu.Unlock()
	// mochi's Close ends the clients of its listeners, and then waits for
	// every client, in-process ones included, which no listener of its
	// ends: end them here first (their wills are stored as others' are),
	// and wait for their goroutines, so that none touches the queue after
	// Close.
	for _, p := range pipes {
		p.Close()
	}
	b.dials.Wait()
	err := b.srv.Close()
	// mochi's Close has waited for the clients it knew of; one it did not
	// (a connection made meanwhile) may still publish. Every append is
	// added to pending under mu while not draining, so that Wait covers it,
	// and none is made after.
	b.mu.Lock()
	b.draining = true
	b.mu.Unlock()
	b.pending.Wait()
	close(b.release)
	<-b.released
	b.sessions.inflight.flush() // no client is left to change it
	return err
}

// Publish stores m and delivers it to local subscribers, as if a client
// had published it, for in-process publishers (bridge downlink, serial
// boards). It returns once m is durable and handed to mochi; m.Origin says
// where it came from, which the queue keeps.
func (b *Broker) Publish(ctx context.Context, m *queue.Message) error {
	if m.Arrived.IsZero() {
		m.Arrived = time.Now()
	}
	if err := b.q.Append(ctx, m); err != nil {
		return fmt.Errorf("localbroker: publish %s: %w", m.Topic, err)
	}
	b.stored.Add(1)
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: m.QoS, Retain: m.Retain},
		TopicName:   m.Topic,
		Payload:     m.Payload,
		Properties: packets.Properties{
			ContentType:           m.ContentType,
			ResponseTopic:         m.ResponseTopic,
			CorrelationData:       m.CorrelationData,
			MessageExpiryInterval: m.ExpiryInterval,
			PayloadFormat:         m.PayloadFormat,
			PayloadFormatFlag:     m.PayloadFormat != 0,
		},
		Connect: packets.ConnectParams{ClientIdentifier: releaseMark},
	}
	if m.QoS > 0 {
		pk.PacketID = 1 // required on a QoS>0 PUBLISH; the inline client acks nothing
	}
	for _, u := range m.UserProperties {
		pk.Properties.User = append(pk.Properties.User, packets.UserProperty{Key: u.Key, Val: u.Value})
	}
	// The message is stored: a delivery problem is logged, not returned,
	// so that the caller does not send it again.
	if err := b.srv.InjectPacket(b.inline, pk); err != nil {
		b.log.Error("delivering an in-process message", "topic", m.Topic, "origin", m.Origin, "err", err)
	}
	return nil
}

// internalListener is the listener id of in-process connections made with
// Dial. No network listener has it.
const internalListener = "internal"

// Dial returns an in-process MQTT connection to the broker, for a client
// whose identity the caller vouches for (a serial port): it connects
// without a password, with a username naming one of the configured users
// (whose ACL then applies) or none (the anonymous ACL applies). Everything
// else, from the ingest path to persistent sessions, is as for a network
// client. Once the broker is closing, the connection returned is closed.
func (b *Broker) Dial() net.Conn {
	client, server := net.Pipe()
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		server.Close()
		return client
	}
	b.pipes[server] = true
	b.dials.Add(1)
	b.mu.Unlock()
	go func() {
		defer b.dials.Done()
		err := b.srv.EstablishConnection(internalListener, newCorkConn(server))
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrClosedPipe) {
			b.log.Debug("in-process connection ended", "err", err)
		}
		server.Close()
		b.mu.Lock()
		delete(b.pipes, server)
		b.mu.Unlock()
	}()
	return client
}

// Announce delivers a retained status message of Ralph's own (a bridge's
// link state, say) to local subscribers without storing it in the queue:
// it is not device data, it is announced again after a restart, and it
// must not show as a backlog.
func (b *Broker) Announce(topic string, payload []byte) error {
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true},
		TopicName:   topic,
		Payload:     payload,
		Connect:     packets.ConnectParams{ClientIdentifier: releaseMark},
	}
	if err := b.srv.InjectPacket(b.inline, pk); err != nil {
		return fmt.Errorf("localbroker: announce %s: %w", topic, err)
	}
	return nil
}

// Stats returns the broker's counters.
func (b *Broker) Stats() Stats {
	return Stats{
		Stored:        b.stored.Load(),
		StoreFailed:   b.storeFailed.Load(),
		Orphaned:      b.orphaned.Load(),
		Duplicates:    b.duplicates.Load(),
		Disconnected:  b.disconnected.Load(),
		OverReceiveMx: b.overRecvMx.Load(),
		AuthFailed:    b.authFailed.Load(),
		Denied:        b.denied.Load(),
		BadTopic:      b.badTopic.Load(),
		DeliveriesDropped: [3]uint64{
			b.dropped[0].Load(),
			b.dropped[1].Load() + b.flow.dropped[1].Load(),
			b.dropped[2].Load() + b.flow.dropped[2].Load(),
		},
	}
}

// ClientCount returns the number of connected clients.
func (b *Broker) ClientCount() int {
	return int(atomic.LoadInt64(&b.srv.Info.ClientsConnected))
}

// ingestHook intercepts the publishes that mochi reads (those Ralph's
// first pass, inbound.go, leaves to it) on their first pass through mochi.
type ingestHook struct {
	mqtt.HookBase
	b *Broker
}

func (h *ingestHook) ID() string { return "ralph-ingest" }

func (h *ingestHook) Provides(b byte) bool {
	return b == mqtt.OnPublish || b == mqtt.OnWill || b == mqtt.OnPacketProcessed || b == mqtt.OnDisconnect ||
		b == mqtt.OnPublishDropped || b == mqtt.OnSessionEstablished
}

// OnSessionEstablished starts Ralph's first pass over the client's
// publishes (inbound.go), before mochi reads the first packet after the
// CONNECT.
func (h *ingestHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if c, ok := cl.Net.Conn.(*corkConn); ok {
		c.ingestPublishes(h.b, cl)
	}
}

// OnPublishDropped counts a delivery mochi dropped: the subscriber's
// queue of pending writes was full.
func (h *ingestHook) OnPublishDropped(_ *mqtt.Client, pk packets.Packet) {
	h.b.dropped[min(pk.FixedHeader.Qos, 2)].Add(1)
}

// OnPacketProcessed ends the count of a QoS 2 publish against the receive
// maximum at its PUBREL (mochi has answered it with PUBCOMP by now).
func (h *ingestHook) OnPacketProcessed(cl *mqtt.Client, pk packets.Packet, _ error) {
	if pk.FixedHeader.Type == packets.Pubrel {
		h.b.mu.Lock()
		h.b.releasedQoS2(cl, pk.PacketID)
		h.b.mu.Unlock()
	}
}

// OnDisconnect forgets a connection's counts: its QoS 2 publishes awaiting
// PUBREL will not get one on this connection.
func (h *ingestHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	h.b.mu.Lock()
	delete(h.b.inflight, cl)
	delete(h.b.awaitRel, cl)
	h.b.mu.Unlock()
}

// releasedQoS2 ends the count of QoS 2 publish id of cl, if it is counted.
// b.mu is held.
func (b *Broker) releasedQoS2(cl *mqtt.Client, id uint16) {
	if ids := b.awaitRel[cl]; ids[id] {
		delete(ids, id)
		if len(ids) == 0 {
			delete(b.awaitRel, cl)
		}
		if b.inflight[cl]--; b.inflight[cl] <= 0 {
			delete(b.inflight, cl)
		}
	}
}

// OnWill stores a will as it is sent: mochi delivers wills to local
// subscribers without the publish path, and a will is a message like any
// other — stored and forwarded by the bridges.
func (h *ingestHook) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	b := h.b
	if !b.aclFor(cl).mayPublish(will.TopicName, cl) {
		return will, nil // mochi checked the will's topic at connect; not ours to store
	}
	m := &queue.Message{Topic: will.TopicName, Payload: will.Payload, QoS: will.Qos, Retain: will.Retain, Origin: cl.ID, Arrived: time.Now()}
	for _, u := range will.User {
		m.UserProperties = append(m.UserProperties, queue.UserProperty{Key: u.Key, Value: u.Val})
	}
	if !b.storeBehind(m, "will") {
		b.log.Warn("will delivered locally but not stored: the broker is closing", "client", cl.ID, "topic", m.Topic)
	}
	return will, nil
}

// storeBehind appends a message that mochi delivers without waiting (QoS
// 0, wills): the outcome is only counted, and logged if it failed. It
// returns false, having done nothing, once Close drains.
func (b *Broker) storeBehind(m *queue.Message, what string) bool {
	b.mu.Lock()
	if b.draining {
		b.mu.Unlock()
		return false
	}
	b.pending.Add(1)
	b.mu.Unlock()
	b.q.AppendAsync([]*queue.Message{m}, func(err error) {
		defer b.pending.Done()
		if err != nil {
			b.storeFailed.Add(1)
			b.log.Warn(what+" delivered locally but not stored", "client", m.Origin, "topic", m.Topic, "err", err)
			return
		}
		b.stored.Add(1)
	})
	return true
}

func (h *ingestHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.Connect.ClientIdentifier == releaseMark {
		pk.Connect = packets.ConnectParams{}
		return pk, nil
	}
	return h.b.ingest(cl, pk)
}

func (b *Broker) ingest(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if !cl.Net.Inline && (!b.hasTopic(cl, pk) || !b.topicWithinLimits(cl, pk.TopicName)) {
		b.refuseTopic(cl, pk)
		return pk, packets.ErrRejectPacket
	}
	if !cl.Net.Inline && !b.aclFor(cl).mayPublish(pk.TopicName, cl) {
		b.deny(cl, pk)
		return pk, packets.ErrRejectPacket
	}
	m := toMessage(cl, pk)
	if pk.FixedHeader.Qos == 0 {
		if !b.storeBehind(m, "QoS 0 publish") {
			return pk, packets.ErrRejectPacket // closing: dropped
		}
		if !pk.FixedHeader.Retain && b.deliverQoS0(pk) {
			// Delivered. Ignored rather than rejected: mochi logs a
			// rejection at debug level, boxing the packet to do so.
			return pk, packets.CodeSuccessIgnore
		}
		return pk, nil
	}

	b.mu.Lock()
	if b.draining {
		b.mu.Unlock()
		// Too late to store it: the client keeps it and resends it.
		b.srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
		return pk, packets.ErrRejectPacket
	}
	if b.inflight[cl] >= b.recvMx {
		b.mu.Unlock()
		// Counted as it is read, so that a client sending more than the
		// receive maximum without waiting is caught whatever the disk's
		// speed [MQTT-3.3.4-9]; mochi's own count is off (quotasOff).
		b.overRecvMx.Add(1)
		b.log.Warn("client exceeded its receive maximum", "client", cl.ID, "limit", b.recvMx)
		b.srv.DisconnectClient(cl, packets.ErrReceiveMaximum)
		return pk, packets.ErrRejectPacket
	}
	if pk.FixedHeader.Qos == 2 {
		k := qos2Key{cl.ID, pk.PacketID}
		if _, dup := b.qos2[k]; dup {
			// The first copy is still being stored: ack whichever connection
			// is newest once it is, and store this one not at all.
			b.qos2[k] = cl
			b.mu.Unlock()
			b.duplicates.Add(1)
			return pk, packets.ErrRejectPacket
		}
		b.qos2[k] = cl
		if b.awaitRel[cl] == nil {
			b.awaitRel[cl] = make(map[uint16]bool)
		}
		b.awaitRel[cl][pk.PacketID] = true
	}
	b.inflight[cl]++
	b.pending.Add(1) // under mu, with draining false: Close waits for it
	b.mu.Unlock()

	// The topic is resolved now; a later re-mapping of the alias by the same
	// client must not change this message.
	r := &release{cl: cl, pk: pk}
	r.pk.Properties.TopicAlias = 0
	r.pk.Properties.TopicAliasFlag = false
	r.pk.Connect.ClientIdentifier = releaseMark
	r.msg[0] = m
	b.q.AppendAsync(r.msg[:], func(err error) {
		// On the committer's goroutine: hand over and return.
		r.err = err
		b.release <- r
	})
	return pk, packets.ErrRejectPacket
}

func toMessage(cl *mqtt.Client, pk packets.Packet) *queue.Message {
	m := &queue.Message{
		Topic:           pk.TopicName,
		Payload:         pk.Payload,
		QoS:             pk.FixedHeader.Qos,
		Retain:          pk.FixedHeader.Retain,
		Origin:          cl.ID,
		Arrived:         time.Now(),
		ContentType:     pk.Properties.ContentType,
		ResponseTopic:   pk.Properties.ResponseTopic,
		CorrelationData: pk.Properties.CorrelationData,
		ExpiryInterval:  pk.Properties.MessageExpiryInterval,
	}
	if pk.Properties.PayloadFormatFlag {
		m.PayloadFormat = pk.Properties.PayloadFormat
	}
	for _, u := range pk.Properties.User {
		m.UserProperties = append(m.UserProperties, queue.UserProperty{Key: u.Key, Value: u.Val})
	}
	return m
}

// warnOnly passes on mochi's warnings and errors; its info messages (hooks
// added, listeners started) repeat what Ralph logs itself.
type warnOnly struct{ slog.Handler }

func (w warnOnly) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && w.Handler.Enabled(ctx, l)
}

func (w warnOnly) WithAttrs(as []slog.Attr) slog.Handler { return warnOnly{w.Handler.WithAttrs(as)} }

func (w warnOnly) WithGroup(g string) slog.Handler { return warnOnly{w.Handler.WithGroup(g)} }
