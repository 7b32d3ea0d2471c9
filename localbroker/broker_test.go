package localbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/internal/mqtttest"
	"github.com/ralph-gateway/ralph/internal/testlog"
	"github.com/ralph-gateway/ralph/queue"
)

type env struct {
	q    *queue.Queue
	b    *Broker
	addr string
	logs *testlog.Buffer
}

func start(t testing.TB, opts ...func(*Options)) *env {
	t.Helper()
	return startWithQueue(t, queue.Options{}, opts...)
}

func startWithQueue(t testing.TB, qo queue.Options, opts ...func(*Options)) *env {
	t.Helper()
	logs := new(testlog.Buffer)
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	qo.Dir, qo.Logger = t.TempDir(), log
	q, err := queue.Open(qo)
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Listen: []string{"127.0.0.1:0"}, Queue: q, Logger: log, Anonymous: ACL{Publish: []string{"#"}, Subscribe: []string{"#"}}}
	for _, f := range opts {
		f(&o)
	}
	b, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.Close()
		q.Close()
	})
	return &env{q: q, b: b, addr: b.Addrs()[0], logs: logs}
}

var versions = []struct {
	name string
	v    byte
}{{"mqtt311", 4}, {"mqtt5", 5}}

// TestAckAfterDurable publishes many QoS 1 and 2 messages without waiting,
// then checks every ack comes in publish order, each message is in the queue
// and each reaches a subscriber exactly once.
func TestAckAfterDurable(t *testing.T) {
	for _, ver := range versions {
		for _, qos := range []byte{1, 2} {
			t.Run(fmt.Sprintf("%s/qos%d", ver.name, qos), func(t *testing.T) {
				e := start(t)
				c, err := e.q.Consumer("check", queue.ConsumerOptions{})
				if err != nil {
					t.Fatal(err)
				}
				sub := mqtttest.Dial(t, e.addr, "sub", ver.v)
				sub.Subscribe("sensors/#", 2)
				pub := mqtttest.Dial(t, e.addr, "pub", ver.v)
				const n = 200
				for i := 1; i <= n; i++ {
					pub.Publish(uint16(i), qos, "sensors/t", []byte(fmt.Sprint(i)))
				}
				// Acks must come in publish order; with QoS 2 the PUBCOMPs
				// for our PUBRELs interleave with later PUBRECs.
				want := byte(packets.Puback)
				if qos == 2 {
					want = packets.Pubrec
				}
				next, nextComp := 1, 1
				for next <= n || (qos == 2 && nextComp <= n) {
					pk := pub.Read(5 * time.Second)
					if qos == 2 && pk.FixedHeader.Type == packets.Pubcomp {
						if pk.PacketID != uint16(nextComp) {
							t.Fatalf("pubcomp id %d, want %d", pk.PacketID, nextComp)
						}
						nextComp++
						continue
					}
					if pk.FixedHeader.Type != want || pk.PacketID != uint16(next) || pk.ReasonCode >= 0x80 {
						t.Fatalf("ack %d: type %d id %d reason %#x; want type %d id %d success", next, pk.FixedHeader.Type, pk.PacketID, pk.ReasonCode, want, next)
					}
					// The ack came, so the message must already be stored.
					if got := e.q.Stats().Appended; got < uint64(next) {
						t.Fatalf("ack %d arrived with only %d messages stored", next, got)
					}
					if qos == 2 {
						pub.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: uint16(next)})
					}
					next++
				}
				for i := 1; i <= n; i++ {
					pk := sub.Read(5 * time.Second)
					if pk.FixedHeader.Type != packets.Publish || string(pk.Payload) != fmt.Sprint(i) {
						t.Fatalf("delivery %d: type %d payload %q", i, pk.FixedHeader.Type, pk.Payload)
					}
					if pk.FixedHeader.Qos > 0 {
						sub.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
					}
				}
				if pk, err := sub.TryRead(200 * time.Millisecond); err == nil {
					t.Fatalf("unexpected extra delivery: type %d payload %q", pk.FixedHeader.Type, pk.Payload)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				c.Rewind()
				var stored []*queue.Message
				for len(stored) < n {
					msgs, err := c.Read(ctx, n)
					if err != nil {
						t.Fatal(err)
					}
					stored = append(stored, msgs...)
				}
				for i, m := range stored {
					if string(m.Payload) != fmt.Sprint(i+1) || m.Origin != "pub" || m.QoS != qos || m.Topic != "sensors/t" {
						t.Fatalf("stored %d: %+v", i, m)
					}
				}
			})
		}
	}
}

// TestStoreFailureRefuses closes the queue under a running broker, the way a
// failed disk would make every append fail, and checks the mochi trap is
// avoided: no successful ack, no delivery, a log line and a counter, and the
// broker still serves other clients.
func TestStoreFailureRefuses(t *testing.T) {
	for _, ver := range versions {
		for _, qos := range []byte{1, 2} {
			t.Run(fmt.Sprintf("%s/qos%d", ver.name, qos), func(t *testing.T) {
				e := start(t)
				sub := mqtttest.Dial(t, e.addr, "sub", ver.v)
				sub.Subscribe("#", 2)
				pub := mqtttest.Dial(t, e.addr, "pub", ver.v)
				e.q.Close()

				pub.Publish(7, qos, "sensors/t", []byte("lost?"))
				pk, err := pub.TryRead(5 * time.Second)
				switch {
				case ver.v == 5 && qos == 1:
					if err != nil || pk.FixedHeader.Type != packets.Puback || pk.ReasonCode != packets.ErrUnspecifiedError.Code {
						t.Fatalf("got type %d reason %#x err %v; want PUBACK with reason 0x80", pk.FixedHeader.Type, pk.ReasonCode, err)
					}
				case ver.v == 5:
					if err != nil || pk.FixedHeader.Type != packets.Disconnect || pk.ReasonCode != packets.ErrUnspecifiedError.Code {
						t.Fatalf("got type %d reason %#x err %v; want DISCONNECT 0x80", pk.FixedHeader.Type, pk.ReasonCode, err)
					}
				default:
					// MQTT 3.1.1 has no negative ack: the broker closes the
					// connection (mochi writes a DISCONNECT first).
					if err == nil && pk.FixedHeader.Type == packets.Disconnect {
						pk, err = pub.TryRead(5 * time.Second)
					}
					if err == nil {
						t.Fatalf("got packet type %d reason %#x; want the connection closed", pk.FixedHeader.Type, pk.ReasonCode)
					}
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() {
						t.Fatalf("connection still open after a failed store")
					}
				}
				if pk, err := sub.TryRead(300 * time.Millisecond); err == nil {
					t.Fatalf("subscriber received type %d %q: an unstored message was delivered", pk.FixedHeader.Type, pk.Payload)
				}
				s := e.b.Stats()
				if s.StoreFailed != 1 || s.Stored != 0 {
					t.Fatalf("stats %+v: want StoreFailed 1, Stored 0", s)
				}
				if !strings.Contains(e.logs.String(), "publish not stored") || !strings.Contains(e.logs.String(), "queue: closed") {
					t.Fatalf("log does not report the failure:\n%s", e.logs)
				}
				// The broker still serves: new clients connect and ping.
				other := mqtttest.Dial(t, e.addr, "other", ver.v)
				other.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
				if pk := other.Read(5 * time.Second); pk.FixedHeader.Type != packets.Pingresp {
					t.Fatalf("ping: got type %d", pk.FixedHeader.Type)
				}
			})
		}
	}
}

// TestPublisherGoneBeforeDurable checks a message stored after its
// publisher disconnected is still delivered (it was stored, so it will be
// forwarded too) and counted.
func TestPublisherGoneBeforeDurable(t *testing.T) {
	e := start(t)
	sub := mqtttest.Dial(t, e.addr, "sub", 5)
	sub.Subscribe("#", 1)
	pub := mqtttest.Dial(t, e.addr, "pub", 5)
	var burst []byte
	for i := 1; i <= 50; i++ {
		b, _ := pub.Encode(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: uint16(i), TopicName: "t", Payload: []byte(fmt.Sprint(i))})
		burst = append(burst, b...)
	}
	pub.WriteBytes(burst)
	pub.Close()
	// The broker may not read every publish of a closed connection; each
	// one it did store must still reach the subscriber.
	got := 0
	for {
		pk, err := sub.TryRead(time.Second)
		if err != nil {
			break // a second without deliveries: all released
		}
		got++
		sub.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
	}
	if s := e.q.Stats(); got == 0 || uint64(got) != s.Appended {
		t.Fatalf("%d delivered, %d stored: every stored message must be delivered", got, s.Appended)
	}
}

func TestQoS0StoredAndDelivered(t *testing.T) {
	e := start(t)
	c, _ := e.q.Consumer("check", queue.ConsumerOptions{})
	sub := mqtttest.Dial(t, e.addr, "sub", 4)
	sub.Subscribe("#", 0)
	pub := mqtttest.Dial(t, e.addr, "pub", 4)
	pub.Publish(0, 0, "a/b", []byte("x"))
	if pk := sub.Read(5 * time.Second); string(pk.Payload) != "x" {
		t.Fatalf("delivery %q", pk.Payload)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	msgs, err := c.Read(ctx, 10)
	if err != nil || len(msgs) != 1 || msgs[0].Topic != "a/b" || msgs[0].QoS != 0 {
		t.Fatalf("stored %v %v", msgs, err)
	}
}

func TestReceiveMaximumEnforced(t *testing.T) {
	e := start(t, func(o *Options) { o.ReceiveMaximum = 1 })
	pub := mqtttest.Dial(t, e.addr, "pub", 5)
	// 50 publishes in one write: the broker parses the second long before
	// the first can be stored, so the client exceeds its receive maximum.
	var burst []byte
	for i := 1; i <= 50; i++ {
		b, err := pub.Encode(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: uint16(i), TopicName: "t", Payload: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		burst = append(burst, b...)
	}
	pub.WriteBytes(burst)
	for {
		pk, err := pub.TryRead(5 * time.Second)
		if err != nil {
			t.Fatalf("connection ended (%v) without a DISCONNECT for receive maximum", err)
		}
		if pk.FixedHeader.Type == packets.Disconnect {
			if pk.ReasonCode != packets.ErrReceiveMaximum.Code {
				t.Fatalf("disconnect reason %#x, want %#x", pk.ReasonCode, packets.ErrReceiveMaximum.Code)
			}
			break
		}
	}
	if got := e.b.Stats().OverReceiveMx; got != 1 {
		t.Fatalf("OverReceiveMx = %d, want 1", got)
	}
}

// TestQueueFullRefusesWithQuotaExceeded: with on_full = reject, a full
// queue refuses publishes; an MQTT 5 QoS 1 publisher is told "quota
// exceeded" (0x97) and stays connected, and what was stored is untouched.
func TestQueueFullRefusesWithQuotaExceeded(t *testing.T) {
	e := startWithQueue(t, queue.Options{MaxBytes: 600, OnFull: queue.Reject})
	if _, err := e.q.Consumer("hold", queue.ConsumerOptions{}); err != nil {
		t.Fatal(err)
	}
	pub := mqtttest.Dial(t, e.addr, "pub", 5)
	var ok, refused int
	for i := 1; i <= 20; i++ {
		pub.Publish(uint16(i), 1, "sensors/t", []byte(fmt.Sprintf("%03d", i)))
		pk := pub.Read(5 * time.Second)
		switch {
		case pk.FixedHeader.Type == packets.Puback && pk.ReasonCode == 0:
			if refused > 0 {
				t.Fatalf("publish %d accepted after an earlier one was refused", i)
			}
			ok++
		case pk.FixedHeader.Type == packets.Puback && pk.ReasonCode == packets.ErrQuotaExceeded.Code:
			refused++
		default:
			t.Fatalf("publish %d: type %d reason %#x", i, pk.FixedHeader.Type, pk.ReasonCode)
		}
	}
	if ok == 0 || refused == 0 {
		t.Fatalf("%d accepted, %d refused: want some of each", ok, refused)
	}
	if s := e.q.Stats(); s.Appended != uint64(ok) || s.Rejected != uint64(refused) {
		t.Fatalf("queue stats %+v: want %d appended, %d rejected", s, ok, refused)
	}
}

// TestSmallReceiveMaximum: a client with Receive Maximum 2 is sent more
// than two QoS 1 messages. mochi 2.7.9 holds the rest back and, once it
// sends one, forgets it: the client's acks then free no quota and the
// remaining messages are stuck (its code for them could also deadlock).
// Ralph turns that flow control off and holds them back itself (flow.go,
// flow_test.go); every message must arrive, in order.
func TestSmallReceiveMaximum(t *testing.T) {
	e := start(t)
	c := mqtttest.New(t, e.addr, 5)
	c.Write(packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 5,
		Connect:         packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: "small"},
		Properties:      packets.Properties{ReceiveMaximum: 2},
	})
	if pk := c.Read(5 * time.Second); pk.FixedHeader.Type != packets.Connack || pk.ReasonCode != 0 {
		t.Fatalf("connack %+v", pk)
	}
	c.Subscribe("rm/#", 1)
	pub := mqtttest.Dial(t, e.addr, "pub", 5)
	var want []string
	for i := range 6 {
		want = append(want, fmt.Sprint(i))
	}
	if acked, err := pub.PublishAll("rm/x", 1, want, 6); err != nil || len(acked) != 6 {
		t.Fatalf("publish: %v, %v", acked, err)
	}
	var got []string
	for len(got) < len(want) {
		pk, err := c.TryRead(5 * time.Second)
		if err != nil {
			t.Fatalf("got %v, then: %v", got, err)
		}
		if pk.FixedHeader.Type != packets.Publish {
			continue
		}
		got = append(got, string(pk.Payload))
		c.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// TestWillDelayAndSubscriptionIdentifiers: MQTT 5 features mochi provides
// must survive Ralph's two-pass ingest: a will with a delay is held back
// while the client may return (and dropped if it does, sent if it does
// not), and deliveries carry the subscriber's subscription identifier.
func TestWillDelayAndSubscriptionIdentifiers(t *testing.T) {
	e := start(t)
	watcher := mqtttest.Dial(t, e.addr, "watcher", 5)
	watcher.Write(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters:    packets.Subscriptions{{Filter: "will/#", Qos: 1, Identifier: 7}},
		Properties: packets.Properties{SubscriptionIdentifier: []int{7}},
	})
	if pk := watcher.Read(5 * time.Second); pk.FixedHeader.Type != packets.Suback {
		t.Fatalf("got type %d, want SUBACK", pk.FixedHeader.Type)
	}
	connectWithWill := func(id string) *mqtttest.Raw {
		c := mqtttest.New(t, e.addr, 5)
		c.Write(packets.Packet{
			FixedHeader:     packets.FixedHeader{Type: packets.Connect},
			ProtocolVersion: 5,
			Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Keepalive: 60, ClientIdentifier: id,
				WillFlag: true, WillTopic: "will/" + id, WillPayload: []byte("gone"), WillQos: 1,
				WillProperties: packets.Properties{WillDelayInterval: 1}},
			Properties: packets.Properties{SessionExpiryInterval: 60, SessionExpiryIntervalFlag: true},
		})
		if pk := c.Read(5 * time.Second); pk.FixedHeader.Type != packets.Connack || pk.ReasonCode != 0 {
			t.Fatalf("connack %+v", pk)
		}
		return c
	}
	// Back within the delay: no will.
	c := connectWithWill("back")
	c.Close()
	connectWithWill("back")
	// Gone for good: the will comes, after its delay.
	g := connectWithWill("gone")
	g.Close()
	pk := watcher.Read(10 * time.Second)
	if pk.TopicName != "will/gone" || string(pk.Payload) != "gone" {
		t.Fatalf("watcher got %q %q, want the will of the client that stayed away", pk.TopicName, pk.Payload)
	}
	if ids := pk.Properties.SubscriptionIdentifier; len(ids) != 1 || ids[0] != 7 {
		t.Fatalf("delivery carries subscription identifiers %v, want [7]", ids)
	}
	watcher.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
	// The returning client's will was due a second after it left, well
	// before the other one's arrived; make sure it never comes.
	if pk, err := watcher.TryRead(1500 * time.Millisecond); err == nil {
		t.Fatalf("watcher got %q %q: the will of a client that came back", pk.TopicName, pk.Payload)
	}
}
