package localbroker

import (
	"log/slog"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/queue"
)

// retainedHook keeps retained messages in the queue's database (its own
// key prefix), so that they survive a restart: mochi keeps them in memory
// only, and its own Badger hook would open a second database.
type retainedHook struct {
	mqtt.HookBase
	kv  *queue.KV
	log *slog.Logger
}

func (h *retainedHook) ID() string { return "ralph-retained" }

func (h *retainedHook) Provides(b byte) bool {
	return b == mqtt.OnRetainMessage || b == mqtt.StoredRetainedMessages
}

// OnRetainMessage mirrors mochi's retained store: r is -1 when an empty
// retained publish cleared the topic.
func (h *retainedHook) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	if r == -1 {
		if err := h.kv.Delete(pk.TopicName); err != nil {
			h.log.Error("clearing a retained message", "topic", pk.TopicName, "err", err)
		}
		return
	}
	m := storage.Message{
		T:           storage.RetainedKey,
		FixedHeader: pk.FixedHeader,
		TopicName:   pk.TopicName,
		Payload:     pk.Payload,
		Created:     pk.Created,
		Origin:      pk.Origin,
		Properties: storage.MessageProperties{
			PayloadFormat:         pk.Properties.PayloadFormat,
			PayloadFormatFlag:     pk.Properties.PayloadFormatFlag,
			MessageExpiryInterval: pk.Properties.MessageExpiryInterval,
			ContentType:           pk.Properties.ContentType,
			ResponseTopic:         pk.Properties.ResponseTopic,
			CorrelationData:       pk.Properties.CorrelationData,
			User:                  pk.Properties.User,
		},
	}
	b, err := m.MarshalBinary()
	if err == nil {
		err = h.kv.Set(pk.TopicName, b)
	}
	if err != nil {
		h.log.Error("storing a retained message", "topic", pk.TopicName, "err", err)
	}
}

// StoredRetainedMessages gives mochi the retained messages at start.
func (h *retainedHook) StoredRetainedMessages() ([]storage.Message, error) {
	var out []storage.Message
	err := h.kv.Scan(func(topic string, v []byte) error {
		var m storage.Message
		if err := m.UnmarshalBinary(v); err != nil {
			h.log.Warn("skipping an unreadable retained message", "topic", topic, "err", err)
			return nil
		}
		out = append(out, m)
		return nil
	})
	return out, err
}
