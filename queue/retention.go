package queue

import (
	"encoding/binary"
	"io/fs"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// deletion is what one commit deletes from the front of the log, whole
// batches in three consecutive ranges: [from, ackedTo) acknowledged by
// every consumer, [ackedTo, expiredTo) older than MaxAge, [expiredTo, to)
// dropped to make room for appends.
type deletion struct {
	from, ackedTo, expiredTo, to uint64
	keys                         [][]byte // the batches' keys
	bytes                        int64    // size of what is deleted
	added                        int64    // size of the appends accepted
	// lost are the messages of [ackedTo, to), which some consumer had
	// not acknowledged: they leave its Pending tally (pending.go).
	lost []lostRecord
}

// lostRecord is a message deleted unacknowledged, as a consumer's tally
// needs to know it.
type lostRecord struct {
	seq           uint64
	bytes         int64
	topic, origin string
}

// recordSize is what a message counts against MaxBytes, its batch's key
// aside.
func recordSize(rec []byte) int64 { return int64(framedSize(rec)) }

// plan decides the deletions and which requests in batch are refused.
// Only the committer deletes, so it may read the log's front unlocked.
// It reads keys only: a batch's key says what it holds and how old it is.
func (q *Queue) plan(d *deletion, now time.Time, lowWater, durable uint64, batch []*request, recs [][]byte, bytes int64) error {
	txn := q.db.NewTransaction(false)
	defer txn.Discard()
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixBatch}})
	defer it.Close()
	it.Seek(seekKey(d.from))

	// cur is the batch under the iterator.
	cur := func() (b batchMeta, size int64, ok bool) {
		if !it.Valid() {
			return batchMeta{}, 0, false
		}
		b, err := parseBatchKey(it.Item().Key())
		if err != nil {
			return batchMeta{}, 0, false
		}
		return b, b.size, true
	}
	unacked := false // taking expired or dropped batches, which some consumer wanted
	take := func(b batchMeta, size int64) {
		if unacked {
			d.lost = appendLost(d.lost, it.Item(), b)
		}
		d.to = b.last + 1
		d.keys = append(d.keys, it.Item().KeyCopy(nil))
		d.bytes += size
		it.Next()
	}

	budget := maxTrimPerTxn
	for ; budget > 0; budget-- {
		b, size, ok := cur()
		if !ok || b.last >= lowWater || (q.opts.KeepLocal > 0 && now.Sub(b.newest) < q.opts.KeepLocal) {
			break
		}
		take(b, size)
	}
	d.ackedTo = d.to
	unacked = true
	if q.opts.MaxAge > 0 {
		for ; budget > 0; budget-- {
			b, size, ok := cur()
			if !ok || b.last >= durable || now.Sub(b.newest) < q.opts.MaxAge {
				break
			}
			take(b, size)
		}
	}
	d.expiredTo = d.to

	drops := maxDropPerTxn
	keyCost := int64(batchKeyLen) // the first accepted request brings the batch's key
	i := 0
	for _, r := range batch {
		need := keyCost
		for range r.msgs {
			need += recordSize(recs[i])
			i++
		}
		switch {
		case q.diskLow:
			r.err = ErrFull
		case q.opts.MaxBytes <= 0:
			d.added += need
		default:
			for bytes-d.bytes+d.added+need > q.opts.MaxBytes && q.opts.OnFull == DropOldest && drops > 0 {
				// Only durable messages may go: younger ones are not yet
				// acknowledged to their publishers.
				b, size, ok := cur()
				if !ok || b.last >= durable {
					break
				}
				take(b, size)
				drops--
			}
			if bytes-d.bytes+d.added+need > q.opts.MaxBytes {
				r.err = ErrFull
			} else {
				d.added += need
			}
		}
		if r.err == nil {
			keyCost = 0
		}
	}
	return nil
}

// appendLost adds the records of the batch under item to lost. A record
// that cannot be read is left out: the tally never counted it.
func appendLost(lost []lostRecord, item *badger.Item, b batchMeta) []lostRecord {
	_ = item.Value(func(val []byte) error {
		return eachRecord(b, val, func(seq uint64, rec []byte) bool {
			if topic, origin, payload, ok := decodeRoute(rec); ok {
				lost = append(lost, lostRecord{seq, pendingBytes(topic, payload), topic, origin})
			}
			return true
		})
	})
	return lost
}

// decodeArrived reads the arrival time from the front of a record.
func decodeArrived(b []byte) time.Time {
	if len(b) < 3 || b[0] != recordVersion {
		return time.Time{}
	}
	v, n := binary.Uvarint(b[2:])
	if n <= 0 {
		return time.Time{}
	}
	return time.Unix(0, int64(v))
}

// applyDeletionLocked moves the front of the log past a committed
// deletion: consumers that had not acknowledged what was deleted skip it,
// and the loss is counted and logged (at most every logEvery).
func (q *Queue) applyDeletionLocked(d deletion, now time.Time) {
	if d.to <= d.from {
		return
	}
	q.oldest = d.to
	q.stats.Deleted += d.ackedTo - d.from
	q.stats.Expired += d.expiredTo - d.ackedTo
	q.stats.DroppedFull += d.to - d.expiredTo
	q.sinceReclaim += d.to - d.from
	if d.to-d.from >= gcAfterDeletes {
		q.kickGC()
	}
	for _, c := range q.consumers {
		if c.cursor >= d.to {
			continue
		}
		lost := d.to - c.cursor
		for _, r := range d.lost {
			if _, acked := c.acked[r.seq]; r.seq >= c.cursor && !acked && c.wants(r.topic, r.origin) {
				c.uncountLocked(r.seq, r.bytes)
			}
		}
		for s := range c.acked {
			if s < d.to {
				delete(c.acked, s)
				lost--
			}
		}
		for s := range c.out {
			if s < d.to {
				delete(c.out, s)
			}
		}
		c.dropped += lost
		c.unlogged += lost
		c.cursor = d.to
		c.readPos = max(c.readPos, d.to)
		c.dirty = true
	}
	if now.Sub(q.lastFullLog) < logEvery {
		return
	}
	for _, c := range q.consumers {
		if c.unlogged == 0 {
			continue
		}
		reason := "queue full"
		if q.opts.MaxAge > 0 && d.expiredTo > d.ackedTo {
			reason = "older than max_age or queue full"
		}
		q.log.Warn("queue: dropped unforwarded messages", "consumer", c.name, "dropped", c.unlogged,
			"reason", reason, "bytes", q.bytes, "max_bytes", q.opts.MaxBytes)
		c.unlogged = 0
	}
	q.lastFullLog = now
}

const (
	reclaimAfter   = 100_000
	logEvery       = 10 * time.Second
	gcAfterDeletes = 50_000
	gcEvery        = 5 * time.Minute
)

// checkDisk refreshes diskLow from the filesystem's free space and logs
// the transitions. Free space that cannot be checked (statfs fails) counts
// as less than MinFree: a guard that failed open would acknowledge
// messages a full disk may not store. The failure is logged once, at warn,
// until it changes or goes, and shows in Stats.LastError meanwhile.
func (q *Queue) checkDisk() {
	if q.opts.MinFree < 0 {
		return
	}
	var st syscall.Statfs_t
	var free int64
	var why string // why the free space is unknown
	err := syscall.Statfs(q.opts.Dir, &st)
	if err != nil {
		err = &fs.PathError{Op: "statfs", Path: q.opts.Dir, Err: err}
		why = "cannot check the free space, so new messages are refused: " + err.Error()
	} else {
		free = int64(st.Bavail) * int64(st.Bsize)
	}
	low := err != nil || free < q.opts.MinFree
	q.mu.Lock()
	was, wasWhy := q.diskLow, q.diskUnknown
	q.diskLow, q.diskUnknown = low, why
	q.mu.Unlock()
	switch {
	case why != "":
		if why != wasWhy {
			q.log.Warn("queue: cannot check the free space on the disk: refusing new messages", "dir", q.opts.Dir, "min_free", q.opts.MinFree, "err", err)
		}
	case low && (!was || wasWhy != ""):
		q.log.Error("queue: disk nearly full: refusing new messages", "dir", q.opts.Dir, "free", free, "min_free", q.opts.MinFree)
	case !low && wasWhy != "":
		q.log.Info("queue: the free space can be checked again: accepting messages again", "dir", q.opts.Dir, "free", free)
	case !low && was:
		q.log.Info("queue: disk space back: accepting messages again", "dir", q.opts.Dir, "free", free)
	}
}

func (q *Queue) kickGC() {
	select {
	case q.gcKick <- struct{}{}:
	default:
	}
}

// gcLoop reclaims value-log space. Messages under the value threshold
// live in the LSM tree and are reclaimed by compaction; larger ones sit in
// value-log files that only GC rewrites.
func (q *Queue) gcLoop() {
	defer close(q.gcDone)
	t := time.NewTicker(gcEvery)
	defer t.Stop()
	for {
		select {
		case <-q.stop:
			return
		case <-t.C:
		case <-q.gcKick:
		}
		q.collectValueLog()
	}
}

// collectValueLog runs Badger's value-log GC without risking what a power
// cut would take. GC moves the live values of a file into the current
// value log, records their new places in the memtable, and deletes the
// old file at once, none of it synced: a cut then loses the moved values
// for good. Badger defers the deletion while an iterator is open, so one
// stays open until the moves are fsynced, a file at a time.
func (q *Queue) collectValueLog() {
	for range 16 {
		if !q.collectOne() {
			return
		}
	}
}

// collectOne collects one value-log file and reports whether it did.
func (q *Queue) collectOne() bool {
	txn := q.db.NewTransaction(false)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{0}})
	defer txn.Discard()
	defer it.Close() // deletes the collected file
	q.writes.Lock()
	err := q.db.RunValueLogGC(0.5)
	q.writes.Unlock()
	if err != nil {
		return false
	}
	for q.sync(true) != nil {
		select {
		case <-q.stop:
			return false
		case <-time.After(time.Second):
		}
	}
	return true
}

// reclaim gives back the disk space of a large backlog once it is gone.
// Deleted keys otherwise hold their space until compaction pushes them to
// the last level, which for a drained backlog may be never, and value-log
// GC frees a file only once compactions have counted its values as
// discarded. So: flush the memtables to tables (DropPrefix does, before
// dropping; the prefix it drops here holds one placeholder), then compact
// the whole tree (Flatten), which drops the deleted batches and counts
// their values. DropPrefix of the batches themselves would count nothing:
// it drops a table of batch keys whole, unread. After a drain the tree
// holds keys only, so this is quick. It runs on the committer, with the
// log empty: nothing can be appended meanwhile.
func (q *Queue) reclaim() {
	start := time.Now()
	flush := []byte{prefixFlush}
	q.writes.RLock()
	err := q.db.Update(func(txn *badger.Txn) error { return txn.Set(flush, nil) })
	q.writes.RUnlock()
	if err == nil {
		err = q.db.DropPrefix(flush)
	}
	if err == nil {
		err = q.db.Flatten(1)
	}
	if err != nil {
		q.log.Warn("queue: reclaiming space of deleted messages", "err", err)
		return
	}
	q.mu.Lock()
	q.stats.Reclaims++
	q.mu.Unlock()
	q.log.Info("queue: reclaimed the space of delivered messages", "took", time.Since(start).Round(time.Millisecond))
	q.kickGC()
}
