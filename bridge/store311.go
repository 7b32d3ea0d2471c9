package bridge

// This file holds store311, the MQTT 3.1.1 session's memory of the
// messages in flight: paho.mqtt.golang's Store, kept by the bridge across
// connections. paho.mqtt.golang puts every QoS 1 and 2 PUBLISH in it
// before writing it and deletes it when the PUBACK or PUBCOMP arrives; a
// new client with CleanSession false resends what it holds, in the order
// it was put, before anything newer. So the store is where the bridge
// learns of each acknowledgement, and the messages in flight outlive a
// lost connection (with the same packet ids, which a QoS 2 flow needs),
// as paho.golang's session state does for MQTT 5.
import (
	"cmp"
	"slices"
	"strings"
	"sync"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// store311 holds the outbound packets only: the inbound side needs no
// memory here, since the upstream resends a downlink message it did not
// see acknowledged (the bridge acknowledges only once stored). Each
// connection's client gets a storeView of it.
type store311 struct {
	b *Bridge

	mu   sync.Mutex
	msgs map[string]stored311
	next uint64 // order of the next put
}

type stored311 struct {
	order   uint64
	pk      packets.ControlPacket
	t       ticket
	tracked bool // a forwarded message: its deletion is its acknowledgement
}

func newStore311(b *Bridge) *store311 {
	return &store311{b: b, msgs: make(map[string]stored311)}
}

func (s *store311) put(key string, pk packets.ControlPacket, t ticket, tracked bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs[key] = stored311{order: s.next, pk: pk, t: t, tracked: tracked}
	s.next++
}

// drop forgets everything, without completing anything.
func (s *store311) drop() {
	s.mu.Lock()
	clear(s.msgs)
	s.mu.Unlock()
}

// storeView is the store as one connection's client sees it: the shared
// messages, and the hand-over of the publish that connection's Publish is
// making. A Publish given up on (withdraw: the connection ended while it
// was stuck) cannot take another connection's ticket.
type storeView struct {
	*store311

	mu      sync.Mutex
	state   int // one of the below
	pending ticket
}

const (
	viewIdle      = iota
	viewPending   // handOver: the next QoS 1 or 2 put is pending's
	viewAdded     // pending's put happened
	viewWithdrawn // given up on before its put: do not keep it
)

var _ mqtt.Store = (*storeView)(nil)

func (s *store311) view() *storeView { return &storeView{store311: s} }

// handOver says that the next QoS 1 or 2 publish is the message of t.
func (v *storeView) handOver(t ticket) {
	v.mu.Lock()
	v.state, v.pending = viewPending, t
	v.mu.Unlock()
}

// handedOver reports, once Publish has returned, whether the publish
// went into the store (and so will be resent until acknowledged).
func (v *storeView) handedOver() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	added := v.state == viewAdded
	v.state = viewIdle
	return added
}

// withdraw gives up on the publish being handed over, while its Publish
// may still be running: true if it is in the store already (it will be
// resent), false if it will not be kept.
func (v *storeView) withdraw() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.state == viewAdded {
		v.state = viewIdle
		return true
	}
	v.state = viewWithdrawn
	return false
}

// Open and Close are paho.mqtt.golang's, at each connection: the store
// outlives them (Reset and drop empty it).
func (v *storeView) Open()  {}
func (v *storeView) Close() {}

func (v *storeView) Put(key string, pk packets.ControlPacket) {
	if !strings.HasPrefix(key, "o.") {
		return
	}
	var t ticket
	tracked := false
	if pub, ok := pk.(*packets.PublishPacket); ok && pub.Qos > 0 {
		v.mu.Lock()
		switch v.state {
		case viewPending:
			t, tracked, v.state = v.pending, true, viewAdded
		case viewWithdrawn:
			v.state = viewIdle
			v.mu.Unlock()
			return // its connection is gone; the bridge sends it again
		}
		v.mu.Unlock()
	}
	v.put(key, pk, t, tracked)
}

func (v *storeView) Get(key string) packets.ControlPacket {
	v.store311.mu.Lock()
	defer v.store311.mu.Unlock()
	return v.msgs[key].pk
}

// All returns the keys in the order they were put: the order a new
// connection resends them in.
func (v *storeView) All() []string {
	s := v.store311
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]string, 0, len(s.msgs))
	for k := range s.msgs {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return cmp.Compare(s.msgs[a].order, s.msgs[b].order) })
	return keys
}

// Del is paho.mqtt.golang's when the upstream acknowledges a packet
// (PUBACK, PUBCOMP; SUBACK too, which is never stored): for a forwarded
// message, its completion.
func (v *storeView) Del(key string) {
	s := v.store311
	s.mu.Lock()
	st, ok := s.msgs[key]
	delete(s.msgs, key)
	s.mu.Unlock()
	if !ok || !st.tracked {
		return
	}
	select {
	case <-st.t.abandon: // its window was given up: it is read again
	default:
		s.b.answered(st.t, 0) // 3.1.1 acknowledgements carry no reason code
	}
}

// Reset is paho.mqtt.golang's at a clean session; the bridge then reads
// again what was in flight (connected.resumed is false).
func (v *storeView) Reset() { v.drop() }
