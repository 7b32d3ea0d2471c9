package localbroker

import (
	"math"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// topicWithinLimits checks a topic or filter against MaxTopicLength and
// MaxTopicLevels, counting and logging what exceeds them.
func (b *Broker) topicWithinLimits(cl *mqtt.Client, t string) bool {
	if len(t) <= b.limits.MaxTopicLength && strings.Count(t, "/")+1 <= b.limits.MaxTopicLevels {
		return true
	}
	b.badTopic.Add(1)
	b.log.Warn("topic over the limits", "client", cl.ID, "bytes", len(t), "levels", strings.Count(t, "/")+1,
		"max_bytes", b.limits.MaxTopicLength, "max_levels", b.limits.MaxTopicLevels)
	return false
}

// hasTopic reports whether pk has a topic, counting and logging one
// that has none: mochi lets a publish through by a topic alias the client
// never set [MQTT-3.3.2-12], with no topic, and nowhere to store or
// forward it.
func (b *Broker) hasTopic(cl *mqtt.Client, pk packets.Packet) bool {
	if pk.TopicName != "" {
		return true
	}
	b.badTopic.Add(1)
	b.log.Warn("publish by a topic alias never set", "client", cl.ID, "alias", pk.Properties.TopicAlias)
	return false
}

// refuseTopic answers a publish whose topic is over the limits: MQTT 5
// gets 0x90 (topic name invalid); MQTT 3.1.1 has no such answer, so the
// client is disconnected, as the spec has it for a malformed packet.
func (b *Broker) refuseTopic(cl *mqtt.Client, pk packets.Packet) {
	if cl.Properties.ProtocolVersion == 5 && pk.FixedHeader.Qos > 0 {
		cl.WritePacket(ackFor(pk, packets.ErrTopicNameInvalid.Code))
		return
	}
	b.srv.DisconnectClient(cl, packets.ErrTopicNameInvalid)
}

// limitsHook applies the keepalive cap when a client connects: a longer
// keepalive, or none, is cut to MaxKeepAlive (MQTT 5 clients are told in
// the CONNACK's Server Keep Alive), so that a vanished device is noticed.
// It also turns off mochi's quotas (see quotasOff).
type limitsHook struct {
	mqtt.HookBase
	b *Broker
}

func (h *limitsHook) ID() string { return "ralph-limits" }

func (h *limitsHook) Provides(b byte) bool {
	return b == mqtt.OnConnect || b == mqtt.OnSessionEstablished
}

// quotasOff turns off mochi's (2.7.9) flow control, both ways.
//
// Its send quota, by the client's Receive Maximum, is broken two ways: a
// message it held back is dropped from the session once sent (so it is
// neither resent nor kept across a reconnect), and the code that sends
// held-back messages takes a read lock twice (Inflight.NextImmediate →
// GetAll), which deadlocks the client's connection, and with it Ralph's
// release loop, when another goroutine wants the write lock in between.
// With no quota that code never runs; Ralph holds back what a client's
// Receive Maximum does not let out itself (flow.go).
//
// Its receive quota counts a publish only when Ralph re-injects it, after
// the commit, so that a client sending more than Ralph's receive maximum
// of QoS 2 publishes without waiting is caught or not depending on how
// fast the disk is; and a subscriber's PUBREC for a QoS 2 delivery takes
// from it, so that one with many deliveries awaiting PUBCOMP could be
// disconnected for publishing within its limit, after its message was
// stored. Ralph counts in ingest instead, as the packets are read.
//
// It must be applied after the session is inherited, which resets the
// quotas.
func quotasOff(cl *mqtt.Client) {
	cl.State.Inflight.ResetSendQuota(0)
	cl.State.Inflight.ResetReceiveQuota(math.MaxInt32)
}

func (h *limitsHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) { quotasOff(cl) }

func (h *limitsHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	quotasOff(cl)
	max := uint16(min(h.b.limits.MaxKeepAlive/time.Second, 65535))
	if ka := cl.State.Keepalive; ka == 0 || ka > max {
		cl.State.Keepalive = max
		cl.State.ServerKeepalive = true
	}
	return nil
}
