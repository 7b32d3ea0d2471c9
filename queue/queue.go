// Package queue is Ralph's durable message log: an append-only sequence of
// messages on Badger, read in order by named consumers (one per bridge) that
// acknowledge what they have delivered.
//
// Appends are group-committed: a single writer goroutine takes every append
// waiting at that moment, writes them in one Badger transaction and makes it
// durable with one fsync, so throughput grows with the number of concurrent
// appenders instead of being capped by the latency of the disk.
//
// Each consumer has a cursor: every message below it has been acknowledged.
// Acknowledgements may arrive out of order; the cursor advances over the
// contiguous acknowledged prefix and is persisted alongside later commits, so
// after a crash a consumer resumes at its cursor and re-reads at most what
// was in flight. A message is deleted once every registered consumer's cursor
// has passed it.
package queue

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Durability says when an append counts as stored.
type Durability int

const (
	// Sync makes every append durable (fsynced) before it is acknowledged.
	Sync Durability = iota
	// Interval acknowledges appends once written and fsyncs every
	// SyncInterval: a power cut loses at most that much, a crash of the
	// process alone loses nothing.
	Interval
)

// ErrClosed is returned for operations on a closed queue.
var ErrClosed = errors.New("queue: closed")

// FullPolicy says what an append does when the queue is at MaxBytes.
type FullPolicy int

const (
	// DropOldest deletes the oldest messages to make room, advancing the
	// consumers that had not yet acknowledged them (counted per consumer).
	DropOldest FullPolicy = iota
	// Reject fails the append with ErrFull and touches nothing stored.
	Reject
)

// ErrFull is returned for appends refused because the queue is at its
// byte budget (with Reject) or the disk is nearly full (always).
var ErrFull = errors.New("queue: full")

// Options configure a Queue. Only Dir is required.
type Options struct {
	Dir          string
	Durability   Durability
	SyncInterval time.Duration // for Interval; default 100ms

	// MaxBytes is the budget for stored messages (their keys and records);
	// 0 means no budget. OnFull says what happens when an append would
	// exceed it.
	MaxBytes int64
	OnFull   FullPolicy
	// MinFree is the free space to leave on the data directory's
	// filesystem: below it every append fails with ErrFull, whatever
	// OnFull says, because Badger must not run out of space mid-write.
	// Default 64 MiB; negative disables the check.
	MinFree int64
	// MaxAge deletes messages older than this even if unacknowledged
	// (counted per consumer); 0 keeps them until acknowledged.
	MaxAge time.Duration
	// MaxSyncsPerSecond paces fsyncs with Sync durability: an append that
	// arrives when the disk has been idle is committed and synced at once;
	// under load, what arrives within 1/MaxSyncsPerSecond of the last fsync
	// is gathered into the next one. Each append is still acknowledged
	// only after the fsync that covers it. 0 syncs every commit at once.
	MaxSyncsPerSecond int
	// KeepLocal keeps messages that every consumer has acknowledged (or
	// that no consumer wanted) for this long; 0 deletes them at once.
	KeepLocal time.Duration

	Logger *slog.Logger
}

// Key layout. Sequence numbers are big-endian so that key order is append
// order.
const (
	prefixBatch  = 'b' // see batch.go
	prefixCursor = 'c' // c<consumer name> → cursor
	prefixMsg    = 'm' // m<seq> → one message's record: the layout before batches (see migrate.go)
)

var keyNext = []byte("xnext")     // first sequence number not yet assigned
var keyOldest = []byte("xoldest") // first sequence number not yet deleted
var keyBytes = []byte("xbytes")   // bytes of stored messages

// Limits on one group commit. Badger refuses a transaction of more than
// 15% of the memtable size (600 KiB with 4 MiB memtables) or of more entries
// than fit that in skiplist nodes (6,553); a commit holds at most
// maxBatchMsgs appends of maxBatchBytes in all, plus maxTrimPerTxn
// acknowledged and maxDropPerTxn dropped deletions, and stays under both.
const (
	maxBatchMsgs  = 2048
	maxBatchBytes = 400 << 10
	maxTrimPerTxn = 1024
	maxDropPerTxn = 2048
)

// A Queue is a durable, ordered message log. It is safe for concurrent use.
type Queue struct {
	db   *badger.DB
	opts Options
	log  *slog.Logger

	reqs    chan *request
	syncq   chan *written // written batches awaiting fsync (Sync durability)
	kick    chan struct{} // nudges the committer to persist cursors or trim
	gcKick  chan struct{}
	stop    chan struct{}
	stopped chan struct{}

	intake sync.RWMutex // write-held by Close so no append slips past it
	closed bool         // guarded by intake and mu

	mu             sync.Mutex
	cursorTimer    *time.Timer // pending persist of acked cursors
	pendingCursors []*Consumer // closed consumers whose final cursor is unwritten
	assigned       uint64      // first seq not yet written (owned by the committer)
	next           uint64      // first seq not yet durable (readers may read below it)
	oldest         uint64      // first seq not yet deleted
	bytes          int64       // stored message bytes (keys and records)
	diskLow        bool        // free space under MinFree at the last commit
	sinceReclaim   uint64      // messages deleted since the log was last empty and reclaimed
	lastFullLog    time.Time
	consumers      map[string]*Consumer
	arrived        chan struct{} // closed and replaced whenever next advances

	stats Stats // guarded by mu

	files   *fileSyncer
	syncGap time.Duration // 1s / MaxSyncsPerSecond; 0 when unpaced

	recovery Recovery // what Open set aside
	dirMu    sync.Mutex
	dirMod   time.Time // the directory's mtime at its last fsync; guarded by dirMu
}

// Stats are counters about the queue since it was opened, and its size.
type Stats struct {
	Appended    uint64 // messages appended
	Commits     uint64 // group commits that stored messages
	SyncRounds  uint64 // times the queue's writes were made durable, each with one sync call or a few
	Syncs       uint64 // sync system calls (fdatasync of log files, fsync of the directory)
	Deleted     uint64 // messages deleted after every consumer acknowledged them
	DroppedFull uint64 // messages deleted unacknowledged to make room (DropOldest)
	Expired     uint64 // messages deleted unacknowledged for MaxAge
	Rejected    uint64 // appends refused with ErrFull
	Reclaims    uint64 // times the space of a drained backlog was given back
	Failed      uint64 // appends that failed otherwise
	Corrupt     uint64 // unreadable records skipped by readers
	Head        uint64 // next sequence number
	Oldest      uint64 // oldest sequence number still stored
	Bytes       int64  // stored message bytes
	DiskLow     bool   // free space was under MinFree at the last commit
	LastError   string // the last commit or fsync failure, cleared by a success
}

type request struct {
	msgs []*Message
	done func(error)
	err  error // set when the request is refused
}

// Open opens (or creates) the queue in opts.Dir.
func Open(opts Options) (*Queue, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.SyncInterval <= 0 {
		opts.SyncInterval = 100 * time.Millisecond
	}
	if opts.MinFree == 0 {
		opts.MinFree = 64 << 20
	}
	db, rec, err := openDB(opts)
	if err != nil {
		return nil, fmt.Errorf("queue: open %s: %w", opts.Dir, err)
	}
	q := &Queue{
		db:        db,
		syncGap:   pacing(opts.MaxSyncsPerSecond),
		files:     newFileSyncer(opts.Dir),
		recovery:  rec,
		opts:      opts,
		log:       opts.Logger,
		reqs:      make(chan *request, maxBatchMsgs),
		syncq:     make(chan *written, 64),
		kick:      make(chan struct{}, 1),
		gcKick:    make(chan struct{}, 1),
		stop:      make(chan struct{}),
		stopped:   make(chan struct{}),
		consumers: make(map[string]*Consumer),
		arrived:   make(chan struct{}),
	}
	if err := q.load(); err != nil {
		db.Close()
		return nil, fmt.Errorf("queue: open %s: %w", opts.Dir, err)
	}
	if err := q.migrate(); err != nil {
		q.files.close()
		db.Close()
		return nil, fmt.Errorf("queue: open %s: upgrading the log: %w", opts.Dir, err)
	}
	q.assigned = q.next
	go q.commitLoop()
	go q.gcLoop()
	return q, nil
}

func pacing(perSecond int) time.Duration {
	if perSecond <= 0 {
		return 0
	}
	return time.Second / time.Duration(perSecond)
}

// load restores the head and tail positions without scanning the log.
func (q *Queue) load() error {
	return q.db.View(func(txn *badger.Txn) error {
		var err error
		if q.next, err = getUint64(txn, keyNext); err != nil {
			return err
		}
		if q.oldest, err = getUint64(txn, keyOldest); err != nil {
			return err
		}
		b, err := getUint64(txn, keyBytes)
		if err != nil {
			return err
		}
		q.bytes = int64(b)
		// keyNext is written in the same transaction as the messages, so the
		// newest batch can only be behind it; check anyway.
		it := txn.NewIterator(badger.IteratorOptions{Reverse: true, PrefetchValues: false})
		defer it.Close()
		it.Seek(append(seekKey(^uint64(0)), 0xff))
		if it.ValidForPrefix([]byte{prefixBatch}) {
			b, err := parseBatchKey(it.Item().Key())
			if err != nil {
				return err
			}
			q.next = max(q.next, b.last+1)
		}
		if q.next == 0 {
			q.next, q.oldest = 1, 1 // seq 0 means "none" to callers
		}
		return nil
	})
}

func getUint64(txn *badger.Txn, key []byte) (uint64, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var v uint64
	err = item.Value(func(b []byte) error {
		if len(b) != 8 {
			return fmt.Errorf("%s: %w", key, errCorrupt)
		}
		v = binary.BigEndian.Uint64(b)
		return nil
	})
	return v, err
}

func uint64Bytes(v uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, v)
}

// Append stores msgs, assigning each its sequence number, and returns once
// they are durable (per the queue's Durability) or ctx is done. If ctx ends
// first the messages may still be stored.
func (q *Queue) Append(ctx context.Context, msgs ...*Message) error {
	errc := make(chan error, 1)
	q.AppendAsync(msgs, func(err error) { errc <- err })
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// AppendAsync hands msgs to the committer and returns at once (blocking only
// while the committer's intake is full). done is called exactly once, when
// the messages are durable or have failed; calls to done happen in the order
// of the AppendAsync calls, on the committer's goroutine, so done must not
// block for long.
func (q *Queue) AppendAsync(msgs []*Message, done func(error)) {
	size := 0
	for _, m := range msgs {
		size += m.size()
	}
	if len(msgs) > maxBatchMsgs || size > maxBatchBytes {
		done(fmt.Errorf("queue: one append of %d messages, %d bytes, exceeds the limit of %d messages, %d bytes", len(msgs), size, maxBatchMsgs, maxBatchBytes))
		return
	}
	q.intake.RLock()
	defer q.intake.RUnlock()
	if q.closed {
		done(ErrClosed)
		return
	}
	q.reqs <- &request{msgs: msgs, done: done}
}

// commitLoop is the single writer: it group-commits appends, persists
// consumer cursors and deletes messages every consumer has acknowledged.
// With Sync durability it hands each written batch to syncLoop, so that the
// next batch is written while the previous one is being fsynced.
func (q *Queue) commitLoop() {
	defer close(q.stopped)
	syncDone := make(chan struct{})
	if q.opts.Durability == Sync {
		go q.syncLoop(syncDone)
	} else {
		close(syncDone)
	}
	var syncTick <-chan time.Time
	if q.opts.Durability == Interval {
		t := time.NewTicker(q.opts.SyncInterval)
		defer t.Stop()
		syncTick = t.C
	}
	// Time alone makes messages due for deletion under MaxAge and KeepLocal.
	var tick <-chan time.Time
	if period := min(max(q.opts.MaxAge, q.opts.KeepLocal)/10, time.Minute); period > 0 {
		t := time.NewTicker(max(period, time.Second))
		defer t.Stop()
		tick = t.C
	}
	unsynced := false
	g := gatherer{q: q, unsynced: &unsynced}
	for {
		g.reset()
		select {
		case r := <-q.reqs:
			g.add(r)
		case <-q.kick:
		case <-tick:
		case <-syncTick:
			if unsynced {
				q.sync()
				unsynced = false
			}
			continue
		case <-q.stop:
			// Intake is closed (q.closed is set), so whatever is queued is all
			// there will be: commit it, then leave.
			g.takeWaiting()
			g.commit()
			g.handOff()
			close(q.syncq)
			<-syncDone
			if err := q.sync(); err != nil {
				q.log.Error("queue: sync on close", "err", err)
			}
			return
		}
		// Take everything else that is waiting: this is the group commit.
		g.takeWaiting()
		// While the next fsync is not yet due, what arrives meanwhile
		// would wait for it anyway: gather it into this commit.
		if len(g.batch) > 0 && q.opts.Durability == Sync {
			g.takeUntil(g.due())
		}
		g.commit()
		g.handOff()
	}
}

// gatherer builds one group commit in the committer, within the limits of
// one transaction: a request that does not fit commits what is gathered
// and opens the next batch.
type gatherer struct {
	q        *Queue
	unsynced *bool
	batch    []*request
	n, size  int

	// Committed batches not yet handed to syncLoop, and when the last
	// were: the pacing clock. A batch committed early (a full
	// transaction) waits here for the next fsync that is due.
	written  []*written
	lastHand time.Time
}

func (g *gatherer) reset() { g.batch, g.n, g.size = g.batch[:0], 0, 0 }

func (g *gatherer) add(r *request) {
	rs := 0
	for _, m := range r.msgs {
		rs += m.size()
	}
	if len(g.batch) > 0 && (g.n+len(r.msgs) > maxBatchMsgs || g.size+rs > maxBatchBytes) {
		g.commit()
		g.reset()
	}
	g.batch = append(g.batch, r)
	g.n += len(r.msgs)
	g.size += rs
}

// takeWaiting adds every request already waiting.
func (g *gatherer) takeWaiting() {
	for {
		select {
		case r := <-g.q.reqs:
			g.add(r)
		default:
			return
		}
	}
}

// takeUntil adds requests as they arrive until deadline.
func (g *gatherer) takeUntil(deadline time.Time) {
	wait := time.Until(deadline)
	if wait <= 0 {
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case r := <-g.q.reqs:
			g.add(r)
		case <-t.C:
			g.takeWaiting()
			return
		case <-g.q.stop:
			return // the stop path commits what is still waiting
		}
	}
}

func (g *gatherer) commit() {
	w, wrote := g.q.commit(g.batch)
	if w != nil {
		g.written = append(g.written, w)
	}
	if wrote && g.q.opts.Durability == Interval {
		*g.unsynced = true
	}
}

// due is when the next fsync may start: at once when the disk has been
// idle, else one pacing interval after the previous one.
func (g *gatherer) due() time.Time { return g.lastHand.Add(g.q.syncGap) }

// handOff passes the committed batches to syncLoop, which syncs them
// together.
func (g *gatherer) handOff() {
	if len(g.written) == 0 {
		return
	}
	for _, w := range g.written {
		g.q.syncq <- w
	}
	g.written = g.written[:0]
	g.lastHand = time.Now()
}

// written is a committed batch of appends awaiting its fsync.
type written struct {
	batch []*request
	next  uint64 // first seq after the batch
}

// syncLoop makes written batches durable: one fsync for every batch
// written since the last one, then their acknowledgements, in order. The
// committer paces what it hands over, so that under load there are at
// most MaxSyncsPerSecond fsyncs a second.
func (q *Queue) syncLoop(done chan<- struct{}) {
	defer close(done)
	var ws []*written
	for w := range q.syncq {
		ws = append(ws[:0], w)
	more:
		for {
			select {
			case w, ok := <-q.syncq:
				if !ok {
					break more
				}
				ws = append(ws, w)
			default:
				break more
			}
		}
		// Sync explicitly rather than with SyncWrites: it covers the value
		// log too and, unlike Badger's own sync on write, reports failure.
		err := q.sync()
		for _, w := range ws {
			q.finish(w.batch, w.next, err)
		}
	}
}

func (q *Queue) sync() error {
	calls, err := q.files.sync()
	if err == nil {
		var synced bool
		synced, err = q.syncDir()
		if synced {
			calls++
		}
	}
	q.mu.Lock()
	q.stats.SyncRounds++
	q.stats.Syncs += uint64(calls)
	q.mu.Unlock()
	if err != nil {
		q.log.Error("queue: fsync failed", "err", err)
	}
	return err
}

// syncDir fsyncs the database directory when files were created, renamed
// or removed in it since its last fsync (its mtime changed): Badger does
// not, and a file whose directory entry is lost is lost with its data.
func (q *Queue) syncDir() (bool, error) {
	q.dirMu.Lock()
	defer q.dirMu.Unlock()
	fi, err := os.Stat(q.opts.Dir)
	if err != nil {
		return false, err
	}
	if fi.ModTime().Equal(q.dirMod) {
		return false, nil
	}
	if err := syncDirs(q.opts.Dir); err != nil {
		return true, err
	}
	q.dirMod = fi.ModTime()
	return true, nil
}

// corrupt counts and logs an unreadable record that a reader skips.
func (q *Queue) corrupt(seq uint64, err error) {
	q.mu.Lock()
	q.stats.Corrupt++
	q.mu.Unlock()
	q.log.Error("queue: skipping an unreadable message (a power cut before it was acknowledged)", "seq", seq, "err", err)
}

// Recovery returns what Open set aside to open the database.
func (q *Queue) Recovery() Recovery { return q.recovery }

// commit writes one batch of appends together with dirty cursors and due
// deletions, and reports whether it wrote messages. The batch's callbacks
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
		return &written{batch: append([]*request(nil), batch...), next: seq}, true
	}
	q.finish(batch, seq, err)
	return nil, err == nil && seq > first
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
	txn := q.db.NewTransaction(true)
	defer txn.Discard()
	if next > first {
		q.files.willWrite(val)
		if err := txn.Set(key, val); err != nil {
			return err
		}
		if err := txn.Set(keyNext, uint64Bytes(next)); err != nil {
			return err
		}
	}
	for _, c := range cursors {
		c.q.mu.Lock()
		pos := c.cursor
		c.persisted = pos
		c.q.mu.Unlock()
		if err := txn.Set(c.key(), uint64Bytes(pos)); err != nil {
			return err
		}
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
	return txn.Commit()
}

// lowWaterLocked is the first sequence number some registered consumer still
// needs; everything below it may be deleted.
func (q *Queue) lowWaterLocked() uint64 {
	low := q.next
	for _, c := range q.consumers {
		if c.cursor < low {
			low = c.cursor
		}
	}
	return low
}

func (q *Queue) dirtyCursorsLocked() []*Consumer {
	out := q.pendingCursors
	q.pendingCursors = nil
	for _, c := range q.consumers {
		if c.dirty {
			c.dirty = false
			out = append(out, c)
		}
	}
	return out
}

// nudge wakes the committer without blocking.
func (q *Queue) nudge() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// Stats returns a snapshot of the queue's counters.
func (q *Queue) Stats() Stats {
	q.mu.Lock()
	defer q.mu.Unlock()
	s := q.stats
	s.Head, s.Oldest, s.Bytes, s.DiskLow = q.next, q.oldest, q.bytes, q.diskLow
	return s
}

// Close commits what is pending, persists cursors and closes the database.
// Appends after Close fail with ErrClosed.
func (q *Queue) Close() error {
	q.intake.Lock()
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		q.intake.Unlock()
		return ErrClosed
	}
	q.closed = true
	for _, c := range q.consumers {
		c.dirty = true
	}
	if q.cursorTimer != nil {
		q.cursorTimer.Stop()
	}
	close(q.arrived) // wake readers; they see closed
	q.mu.Unlock()
	q.intake.Unlock()
	close(q.stop)
	<-q.stopped
	q.files.close()
	if err := q.db.Close(); err != nil {
		return fmt.Errorf("queue: close %s: %w", q.opts.Dir, err)
	}
	return nil
}
