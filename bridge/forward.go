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
	"slices"
	"time"

	"github.com/ralph-gateway/ralph/queue"
)

// readBatch is how many messages a lane reads from the queue at once
// (at least its share of the window).
const readBatch = 256

// forward publishes queued messages, each lane's in order and the most
// urgent lane's first, until the connection or ctx ends.
func (b *Bridge) forward(ctx context.Context, up upstream) error {
	for {
		l, err := b.pick(ctx)
		if err != nil {
			return err
		}
		m := l.buf[0]
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
			l.ack(m.Seq)
			l.buf = l.buf[1:]
			continue
		}
		if err := b.pace(ctx); err != nil {
			return err
		}
		// pick saw room, and only this goroutine fills the window.
		window, abandon := b.current()
		window <- struct{}{}
		l.markSent(m.Seq)
		if pub.QoS == 0 {
			_, err := up.publish(ctx, pub, ticket{})
			b.release1(window)
			if err != nil {
				return err
			}
			b.forwarded.Add(1)
			l.ack(m.Seq)
			l.buf = l.buf[1:]
			continue
		}
		if len(window) == 1 { // the window was empty: the clock starts now
			b.lastProgress.Store(time.Now().UnixNano())
		}
		inFlight, err := up.publish(ctx, pub, ticket{lane: l, seq: m.Seq, window: window, abandon: abandon})
		if inFlight {
			l.buf = l.buf[1:] // in the session now; its ack will come
		} else {
			b.release1(window)
		}
		if err != nil {
			return err
		}
	}
}

// pick returns the lane whose first message goes next: the most urgent
// that has one and room in the window for it. It reads the queue for
// lanes that have nothing buffered, and waits, flushing first, while no
// lane has a message or the first that has one has no room.
func (b *Bridge) pick(ctx context.Context) (*lane, error) {
	for {
		var arrival, saved <-chan struct{}
		window, _ := b.current()
		for _, l := range b.lanes {
			if len(l.buf) == 0 {
				// Reading more than a window at a time spreads the cost of
				// a read transaction (and its seek) over more messages.
				msgs, wait, err := l.Consumer.TryRead(max(l.limit, readBatch))
				if err != nil {
					return nil, err
				}
				if arrival == nil {
					arrival = wait // the first is the earliest: nothing is missed
				}
				l.buf = msgs
			}
			if len(l.buf) == 0 {
				continue
			}
			if len(window) < l.limit {
				if saved = b.resendLimit(); saved == nil {
					return l, nil
				}
			}
			// Less urgent lanes have less room still: wait for an
			// acknowledgement, or for a more urgent message.
			break
		}
		b.conn.Flush() // about to wait
		select {
		case <-arrival: // nil, never, when every lane had messages
		case <-b.acked:
		case <-saved: // nil, never, unless the resend limit was reached
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

// resendLimit holds the bridge to at most twice its window of messages
// sent that no saved cursor covers: that is all a crash of the process
// makes it send again, however long the queue takes to write its
// cursors. It returns nil while another may be sent, else a channel closed
// when a cursor is next saved. The window in flight and as many
// acknowledged while their cursor is written leave the limit unreached
// unless the writes fall behind.
func (b *Bridge) resendLimit() <-chan struct{} {
	limit := 2 * b.cfg.MaxInflight
	n := 0
	for _, l := range b.lanes {
		n += len(l.sent)
	}
	if n < limit {
		return nil // counted without dropping what is saved: fewer still
	}
	n = 0
	var saved <-chan struct{}
	for _, l := range b.lanes {
		var m int
		m, saved = l.unsaved() // the queue's one channel
		n += m
	}
	if n < limit {
		return nil
	}
	return saved
}

// release1 gives back one slot of window and says so to pick.
func (b *Bridge) release1(window chan struct{}) {
	<-window
	select {
	case b.acked <- struct{}{}:
	default:
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
// the message as it goes upstream (its topic, QoS, remaining expiry and
// the timestamp property), or nil for a message that is not to be
// forwarded.
func (b *Bridge) route(m *queue.Message) *queue.Message {
	r := ruleFor(b.cfg.Forward, m.Topic, m.Origin)
	if r == nil {
		b.skipped.Add(1)
		return nil
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
	if r.TimestampProperty != "" {
		// A copy: a device's own properties stay as they are, ahead of ours.
		out.UserProperties = append(slices.Clip(m.UserProperties),
			queue.UserProperty{Key: r.TimestampProperty, Value: m.Arrived.UTC().Format(TimestampLayout)})
	}
	return &out
}

// TimestampLayout is how the timestamp property writes the time a
// message arrived: RFC 3339 with milliseconds, in UTC.
const TimestampLayout = "2006-01-02T15:04:05.000Z07:00"

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
	b.release1(t.window)
	b.lastProgress.Store(time.Now().UnixNano())
	if code >= 0x80 {
		// Retrying a message the upstream refuses would block everything
		// behind it; count it and move on.
		b.rejected.Add(1)
		b.log.Warn("upstream refused a message", "seq", t.seq, "reason", fmt.Sprintf("%#x", code))
	} else {
		b.forwarded.Add(1)
	}
	t.lane.ack(t.seq)
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
