package bridge

// This file holds priorities: a bridge reads its backlog through one
// queue consumer per priority its forward rules use (a lane), so that
// after an outage what its urgent rules select goes before days of what
// its bulk rules do, while each lane keeps queue order. The lanes share
// one window of messages in flight, and each more urgent lane has a
// reserve of it that less urgent ones cannot fill, so an urgent message
// never waits for a window full of bulk. It also holds what each lane
// shows of its backlog: messages, bytes, the oldest, the drain rate and
// the time left.

import (
	"cmp"
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ralph-gateway/ralph/internal/topic"
	"github.com/ralph-gateway/ralph/queue"
)

// A Lane is the part of a bridge's backlog that its forward rules of one
// priority select, read through a consumer of its own.
type Lane struct {
	Priority int
	Consumer *queue.Consumer
}

// ConsumerFamily is the queue family of the consumers a bridge named name
// reads through (queue.ConsumerOptions.Family).
func ConsumerFamily(name string) string { return "bridge/" + name }

// LaneNames returns the names of the consumers a bridge with these rules
// reads through, most urgent first. A bridge whose rules share one
// priority has one, named as before priorities existed. With more, the
// names carry a digest of which filter has which priority, so that a
// change that moves messages between lanes makes new consumers, which
// start where the slowest old one was (a re-read, never a loss).
func LaneNames(name string, rules []Rule) []string {
	prios := priorities(rules)
	if len(prios) == 1 {
		return []string{ConsumerFamily(name)}
	}
	h := fnv.New32a()
	for _, r := range rules {
		fmt.Fprintf(h, "%s\x00%d\x00", r.Filter, r.Priority)
	}
	out := make([]string, len(prios))
	for i, p := range prios {
		out[i] = fmt.Sprintf("%s/%08x/p%d", ConsumerFamily(name), h.Sum32(), p)
	}
	return out
}

// priorities returns the distinct priorities of rules, most urgent first
// (one, the default's, with no rules).
func priorities(rules []Rule) []int {
	var p []int
	for _, r := range rules {
		p = append(p, r.Priority)
	}
	slices.Sort(p)
	p = slices.Compact(p)
	if len(p) == 0 {
		p = []int{0}
	}
	return p
}

// OpenLanes registers the consumers of a bridge named name with these
// rules (LaneNames) and forgets the cursors of any others of its family,
// which a change of priorities left behind. persistEvery is each
// consumer's queue.ConsumerOptions.PersistEvery.
func OpenLanes(q *queue.Queue, name string, rules []Rule, persistEvery int) ([]Lane, error) {
	names := LaneNames(name, rules)
	prios := priorities(rules)
	var lanes []Lane
	fail := func(err error) ([]Lane, error) {
		for _, l := range lanes {
			l.Consumer.Close()
		}
		return nil, err
	}
	for i, n := range names {
		c, err := q.Consumer(n, queue.ConsumerOptions{
			PersistEvery: persistEvery,
			Family:       ConsumerFamily(name),
			Filter:       laneFilter(rules, prios[i]),
		})
		if err != nil {
			return fail(err)
		}
		lanes = append(lanes, Lane{Priority: prios[i], Consumer: c})
	}
	if err := q.ForgetFamily(ConsumerFamily(name)); err != nil {
		return fail(err)
	}
	return lanes, nil
}

// laneFilter selects the messages whose first matching rule has priority
// p: those a lane of that priority forwards.
func laneFilter(rules []Rule, p int) func(topic, origin string) bool {
	return func(t, origin string) bool {
		r := ruleFor(rules, t, origin)
		return r != nil && r.Priority == p
	}
}

// ruleFor returns the forward rule a message goes upstream by: the first
// that matches, or nil. What came down from a bridge never goes back up.
func ruleFor(rules []Rule, t, origin string) *Rule {
	if strings.HasPrefix(origin, OriginPrefix) {
		return nil
	}
	for i := range rules {
		if topic.Match(rules[i].Filter, t) {
			return &rules[i]
		}
	}
	return nil
}

// lane is a Lane as the forwarding loop drives it.
type lane struct {
	Lane
	limit int              // how much of the window it may fill
	buf   []*queue.Message // read, not yet handed to the upstream (the Run goroutine's)
	sent  []uint64         // handed to the upstream, ascending; what a saved cursor covers is dropped lazily (the Run goroutine's)
	done  atomic.Uint64    // its messages acknowledged: sent, refused, expired or dead-lettered

	mu       sync.Mutex
	rate     float64 // messages a second, smoothed
	lastDone uint64
	lastAt   time.Time
}

// newLanes makes the loop's lanes, most urgent first, and their shares of
// a window of size window: lane i may fill all but i reserves of it.
func newLanes(ls []Lane, window int) []*lane {
	ls = slices.Clone(ls)
	slices.SortFunc(ls, func(a, b Lane) int { return cmp.Compare(a.Priority, b.Priority) })
	reserve := 0
	if window > 1 {
		reserve = max(1, window/8)
	}
	out := make([]*lane, len(ls))
	for i, l := range ls {
		out[i] = &lane{Lane: l, limit: max(1, window-i*reserve)}
	}
	return out
}

// markSent records that the message seq goes to the upstream. Sent again
// after a rewind, it is recorded already: sent is ascending, and what was
// sent at or above the cursor is never dropped.
func (l *lane) markSent(seq uint64) {
	if n := len(l.sent); n == 0 || seq > l.sent[n-1] {
		l.sent = append(l.sent, seq)
	}
}

// unsaved drops what the lane's saved cursor covers from sent and returns
// how many remain, with a channel closed when a cursor is next saved.
func (l *lane) unsaved() (int, <-chan struct{}) {
	pos, saved := l.Consumer.Saved()
	i, _ := slices.BinarySearch(l.sent, pos)
	l.sent = append(l.sent[:0], l.sent[i:]...)
	return len(l.sent), saved
}

// ack acknowledges one of the lane's messages in the queue.
func (l *lane) ack(seq uint64) {
	l.Consumer.Ack(seq)
	l.done.Add(1)
}

// rateHalfLife is how quickly the drain rate follows a change.
const rateHalfLife = 10 * time.Second

// sample updates the drain rate from what was acknowledged since the
// last sample.
func (l *lane) sample(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	done := l.done.Load()
	if l.lastAt.IsZero() {
		l.lastAt, l.lastDone = now, done
		return
	}
	dt := now.Sub(l.lastAt)
	if dt <= 0 {
		return
	}
	inst := float64(done-l.lastDone) / dt.Seconds()
	w := math.Exp2(-dt.Seconds() / rateHalfLife.Seconds())
	l.rate = w*l.rate + (1-w)*inst
	l.lastAt, l.lastDone = now, done
}

// stateEvery is how often, at most, the state topic is published again
// because the backlog changed.
const stateEvery = 10 * time.Second

// report samples the lanes' drain rates every second and, every
// stateEvery, publishes the state topic again if the backlog changed
// since it was last published.
func (b *Bridge) report(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, l := range b.lanes {
				l.sample(now)
			}
			if now.Sub(last) >= stateEvery && b.backlogChanged() {
				b.publishState()
				last = now
			}
		}
	}
}

// backlogChanged reports whether some lane's messages differ from what
// the state topic last said.
func (b *Bridge) backlogChanged() bool {
	b.mu.Lock()
	said := slices.Clone(b.announcedBacklog)
	b.mu.Unlock()
	if len(said) != len(b.lanes) {
		return true
	}
	for i, l := range b.lanes {
		if l.Consumer.Pending().Messages != said[i] {
			return true
		}
	}
	return false
}

// LaneStats describe one priority's backlog.
type LaneStats struct {
	Priority int
	Messages uint64    // selected by the lane's rules, not yet acknowledged upstream
	Bytes    uint64    // their topics and payloads
	Oldest   time.Time // when the oldest of them arrived; zero with none
	// Counting: the backlog stored before the bridge started is still
	// being counted; Messages and Bytes are partial.
	Counting bool
	Rate     float64       // messages a second acknowledged lately
	ETA      time.Duration // Messages at Rate; -1 when there is no rate to go by
}

func (l *lane) stats() LaneStats {
	p := l.Consumer.Pending()
	l.mu.Lock()
	rate := l.rate
	l.mu.Unlock()
	if rate < 0.01 {
		rate = 0
	}
	s := LaneStats{Priority: l.Priority, Messages: p.Messages, Bytes: p.Bytes, Oldest: p.Oldest, Counting: p.Counting, Rate: rate, ETA: -1}
	switch {
	case p.Messages == 0:
		s.ETA = 0
	case rate > 0:
		s.ETA = time.Duration(float64(p.Messages) / rate * float64(time.Second))
	}
	return s
}

// Backlog is one priority's backlog as the bridge's state topic, `ralph
// status` and the metrics report it: ages and durations in seconds.
type Backlog struct {
	Priority  int     `json:"priority"`
	Messages  uint64  `json:"messages"`
	Bytes     uint64  `json:"bytes"`              // topics and payloads
	OldestAge float64 `json:"oldest_age_seconds"` // 0 with none
	// Counting: the backlog stored before the start is still being
	// counted; messages and bytes are partial.
	Counting  bool     `json:"counting,omitempty"`
	DrainRate float64  `json:"drain_rate"`  // messages a second forwarded lately
	ETA       *float64 `json:"eta_seconds"` // messages at the drain rate; null with no rate to go by
}

// Backlogs reports lanes as Backlog, ages as of now.
func Backlogs(lanes []LaneStats, now time.Time) []Backlog {
	out := make([]Backlog, 0, len(lanes))
	for _, l := range lanes {
		b := Backlog{Priority: l.Priority, Messages: l.Messages, Bytes: l.Bytes, Counting: l.Counting, DrainRate: l.Rate}
		if !l.Oldest.IsZero() {
			b.OldestAge = max(0, now.Sub(l.Oldest).Seconds())
		}
		if l.ETA >= 0 {
			eta := l.ETA.Seconds()
			b.ETA = &eta
		}
		out = append(out, b)
	}
	return out
}
