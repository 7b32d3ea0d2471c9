package queue

// What a consumer has yet to deliver: how many of its messages, how many
// bytes, and since when. A consumer with a Filter reads only some of the
// log, so the distance from its cursor to the head says little; the
// queue keeps a tally instead.
//
// The tally covers two ranges of sequence numbers: below scanPos, what a
// background scan of the log has classified since the consumer was
// registered, and from countFrom on, what was appended since (counted as
// each batch becomes readable). Between them is what the scan has yet to
// reach. A message leaves the tally when it is acknowledged or deleted,
// but only if it is in a counted range; one in between is simply not
// counted when the scan gets there. So acknowledgements, deletions and
// the scan may interleave in any order and the tally stays exact.

import (
	"errors"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Pending describes the messages a consumer has yet to deliver: those its
// Filter selects (all, without one) from its cursor on, not acknowledged.
type Pending struct {
	Messages uint64
	Bytes    uint64    // their topics and payloads
	Oldest   time.Time // arrival of the oldest; zero with none
	// Counting: the log that was already stored when the consumer was
	// registered (or when it was purged) is still being counted, and
	// Messages and Bytes cover only part of it.
	Counting bool
}

// outstanding is a message Read returned and nobody acknowledged yet.
type outstanding struct {
	bytes   int64
	arrived int64 // unix nanos
}

// pendingBytes is what a message counts in Pending.Bytes.
func pendingBytes(topic string, payload int) int64 { return int64(len(topic) + payload) }

// wants reports whether the consumer reads a message with this topic and
// origin.
func (c *Consumer) wants(topic, origin string) bool {
	return c.filter == nil || c.filter(topic, origin)
}

// countedLocked reports whether seq is in a range the tally covers.
func (c *Consumer) countedLocked(seq uint64) bool {
	return seq < c.scanPos || seq >= c.countFrom
}

// countAppendedLocked adds newly readable messages to the tallies.
func (q *Queue) countAppendedLocked(batch []*request) {
	for _, c := range q.consumers {
		for _, r := range batch {
			if r.err != nil {
				continue
			}
			for _, m := range r.msgs {
				if m.Seq >= c.countFrom && c.wants(m.Topic, m.Origin) {
					c.tally.Messages++
					c.tally.Bytes += uint64(pendingBytes(m.Topic, len(m.Payload)))
				}
			}
		}
	}
}

// uncountLocked takes seq, of the given size, out of the tally if it is
// in it. It is acknowledged or deleted.
func (c *Consumer) uncountLocked(seq uint64, bytes int64) {
	if !c.countedLocked(seq) || c.tally.Messages == 0 {
		return
	}
	c.tally.Messages--
	c.tally.Bytes -= min(c.tally.Bytes, uint64(bytes))
}

// recountLocked starts the tally afresh: what is appended from now on is
// counted as it comes, and a scan counts what is stored from the cursor
// to here.
func (c *Consumer) recountLocked() {
	q := c.q
	c.scanGen++
	c.tally = Pending{}
	c.scanPos, c.countFrom = c.cursor, q.next
	if c.scanPos >= c.countFrom || q.closed {
		return
	}
	gen := c.scanGen
	q.scans.Add(1)
	go func() {
		defer q.scans.Done()
		if err := c.scan(gen); err != nil {
			q.log.Warn("queue: counting a consumer's backlog", "consumer", c.name, "err", err)
		}
	}()
}

// scanned is one record as the scan classifies it.
type scanned struct {
	seq   uint64
	bytes int64
	want  bool
}

// scan counts the stored messages in [scanPos, countFrom) one batch at a
// time, until it is done, the queue closes or the count starts afresh.
func (c *Consumer) scan(gen uint64) error {
	q := c.q
	q.mu.Lock()
	from := c.scanPos
	q.mu.Unlock()
	var recs []scanned
	for {
		if q.scanPause != nil {
			q.scanPause()
		}
		recs = recs[:0]
		var last uint64
		found := false
		err := q.db.View(func(txn *badger.Txn) error {
			opts := badger.DefaultIteratorOptions
			opts.PrefetchValues = false
			opts.Prefix = []byte{prefixBatch}
			it := txn.NewIterator(opts)
			defer it.Close()
			it.Seek(seekKey(from))
			if !it.Valid() {
				return nil
			}
			b, err := parseBatchKey(it.Item().Key())
			if err != nil {
				return err
			}
			found, last = true, b.last
			return it.Item().Value(func(val []byte) error {
				return eachRecord(b, val, func(seq uint64, rec []byte) bool {
					if seq < from {
						return true
					}
					topic, origin, payload, ok := decodeRoute(rec)
					if ok {
						recs = append(recs, scanned{seq, pendingBytes(topic, payload), c.wants(topic, origin)})
					}
					return true
				})
			})
		})
		if errors.Is(err, errCorrupt) {
			err = nil // a reader skips and counts it; so does the tally
		}
		q.mu.Lock()
		if c.scanGen != gen || q.closed || c.removed {
			q.mu.Unlock()
			return nil
		}
		if err != nil {
			// Give up rather than report a wrong count: what remains is
			// counted as uncounted, and Counting stays set.
			q.mu.Unlock()
			return err
		}
		if !found || last+1 >= c.countFrom {
			last = c.countFrom - 1
		}
		for _, r := range recs {
			if r.seq >= c.countFrom {
				break
			}
			if !r.want || r.seq < c.cursor {
				continue
			}
			if _, acked := c.acked[r.seq]; acked {
				continue
			}
			c.tally.Messages++
			c.tally.Bytes += uint64(r.bytes)
		}
		c.scanPos = max(c.scanPos, min(last+1, c.countFrom))
		done := c.scanPos >= c.countFrom
		from = c.scanPos
		q.mu.Unlock()
		if done {
			return nil
		}
	}
}

// decodeRoute reads what a filter and the tally need from a record: its
// topic, its origin and the payload's length. It allocates the two
// strings and nothing else.
func decodeRoute(b []byte) (topic, origin string, payload int, ok bool) {
	d := decoder{b: b}
	if d.byte() != recordVersion {
		return "", "", 0, false
	}
	d.byte()
	d.uvarint()
	t, o := d.bytes(), d.bytes()
	d.bytes()
	d.bytes()
	d.bytes()
	d.byte()
	d.uvarint()
	n := d.uvarint()
	for i := uint64(0); i < n && !d.err; i++ {
		d.bytes()
		d.bytes()
	}
	if d.err {
		return "", "", 0, false
	}
	return string(t), string(o), len(d.b), true
}

// Pending returns what the consumer has yet to deliver. Finding the
// oldest may read the log, once, when the consumer has not read its
// oldest message yet (a bridge whose link is down); it is remembered.
func (c *Consumer) Pending() Pending {
	q := c.q
	q.mu.Lock()
	p := c.tally
	p.Counting = c.scanPos < c.countFrom
	oldestSeq := uint64(0)
	for seq, o := range c.out {
		if oldestSeq == 0 || seq < oldestSeq {
			oldestSeq, p.Oldest = seq, time.Unix(0, o.arrived)
		}
	}
	from, head := c.readPos, q.next
	cached := c.oldest
	q.mu.Unlock()
	if oldestSeq != 0 || p.Messages == 0 && !p.Counting {
		return p
	}
	if cached.seq >= from && cached.seq < head && cached.seq != 0 {
		p.Oldest = time.Unix(0, cached.arrived)
		return p
	}
	seq, arrived, ok := c.firstWanted(from, head)
	if !ok {
		return p
	}
	q.mu.Lock()
	c.oldest = oldestAt{seq, arrived}
	q.mu.Unlock()
	p.Oldest = time.Unix(0, arrived)
	return p
}

// oldestAt remembers the first message the consumer wants that it has
// not read yet.
type oldestAt struct {
	seq     uint64
	arrived int64
}

// firstWanted finds the first stored message in [from, head) that the
// consumer wants and has not acknowledged.
func (c *Consumer) firstWanted(from, head uint64) (seq uint64, arrived int64, ok bool) {
	q := c.q
	_ = q.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = []byte{prefixBatch}
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Seek(seekKey(from)); it.Valid() && !ok; it.Next() {
			b, err := parseBatchKey(it.Item().Key())
			if err != nil || b.first >= head {
				return err
			}
			_ = it.Item().Value(func(val []byte) error {
				return eachRecord(b, val, func(s uint64, rec []byte) bool {
					if s < from || s >= head {
						return s < head
					}
					topic, origin, _, good := decodeRoute(rec)
					if !good || !c.wants(topic, origin) {
						return true
					}
					q.mu.Lock()
					_, acked := c.acked[s]
					q.mu.Unlock()
					if acked {
						return true
					}
					seq, arrived, ok = s, decodeArrived(rec).UnixNano(), true
					return false
				})
			})
		}
		return nil
	})
	return seq, arrived, ok
}
