package bridge

// This file holds the downlink: subscribing to the upstream for the
// subscribe rules' topics, and storing each message that comes down
// locally (on the dead-letter topic when the rewritten local topic is
// invalid) before acknowledging it upstream.
import (
	"context"
	"fmt"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ralph-gateway/ralph/internal/topic"
	"github.com/ralph-gateway/ralph/queue"
)

// subscribe asks the upstream for the subscribe rules' topics. With a
// resumed session the subscriptions exist already; asking again is
// harmless and covers a changed configuration.
func (b *Bridge) subscribe(ctx context.Context, cli *paho.Client) error {
	if len(b.cfg.Subscribe) == 0 {
		return nil
	}
	sub := &paho.Subscribe{}
	for _, r := range b.cfg.Subscribe {
		// Retain-as-published: without it the upstream clears the retain
		// flag of messages it forwards to a live subscription.
		sub.Subscriptions = append(sub.Subscriptions, paho.SubscribeOptions{Topic: r.Filter, QoS: r.QoS, RetainAsPublished: r.Retain})
	}
	ack, err := cli.Subscribe(ctx, sub)
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	for i, code := range ack.Reasons {
		if code >= 0x80 && i < len(b.cfg.Subscribe) {
			b.log.Warn("upstream refused a subscription", "filter", b.cfg.Subscribe[i].Filter, "reason", fmt.Sprintf("%#x", code))
		}
	}
	return nil
}

// downlink publishes a message from the upstream locally and only then
// acknowledges it upstream. If it cannot be stored the connection is
// dropped unacknowledged, so the upstream sends it again later.
func (b *Bridge) downlink(ctx context.Context, setDown context.CancelCauseFunc, pr paho.PublishReceived) (bool, error) {
	p := pr.Packet
	for _, r := range b.cfg.Subscribe {
		if !topic.Match(r.Filter, p.Topic) {
			continue
		}
		m := &queue.Message{
			Topic:   r.Local(p.Topic),
			Payload: p.Payload,
			QoS:     min(p.QoS, r.QoS),
			Retain:  r.Retain && p.Retain,
			Origin:  OriginPrefix + b.cfg.Name,
			Arrived: time.Now(),
		}
		if pp := p.Properties; pp != nil {
			m.ContentType, m.ResponseTopic, m.CorrelationData = pp.ContentType, pp.ResponseTopic, pp.CorrelationData
			if pp.PayloadFormat != nil {
				m.PayloadFormat = *pp.PayloadFormat
			}
			if pp.MessageExpiry != nil {
				m.ExpiryInterval = *pp.MessageExpiry
			}
			for _, u := range pp.User {
				m.UserProperties = append(m.UserProperties, queue.UserProperty{Key: u.Key, Value: u.Value})
			}
		}
		var reason, localTopic string
		if err := topic.ValidateName(m.Topic); err != nil {
			// The rule's rewrite made a name no local client could use
			// (empty, say: the upstream topic was just the strip_prefix).
			// Dropping it would lose a command in silence.
			reason, localTopic = "local topic is invalid: "+err.Error(), m.Topic
			m = b.downlinkDeadLetterMsg(m, p.Topic, r.Filter, reason)
		}
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := b.cfg.Local.Publish(pctx, m)
		cancel()
		if err != nil {
			b.log.Error("downlink message not stored: reconnecting so the upstream resends it", "topic", p.Topic, "err", err)
			setDown(fmt.Errorf("downlink: %w", err))
			return false, err
		}
		if reason != "" {
			b.downlinkDeadLetter.Add(1)
			b.log.Warn("downlink message dead-lettered", "topic", p.Topic, "rule", r.Filter,
				"strip_prefix", r.StripPrefix, "local_prefix", r.LocalPrefix, "local_topic", localTopic,
				"reason", reason, "dead_letter_topic", m.Topic)
		} else {
			b.downlinked.Add(1)
		}
		return true, pr.Client.Ack(p)
	}
	// Matched by no rule (an overlapping subscription of the session, say):
	// acknowledge and drop.
	b.log.Debug("downlink message matches no subscribe rule", "topic", p.Topic)
	return false, pr.Client.Ack(p)
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
