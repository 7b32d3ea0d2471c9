package bridge

// Helpers of the MQTT 3.1.1 tests: an in-process mochi upstream with
// hooks of the test's own and a recording subscription, a TCP relay whose
// connections a test can cut (a link lost without a goodbye, the will
// included), an MQTT 3.1.1 subscriber on paho.mqtt.golang for brokers that
// speak nothing else, and a Local whose Publish can be made to fail.

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho3 "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/internal/mqtttest"
	"github.com/ralph-gateway/ralph/queue"
)

// collector records messages in arrival order, as a subscriber saw them.
type collector struct {
	mu   sync.Mutex
	msgs []mqtttest.Received
	more chan struct{}
}

func newCollector() *collector { return &collector{more: make(chan struct{})} }

func (c *collector) add(r mqtttest.Received) {
	c.mu.Lock()
	c.msgs = append(c.msgs, r)
	close(c.more)
	c.more = make(chan struct{})
	c.mu.Unlock()
}

func (c *collector) all() []mqtttest.Received {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]mqtttest.Received(nil), c.msgs...)
}

// wait waits until cond holds for what has arrived, and returns it.
func (c *collector) wait(t *testing.T, what string, timeout time.Duration, cond func([]mqtttest.Received) bool) []mqtttest.Received {
	t.Helper()
	deadline := time.After(timeout)
	for {
		c.mu.Lock()
		msgs, more := append([]mqtttest.Received(nil), c.msgs...), c.more
		c.mu.Unlock()
		if cond(msgs) {
			return msgs
		}
		select {
		case <-more:
		case <-deadline:
			t.Fatalf("timed out after %v waiting for %s (%d messages arrived)", timeout, what, len(msgs))
		}
	}
}

// waitDistinct waits for n distinct payloads on topics with prefix.
func (c *collector) waitDistinct(t *testing.T, prefix string, n int, timeout time.Duration) []mqtttest.Received {
	t.Helper()
	var out []mqtttest.Received
	c.wait(t, "distinct payloads", timeout, func(msgs []mqtttest.Received) bool {
		out = out[:0]
		seen := map[string]bool{}
		for _, m := range msgs {
			if strings.HasPrefix(m.Topic, prefix) {
				out = append(out, m)
				seen[m.Payload] = true
			}
		}
		return len(seen) >= n
	})
	return out
}

// startMochiHooked runs an in-process mochi upstream on addr with hooks
// of the test's own, recording every publish into c; stop closes it.
func startMochiHooked(t *testing.T, addr string, c *collector, hooks ...mqtt.Hook) (string, func()) {
	t.Helper()
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	for _, h := range append([]mqtt.Hook{new(mqtttest.AllowAll)}, hooks...) {
		if err := srv.AddHook(h, nil); err != nil {
			t.Fatal(err)
		}
	}
	err := srv.Subscribe("#", 2, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		if !strings.HasPrefix(pk.TopicName, "$") {
			c.add(mqtttest.Received{Topic: pk.TopicName, Payload: string(pk.Payload), QoS: pk.FixedHeader.Qos, Retain: pk.FixedHeader.Retain})
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	l := mqtttest.NewListener("t", addr)
	deadline := time.Now().Add(5 * time.Second) // a restarted upstream rebinds its predecessor's port
	for err = srv.AddListener(l); err != nil && time.Now().Before(deadline); err = srv.AddListener(l) {
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() { once.Do(func() { srv.Close() }) }
	t.Cleanup(stop)
	return l.Address(), stop
}

// relay forwards TCP connections to target; cut drops the current ones
// at once, as a lost link does (no DISCONNECT: the upstream sends the
// will).
type relay struct {
	addr string
	l    net.Listener

	mu    sync.Mutex
	conns []net.Conn
	cuts  atomic.Int32
}

func startRelay(t *testing.T, target string) *relay {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{addr: l.Addr().String(), l: l}
	t.Cleanup(func() { l.Close(); r.cut() })
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			r.mu.Lock()
			r.conns = append(r.conns, in, out)
			r.mu.Unlock()
			go func() { io.Copy(out, in); out.Close() }()
			go func() { io.Copy(in, out); in.Close() }()
		}
	}()
	return r
}

func (r *relay) cut() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		c.Close()
	}
	r.conns = nil
	r.cuts.Add(1)
}

// subscribe311 connects an MQTT 3.1.1 subscriber (paho.mqtt.golang, a
// persistent session, reconnecting by itself) to addr, subscribed to
// filter at qos, recording into a new collector.
func subscribe311(t *testing.T, addr, clientID, filter string, qos byte) *collector {
	t.Helper()
	c := newCollector()
	opts := paho3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(clientID).SetProtocolVersion(4).
		SetCleanSession(false).SetAutoReconnect(true).SetMaxReconnectInterval(200 * time.Millisecond).
		SetDefaultPublishHandler(func(_ paho3.Client, m paho3.Message) {
			c.add(mqtttest.Received{Topic: m.Topic(), Payload: string(m.Payload()), QoS: m.Qos(), Retain: m.Retained()})
		})
	subscribed := make(chan struct{})
	var once sync.Once
	opts.SetOnConnectHandler(func(cl paho3.Client) {
		go func() {
			if tok := cl.Subscribe(filter, qos, nil); tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
				once.Do(func() { close(subscribed) })
			}
		}()
	})
	cl := paho3.NewClient(opts)
	if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber %s could not connect to %s: %v", clientID, addr, tok.Error())
	}
	t.Cleanup(func() { cl.Disconnect(100) })
	select {
	case <-subscribed:
	case <-time.After(10 * time.Second):
		t.Fatalf("subscriber %s could not subscribe to %s on %s", clientID, filter, addr)
	}
	return c
}

// failingLocal is a real local broker whose Publish fails while fail is
// above zero (counting down), as a full or failing disk makes it.
type failingLocal struct {
	Local
	fail  atomic.Int32
	calls atomic.Int32
}

var errStoreFailed = errors.New("store failed (test)")

func (l *failingLocal) Publish(ctx context.Context, m *queue.Message) error {
	l.calls.Add(1)
	if l.fail.Add(-1) >= 0 {
		return errStoreFailed
	}
	return l.Local.Publish(ctx, m)
}
