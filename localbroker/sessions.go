package localbroker

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/queue"
)

// sessionHook keeps persistent sessions — the client record, its
// subscriptions and its in-flight QoS 1/2 messages — in the queue's
// database, so that a device with a persistent session finds it again
// after Ralph restarts or crashes. It follows mochi's own storage hooks,
// on Ralph's single database. A session that ends with its connection
// (ephemeral) is never written: a restart ends it anyway, and a QoS 1
// delivery to a clean-session subscriber would otherwise cost a write
// and a deletion.
type sessionHook struct {
	mqtt.HookBase
	clients, subs *queue.KV
	inflight      *inflightStore // written behind (inflight.go)
	log           *slog.Logger

	mu    sync.Mutex
	kept  map[string]bool      // client ids with a session in the database
	wills map[string]mqtt.Will // and their wills, as last stored

	flow *flowControl // holds back what a client's Receive Maximum does not let out (flow.go)
}

func newSessionHook(q *queue.Queue, log *slog.Logger) *sessionHook {
	return &sessionHook{clients: q.KV("clients"), subs: q.KV("subscriptions"), inflight: newInflightStore(q.KV("inflight"), log), log: log,
		kept: make(map[string]bool), wills: make(map[string]mqtt.Will)}
}

func (h *sessionHook) ID() string { return "ralph-sessions" }

func (h *sessionHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnSessionEstablished, mqtt.OnWillSent, mqtt.OnDisconnect, mqtt.OnSubscribed, mqtt.OnUnsubscribed,
		mqtt.OnQosPublish, mqtt.OnQosComplete, mqtt.OnQosDropped, mqtt.OnClientExpired,
		mqtt.StoredClients, mqtt.StoredSubscriptions, mqtt.StoredInflightMessages:
		return true
	}
	return false
}

func (h *sessionHook) set(kv *queue.KV, key string, v storage.Serializable) {
	if b, ok := h.marshal(key, v); ok {
		if err := kv.Set(key, b); err != nil {
			h.log.Error("storing session state", "key", key, "err", err)
		}
	}
}

// marshal encodes the record v of key, logging why it could not.
func (h *sessionHook) marshal(key string, v storage.Serializable) ([]byte, bool) {
	b, err := v.MarshalBinary()
	if err != nil {
		h.log.Error("storing session state", "key", key, "err", err)
	}
	return b, err == nil
}

// The will is read from the client only where mochi does not write it
// meanwhile: at the session's start, and when mochi has sent it (on its
// event loop, which then clears it). A disconnect stores the will as it
// was then: mochi's event loop may be clearing the client's copy at that
// very moment (a delayed will falling due).
func (h *sessionHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	h.setWill(cl, cl.Properties.Will)
	h.updateClient(cl)
}

func (h *sessionHook) OnWillSent(cl *mqtt.Client, _ packets.Packet) {
	h.setWill(cl, mqtt.Will{})
	h.updateClient(cl)
}

func (h *sessionHook) setWill(cl *mqtt.Client, w mqtt.Will) {
	if cl.Net.Inline || ephemeral(cl) {
		return
	}
	h.mu.Lock()
	h.wills[cl.ID] = w
	h.mu.Unlock()
}

// ephemeral reports whether cl's session ends with its connection (as
// mochi decides at the disconnect): MQTT 5 with a session expiry of 0,
// which a client cannot raise later [MQTT-3.14.2-2], or MQTT 3.1.1 with a
// clean session.
func ephemeral(cl *mqtt.Client) bool {
	if cl.Properties.ProtocolVersion == 5 {
		return cl.Properties.Props.SessionExpiryInterval == 0
	}
	return cl.Properties.Clean
}

func (h *sessionHook) updateClient(cl *mqtt.Client) {
	if cl.Net.Inline {
		return
	}
	if ephemeral(cl) {
		// A session stored for this id before no longer outlives its
		// connection: a restart must not bring it back.
		h.forgetStored(cl.ID)
		return
	}
	h.mu.Lock()
	h.kept[cl.ID] = true
	will := h.wills[cl.ID]
	h.mu.Unlock()
	props := cl.Properties.Props.Copy(false)
	h.set(h.clients, cl.ID, &storage.Client{
		ID:              cl.ID,
		T:               storage.ClientKey,
		Remote:          cl.Net.Remote,
		Listener:        cl.Net.Listener,
		Username:        cl.Properties.Username,
		Clean:           cl.Properties.Clean,
		ProtocolVersion: cl.Properties.ProtocolVersion,
		Properties: storage.ClientProperties{
			SessionExpiryInterval: props.SessionExpiryInterval,
			RequestProblemInfo:    props.RequestProblemInfo,
			RequestResponseInfo:   props.RequestResponseInfo,
			ReceiveMaximum:        props.ReceiveMaximum,
			TopicAliasMaximum:     props.TopicAliasMaximum,
			User:                  props.User,
			MaximumPacketSize:     props.MaximumPacketSize,
		},
		Will: storage.ClientWill(will),
	})
}

func (h *sessionHook) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	if cl.Net.Inline {
		return
	}
	h.updateClient(cl)
	if expire && !errors.Is(cl.StopCause(), packets.ErrSessionTakenOver) {
		h.forget(cl.ID)
	} else if h.flow != nil {
		h.flow.disconnected(cl)
	}
}

func (h *sessionHook) OnClientExpired(cl *mqtt.Client) { h.forget(cl.ID) }

func (h *sessionHook) forget(id string) {
	if h.flow != nil {
		h.flow.forget(id)
	}
	h.forgetStored(id)
}

// forgetStored deletes what the database holds of id's session, if
// anything.
func (h *sessionHook) forgetStored(id string) {
	h.mu.Lock()
	kept := h.kept[id]
	delete(h.kept, id)
	delete(h.wills, id)
	h.mu.Unlock()
	h.inflight.forget(id)
	if !kept {
		return
	}
	h.clients.Delete(id)
	for _, kv := range []*queue.KV{h.subs, h.inflight.kv} {
		var keys []string
		kv.Scan(func(k string, _ []byte) error {
			if owner, _, ok := cut(k); ok && owner == id {
				keys = append(keys, k)
			}
			return nil
		})
		for _, k := range keys {
			kv.Delete(k)
		}
	}
}

func subKey(cl *mqtt.Client, filter string) string { return cl.ID + "\x00" + filter }

func inflightKey(cl *mqtt.Client, id uint16) string { return fmt.Sprintf("%s\x00%d", cl.ID, id) }

func cut(k string) (owner, rest string, ok bool) {
	for i := 0; i < len(k); i++ {
		if k[i] == 0 {
			return k[:i], k[i+1:], true
		}
	}
	return "", "", false
}

func (h *sessionHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	if cl.Net.Inline || ephemeral(cl) {
		return
	}
	for i, f := range pk.Filters {
		if i < len(codes) && codes[i] >= 0x80 {
			continue // refused
		}
		h.set(h.subs, subKey(cl, f.Filter), &storage.Subscription{
			ID: subKey(cl, f.Filter), T: storage.SubscriptionKey, Client: cl.ID, Qos: codes[i], Filter: f.Filter,
			Identifier: f.Identifier, NoLocal: f.NoLocal, RetainHandling: f.RetainHandling, RetainAsPublished: f.RetainAsPublished,
		})
	}
}

func (h *sessionHook) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	for _, f := range pk.Filters {
		h.subs.Delete(subKey(cl, f.Filter))
	}
}

// OnQosPublish records a message in flight to a client, and a QoS 2
// publish from one awaiting its PUBREL. The PUBACK of an inbound QoS 1
// message is complete the moment it is written: not worth two writes. A
// delivery the flow control holds at once is stored by it instead.
func (h *sessionHook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, _ int64, _ int) {
	if cl.Net.Inline || pk.FixedHeader.Type == packets.Puback {
		return
	}
	if h.flow != nil && h.flow.published(cl, pk) {
		return
	}
	h.storeInflight(cl, pk)
}

func (h *sessionHook) storeInflight(cl *mqtt.Client, pk packets.Packet) {
	if ephemeral(cl) {
		return
	}
	k := inflightKey(cl, pk.PacketID)
	if rec, ok := h.marshal(k, messageRecord(cl.ID, k, pk)); ok {
		h.inflight.set(k, rec)
	}
}

func (h *sessionHook) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	h.dropInflight(cl, pk.PacketID)
}

func (h *sessionHook) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	h.dropInflight(cl, pk.PacketID)
}

func (h *sessionHook) dropInflight(cl *mqtt.Client, id uint16) {
	h.inflight.drop(inflightKey(cl, id))
}

func (h *sessionHook) StoredClients() ([]storage.Client, error) {
	var out []storage.Client
	err := h.clients.Scan(func(k string, v []byte) error {
		var c storage.Client
		if err := c.UnmarshalBinary(v); err != nil {
			h.log.Warn("skipping an unreadable session", "client", k, "err", err)
			h.clients.Unreadable()
			return nil
		}
		out = append(out, c)
		h.mu.Lock()
		h.kept[c.ID] = true
		h.mu.Unlock()
		return nil
	})
	return out, err
}

func (h *sessionHook) StoredSubscriptions() ([]storage.Subscription, error) {
	var out []storage.Subscription
	err := h.subs.Scan(func(k string, v []byte) error {
		var s storage.Subscription
		if err := s.UnmarshalBinary(v); err != nil {
			owner, _, _ := cut(k)
			h.log.Warn("skipping an unreadable stored subscription", "client", owner, "key", k, "err", err)
			h.subs.Unreadable()
			return nil
		}
		out = append(out, s)
		return nil
	})
	return out, err
}

func (h *sessionHook) StoredInflightMessages() ([]storage.Message, error) {
	var out []storage.Message
	err := h.inflight.kv.Scan(func(k string, v []byte) error {
		var m storage.Message
		if err := m.UnmarshalBinary(v); err != nil {
			owner, _, _ := cut(k)
			h.log.Warn("skipping an unreadable stored in-flight message", "client", owner, "key", k, "err", err)
			h.inflight.kv.Unreadable()
			return nil
		}
		out = append(out, m)
		h.inflight.loaded(k)
		return nil
	})
	return out, err
}
