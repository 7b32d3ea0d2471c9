package localbroker

import (
	"fmt"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/internal/mqtttest"
)

// stored counts what the database holds of sessions: client records,
// subscriptions and messages in flight, once the in-flight records handed
// over are written.
func (e *env) stored(t *testing.T) (clients, subs, inflight int) {
	t.Helper()
	e.b.sessions.inflight.flush()
	count := func(name string) int {
		n := 0
		if err := e.q.KV(name).Scan(func(string, []byte) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	return count("clients"), count("subscriptions"), count("inflight")
}

// A session that ends with its connection is never written; one that
// outlives it is, with each QoS 1 delivery in flight; and a persistent
// session taken over by an ephemeral one leaves nothing behind.
func TestEphemeralSessionsAreNotStored(t *testing.T) {
	for _, tt := range []struct {
		name    string
		version byte
		clean   bool
		want    [3]int // clients, subscriptions, in flight, with 3 deliveries unacknowledged
	}{
		{"3.1.1 clean session", 4, true, [3]int{0, 0, 0}},
		{"3.1.1 persistent session", 4, false, [3]int{1, 1, 3}},
		{"5 session expiry 0", 5, true, [3]int{0, 0, 0}},
		{"5 session expiry 1h", 5, false, [3]int{1, 1, 3}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t)
			sub := mqtttest.DialSession(t, e.addr, "sub", tt.version, tt.clean)
			sub.Subscribe("t/#", 1)
			pub := mqtttest.Dial(t, e.addr, "pub", 5)
			for i := range 3 {
				pub.Publish(uint16(i+1), 1, "t/x", []byte(fmt.Sprint(i)))
				if pk := pub.Read(5 * time.Second); pk.FixedHeader.Type != packets.Puback {
					t.Fatalf("publish %d: got packet type %d", i, pk.FixedHeader.Type)
				}
			}
			for i := range 3 { // delivered, never acknowledged
				if pk := sub.Read(5 * time.Second); pk.FixedHeader.Type != packets.Publish || string(pk.Payload) != fmt.Sprint(i) {
					t.Fatalf("delivery %d: type %d payload %q", i, pk.FixedHeader.Type, pk.Payload)
				}
			}
			if c, s, f := e.stored(t); [3]int{c, s, f} != tt.want {
				t.Fatalf("stored clients, subscriptions, in flight = %d, %d, %d; want %v", c, s, f, tt.want)
			}
			if tt.clean {
				return
			}
			// The same client id back with a session that ends with its
			// connection: what was stored must not come back after a restart.
			sub.Close()
			for deadline := time.Now().Add(5 * time.Second); e.b.ClientCount() != 1; time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the subscriber's connection did not end")
				}
			}
			// mochi establishes the session (and Ralph forgets the stored
			// one) after it has sent the CONNACK.
			mqtttest.DialSession(t, e.addr, "sub", tt.version, true)
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				c, s, f := e.stored(t)
				if c+s+f == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("after an ephemeral takeover, stored clients, subscriptions, in flight = %d, %d, %d; want none", c, s, f)
				}
			}
		})
	}
}

// Deliveries a subscriber is too far behind to take are dropped, and
// every one is counted: what it reads and what was dropped add up to
// what was published.
func TestDroppedDeliveriesCounted(t *testing.T) {
	e := start(t)
	sub := mqtttest.Dial(t, e.addr, "slow", 4)
	sub.Subscribe("t/#", 0)
	pub := mqtttest.Dial(t, e.addr, "pub", 4)
	const n = 30000
	payload := make([]byte, 1024)
	for range n { // QoS 0, while the subscriber reads nothing
		pub.Publish(0, 0, "t/x", payload)
	}
	got := 0
	dropped := func() [3]uint64 { return e.b.Stats().DeliveriesDropped }
	for deadline := time.Now().Add(30 * time.Second); uint64(got)+dropped()[0] < n; {
		if time.Now().After(deadline) {
			t.Fatalf("received %d, dropped %v: %d unaccounted for", got, dropped(), n-uint64(got)-dropped()[0])
		}
		if _, err := sub.TryRead(100 * time.Millisecond); err == nil {
			got++
		}
	}
	if pk, err := sub.TryRead(200 * time.Millisecond); err == nil {
		t.Fatalf("received %d and dropped %v of %d, and then %q", got, dropped(), n, pk.TopicName)
	}
	if d := dropped(); d[0] == 0 || d[1]+d[2] != 0 {
		t.Fatalf("dropped %v: want some at QoS 0 only", d)
	}
	t.Logf("received %d, dropped %d", got, dropped()[0])
}
