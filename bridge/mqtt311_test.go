package bridge

// Tests of the MQTT 3.1.1 bridge against real brokers (in-process mochi,
// Debian's Mosquitto, nats-server's 3.1.1-only MQTT gateway) on a real
// queue: order and the window, resends after a lost link (session kept,
// QoS 1 and 2) and after an upstream restart (session lost), the downlink
// stored before its PUBACK, MQTT 5 properties dropped and counted,
// failover, and the link state's will. Helpers are in
// mqtt311_helpers_test.go.

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/internal/mqtttest"
	"github.com/ralph-gateway/ralph/queue"
)

func v311(c *Config) { c.Protocol = ProtocolMQTT311 }

// flightHook watches, in mochi, the QoS 1 and 2 publishes of clients that
// are not inline: how many are in flight at the upstream (received, not
// yet acknowledged) at most, and how many arrived on each connection.
// While stall is set it swallows them: no acknowledgement, no delivery.
type flightHook struct {
	mqtt.HookBase
	stall atomic.Bool

	mu       sync.Mutex
	inflight int
	max      int
	perConn  []int
}

func (*flightHook) ID() string { return "flight" }
func (*flightHook) Provides(b byte) bool {
	return b == mqtt.OnPublish || b == mqtt.OnPacketSent || b == mqtt.OnConnect
}

func (h *flightHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if !cl.Net.Inline {
		h.mu.Lock()
		h.perConn = append(h.perConn, 0)
		h.inflight = 0 // what the last connection had in flight is not any more
		h.mu.Unlock()
	}
	return nil
}

func (h *flightHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline || pk.FixedHeader.Qos == 0 {
		return pk, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.perConn[len(h.perConn)-1]++
	if h.stall.Load() {
		return pk, packets.ErrRejectPacket
	}
	h.inflight++
	h.max = max(h.max, h.inflight)
	return pk, nil
}

func (h *flightHook) OnPacketSent(cl *mqtt.Client, pk packets.Packet, b []byte) {
	if t := pk.FixedHeader.Type; !cl.Net.Inline && (t == packets.Puback || t == packets.Pubrec) {
		h.mu.Lock()
		h.inflight--
		h.mu.Unlock()
	}
}

func (h *flightHook) stats() (maxInflight int, perConn []int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.max, append([]int(nil), h.perConn...)
}

// TestMQTT311WindowAndOrder: an upstream that acknowledges nothing gets a
// full window of max_inflight publishes and no more, until the watchdog
// reconnects and the session resends them; then the upstream never holds
// more than max_inflight of the bridge's publishes unacknowledged, and
// everything arrives, in order, none twice.
func TestMQTT311WindowAndOrder(t *testing.T) {
	const window = 8
	hook := new(flightHook)
	hook.stall.Store(true)
	c := newCollector()
	addr, _ := startMochiHooked(t, "127.0.0.1:0", c, hook)
	r := startBridge(t, addr, []Rule{{Filter: "#", QoS: 1}}, v311, func(c *Config) {
		c.MaxInflight, c.AckTimeout = window, 300*time.Millisecond
	})
	want := seqPayloads("w", 2000)
	r.publish(t, "t", want...)
	waitFor(t, "a full window in flight", func() bool { return r.b.Stats().Inflight == window })
	waitFor(t, "the watchdog to reconnect", func() bool { return r.b.Stats().Reconnects > 0 })
	hook.stall.Store(false)
	got := c.waitDistinct(t, "t", len(want), 30*time.Second)
	if dups := checkInOrder(t, got, want); dups != 0 {
		t.Fatalf("%d duplicates: the stalled window was never delivered, so none should repeat", dups)
	}
	waitFor(t, "the backlog acknowledged", func() bool { return r.b.Stats().Backlog == 0 })
	maxIn, perConn := hook.stats()
	if perConn[0] < 1 || perConn[0] > window {
		t.Fatalf("the stalled first connection received %d publishes, want 1 to %d (the window)", perConn[0], window)
	}
	if maxIn < 1 || maxIn > window {
		t.Fatalf("the upstream held up to %d publishes unacknowledged at once, want 1 to max_inflight %d", maxIn, window)
	}
	if s := r.b.Stats(); s.Forwarded != uint64(len(want)) || s.Inflight != 0 || s.PropertiesDropped != 0 {
		t.Fatalf("stats %+v: want %d forwarded, none in flight, no properties dropped", s, len(want))
	}
	t.Logf("publishes per connection %v, at most %d in flight at the upstream", perConn, maxIn)
}

// TestMQTT311LinkCut: the link to Mosquitto (which keeps the bridge's
// session) is cut again and again while a backlog drains, at QoS 1 and
// QoS 2: the session resends what was in flight, with the same packet
// ids, and everything arrives, in order, duplicates within a window per
// cut.
func TestMQTT311LinkCut(t *testing.T) {
	for _, qos := range []byte{1, 2} {
		t.Run(fmt.Sprintf("qos %d", qos), func(t *testing.T) {
			const window, cuts = 16, 5
			m := mqtttest.StartMosquitto(t, mqtttest.FreePort(t), t.TempDir())
			c := subscribe311(t, m.Addr(), "collector", "edge/#", 2)
			link := startRelay(t, m.Addr())
			// max_rate spreads the drain over a second or so, for the
			// cuts to fall in the middle of it.
			r := startBridge(t, link.addr, []Rule{{Filter: "#", RemotePrefix: "edge/", QoS: qos}}, v311, func(c *Config) {
				c.MaxInflight, c.MaxRate = window, 3000
			})
			want := seqPayloads("c", 3000)
			r.publish(t, "t", want...)
			for i := range cuts {
				// Cut once a further share of the backlog is through,
				// on a connection that is up.
				n := (i + 1) * len(want) / (cuts + 1)
				c.wait(t, fmt.Sprintf("%d messages before cut %d", n, i+1), 30*time.Second, func(m []mqtttest.Received) bool { return len(m) >= n })
				waitFor(t, "the bridge connected", func() bool { return r.b.Stats().Connected })
				link.cut()
				waitFor(t, "the cut noticed", func() bool { return r.b.Stats().Reconnects > uint64(i) })
			}
			got := c.waitDistinct(t, "edge/", len(want), 60*time.Second)
			dups := checkInOrder(t, got, want)
			if dups > cuts*window {
				t.Fatalf("%d duplicates after %d cuts with a window of %d", dups, cuts, window)
			}
			waitFor(t, "the backlog acknowledged", func() bool { return r.b.Stats().Backlog == 0 })
			if s := r.b.Stats(); s.Reconnects < cuts {
				t.Fatalf("%d reconnects after %d cuts", s.Reconnects, cuts)
			}
			t.Logf("%d messages, %d duplicates, %d reconnects", len(want), dups, r.b.Stats().Reconnects)
		})
	}
}

// TestMQTT311UpstreamRestarted: an upstream restarted (losing every
// session) four times mid-stream: every message arrives, in order,
// duplicates within a window per restart.
func TestMQTT311UpstreamRestarted(t *testing.T) {
	const window, restarts = 16, 4
	addr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	c := newCollector()
	_, stop := startMochiHooked(t, addr, c)
	r := startBridge(t, addr, []Rule{{Filter: "#", QoS: 1}}, v311, func(c *Config) { c.MaxInflight, c.MaxRate = window, 3000 })
	want := seqPayloads("f", 3000)
	r.publish(t, "t", want...)
	for i := range restarts {
		n := (i + 1) * len(want) / (restarts + 1)
		c.wait(t, fmt.Sprintf("%d messages before restart %d", n, i+1), 30*time.Second, func(m []mqtttest.Received) bool { return len(m) >= n })
		waitFor(t, "the bridge connected", func() bool { return r.b.Stats().Connected })
		stop()
		waitFor(t, "the restart noticed", func() bool { return r.b.Stats().Reconnects > uint64(i) })
		_, stop = startMochiHooked(t, addr, c)
	}
	got := c.waitDistinct(t, "t", len(want), 60*time.Second)
	dups := checkInOrder(t, got, want)
	if dups > restarts*window {
		t.Fatalf("%d duplicates after %d restarts with a window of %d", dups, restarts, window)
	}
	t.Logf("%d messages, %d duplicates, %d reconnects", len(want), dups, r.b.Stats().Reconnects)
}

// TestMQTT311DownlinkStoredBeforeAck: a downlink message is acknowledged
// upstream only once stored locally. The local store fails the first
// time: the bridge drops the connection without a PUBACK, the upstream
// (which kept the session) sends the message again, and the second time
// it is stored, delivered to a local subscriber and acknowledged.
func TestMQTT311DownlinkStoredBeforeAck(t *testing.T) {
	up := mqtttest.StartMochi(t, "127.0.0.1:0", nil)
	q, lb := startLocal(t)
	cons, err := q.Consumer("up", queue.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	local := &failingLocal{Local: lb}
	local.fail.Store(1)
	u, _ := url.Parse("mqtt://" + up.Addr)
	b, _ := runBridge(t, Config{
		Name: "up", Protocol: ProtocolMQTT311, URLs: []*url.URL{u}, ClientID: "ralph-dl311", MaxInflight: 16,
		KeepAlive: 30 * time.Second, ReconnectMin: 20 * time.Millisecond, ReconnectMax: 100 * time.Millisecond,
		Subscribe: []SubRule{{Filter: "site/cmd/#", StripPrefix: "site/", QoS: 1}}, Local: local, Logger: quiet,
	}, cons)
	waitFor(t, "the bridge connected", func() bool { return b.Stats().Connected })
	dev := mqtttest.Dial(t, lb.Addrs()[0], "device", 4)
	dev.Subscribe("cmd/#", 1)

	cloud := mqtttest.Dial(t, up.Addr, "cloud", 4)
	cloud.Publish(1, 1, "site/cmd/led", []byte("on"))
	if pk := cloud.Read(5 * time.Second); pk.FixedHeader.Type != packets.Puback {
		t.Fatalf("upstream publish: packet type %d, want PUBACK", pk.FixedHeader.Type)
	}
	pk := dev.Read(10 * time.Second)
	for pk.FixedHeader.Type == packets.Suback {
		pk = dev.Read(10 * time.Second)
	}
	if pk.FixedHeader.Type != packets.Publish || pk.TopicName != "cmd/led" || string(pk.Payload) != "on" {
		t.Fatalf("device got packet type %d %q %q, want the command cmd/led on", pk.FixedHeader.Type, pk.TopicName, pk.Payload)
	}
	if n := local.calls.Load(); n != 2 {
		t.Fatalf("%d local publishes, want 2: the failed one, then the upstream's resend", n)
	}
	waitFor(t, "the command counted", func() bool { return b.Stats().Downlinked == 1 })
	if s := b.Stats(); s.Reconnects < 1 {
		t.Fatalf("stats %+v: want a reconnect after the failed store", s)
	}
}

// TestMQTT311PropertiesDropped: MQTT 3.1.1 cannot carry a message's MQTT 5
// properties: they are dropped, and each message that had any is counted;
// an expired message is still not forwarded (the expiry is checked
// locally).
func TestMQTT311PropertiesDropped(t *testing.T) {
	m := mqtttest.StartMosquitto(t, mqtttest.FreePort(t), t.TempDir())
	up := mqtttest.Subscribe(t, m.Addr(), "collector", "edge/#", nil) // MQTT 5: it would see the properties
	r := startBridge(t, m.Addr(), []Rule{{Filter: "#", RemotePrefix: "edge/", QoS: 1}}, v311)
	now := time.Now()
	for _, msg := range []*queue.Message{
		{Topic: "a", Payload: []byte("user"), UserProperties: []queue.UserProperty{{Key: "unit", Value: "C"}}},
		{Topic: "a", Payload: []byte("plain")},
		{Topic: "a", Payload: []byte("typed"), ContentType: "text/plain", PayloadFormat: 1},
		{Topic: "a", Payload: []byte("expiring"), ExpiryInterval: 3600},
		{Topic: "a", Payload: []byte("expired"), ExpiryInterval: 60, Arrived: now.Add(-time.Hour)},
		{Topic: "a", Payload: []byte("reply"), ResponseTopic: "r", CorrelationData: []byte{1}},
	} {
		msg.QoS, msg.Origin = 1, "dev"
		if msg.Arrived.IsZero() {
			msg.Arrived = now
		}
		if err := r.q.Append(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
	}
	got := up.WaitAll(t, []string{"user", "plain", "typed", "expiring", "reply"}, 10*time.Second)
	for _, g := range got {
		if g.Payload == "expired" {
			t.Fatal("an expired message was forwarded")
		}
		if len(g.Props) != 0 {
			t.Fatalf("%q arrived with user properties %v through MQTT 3.1.1", g.Payload, g.Props)
		}
	}
	waitFor(t, "the backlog acknowledged", func() bool { return r.b.Stats().Backlog == 0 })
	if s := r.b.Stats(); s.PropertiesDropped != 4 || s.Expired != 1 || s.Forwarded != 5 {
		t.Fatalf("stats %+v: want 4 with properties dropped, 1 expired, 5 forwarded", s)
	}
}

// TestMQTT311FailoverAndBackToPrimary: with the first upstream down the
// bridge uses the second; once the first is back it returns to it after
// PrimaryRetry; when the first dies it fails over again. Nothing is lost.
func TestMQTT311FailoverAndBackToPrimary(t *testing.T) {
	primary := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	second := newCollector()
	secondary, _ := startMochiHooked(t, "127.0.0.1:0", second)
	r := startBridge(t, primary, []Rule{{Filter: "#", QoS: 1}}, v311, func(c *Config) {
		u, _ := url.Parse("mqtt://" + secondary)
		c.URLs = append(c.URLs, u)
		c.PrimaryRetry = 300 * time.Millisecond
	})
	first := seqPayloads("a", 50)
	r.publish(t, "t", first...)
	second.waitDistinct(t, "t", 50, 10*time.Second)

	prim := newCollector()
	_, stopPrimary := startMochiHooked(t, primary, prim)
	waitFor(t, "back on the primary", func() bool { return r.b.Stats().Connected && r.b.Stats().URL == "mqtt://"+primary })
	next := seqPayloads("b", 50)
	r.publish(t, "t", next...)
	checkInOrder(t, prim.waitDistinct(t, "t", 50, 10*time.Second), next)

	stopPrimary()
	third := seqPayloads("c", 50)
	r.publish(t, "t", third...)
	got := second.waitDistinct(t, "t", 100, 10*time.Second)
	var onSecondary []mqtttest.Received
	for _, m := range got {
		if m.Payload[0] != 'b' { // b's may arrive there too, resent after the primary died
			onSecondary = append(onSecondary, m)
		}
	}
	checkInOrder(t, onSecondary, append(append([]string{}, first...), third...))
}

// TestMQTT311LinkState: on MQTT 3.1.1 too the state topic says "online"
// (retained) when the bridge connects, the will says "offline" when the
// link is lost without a goodbye, and a clean shutdown says "offline"
// itself.
func TestMQTT311LinkState(t *testing.T) {
	m := mqtttest.StartMosquitto(t, mqtttest.FreePort(t), t.TempDir())
	watcher := subscribe311(t, m.Addr(), "watcher", "site/state", 1)
	link := startRelay(t, m.Addr())
	r := startBridge(t, link.addr, []Rule{{Filter: "#", QoS: 1}}, v311, func(c *Config) { c.StateTopic = "site/state" })
	states := func(want ...string) {
		t.Helper()
		watcher.wait(t, fmt.Sprint("states ", want), 10*time.Second, func(msgs []mqtttest.Received) bool {
			var got []string
			for _, m := range msgs {
				got = append(got, m.Payload)
			}
			return fmt.Sprint(got) == fmt.Sprint(want)
		})
	}
	states("online")
	link.cut()
	states("online", "offline", "online") // the will, then the reconnect's birth
	r.stop()
	states("online", "offline", "online", "offline")
	// Retained: a newcomer sees the last state.
	late := subscribe311(t, m.Addr(), "late", "site/state", 1)
	late.wait(t, "the retained state", 10*time.Second, func(msgs []mqtttest.Received) bool {
		return len(msgs) == 1 && msgs[0].Payload == "offline" && msgs[0].Retain
	})
}

// TestMQTT311IntoNATS: nats-server's MQTT gateway speaks MQTT 3.1.1 only;
// a 3.1.1 bridge forwards into it in order and brings a command down.
func TestMQTT311IntoNATS(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	startNATS(t, addr)
	c := subscribe311(t, addr, "collector", "edge/#", 1)
	q, lb := startLocal(t)
	cons, err := q.Consumer("up", queue.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("mqtt://" + addr)
	b, _ := runBridge(t, Config{
		Name: "up", Protocol: ProtocolMQTT311, URLs: []*url.URL{u}, ClientID: "ralph-nats", MaxInflight: 16,
		KeepAlive: 30 * time.Second, ReconnectMin: 20 * time.Millisecond, ReconnectMax: 100 * time.Millisecond,
		Forward:   []Rule{{Filter: "sensors/#", RemotePrefix: "edge/", QoS: 1}},
		Subscribe: []SubRule{{Filter: "site/cmd/#", StripPrefix: "site/", QoS: 1}}, Local: lb, Logger: quiet,
	}, cons)
	waitFor(t, "the bridge connected", func() bool { return b.Stats().Connected })
	want := seqPayloads("n", 500)
	for _, p := range want {
		if err := q.Append(context.Background(), &queue.Message{Topic: "sensors/t", Payload: []byte(p), QoS: 1, Origin: "dev", Arrived: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	checkInOrder(t, c.waitDistinct(t, "edge/", len(want), 30*time.Second), want)

	dev := mqtttest.Dial(t, lb.Addrs()[0], "device", 4)
	dev.Subscribe("cmd/#", 1)
	cloud := mqtttest.Dial(t, addr, "cloud", 4)
	cloud.Publish(1, 1, "site/cmd/led", []byte("on"))
	for pk := dev.Read(10 * time.Second); ; pk = dev.Read(10 * time.Second) {
		if pk.FixedHeader.Type == packets.Publish {
			if pk.TopicName != "cmd/led" || string(pk.Payload) != "on" {
				t.Fatalf("device got %q %q, want cmd/led on", pk.TopicName, pk.Payload)
			}
			break
		}
	}
}

// TestMQTT311ResumeFromCursorAfterRestart: a bridge stopped and started
// again (a new Bridge, as after a restart of Ralph) goes on from its
// cursor: nothing missing, nothing twice after a clean stop.
func TestMQTT311ResumeFromCursorAfterRestart(t *testing.T) {
	c := newCollector()
	addr, _ := startMochiHooked(t, "127.0.0.1:0", c)
	dir := t.TempDir()
	u, _ := url.Parse("mqtt://" + addr)
	run := func(payloads []string, total int) {
		q, err := queue.Open(queue.Options{Dir: dir, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		defer q.Close()
		cons, _ := q.Consumer("up", queue.ConsumerOptions{})
		b, stop := runBridge(t, Config{Name: "up", Protocol: ProtocolMQTT311, URLs: []*url.URL{u}, ClientID: "c311", MaxInflight: 8,
			Forward: []Rule{{Filter: "#", QoS: 2}}, Logger: quiet}, cons)
		for _, p := range payloads {
			q.Append(context.Background(), &queue.Message{Topic: "t", Payload: []byte(p), QoS: 1, Arrived: time.Now()})
		}
		c.waitDistinct(t, "t", total, 10*time.Second)
		waitFor(t, "backlog drained", func() bool { return b.Stats().Backlog == 0 })
		stop()
	}
	run(seqPayloads("a", 100), 100)
	run(seqPayloads("b", 100), 200)
	all := append(seqPayloads("a", 100), seqPayloads("b", 100)...)
	if dups := checkInOrder(t, c.all(), all); dups != 0 {
		t.Fatalf("%d duplicates after a clean restart", dups)
	}
}

// TestMQTT311StopWithMessagesInFlight: stopping a 3.1.1 bridge while its
// upstream holds a full window unacknowledged leaves no goroutine of its
// own, or of paho.mqtt.golang's, behind.
func TestMQTT311StopWithMessagesInFlight(t *testing.T) {
	const window = 8
	up := mqtttest.StartMochi(t, "127.0.0.1:0", nil)
	up.Stall.Store(true)
	q, err := queue.Open(queue.Options{Dir: t.TempDir(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	cons, _ := q.Consumer("up", queue.ConsumerOptions{})
	for _, p := range seqPayloads("s", 3*window) {
		q.Append(context.Background(), &queue.Message{Topic: "t", Payload: []byte(p), QoS: 1, Arrived: time.Now()})
	}
	u, _ := url.Parse("mqtt://" + up.Addr)
	baseline := runtime.NumGoroutine()
	b, stop := runBridge(t, Config{Name: "up", Protocol: ProtocolMQTT311, URLs: []*url.URL{u}, ClientID: "stop311", MaxInflight: window,
		KeepAlive: 30 * time.Second, ReconnectMin: 20 * time.Millisecond, ReconnectMax: 100 * time.Millisecond,
		Forward: []Rule{{Filter: "#", QoS: 1}}, StateTopic: "site/state", Logger: quiet}, cons)
	waitFor(t, "a full window in flight", func() bool { return b.Stats().Inflight == window })
	stop()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			var stacks bytes.Buffer
			pprof.Lookup("goroutine").WriteTo(&stacks, 1)
			t.Fatalf("%d goroutines left behind by a stopped bridge; every goroutine:\n%s", runtime.NumGoroutine()-baseline, stacks.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestMQTT311HandshakeClosed: an upstream that closes the connection
// after CONNECT without a CONNACK is reported with the cause, and
// retried.
func TestMQTT311HandshakeClosed(t *testing.T) {
	hook := new(closeOnConnect)
	addr := startMochiWith(t, func(*mqtt.Options) {}, hook)
	r := startBridge(t, addr, []Rule{{Filter: "#", QoS: 1}}, v311)
	waitFor(t, "two connection attempts", func() bool { return hook.connects.Load() >= 2 })
	// EOF, or a reset if the close crossed something in flight.
	if e := r.b.Stats().LastError; e != "MQTT 3.1.1 handshake: EOF" && !strings.HasSuffix(e, "connection reset by peer") {
		t.Fatalf("last error %q, want %q", e, "MQTT 3.1.1 handshake: EOF")
	}
}
