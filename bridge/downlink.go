package bridge

// This file holds the downlink: subscribing to the upstream for the
// subscribe rules' topics, and storing each message that comes down
// locally (on the dead-letter topic when the rewritten local topic is
// invalid) before acknowledging it upstream. Each protocol turns what
// comes down into a queue.Message and acknowledges it (mqtt5.go,
// mqtt311.go).
import (
	"context"
	"fmt"
	"time"

	"github.com/ralph-gateway/ralph/internal/topic"
	"github.com/ralph-gateway/ralph/queue"
)

// subscribe asks the upstream for the subscribe rules' topics. With a
// resumed session the subscriptions exist already; asking again is
// harmless and covers a changed configuration.
func (b *Bridge) subscribe(ctx context.Context, up upstream) error {
	if len(b.cfg.Subscribe) == 0 {
		return nil
	}
	codes, err := up.subscribe(ctx, b.cfg.Subscribe)
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	for i, code := range codes {
		if code >= 0x80 && i < len(b.cfg.Subscribe) {
			b.log.Warn("upstream refused a subscription", "filter", b.cfg.Subscribe[i].Filter, "reason", fmt.Sprintf("%#x", code))
		}
	}
	return nil
}

// downlink publishes a message from the upstream locally; the protocol
// acknowledges it upstream only when downlink returns no error. m holds
// what came down (payload, QoS, retain flag, properties); remote is its
// upstream topic. If it cannot be stored the connection is dropped
// unacknowledged, so the upstream sends it again later. matched is false
// for a message no rule matches (acknowledged and dropped).
func (b *Bridge) downlink(p connectParams, remote string, m *queue.Message) (matched bool, err error) {
	for _, r := range b.cfg.Subscribe {
		if !topic.Match(r.Filter, remote) {
			continue
		}
		m.Topic = r.Local(remote)
		m.QoS = min(m.QoS, r.QoS)
		m.Retain = r.Retain && m.Retain
		m.Origin = OriginPrefix + b.cfg.Name
		m.Arrived = time.Now()
		var reason, localTopic string
		if err := topic.ValidateName(m.Topic); err != nil {
			// The rule's rewrite made a name no local client could use
			// (empty, say: the upstream topic was just the strip_prefix).
			// Dropping it would lose a command in silence.
			reason, localTopic = "local topic is invalid: "+err.Error(), m.Topic
			m = b.downlinkDeadLetterMsg(m, remote, r.Filter, reason)
		}
		pctx, cancel := context.WithTimeout(p.down, 30*time.Second)
		err := b.cfg.Local.Publish(pctx, m)
		cancel()
		if err != nil {
			b.log.Error("downlink message not stored: reconnecting so the upstream resends it", "topic", remote, "err", err)
			p.setDown(fmt.Errorf("downlink: %w", err))
			return false, err
		}
		if reason != "" {
			b.downlinkDeadLetter.Add(1)
			b.log.Warn("downlink message dead-lettered", "topic", remote, "rule", r.Filter,
				"strip_prefix", r.StripPrefix, "local_prefix", r.LocalPrefix, "local_topic", localTopic,
				"reason", reason, "dead_letter_topic", m.Topic)
		} else {
			b.downlinked.Add(1)
		}
		return true, nil
	}
	// Matched by no rule (an overlapping subscription of the session, say):
	// acknowledge and drop.
	b.log.Debug("downlink message matches no subscribe rule", "topic", remote)
	return false, nil
}

// downlinkDeadLetterMsg turns a downlink message that cannot be published
// under its local topic into a dead letter: on DeadLetterTopic, with the
// upstream topic, the subscribe rule's filter and the reason as user
// properties.
func (b *Bridge) downlinkDeadLetterMsg(m *queue.Message, remote, rule, reason string) *queue.Message {
	dl := *m
	dl.Topic, dl.Retain = DeadLetterTopic(b.cfg.Name), false
	dl.UserProperties = append(append([]queue.UserProperty(nil), m.UserProperties...),
		queue.UserProperty{Key: "topic", Value: remote}, queue.UserProperty{Key: "rule", Value: rule},
		queue.UserProperty{Key: "reason", Value: reason})
	return &dl
}
