package bridge

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/internal/mqtttest"
	"github.com/ralph-gateway/ralph/queue"
)

// natsServerPath is where Debian's nats-server package installs NATS,
// whose MQTT gateway speaks MQTT 3.1.1 only.
const natsServerPath = "/usr/sbin/nats-server"

// startNATS runs nats-server with its MQTT listener on addr, a loopback
// host:port, until the test ends. It fails the test, with how to fix it,
// when nats-server is not installed.
func startNATS(t *testing.T, addr string) {
	t.Helper()
	if _, err := os.Stat(natsServerPath); err != nil {
		t.Fatalf("this test needs nats-server (an MQTT 3.1.1-only broker) at %s: apt-get install -y nats-server (%v)", natsServerPath, err)
	}
	dir := t.TempDir()
	// MQTT in NATS needs JetStream, and JetStream a server name.
	conf := fmt.Sprintf("server_name: ralph_test\nlisten: 127.0.0.1:-1\nhttp: 0\njetstream { store_dir: %q }\nmqtt { listen: %q }\n",
		filepath.Join(dir, "js"), addr)
	path := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(natsServerPath, "-c", path)
	out := new(strings.Builder)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server did not listen for MQTT on %s: %v\n%s", addr, err, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// refusalRig is a bridge with a real local broker (for its state topic)
// against upstream, its logs recorded.
type refusalRig struct {
	b        *Bridge
	logs     *jsonLog
	watcher  *mqtttest.Raw // subscribed to the local state topic
	stateErr string        // the error of the first state announced
}

func startRefused(t *testing.T, upstream string, reconnectMin, reconnectMax time.Duration) *refusalRig {
	t.Helper()
	q, lb := startLocal(t)
	cons, err := q.Consumer("up", queue.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("mqtt://" + upstream)
	r := &refusalRig{logs: new(jsonLog)}
	cfg := Config{
		Name: "up", URLs: []*url.URL{u}, ClientID: "ralph-v5", MaxInflight: 16,
		KeepAlive: 30 * time.Second, ReconnectMin: reconnectMin, ReconnectMax: reconnectMax,
		SessionExpiry: time.Hour, Forward: []Rule{{Filter: "#", QoS: 1}}, Local: lb, Logger: r.logs.logger(),
	}
	// The state topic as an operator sees it: retained, on the local broker.
	r.watcher = mqtttest.Dial(t, lb.Addrs()[0], "ops", 5)
	r.watcher.Subscribe(StateTopic("up"), 0)
	r.b, _ = runBridge(t, cfg, cons)
	r.stateErr = offlineError(t, r.watcher)
	return r
}

// offlineError reads the next link state, which must say offline, and
// returns its error.
func offlineError(t *testing.T, watcher *mqtttest.Raw) string {
	t.Helper()
	pk := watcher.Read(10 * time.Second)
	var st struct{ State, Error string }
	if err := json.Unmarshal(pk.Payload, &st); err != nil || pk.TopicName != StateTopic("up") {
		t.Fatalf("state topic: %q %q (%v)", pk.TopicName, pk.Payload, err)
	}
	if st.State != "offline" {
		t.Fatalf("state %+v, want offline", st)
	}
	return st.Error
}

// failures returns the bridge's "upstream connection failed" records at
// level.
func (r *refusalRig) failures(t *testing.T, level string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, rec := range r.logs.find(t, "upstream connection failed") {
		if rec["level"] == level {
			out = append(out, rec)
		}
	}
	return out
}

// checkOneWarning asserts exactly one warning of a failed connection,
// saying want, with its retry delay in [lo, hi].
func (r *refusalRig) checkOneWarning(t *testing.T, want string, lo, hi time.Duration) {
	t.Helper()
	warns := r.failures(t, "WARN")
	if len(warns) != 1 {
		t.Fatalf("%d warnings of a failed connection, want 1; log:\n%s", len(warns), r.logs.buf.String())
	}
	if warns[0]["err"] != want {
		t.Fatalf("warning says %q,\nwant %q", warns[0]["err"], want)
	}
	retry, _ := warns[0]["retry_in"].(float64) // nanoseconds, as slog's JSON handler writes durations
	if d := time.Duration(retry); d < lo || d > hi {
		t.Fatalf("retry_in %v, want within [%v, %v]; warning %v", d, lo, hi, warns[0])
	}
}

const (
	refusedV311 = `upstream refused MQTT 5 (CONNACK 0x01: unacceptable protocol version): this bridge speaks MQTT 5: set protocol = "3.1.1" on it for an MQTT 3.1.1 upstream, or enable MQTT 5 there`
	refusedV5   = `upstream refused MQTT 5 (CONNACK reason 0x84: unsupported protocol version): this bridge speaks MQTT 5: set protocol = "3.1.1" on it for an MQTT 3.1.1 upstream, or enable MQTT 5 there`
	closedEOF   = `upstream closed the connection after CONNECT without a CONNACK: it may not speak MQTT 5 (set protocol = "3.1.1" on the bridge for an MQTT 3.1.1 upstream)`
)

// TestUpstreamRefusesMQTT5: NATS's MQTT gateway, which speaks MQTT 3.1.1
// only, answers the bridge's MQTT 5 CONNECT with a 3.1.1 CONNACK, return
// code 0x01 (unacceptable protocol version), which paho cannot parse as
// an MQTT 5 CONNACK and reports as EOF. The bridge says what happened and
// what to set, in its log, its Stats and its state topic, and backs off
// to reconnect_max at once.
func TestUpstreamRefusesMQTT5(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	startNATS(t, addr)
	r := startRefused(t, addr, 10*time.Millisecond, time.Hour)
	if r.stateErr != refusedV311 {
		t.Fatalf("state topic error %q,\nwant %q", r.stateErr, refusedV311)
	}
	if e := r.b.Stats().LastError; e != refusedV311 {
		t.Fatalf("Stats().LastError %q,\nwant %q", e, refusedV311)
	}
	waitFor(t, "the warning", func() bool { return len(r.failures(t, "WARN")) > 0 })
	r.checkOneWarning(t, refusedV311, 30*time.Minute, time.Hour)
}

// TestUpstreamRefusesMQTT5AfterOutage: the link state is announced when
// it changes, not at every failed attempt of an outage; a refusal of MQTT
// 5 that follows other failures (the upstream was down, then came back
// as an MQTT 3.1.1-only broker) is announced all the same, since it says
// what to fix.
func TestUpstreamRefusesMQTT5AfterOutage(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	r := startRefused(t, addr, 10*time.Millisecond, 100*time.Millisecond) // retries stay quick while nats-server starts
	if !strings.Contains(r.stateErr, "connection refused") {
		t.Fatalf("state topic error %q, want the dial's connection refused", r.stateErr)
	}
	startNATS(t, addr)
	// A new subscription can see the retained state and the live
	// announcement both: skip repeats of the state already seen.
	e := r.stateErr
	for e == r.stateErr {
		e = offlineError(t, r.watcher)
	}
	if e != refusedV311 {
		t.Fatalf("state topic error %q after the upstream came back,\nwant %q", e, refusedV311)
	}
	if e := r.b.Stats().LastError; e != refusedV311 {
		t.Fatalf("Stats().LastError %q,\nwant %q", e, refusedV311)
	}
	waitFor(t, "the warning", func() bool {
		for _, rec := range r.failures(t, "WARN") {
			if rec["err"] == refusedV311 {
				return true
			}
		}
		return false
	})
}

// TestUpstreamRefusesMQTT5Reason0x84: an MQTT 5 broker that refuses
// version 5 (mochi with a minimum protocol version above 5) answers with
// an MQTT 5 CONNACK, reason 0x84 (Unsupported Protocol Version).
func TestUpstreamRefusesMQTT5Reason0x84(t *testing.T) {
	addr := startMochiWith(t, func(o *mqtt.Options) { o.Capabilities.MinimumProtocolVersion = 6 })
	r := startRefused(t, addr, 10*time.Millisecond, time.Hour)
	if r.stateErr != refusedV5 {
		t.Fatalf("state topic error %q,\nwant %q", r.stateErr, refusedV5)
	}
	if e := r.b.Stats().LastError; e != refusedV5 {
		t.Fatalf("Stats().LastError %q,\nwant %q", e, refusedV5)
	}
	waitFor(t, "the warning", func() bool { return len(r.failures(t, "WARN")) > 0 })
	r.checkOneWarning(t, refusedV5, 30*time.Minute, time.Hour)
}

// TestUpstreamClosesAfterConnect: a broker that reads the CONNECT and
// closes the connection without a CONNACK (mochi with an OnConnect hook
// that refuses every client, as some brokers treat a protocol level they
// do not know) is reported as such, not as EOF: warned once, not at every
// retry, with the normal backoff (it is no explicit refusal).
func TestUpstreamClosesAfterConnect(t *testing.T) {
	hook := new(closeOnConnect)
	addr := startMochiWith(t, func(*mqtt.Options) {}, hook)
	r := startRefused(t, addr, 10*time.Millisecond, 20*time.Millisecond)
	if r.stateErr != closedEOF {
		t.Fatalf("state topic error %q,\nwant %q", r.stateErr, closedEOF)
	}
	waitFor(t, "three connection attempts", func() bool { return hook.connects.Load() >= 3 })
	waitFor(t, "two repeats logged at debug", func() bool { return len(r.failures(t, "DEBUG")) >= 2 })
	if e := r.b.Stats().LastError; e != closedEOF {
		t.Fatalf("Stats().LastError %q,\nwant %q", e, closedEOF)
	}
	r.checkOneWarning(t, closedEOF, 5*time.Millisecond, 10*time.Millisecond)
	for _, rec := range r.failures(t, "DEBUG") {
		if rec["err"] != closedEOF {
			t.Fatalf("repeat logged as %v, want %q", rec, closedEOF)
		}
	}
}

// startMochiWith runs an in-process mochi broker that lets everyone in,
// with its options set by opt and the given hooks, on a free loopback
// port.
func startMochiWith(t *testing.T, opt func(*mqtt.Options), hooks ...mqtt.Hook) string {
	t.Helper()
	return serveMochi(t, opt, append([]mqtt.Hook{new(mqtttest.AllowAll)}, hooks...)...)
}

// serveMochi runs an in-process mochi broker with only the given hooks
// (so none lets a client in unless one of them does).
func serveMochi(t *testing.T, opt func(*mqtt.Options), hooks ...mqtt.Hook) string {
	t.Helper()
	o := &mqtt.Options{Capabilities: mqtt.NewDefaultServerCapabilities(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	opt(o)
	srv := mqtt.New(o)
	for _, h := range hooks {
		if err := srv.AddHook(h, nil); err != nil {
			t.Fatal(err)
		}
	}
	l := mqtttest.NewListener("t", "127.0.0.1:0")
	if err := srv.AddListener(l); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return l.Address()
}

// closeOnConnect makes mochi drop every client after reading its CONNECT,
// sending nothing.
type closeOnConnect struct {
	mqtt.HookBase
	connects atomic.Int32
}

func (*closeOnConnect) ID() string           { return "close-on-connect" }
func (*closeOnConnect) Provides(b byte) bool { return b == mqtt.OnConnect }
func (h *closeOnConnect) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	h.connects.Add(1)
	return errors.New("refused without a CONNACK")
}
