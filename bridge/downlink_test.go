package bridge

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/internal/mqtttest"
	"github.com/ralph-gateway/ralph/internal/testlog"
	"github.com/ralph-gateway/ralph/localbroker"
	"github.com/ralph-gateway/ralph/queue"
)

// startLocal runs a real local broker on a real queue, as the gateway
// gives a bridge for its downlink.
func startLocal(t *testing.T) (*queue.Queue, *localbroker.Broker) {
	t.Helper()
	q, err := queue.Open(queue.Options{Dir: t.TempDir(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	lb, err := localbroker.New(localbroker.Options{Listen: []string{"127.0.0.1:0"}, Queue: q, Logger: quiet,
		Anonymous: localbroker.ACL{Publish: []string{"#"}, Subscribe: []string{"#", "$SYS/#"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := lb.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		lb.Close()
		q.Close()
	})
	return q, lb
}

// runBridge runs a bridge until the returned stop is called (or the test
// ends).
func runBridge(t *testing.T, cfg Config, cons *queue.Consumer) (*Bridge, func()) {
	t.Helper()
	b := New(cfg, []Lane{{Consumer: cons}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); b.Run(ctx) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return b, stop
}

// jsonLog is a real JSON logger at debug level into a buffer; lines
// returns its records.
type jsonLog struct{ buf testlog.Buffer }

func (l *jsonLog) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(&l.buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (l *jsonLog) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, rec)
	}
	return out
}

// find returns the records with message msg.
func (l *jsonLog) find(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, rec := range l.lines(t) {
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// TestDownlinkInvalidLocalTopic: a downlink message whose rewritten local
// topic is not a valid topic name (here empty: the upstream topic is
// exactly the rule's strip_prefix) is not dropped in silence: it is
// counted, logged at warn with the upstream topic, the rule and why, and
// put on the bridge's local dead-letter topic. A message that truly
// matches no subscribe rule (a subscription the upstream session kept
// from an earlier configuration) is still only logged at debug and
// dropped.
func TestDownlinkInvalidLocalTopic(t *testing.T) {
	up := mqtttest.StartMochi(t, "127.0.0.1:0", nil)
	q, lb := startLocal(t)
	cons, err := q.Consumer("up", queue.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("mqtt://" + up.Addr)
	logs := new(jsonLog)
	cfg := Config{
		Name: "up", URLs: []*url.URL{u}, ClientID: "ralph-dl", MaxInflight: 16,
		KeepAlive: 30 * time.Second, ReconnectMin: 20 * time.Millisecond, ReconnectMax: 100 * time.Millisecond,
		SessionExpiry: time.Hour, Local: lb, Logger: logs.logger(),
	}
	// An earlier configuration subscribed the upstream session to old/#;
	// the session (and that subscription) outlives it.
	old := cfg
	old.Subscribe = []SubRule{{Filter: "old/#", QoS: 1}}
	b, stop := runBridge(t, old, cons)
	waitFor(t, "the first bridge connected", func() bool { return b.Stats().Connected })
	stop()

	cfg.Subscribe = []SubRule{{Filter: "site/cmd/#", StripPrefix: "site/cmd/", QoS: 1}}
	b, _ = runBridge(t, cfg, cons)
	waitFor(t, "the bridge connected", func() bool { return b.Stats().Connected })

	local := mqtttest.Dial(t, lb.Addrs()[0], "ops", 5)
	local.Subscribe(DeadLetterTopic("up"), 1)
	local.Subscribe("#", 1)

	cloud := mqtttest.Dial(t, up.Addr, "cloud", 5)
	for i, m := range []struct{ topic, payload string }{
		{"site/cmd/", "bad"},   // local topic "": invalid
		{"old/x", "stale"},     // matches no rule of this configuration
		{"site/cmd/led", "on"}, // local topic "led"
	} {
		cloud.Publish(uint16(i+1), 1, m.topic, []byte(m.payload))
		if pk := cloud.Read(5 * time.Second); pk.FixedHeader.Type != packets.Puback || pk.ReasonCode >= 0x80 {
			t.Fatalf("upstream publish %s: packet type %d reason %#x", m.topic, pk.FixedHeader.Type, pk.ReasonCode)
		}
	}

	// Locally, in order: the dead letter, then the valid message; nothing
	// for old/x.
	read := func() packets.Packet {
		t.Helper()
		pk := local.Read(10 * time.Second)
		if pk.FixedHeader.Type != packets.Publish {
			t.Fatalf("local subscriber got packet type %d, want a PUBLISH", pk.FixedHeader.Type)
		}
		if pk.FixedHeader.Qos > 0 {
			local.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
		}
		return pk
	}
	dl := read()
	props := map[string]string{}
	for _, p := range dl.Properties.User {
		props[p.Key] = p.Val
	}
	wantReason := "local topic is invalid: topic is empty"
	if dl.TopicName != DeadLetterTopic("up") || string(dl.Payload) != "bad" ||
		props["topic"] != "site/cmd/" || props["rule"] != "site/cmd/#" || props["reason"] != wantReason {
		t.Fatalf("dead letter on %q payload %q properties %v; want %q, \"bad\", topic site/cmd/, rule site/cmd/#, reason %q",
			dl.TopicName, dl.Payload, props, DeadLetterTopic("up"), wantReason)
	}
	if pk := read(); pk.TopicName != "led" || string(pk.Payload) != "on" {
		t.Fatalf("local subscriber got %q %q, want led on (and nothing for old/x)", pk.TopicName, pk.Payload)
	}

	waitFor(t, "the valid message counted", func() bool { return b.Stats().Downlinked == 1 })
	s := b.Stats()
	if s.DownlinkDeadLetter != 1 || s.Downlinked != 1 || s.DeadLetter != 0 {
		t.Fatalf("stats %+v: want 1 downlink dead-lettered, 1 downlinked, 0 (uplink) dead-lettered", s)
	}

	warns := logs.find(t, "downlink message dead-lettered")
	if len(warns) != 1 {
		t.Fatalf("%d warnings of a dead-lettered downlink message, want 1; log:\n%s", len(warns), logs.buf.String())
	}
	w := warns[0]
	if w["level"] != "WARN" || w["topic"] != "site/cmd/" || w["rule"] != "site/cmd/#" || w["local_topic"] != "" ||
		w["reason"] != wantReason || w["dead_letter_topic"] != DeadLetterTopic("up") {
		t.Fatalf("warning %v: want level WARN, topic site/cmd/, rule site/cmd/#, local_topic \"\", reason %q, dead_letter_topic %s",
			w, wantReason, DeadLetterTopic("up"))
	}
	unmatched := logs.find(t, "downlink message matches no subscribe rule")
	if len(unmatched) != 1 || unmatched[0]["topic"] != "old/x" || unmatched[0]["level"] != "DEBUG" {
		t.Fatalf("no-rule log records %v: want one, at DEBUG, for old/x only", unmatched)
	}
}
