package bridge

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/internal/mqtttest"
	"github.com/ralph-gateway/ralph/queue"
)

// TestLimits: with AWS IoT Core's limits (128 KB payloads, 8 topic
// levels, 256-byte topics, no QoS 2), a message over one is not sent and
// not retried: it goes to the local dead-letter topic with its topic and
// the reason, counted, and the messages behind it are forwarded, a QoS 2
// rule's at QoS 1. A Basic Ingest topic ($aws/rules/<rule>/...) does not
// count its prefix. Either protocol.
func TestLimits(t *testing.T) {
	for _, proto := range protocols {
		t.Run("MQTT "+proto, func(t *testing.T) {
			c := newCollector()
			addr, _ := startMochiHooked(t, "127.0.0.1:0", newCollector(), &publishRecorder{c: c})
			q, lb := startLocal(t)
			cons, err := q.Consumer("up", queue.ConsumerOptions{})
			if err != nil {
				t.Fatal(err)
			}
			local := mqtttest.Dial(t, lb.Addrs()[0], "ops", 5)
			local.Subscribe(DeadLetterTopic("up"), 1)
			logs := new(jsonLog)
			b, _ := runBridge(t, Config{
				Name: "up", Protocol: proto, URLs: []*url.URL{mustURL(t, "mqtt://"+addr)}, ClientID: "thing-1", MaxInflight: 8,
				KeepAlive: 30 * time.Second, ReconnectMin: 20 * time.Millisecond, ReconnectMax: 100 * time.Millisecond,
				SessionExpiry: time.Hour, Local: lb, Logger: logs.logger(),
				Forward: []Rule{
					{Filter: "ingest/#", StripPrefix: "ingest/", RemotePrefix: "$aws/rules/store/", QoS: 2},
					{Filter: "#", RemotePrefix: "things/thing-1/", QoS: 2},
				},
				MaxQoS: 1,
				Limits: Limits{MaxPayload: 128000, MaxTopicLevels: 8, MaxTopicLength: 256},
			}, cons)

			seven := "a/b/c/d/e/f" // 6 levels: 8 with the prefix
			long := strings.Repeat("x", 250)
			msgs := []struct {
				topic, payload, reason string
			}{
				{"s/t", "first", ""},
				{"s/t", "big-" + strings.Repeat("x", 200000-4), "payload of 200000 bytes is over max_payload (128KB)"},
				{"s/t", "at-limit-" + strings.Repeat("x", 128000-9), ""},
				{seven, "eight levels", ""},
				{seven + "/g", "nine levels", "topic of 9 levels is over max_topic_levels (8)"},
				{"ingest/" + seven + "/g/h", "basic ingest, 8 levels after the prefix", ""},
				{long, "long topic", "topic of 265 bytes is over max_topic_length (256)"},
				{"s/t", "last", ""},
			}
			var want []string
			for _, m := range msgs {
				qm := &queue.Message{Topic: m.topic, Payload: []byte(m.payload), QoS: 2, Origin: "dev", Arrived: time.Now()}
				if err := q.Append(context.Background(), qm); err != nil {
					t.Fatal(err)
				}
				if m.reason == "" {
					want = append(want, m.payload)
				}
			}
			got := c.waitDistinct(t, "", len(want), 20*time.Second)
			checkInOrder(t, got, want)
			for _, m := range got {
				if m.QoS != 1 {
					t.Fatalf("%.20q arrived at QoS %d, want 1 (max_qos)", m.Payload, m.QoS)
				}
				if m.Payload == "basic ingest, 8 levels after the prefix" && m.Topic != "$aws/rules/store/"+seven+"/g/h" {
					t.Fatalf("basic ingest message on %q", m.Topic)
				}
			}

			for _, m := range msgs {
				if m.reason == "" {
					continue
				}
				pk := local.Read(10 * time.Second)
				if pk.FixedHeader.Type != packets.Publish {
					t.Fatalf("local subscriber got packet type %d, want a PUBLISH", pk.FixedHeader.Type)
				}
				local.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
				props := map[string]string{}
				for _, p := range pk.Properties.User {
					props[p.Key] = p.Val
				}
				if pk.TopicName != DeadLetterTopic("up") || string(pk.Payload) != m.payload || props["topic"] != m.topic || props["reason"] != m.reason {
					t.Fatalf("dead letter on %q, %d bytes, properties %v;\nwant %q, %d bytes, topic %q, reason %q",
						pk.TopicName, len(pk.Payload), props, DeadLetterTopic("up"), len(m.payload), m.topic, m.reason)
				}
			}
			waitFor(t, "the queue drained", func() bool { return b.Stats().Backlog == 0 })
			if s := b.Stats(); s.DeadLetter != 3 || s.Forwarded != uint64(len(want)) {
				t.Fatalf("stats %+v: want 3 dead-lettered, %d forwarded", s, len(want))
			}
			warns := logs.find(t, "message dead-lettered")
			if len(warns) != 3 {
				t.Fatalf("%d dead-letter warnings, want 3:\n%s", len(warns), logs.buf.String())
			}
			for i, w := range warns {
				if r := w["reason"]; r != msgs[[]int{1, 4, 6}[i]].reason {
					t.Fatalf("warning %d: reason %q", i, r)
				}
			}
		})
	}
}

// publishRecorder records each PUBLISH a client sends, as it came: its
// QoS, and $ topics too, which no subscription to # sees.
type publishRecorder struct {
	mqtt.HookBase
	c *collector
}

func (*publishRecorder) ID() string           { return "recorder" }
func (*publishRecorder) Provides(b byte) bool { return b == mqtt.OnPublish }
func (h *publishRecorder) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if !cl.Net.Inline {
		h.c.add(mqtttest.Received{Topic: pk.TopicName, Payload: string(pk.Payload), QoS: pk.FixedHeader.Qos})
	}
	return pk, nil
}

// TestFormatBytes: a limit is written as a configuration writes it.
func TestFormatBytes(t *testing.T) {
	for n, want := range map[int]string{128000: "128KB", 131072: "128KiB", 1 << 20: "1MiB", 2000000: "2MB", 1000: "1KB", 1500: "1500B"} {
		if got := formatBytes(n); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
