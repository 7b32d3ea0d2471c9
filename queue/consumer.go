package queue

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// cursorDelay bounds how long an acknowledgement waits before its cursor is
// persisted when no append commit carries it sooner. After a crash a consumer
// re-reads what was acknowledged in this window, on top of what was in flight.
const cursorDelay = 10 * time.Millisecond

// A Consumer reads the queue in order from its cursor and acknowledges what
// it has delivered. Read and Rewind are meant for one goroutine; Ack may be
// called from any.
type Consumer struct {
	q    *Queue
	name string

	persistEvery uint64

	// Guarded by q.mu.
	persisted uint64              // cursor value last handed to the committer
	saved     uint64              // cursor value last written (Saved)
	cursor    uint64              // every seq below it is acknowledged
	readPos   uint64              // next seq Read returns
	acked     map[uint64]struct{} // acknowledged seqs above cursor
	dirty     bool                // cursor changed since last persisted
	removed   bool
	dropped   uint64 // deleted before this consumer acknowledged them
	unlogged  uint64 // dropped since the last log line

	// What it has yet to deliver (pending.go).
	filter    func(topic, origin string) bool // nil: every message
	tally     Pending                         // Messages and Bytes only
	scanPos   uint64                          // the scan has counted what is below
	countFrom uint64                          // appends from here on are counted as they come
	scanGen   uint64                          // a new count ends the scan of the old
	out       map[uint64]outstanding          // returned by Read, not yet acknowledged
	oldest    oldestAt                        // the first wanted message after readPos, when known
}

// ConsumerOptions tune a consumer.
type ConsumerOptions struct {
	// PersistEvery is how far the cursor may advance before it is written
	// at once rather than within cursorDelay; after a crash the consumer
	// re-reads at most this many acknowledged messages on top of those in
	// flight. Default 16.
	PersistEvery int
	// Filter, if set, selects the messages the consumer reads by their
	// topic and origin: Read returns only those, and acknowledges the
	// others as it passes them. Pending counts only those. It is called
	// from the queue's goroutines and must not block or call the queue.
	Filter func(topic, origin string) bool
	// Family, if set, groups consumers that divide one reader's messages
	// between them: Family itself and every name that begins with Family
	// followed by "/". A member seen for the first time starts at the
	// lowest cursor persisted for any member instead of at the head, so
	// that dividing a consumer, merging its parts or dividing it another
	// way re-reads messages rather than losing them. See ForgetFamily.
	Family string
}

// Consumer registers the named consumer and returns it, resuming at its
// persisted cursor. A consumer seen for the first time starts at the head:
// it receives what is appended from now on. Messages are kept until every
// registered consumer has acknowledged them.
func (q *Queue) Consumer(name string, opts ConsumerOptions) (*Consumer, error) {
	if name == "" {
		return nil, errors.New("queue: consumer name is empty")
	}
	if opts.PersistEvery <= 0 {
		opts.PersistEvery = 16
	}
	if opts.Family != "" && !inFamily(opts.Family, name) {
		return nil, fmt.Errorf("queue: consumer %q is not of family %q", name, opts.Family)
	}
	c := &Consumer{q: q, name: name, acked: make(map[uint64]struct{}), persistEvery: uint64(opts.PersistEvery),
		filter: opts.Filter, out: make(map[uint64]outstanding)}
	var found, inherited bool
	err := q.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(c.key())
		if errors.Is(err, badger.ErrKeyNotFound) && opts.Family != "" {
			c.cursor, inherited, err = familyCursor(txn, opts.Family)
			found = inherited
			return err
		}
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		found = true
		return item.Value(func(b []byte) error {
			if len(b) != 8 {
				return fmt.Errorf("cursor %q: %w", name, errCorrupt)
			}
			c.cursor = binary.BigEndian.Uint64(b)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("queue: consumer %q: %w", name, err)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil, ErrClosed
	}
	if _, ok := q.consumers[name]; ok {
		return nil, fmt.Errorf("queue: consumer %q is already registered", name)
	}
	saved, stored := c.cursor, found // what a crash would resume at, if stored
	for _, old := range q.pendingCursors {
		// Closed a moment ago (a bridge being replaced), its final cursor
		// not yet written: that is where this one resumes.
		if old.name == name && (!found || old.cursor > c.cursor) {
			c.cursor, found = old.cursor, true
		}
	}
	switch {
	case !found:
		c.cursor = q.next
		c.dirty = true
	case c.cursor < q.oldest:
		c.cursor = q.oldest
	case c.cursor > q.next:
		c.cursor = q.next
	}
	c.readPos = c.cursor
	c.persisted = c.cursor
	// Not in the store, a crash would start it afresh, at the head: it
	// would deliver nothing again.
	c.saved = c.cursor
	if stored && saved < c.cursor {
		c.saved = max(saved, q.oldest)
	}
	if inherited {
		c.dirty = true
	}
	q.consumers[name] = c
	q.scheduleCursorWriteLocked()
	c.recountLocked()
	return c, nil
}

func (c *Consumer) key() []byte {
	return append([]byte{prefixCursor}, c.name...)
}

// Name returns the consumer's name.
func (c *Consumer) Name() string { return c.name }

// Read returns up to max messages from the read position on, in sequence
// order, waiting until at least one is available or ctx is done. Messages
// acknowledged out of order are skipped.
func (c *Consumer) Read(ctx context.Context, max int) ([]*Message, error) {
	for {
		msgs, wait, err := c.TryRead(max)
		if err != nil || len(msgs) > 0 {
			return msgs, err
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// TryRead is Read without the wait: it returns what is available now,
// perhaps nothing, and a channel closed once more may be.
func (c *Consumer) TryRead(max int) ([]*Message, <-chan struct{}, error) {
	if max <= 0 {
		max = 1
	}
	q := c.q
	for {
		q.mu.Lock()
		if q.closed || c.removed {
			q.mu.Unlock()
			return nil, nil, ErrClosed
		}
		from, head, wait := c.readPos, q.next, q.arrived
		q.mu.Unlock()
		if from >= head {
			return nil, wait, nil
		}
		msgs, next, err := c.load(from, head, max)
		if err != nil {
			return nil, nil, err
		}
		q.mu.Lock()
		if c.readPos == from { // not rewound meanwhile
			c.readPos = next
		}
		q.mu.Unlock()
		if len(msgs) > 0 {
			return msgs, wait, nil
		}
	}
}

// maxPassed bounds how many unwanted messages (Filter) one read
// transaction passes over, so that a read through a long stretch of
// others' messages holds neither a transaction nor their sequence
// numbers for long.
const maxPassed = 16384

// load reads up to limit stored, unacknowledged messages in [from, head) and
// returns them with the position after the last one examined.
func (c *Consumer) load(from, head uint64, limit int) ([]*Message, uint64, error) {
	var msgs []*Message
	var unwanted []uint64 // passed over: the filter does not select them
	next := head
	err := c.q.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = []byte{prefixBatch}
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Seek(seekKey(from)); it.Valid(); it.Next() {
			b, err := parseBatchKey(it.Item().Key())
			if err != nil {
				return err
			}
			if b.first >= head {
				break
			}
			full := false
			seen := b.first // the first seq not yet passed to the callback
			err = it.Item().Value(func(val []byte) error {
				return eachRecord(b, val, func(seq uint64, rec []byte) bool {
					seen = seq + 1
					switch {
					case seq >= head:
						return false
					case seq < from:
						return true
					case len(msgs) == limit:
						next, full = seq, true
						return false
					}
					if c.filter != nil {
						if topic, origin, _, ok := decodeRoute(rec); ok && !c.filter(topic, origin) {
							if len(unwanted) == maxPassed {
								next, full = seq, true
								return false
							}
							unwanted = append(unwanted, seq)
							return true
						}
					}
					c.q.mu.Lock()
					_, done := c.acked[seq]
					c.q.mu.Unlock()
					if done {
						return true
					}
					m, err := decodeMessage(seq, rec)
					if err != nil {
						c.skip(seq, err)
						return true
					}
					msgs = append(msgs, m)
					return true
				})
			})
			if errors.Is(err, errCorrupt) {
				for seq := max(seen, from); seq <= b.last && seq < head; seq++ {
					c.skip(seq, err)
				}
			} else if err != nil {
				return err
			}
			if full {
				break
			}
		}
		return nil
	})
	c.q.mu.Lock()
	for _, seq := range unwanted {
		c.ackLocked(seq)
	}
	for _, m := range msgs {
		c.out[m.Seq] = outstanding{pendingBytes(m.Topic, len(m.Payload)), m.Arrived.UnixNano()}
	}
	c.q.mu.Unlock()
	if err != nil {
		return nil, from, fmt.Errorf("queue: read %q at %d: %w", c.name, from, err)
	}
	return msgs, next, nil
}

// skip passes over a message that cannot be read. Only a power cut leaves
// a record unreadable, and only one never acknowledged to its publisher:
// its batch's key reached the disk but not all of its value. Waiting for
// it would stall the consumer for good, so it is counted, logged and
// acknowledged.
func (c *Consumer) skip(seq uint64, err error) {
	c.q.corrupt(seq, err)
	c.Ack(seq)
}

// Ack acknowledges the message with sequence number seq. The cursor advances
// over the contiguous acknowledged prefix and is persisted shortly after.
func (c *Consumer) Ack(seq uint64) {
	c.q.mu.Lock()
	defer c.q.mu.Unlock()
	c.ackLocked(seq)
}

func (c *Consumer) ackLocked(seq uint64) {
	q := c.q
	if seq < c.cursor || seq >= q.next || c.removed {
		return
	}
	if o, ok := c.out[seq]; ok {
		delete(c.out, seq)
		c.uncountLocked(seq, o.bytes)
	}
	if seq != c.cursor {
		c.acked[seq] = struct{}{}
		return
	}
	c.cursor++
	for len(c.acked) > 0 {
		if _, ok := c.acked[c.cursor]; !ok {
			break
		}
		delete(c.acked, c.cursor)
		c.cursor++
	}
	c.dirty = true
	if c.cursor-c.persisted >= c.persistEvery {
		c.persisted = c.cursor
		q.nudge()
		return
	}
	q.scheduleCursorWriteLocked()
}

// Rewind moves the read position back to the cursor, so that every message
// not yet acknowledged is read again (after a lost connection, say).
func (c *Consumer) Rewind() {
	c.q.mu.Lock()
	c.readPos = c.cursor
	c.q.mu.Unlock()
}

// Saved returns the cursor as it was last written to the store: where the
// consumer would resume if the process died now. (After a power cut it
// resumes at the cursor last synced, which may be earlier.) The channel is
// closed once some consumer's cursor is written again. What a consumer
// delivered at or above Saved is what a crash makes it deliver again.
func (c *Consumer) Saved() (uint64, <-chan struct{}) {
	c.q.mu.Lock()
	defer c.q.mu.Unlock()
	return c.saved, c.q.saved
}

// Cursor returns the first sequence number not yet acknowledged.
func (c *Consumer) Cursor() uint64 {
	c.q.mu.Lock()
	defer c.q.mu.Unlock()
	return c.cursor
}

// Backlog returns how many messages are appended but not yet acknowledged.
func (c *Consumer) Backlog() uint64 {
	c.q.mu.Lock()
	defer c.q.mu.Unlock()
	return c.backlogLocked()
}

func (c *Consumer) backlogLocked() uint64 {
	return c.q.next - c.cursor - uint64(len(c.acked))
}

// Dropped returns how many messages were deleted, since the queue was
// opened, before this consumer acknowledged them (queue full or MaxAge).
func (c *Consumer) Dropped() uint64 {
	c.q.mu.Lock()
	defer c.q.mu.Unlock()
	return c.dropped
}

// Purge acknowledges everything appended so far: the consumer's backlog is
// abandoned (counted as dropped). It returns how many messages that was.
func (c *Consumer) Purge() uint64 {
	q := c.q
	q.mu.Lock()
	defer q.mu.Unlock()
	n := c.backlogLocked()
	c.cursor, c.readPos = q.next, max(c.readPos, q.next)
	clear(c.acked)
	clear(c.out)
	c.recountLocked() // nothing to count: it starts at the head
	c.dropped += n
	c.dirty = true
	q.scheduleCursorWriteLocked()
	return n
}

// ConsumerStats describe one consumer.
type ConsumerStats struct {
	Name    string `json:"name"`
	Cursor  uint64 `json:"cursor"`
	Backlog uint64 `json:"backlog"`
	Dropped uint64 `json:"dropped"`
}

// Consumers returns the registered consumers' state, sorted by name.
func (q *Queue) Consumers() []ConsumerStats {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []ConsumerStats
	for _, c := range q.consumers {
		out = append(out, ConsumerStats{c.name, c.cursor, c.backlogLocked(), c.dropped})
	}
	slices.SortFunc(out, func(a, b ConsumerStats) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Peek returns up to n stored messages from the oldest on, without
// changing anything.
func (q *Queue) Peek(n int) ([]*Message, error) {
	q.mu.Lock()
	from, head := q.oldest, q.next
	q.mu.Unlock()
	c := &Consumer{q: q, name: "peek", acked: map[uint64]struct{}{}, out: map[uint64]outstanding{}}
	msgs, _, err := c.load(from, head, n)
	return msgs, err
}

// Close unregisters the consumer: its cursor stays persisted, but it no
// longer holds messages back from deletion.
func (c *Consumer) Close() {
	q := c.q
	q.mu.Lock()
	defer q.mu.Unlock()
	if c.removed {
		return
	}
	c.removed = true
	if q.consumers[c.name] == c {
		delete(q.consumers, c.name)
	}
	if !q.closed {
		// Persist the final cursor.
		c.dirty = true
		q.pendingCursors = append(q.pendingCursors, c)
		q.scheduleCursorWriteLocked()
	}
}

// scheduleCursorWriteLocked arranges for the committer to persist dirty
// cursors (and trim) soon, coalescing bursts of acknowledgements.
func (q *Queue) scheduleCursorWriteLocked() {
	if q.cursorTimer != nil || q.closed {
		return
	}
	q.cursorTimer = time.AfterFunc(cursorDelay, func() {
		q.mu.Lock()
		q.cursorTimer = nil
		q.mu.Unlock()
		q.nudge()
	})
}
