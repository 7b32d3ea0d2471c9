package bridge

// This file holds forwarding from the queue to the upstream: the ordered
// loop with its window of messages in flight, pacing to MaxRate, routing
// by the forward rules, dead letters for messages the upstream cannot take
// (limits.go), and the completion of each message when the upstream answers.
// It is the same for every protocol: a message goes out through the
// connection's upstream (upstream.go).
import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ralph-gateway/ralph/internal/topic"
	"github.com/ralph-gateway/ralph/queue"
)

// readBatch is how many messages the bridge reads from the queue at once
// (at least its window).
const readBatch = 256

// forward publishes queued messages in order until the connection or ctx
// ends.
func (b *Bridge) forward(ctx context.Context, up upstream) error {
	for {
		if len(b.buf) == 0 {
			b.conn.Flush() // about to wait for the queue
			// Reading more than a window at a time spreads the cost of a
			// read transaction (and its seek) over more messages.
			msgs, err := b.cons.Read(ctx, max(b.cfg.MaxInflight, readBatch))
			if err != nil {
				return context.Cause(ctx)
			}
			b.buf = msgs
		}
		m := b.buf[0]
		pub := b.route(m)
		if pub != nil {
			if reason := b.cfg.Limits.unfit(pub, b.maxPacket.Load()); reason != "" {
				if err := b.deadLetterMsg(ctx, m, reason); err != nil {
					return err
				}
				pub = nil
			}
		}
		if pub == nil {
			b.cons.Ack(m.Seq)
			b.buf = b.buf[1:]
			continue
		}
		if err := b.pace(ctx); err != nil {
			return err
		}
		window, abandon := b.current()
		select {
		case window <- struct{}{}:
		default:
			b.conn.Flush() // about to wait for an acknowledgement
			select {
			case window <- struct{}{}:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
		if pub.QoS == 0 {
			_, err := up.publish(ctx, pub, ticket{})
			<-window
			if err != nil {
				return err
			}
			b.forwarded.Add(1)
			b.cons.Ack(m.Seq)
			b.buf = b.buf[1:]
			continue
		}
		if len(window) == 1 { // the window was empty: the clock starts now
			b.lastProgress.Store(time.Now().UnixNano())
		}
		inFlight, err := up.publish(ctx, pub, ticket{seq: m.Seq, window: window, abandon: abandon})
		if inFlight {
			b.buf = b.buf[1:] // in the session now; its ack will come
		} else {
			<-window
		}
		if err != nil {
			return err
		}
	}
}

// pace holds the forwarding loop to MaxRate messages per second. Pacing
// the single ordered loop keeps the order: live messages wait behind the
// backlog rather than overtaking it. Up to a tenth of a second's worth may
// go in a burst after an idle spell.
func (b *Bridge) pace(ctx context.Context) error {
	if b.cfg.MaxRate <= 0 {
		return nil
	}

	interval := time.Second / time.Duration(b.cfg.MaxRate)
	now := time.Now()
	if floor := now.Add(-100 * time.Millisecond); b.nextAt.Before(floor) {
		b.nextAt = floor
	}
	if wait := b.nextAt.Sub(now); wait > 0 {
		b.conn.Flush() // about to wait for the rate limit
		if !sleep(ctx, wait) {
			return context.Cause(ctx)
		}
	}
	b.nextAt = b.nextAt.Add(interval)
	return nil
}

// route applies the forward rules: the first that matches wins. It returns
// the message as it goes upstream (its topic, QoS and remaining expiry),
// or nil for a message that is not to be forwarded.
func (b *Bridge) route(m *queue.Message) *queue.Message {
	if strings.HasPrefix(m.Origin, OriginPrefix) {
		b.skipped.Add(1) // came down from a bridge: never back up
		return nil
	}
	for _, r := range b.cfg.Forward {
		if !topic.Match(r.Filter, m.Topic) {
			continue
		}
		out := *m
		out.Topic, out.QoS = r.Remote(m.Topic), r.QoS
		if m.ExpiryInterval > 0 {
			elapsed := time.Since(m.Arrived)
			if m.Expired(time.Now()) {
				b.expired.Add(1)
				return nil
			}
			out.ExpiryInterval = m.ExpiryInterval - uint32(elapsed/time.Second)
		}
		if out.Topic == "" {
			b.skipped.Add(1)
			return nil
		}
		return &out
	}
	b.skipped.Add(1)
	return nil
}

// DeadLetterTopic is the local topic where a bridge puts messages its
// upstream cannot take (larger than its Maximum Packet Size, or over the
// configured Limits), with the original topic and the reason as user
// properties. Retrying them would
// block everything queued behind them forever. Downlink messages whose
// local topic (after the subscribe rule's rewrite) is invalid go there
// too, with the upstream topic, the rule's filter ("rule", which only
// these carry) and the reason.
func DeadLetterTopic(name string) string { return "$SYS/ralph/bridges/" + name + "/deadletter" }

// tooLarge reports whether pub's PUBLISH packet would exceed max bytes,
// counted generously (fixed header, length, packet id, properties).
func tooLarge(pub *queue.Message, max uint32) bool {
	if max == 0 {
		return false
	}
	n := 16 + len(pub.Topic) + len(pub.Payload)
	n += 8 + len(pub.ContentType) + len(pub.ResponseTopic) + len(pub.CorrelationData)
	for _, u := range pub.UserProperties {
		n += 5 + len(u.Key) + len(u.Value)
	}
	return n > int(max)
}

// deadLetterMsg moves m, which cannot go upstream for reason, to the
// dead-letter topic.
func (b *Bridge) deadLetterMsg(ctx context.Context, m *queue.Message, reason string) error {
	b.log.Warn("message dead-lettered", "topic", m.Topic, "bytes", len(m.Payload), "reason", reason, "dead_letter_topic", DeadLetterTopic(b.cfg.Name))
	b.deadLetter.Add(1)
	if b.cfg.Local == nil {
		return nil
	}
	dl := *m
	dl.Topic, dl.Origin, dl.Retain = DeadLetterTopic(b.cfg.Name), OriginPrefix+b.cfg.Name, false
	dl.UserProperties = append(append([]queue.UserProperty(nil), m.UserProperties...),
		queue.UserProperty{Key: "topic", Value: m.Topic}, queue.UserProperty{Key: "reason", Value: reason})
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return b.cfg.Local.Publish(pctx, &dl)
}

// answered handles the upstream's final answer for a message in flight:
// its reason code (always 0 in MQTT 3.1.1, whose acknowledgements have
// none).
func (b *Bridge) answered(t ticket, code byte) {
	<-t.window
	b.lastProgress.Store(time.Now().UnixNano())
	if code >= 0x80 {
		// Retrying a message the upstream refuses would block everything
		// behind it; count it and move on.
		b.rejected.Add(1)
		b.log.Warn("upstream refused a message", "seq", t.seq, "reason", fmt.Sprintf("%#x", code))
	} else {
		b.forwarded.Add(1)
	}
	b.cons.Ack(t.seq)
}

func (b *Bridge) current() (chan struct{}, chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.window, b.abandon
}

// resetWindow forgets every message in flight; they are read again.
func (b *Bridge) resetWindow() {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.abandon)
	b.abandon = make(chan struct{})
	b.window = make(chan struct{}, b.cfg.MaxInflight)
}

// drain waits up to d for in-flight messages to be acknowledged.
func (b *Bridge) drain(up upstream, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		window, _ := b.current()
		if len(window) == 0 {
			return
		}
		select {
		case <-up.done():
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}
