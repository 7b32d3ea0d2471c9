package queue

// One group commit: which appends are accepted, what is deleted to make
// room or because it is done, and the transaction that writes it all.

import (
	"fmt"
	"time"
)

// commit writes one batch of appends together with dirty cursors and due
// deletions, and reports whether it wrote anything. The batch's callbacks
// run once it is durable: here, or, when it returns the batch awaiting its
// fsync, in syncLoop.
func (q *Queue) commit(batch []*request) (*written, bool) {
	// Encode first: the budget is counted in encoded bytes.
	var recs [][]byte
	for _, r := range batch {
		for _, m := range r.msgs {
			recs = append(recs, encodeMessage(nil, m))
		}
	}
	now := time.Now()
	q.mu.Lock()
	cursors := q.dirtyCursorsLocked()
	trimTo := q.lowWaterLocked()
	from, next, bytes := q.oldest, q.next, q.bytes
	q.mu.Unlock()
	q.checkDisk()

	// What goes: acknowledged messages (held for KeepLocal), then expired
	// ones (MaxAge), then, if appends need room, the oldest (DropOldest).
	d := deletion{from: from, to: from}
	if err := q.plan(&d, now, trimTo, next, batch, recs, bytes); err != nil {
		q.log.Error("queue: planning deletions", "err", err)
		d = deletion{from: from, to: from}
	}

	first := q.assigned
	seq := first
	for _, r := range batch {
		if r.err != nil {
			continue
		}
		for _, m := range r.msgs {
			m.Seq = seq
			seq++
		}
	}
	if seq == first && len(cursors) == 0 && d.to == d.from && !hasRefused(batch) {
		return nil, false
	}
	var key, val []byte
	if seq > first {
		key, val = encodeBatch(batch, recs, first, seq-1)
		d.added = int64(len(key) + len(val))
	}
	newBytes := bytes - d.bytes + d.added
	err := q.write(key, val, first, seq, cursors, d, newBytes)

	q.mu.Lock()
	if err != nil {
		for _, c := range cursors {
			c.dirty = true // retry with the next commit
		}
	} else {
		q.assigned = seq
		q.applyDeletionLocked(d, now)
		q.bytes = newBytes
	}
	moreTrim := err == nil && q.lowWaterLocked() > q.oldest
	reclaim := err == nil && q.oldest == q.assigned && q.sinceReclaim >= reclaimAfter
	if reclaim {
		q.sinceReclaim = 0
	}
	q.mu.Unlock()
	if moreTrim {
		q.nudge()
	}
	if reclaim {
		q.reclaim()
	}

	if err == nil && seq > first && q.opts.Durability == Sync {
		// The caller reuses batch's array.
		return &written{batch: append([]*request(nil), batch...), next: seq, vlog: inValueLog(val)}, true
	}
	q.finish(batch, seq, err)
	return nil, err == nil
}

func hasRefused(batch []*request) bool {
	for _, r := range batch {
		if r.err != nil {
			return true
		}
	}
	return false
}

// finish publishes a batch to readers once it is durable (or has failed)
// and calls its callbacks.
func (q *Queue) finish(batch []*request, next uint64, err error) {
	var n, refused uint64
	for _, r := range batch {
		if r.err != nil {
			refused += uint64(len(r.msgs))
		} else {
			n += uint64(len(r.msgs))
		}
	}
	q.mu.Lock()
	q.stats.Rejected += refused
	if err != nil {
		q.stats.Failed += n
		q.stats.LastError = err.Error()
	} else if n > 0 {
		q.stats.LastError = ""
		// A batch whose fsync failed may still be on disk; if a later one
		// succeeds, readers see both: the device was told to resend, so
		// that is a duplicate, never a loss.
		q.next = max(q.next, next)
		q.countAppendedLocked(batch)
		q.stats.Appended += n
		q.stats.Commits++
		if !q.closed {
			close(q.arrived)
			q.arrived = make(chan struct{})
		}
	}
	trim := err == nil && q.lowWaterLocked() > q.oldest
	q.mu.Unlock()
	if trim {
		q.nudge() // what no consumer holds can go
	}
	if err != nil {
		err = fmt.Errorf("queue: append: %w", err)
		q.log.Error("queue: commit failed", "messages", n, "err", err)
	}
	for _, r := range batch {
		if r.err != nil {
			r.done(r.err)
		} else {
			r.done(err)
		}
	}
}

// encodeBatch builds the entry of the messages first..last: the records of
// the requests in batch that were not refused.
func encodeBatch(batch []*request, recs [][]byte, first, last uint64) (key, val []byte) {
	var newest time.Time
	size := 0
	i := 0
	for _, r := range batch {
		for _, m := range r.msgs {
			if r.err == nil {
				size += framedSize(recs[i])
				if m.Arrived.After(newest) {
					newest = m.Arrived
				}
			}
			i++
		}
	}
	val = make([]byte, 0, size)
	i = 0
	for _, r := range batch {
		for range r.msgs {
			if r.err == nil {
				val = appendRecord(val, recs[i])
			}
			i++
		}
	}
	return batchKey(first, last, newest, len(val)), val
}

// write commits one transaction: the batch's entry (if any), the cursors
// and the deletions.
func (q *Queue) write(key, val []byte, first, next uint64, cursors []*Consumer, d deletion, bytes int64) error {
	q.writes.RLock()
	defer q.writes.RUnlock()
	txn := q.db.NewTransaction(true)
	defer txn.Discard()
	if next > first {
		if err := txn.Set(key, val); err != nil {
			return err
		}
		if err := txn.Set(keyNext, uint64Bytes(next)); err != nil {
			return err
		}
	}
	saved := make([]uint64, len(cursors))
	for i, c := range cursors {
		c.q.mu.Lock()
		pos := c.cursor
		c.persisted = pos
		c.q.mu.Unlock()
		if err := txn.Set(c.key(), uint64Bytes(pos)); err != nil {
			return err
		}
		saved[i] = pos
	}
	if d.to > d.from {
		for _, k := range d.keys {
			if err := txn.Delete(k); err != nil {
				return err
			}
		}
		if err := txn.Set(keyOldest, uint64Bytes(d.to)); err != nil {
			return err
		}
	}
	if d.to > d.from || next > first {
		if err := txn.Set(keyBytes, uint64Bytes(uint64(max(bytes, 0)))); err != nil {
			return err
		}
	}
	if err := txn.Commit(); err != nil {
		return err
	}
	if len(cursors) > 0 {
		q.mu.Lock()
		for i, c := range cursors {
			c.saved = max(c.saved, saved[i])
		}
		close(q.saved)
		q.saved = make(chan struct{})
		q.mu.Unlock()
	}
	return nil
}
