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

// store311 implements mqtt.Store for outbound packets only: the inbound
// side needs no memory here, since the upstream resends a downlink message
// it did not see acknowledged (the bridge acknowledges only once stored).
type store311 struct {
	b *Bridge

	mu   sync.Mutex
	msgs map[string]stored311
	next uint64 // order of the next Put
	// The ticket of the publish being handed over (handOver), taken by
	// the Put that paho.mqtt.golang's Publish makes on the same goroutine.
	pending    ticket
	hasPending bool
	added      bool
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

var _ mqtt.Store = (*store311)(nil)

// handOver says that the next QoS 1 or 2 publish is the message of t.
func (s *store311) handOver(t ticket) {
	s.mu.Lock()
	s.pending, s.hasPending, s.added = t, true, false
	s.mu.Unlock()
}

// handedOver reports whether the publish since handOver went into the
// store (and so will be resent until acknowledged).
func (s *store311) handedOver() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hasPending = false
	return s.added
}

// Open and Close are paho.mqtt.golang's, at each connection: the store
// outlives them (Reset and drop empty it).
func (s *store311) Open()  {}
func (s *store311) Close() {}

func (s *store311) Put(key string, pk packets.ControlPacket) {
	if !strings.HasPrefix(key, "o.") {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := stored311{order: s.next, pk: pk}
	s.next++
	if pub, ok := pk.(*packets.PublishPacket); ok && pub.Qos > 0 && s.hasPending {
		st.t, st.tracked = s.pending, true
		s.hasPending, s.added = false, true
	}
	s.msgs[key] = st
}

func (s *store311) Get(key string) packets.ControlPacket {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.msgs[key].pk
}

// All returns the keys in the order they were put: the order a new
// connection resends them in.
func (s *store311) All() []string {
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
func (s *store311) Del(key string) {
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
func (s *store311) Reset() { s.drop() }

// drop forgets everything, without completing anything.
func (s *store311) drop() {
	s.mu.Lock()
	clear(s.msgs)
	s.mu.Unlock()
}
