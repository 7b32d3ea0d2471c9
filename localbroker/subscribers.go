package localbroker

import (
	"slices"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// maxCachedTopics bounds the subscriber cache: past it, it starts again.
const maxCachedTopics = 4096

// subscriberCache remembers who subscribes to a topic. mochi's lookup
// walks its topic tree and builds fresh maps for every message: it was a
// fifth of the CPU of a QoS 0 load. The subscriptions change seldom, and
// every change mochi makes comes with a hook: subscribing, unsubscribing,
// and the end or takeover of a session (UnsubscribeClient calls
// OnUnsubscribed). Each change starts a new generation; a cached answer
// from an older one is looked up again.
type subscriberCache struct {
	srv *mqtt.Server
	gen atomic.Uint64

	mu      sync.RWMutex
	byTopic map[string]*subscribers
}

// subscribers are the subscriptions matching a topic, one per client
// (mochi merges a client's overlapping ones), by client id.
type subscribers struct {
	gen  uint64
	subs []subscription
	// mochi: shared or inline subscriptions match, which mochi delivers.
	mochi bool
}

type subscription struct {
	client string
	sub    packets.Subscription
	ids    []int // its subscription identifiers, in order [MQTT-3.3.4-3]
}

func newSubscriberCache(srv *mqtt.Server) *subscriberCache {
	return &subscriberCache{srv: srv, byTopic: make(map[string]*subscribers)}
}

func (c *subscriberCache) lookup(topic string) *subscribers {
	gen := c.gen.Load()
	c.mu.RLock()
	s := c.byTopic[topic]
	c.mu.RUnlock()
	if s != nil && s.gen == gen {
		return s
	}
	found := c.srv.Topics.Subscribers(topic)
	s = &subscribers{gen: gen, mochi: len(found.Shared) > 0 || len(found.InlineSubscriptions) > 0}
	for id, sub := range found.Subscriptions {
		s.subs = append(s.subs, subscription{id, sub, identifiers(sub)})
	}
	c.mu.Lock()
	if len(c.byTopic) >= maxCachedTopics {
		clear(c.byTopic)
	}
	c.byTopic[topic] = s
	c.mu.Unlock()
	return s
}

// identifiers returns sub's subscription identifiers, sorted as mochi
// sends them.
func identifiers(sub packets.Subscription) []int {
	var ids []int
	for _, id := range sub.Identifiers {
		if id > 0 {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// changed starts a new generation: subscriptions have changed.
func (c *subscriberCache) changed() { c.gen.Add(1) }

// subscriptionsHook tells the cache of every change.
type subscriptionsHook struct {
	mqtt.HookBase
	c *subscriberCache
}

func (h *subscriptionsHook) ID() string { return "ralph-subscriptions" }

func (h *subscriptionsHook) Provides(b byte) bool {
	return b == mqtt.OnSubscribed || b == mqtt.OnUnsubscribed || b == mqtt.OnStarted
}

// OnStarted follows mochi's loading of the stored subscriptions.
func (h *subscriptionsHook) OnStarted() { h.c.changed() }

func (h *subscriptionsHook) OnSubscribed(*mqtt.Client, packets.Packet, []byte) { h.c.changed() }

func (h *subscriptionsHook) OnUnsubscribed(*mqtt.Client, packets.Packet) { h.c.changed() }
