package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// bench holds the connections of one run.
type bench struct {
	o     *options
	size  int // payload bytes
	pubs  []*publisher
	subs  []*subscriber
	conns []*paho.Client // every connected client, for disconnectAll
	errs  connErrors
}

// connErrors collects the connection errors paho reports asynchronously.
type connErrors struct {
	mu      sync.Mutex
	closing bool
	list    []string
}

func (e *connErrors) add(id string, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.closing && len(e.list) < 20 {
		e.list = append(e.list, id+": "+err.Error())
	}
}

// stop stops collecting: errors caused by our own disconnects are not
// interesting.
func (e *connErrors) stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closing = true
}

// collected returns the errors collected until stop.
func (e *connErrors) collected() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.list
}

// bufConn buffers reads. paho's packets.ReadPacket reads the first byte, the
// remaining-length bytes and the rest of each packet with separate reads,
// i.e. three or more read system calls per PUBACK or PUBLISH received: CPU
// that, on a small machine, the broker under test would otherwise get.
// Writes are left alone.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func newBufConn(c net.Conn) net.Conn {
	return &bufConn{Conn: c, r: bufio.NewReaderSize(c, 64<<10)}
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// run performs one benchmark run as configured by o.
func run(ctx context.Context, o *options) (*report, error) {
	b := &bench{o: o, size: max(o.Size, headerLen)}
	r := &report{Config: o, Mode: "publish", PayloadBytes: b.size}
	if o.SubscribeOnly {
		r.Mode = "subscribe-only"
		r.PayloadBytes = 0
	} else if b.size != o.Size {
		r.Notes = append(r.Notes, fmt.Sprintf("-size %d raised to %d: the payload header takes %d bytes", o.Size, b.size, headerLen))
	}
	if o.PID > 0 {
		if _, _, err := readMemStatus(o.PID); err != nil {
			return nil, fmt.Errorf("-pid: %w", err)
		}
	}
	defer b.disconnectAll()

	filter := o.Topic + "/#"
	if o.SubscribeOnly && strings.ContainsAny(o.Topic, "+#") {
		filter = o.Topic
	}
	if err := b.connectSubscribers(ctx, filter); err != nil {
		return nil, err
	}
	if !o.SubscribeOnly {
		if err := b.connectPublishers(ctx); err != nil {
			return nil, err
		}
	}

	var sampler *rssSampler
	if o.PID > 0 {
		var err error
		if sampler, err = startRSSSampler(o.PID, 100*time.Millisecond); err != nil {
			return nil, fmt.Errorf("-pid: %w", err)
		}
	}

	var expected int64 // per subscriber
	var drained bool
	if o.SubscribeOnly {
		expected = o.Expect
		start := time.Now()
		drained = waitFor(ctx, b.subs, expected, o.Timeout)
		r.drain = time.Since(start)
	} else {
		b.publish(ctx)
		r.Publish = b.pubReport(r)
		if len(b.subs) > 0 {
			expected = r.Publish.Acked
			start := time.Now()
			drained = waitFor(ctx, b.subs, expected, o.DrainWait)
			r.drain = time.Since(start)
		}
	}
	if sampler != nil {
		r.RSS = sampler.finish()
	}
	b.disconnectAll() // also makes the subscribers' counters safe to read
	r.ConnErrors = b.errs.collected()
	if len(b.subs) > 0 {
		r.Subscribe = b.subReport(r, filter, expected)
		r.Subscribe.DrainSeconds = r.drain.Seconds()
		r.Subscribe.DrainTimedOut = !drained
	}

	if p := r.Publish; p != nil {
		if p.Errors > 0 {
			r.Failures = append(r.Failures, fmt.Sprintf("%d publishes failed (first error: %s)", p.Errors, p.FirstError))
		}
		if p.Acked < p.Planned {
			r.Failures = append(r.Failures, fmt.Sprintf("%d of %d publishes acknowledged", p.Acked, p.Planned))
		}
		if p.ServerRecvMax < o.Inflight && p.QoS > 0 {
			r.Notes = append(r.Notes, fmt.Sprintf("server receive-maximum %d < -inflight %d: paho caps outstanding publishes per connection at %d",
				p.ServerRecvMax, o.Inflight, p.ServerRecvMax))
		}
	}
	if s := r.Subscribe; s != nil {
		if s.Missing > 0 {
			r.Failures = append(r.Failures, fmt.Sprintf("%d messages missing at subscribers after waiting %s", s.Missing, fmtDur(r.drain)))
		}
		if s.GrantedQoS < s.QoS {
			r.Notes = append(r.Notes, fmt.Sprintf("broker granted subscription QoS %d (asked %d)", s.GrantedQoS, s.QoS))
		}
	}
	// In -subscribe-only mode, running into -timeout is already reported as
	// missing messages.
	if err := ctx.Err(); err != nil && !(o.SubscribeOnly && errors.Is(err, context.DeadlineExceeded)) {
		r.Failures = append(r.Failures, "run cut short: "+context.Cause(ctx).Error())
	}
	r.OK = len(r.Failures) == 0
	return r, nil
}

// connect dials the broker and performs the MQTT v5 handshake. wrap, if not
// nil, wraps the network connection (after newBufConn) before paho gets it.
func (b *bench) connect(ctx context.Context, id string, wrap func(net.Conn) net.Conn,
	onPublish func(paho.PublishReceived) (bool, error)) (*paho.Client, *paho.Connack, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", b.o.addr)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", id, err)
	}
	conn = newBufConn(conn)
	if wrap != nil {
		conn = wrap(conn)
	}
	cfg := paho.ClientConfig{
		ClientID: id,
		Conn:     conn,
		// Publish and Subscribe wait at most this long for their ack; the
		// run's own deadline (-timeout) is what should bound them.
		PacketTimeout: b.o.Timeout,
		OnClientError: func(err error) { b.errs.add(id, err) },
		OnServerDisconnect: func(d *paho.Disconnect) {
			b.errs.add(id, fmt.Errorf("server sent DISCONNECT, reason code 0x%02x", d.ReasonCode))
		},
	}
	if onPublish != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){onPublish}
	}
	c := paho.NewClient(cfg)
	cp := &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true}
	if onPublish != nil && b.o.SubSession > 0 { // a subscriber
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &b.o.SubSession}
	}
	if b.o.Username != "" {
		cp.Username, cp.UsernameFlag = b.o.Username, true
	}
	if b.o.Password != "" {
		cp.Password, cp.PasswordFlag = []byte(b.o.Password), true
	}
	ca, err := c.Connect(ctx, cp)
	if err != nil {
		if ca != nil {
			err = fmt.Errorf("%w (reason code 0x%02x)", err, ca.ReasonCode)
		}
		return nil, nil, fmt.Errorf("%s: connect: %w", id, err)
	}
	b.conns = append(b.conns, c)
	return c, ca, nil
}

func (b *bench) clientID(kind string, i int) string {
	return fmt.Sprintf("%s-%d-%s%d", b.o.ClientPrefix, os.Getpid(), kind, i)
}

func (b *bench) connectSubscribers(ctx context.Context, filter string) error {
	publishers, messages := b.o.Publishers, b.o.Messages
	if b.o.SubscribeOnly {
		publishers, messages = 0, 0
	}
	for i := range b.o.Subscribers {
		s := newSubscriber(i, publishers, messages, b.o.Expect)
		s.countUndecodable = b.o.SubscribeOnly
		id := b.clientID("s", i)
		c, _, err := b.connect(ctx, id, nil, s.onPublish)
		if err != nil {
			return err
		}
		s.client = c
		sa, err := c.Subscribe(ctx, &paho.Subscribe{
			Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: byte(b.o.SubQoS)}},
		})
		if err != nil {
			return fmt.Errorf("%s: subscribe %s: %w", id, filter, err)
		}
		if len(sa.Reasons) > 0 {
			s.granted = sa.Reasons[0]
		}
		b.subs = append(b.subs, s)
	}
	return nil
}

func (b *bench) connectPublishers(ctx context.Context) error {
	for i := range b.o.Publishers {
		p := newPublisher(i, b.o.Topic, b.o.Messages)
		wrap := func(c net.Conn) net.Conn {
			p.conn = newStampConn(c, i)
			return p.conn
		}
		c, ca, err := b.connect(ctx, b.clientID("p", i), wrap, nil)
		if err != nil {
			return err
		}
		p.client, p.connack = c, ca
		b.pubs = append(b.pubs, p)
	}
	return nil
}

// publish runs all publishers at once and returns when they are done.
func (b *bench) publish(ctx context.Context) {
	pace := newPacer(b.o.Rate)
	pace.begin(time.Now())
	var wg sync.WaitGroup
	for _, p := range b.pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.run(ctx, b.o.Inflight, byte(b.o.QoS), b.size, pace)
		}()
	}
	wg.Wait()
}

// waitFor waits until every subscriber has counted target messages or lost
// its connection (true), or until wait has passed or ctx is done (false).
func waitFor(ctx context.Context, subs []*subscriber, target int64, wait time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		done := true
		for _, s := range subs {
			if s.unique.Load() >= target {
				continue
			}
			select {
			case <-s.client.Done():
			default:
				done = false
			}
		}
		if done {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// disconnectAll disconnects every client; paho's Disconnect returns once the
// client's goroutines have ended. It may be called more than once.
func (b *bench) disconnectAll() {
	b.errs.stop()
	for _, c := range b.conns {
		_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
	}
	b.conns = nil
}

func (b *bench) pubReport(r *report) *pubReport {
	o := b.o
	p := &pubReport{
		Publishers:    o.Publishers,
		Messages:      o.Messages,
		Inflight:      o.Inflight,
		QoS:           o.QoS,
		RateLimit:     o.Rate,
		ServerRecvMax: math.MaxUint16,
		Planned:       int64(o.Publishers) * int64(o.Messages),
	}
	var first, last time.Time
	lat := make([]time.Duration, 0, p.Planned)
	for _, pub := range b.pubs {
		if pr := pub.connack.Properties; pr != nil && pr.ReceiveMaximum != nil {
			p.ServerRecvMax = min(p.ServerRecvMax, int(*pr.ReceiveMaximum))
		}
		p.Sent += pub.conn.published()
		for _, st := range pub.slots {
			p.Acked += st.acked
			p.Errors += st.errors
			if st.err != nil && p.FirstError == "" {
				p.FirstError = st.err.Error()
			}
			if !st.first.IsZero() && (first.IsZero() || st.first.Before(first)) {
				first = st.first
			}
			if st.last.After(last) {
				last = st.last
			}
		}
		for _, d := range pub.ackLat {
			if d >= 0 {
				lat = append(lat, d)
			}
		}
	}
	if !last.IsZero() {
		r.pubElapsed = last.Sub(first)
	}
	p.ElapsedSeconds = r.pubElapsed.Seconds()
	p.Rate = math.Round(rate(p.Acked, r.pubElapsed))
	if o.QoS > 0 {
		r.ackLat = summarize(lat)
		p.AckLatency = r.ackLat.json()
	}
	return p
}

// subReport must only be called once the subscribers are disconnected.
func (b *bench) subReport(r *report, filter string, expected int64) *subReport {
	s := &subReport{
		Subscribers: len(b.subs),
		Filter:      filter,
		QoS:         b.o.SubQoS,
		GrantedQoS:  math.MaxInt,
		Expected:    expected,
		ReceivedMin: math.MaxInt64,
	}
	var first, last time.Time
	var total int64
	n := 0
	for _, sub := range b.subs {
		n += len(sub.e2e)
	}
	lat := make([]time.Duration, 0, n)
	for _, sub := range b.subs {
		s.GrantedQoS = min(s.GrantedQoS, int(sub.granted))
		s.ReceivedMin = min(s.ReceivedMin, sub.received)
		s.ReceivedMax = max(s.ReceivedMax, sub.received)
		s.Missing += max(0, expected-sub.unique.Load())
		s.Duplicates += sub.duplicates
		s.OutOfOrder += sub.outOfOrder
		s.Undecodable += sub.undecodable
		total += sub.received
		if sub.received > 0 {
			if first.IsZero() || sub.first.Before(first) {
				first = sub.first
			}
			if sub.last.After(last) {
				last = sub.last
			}
		}
		lat = append(lat, sub.e2e...)
	}
	r.subElapsed = last.Sub(first)
	s.ElapsedSeconds = r.subElapsed.Seconds()
	s.Rate = math.Round(rate(total, r.subElapsed))
	r.e2e = summarize(lat)
	s.E2ELatency = r.e2e.json()
	return s
}
