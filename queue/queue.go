// Package queue is Ralph's durable message log: an append-only sequence of
// messages on Badger, read in order by named consumers (one per bridge) that
// acknowledge what they have delivered.
//
// Appends are group-committed: a single writer goroutine takes every append
// waiting at that moment and writes them as one Badger entry (batch.go) in
// one transaction, made durable with one sync call (fsync.go), so
// throughput grows with the number of concurrent appenders instead of
// being capped by the latency of the disk. An append returns (its done is
// called) only after the sync that covers it. Syncs are paced: after an
// idle spell an append is synced at once; under load, what arrives within
// 1/MaxSyncsPerSecond of the last sync joins the next one while others are
// still expected to append, which bounds the sync rate, the wear of an SD
// card, without holding back a publisher that waits for its
// acknowledgements.
//
// Each consumer has a cursor: every message below it has been acknowledged.
// Acknowledgements may arrive out of order; the cursor advances over the
// contiguous acknowledged prefix and is persisted alongside later commits, so
// after a crash a consumer resumes at its cursor and re-reads at most what
// was in flight. A message is deleted once every registered consumer's cursor
// has passed it.
//
// Open survives what a power cut leaves (recovery.go): it sets aside files
// that came back empty, and a database that still does not open is set
// aside whole so that the queue starts, empty, and says so. Opened with
// Options.Inspect, to be read by an operator's command, it changes
// nothing in its directory (inspect.go).
package queue

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/ralph-gateway/ralph/configs"
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
	SyncInterval time.Duration // for Interval; 0: the config's default

	// MaxBytes is the budget for stored messages (their keys and records);
	// 0 means no budget. OnFull says what happens when an append would
	// exceed it.
	MaxBytes int64
	OnFull   FullPolicy
	// MinFree is the free space to leave on the data directory's
	// filesystem: below it, or while it cannot be checked, every append
	// fails with ErrFull, whatever OnFull says, because Badger must not
	// run out of space mid-write. 0 means the config's default; negative
	// disables the check.
	MinFree int64
	// MaxAge deletes messages older than this even if unacknowledged
	// (counted per consumer); 0 keeps them until acknowledged.
	MaxAge time.Duration
	// MaxSyncsPerSecond paces fsyncs with Sync durability: an append that
	// arrives when the disk has been idle is committed and synced at once;
	// under load, what arrives within 1/MaxSyncsPerSecond of the last fsync
	// is gathered into the next one, as long as an origin heard from
	// lately is still expected and the commit holds under 16 KiB (see
	// pacing.go). Each append is still acknowledged only after the fsync
	// that covers it. 0 syncs every commit at once.
	MaxSyncsPerSecond int
	// KeepLocal keeps messages that every consumer has acknowledged (or
	// that no consumer wanted) for this long; 0 deletes them at once.
	KeepLocal time.Duration

	// Inspect opens an existing database only to read it (a stopped
	// gateway's, or a copy set aside in lost+found), and nothing in its
	// directory changes: Badger opens it read-only; there are no commits
	// (appends and KV writes fail with ErrReadOnly; cursors,
	// acknowledgements and purges stay in memory), no deletions, no
	// value-log GC, nothing set aside and no marker written, and a
	// database that does not open is an error. One that Badger must write
	// to before it can be read (its memtable log, after a crash or a
	// power cut; a log in the layout before batches) is copied to a
	// temporary directory (os.TempDir) and the copy read, then removed by
	// Close. See inspect.go.
	Inspect bool

	Logger *slog.Logger
}

// Key layout. Sequence numbers are big-endian so that key order is append
// order.
const (
	prefixBatch  = 'b' // see batch.go
	prefixCursor = 'c' // c<consumer name> → cursor
	prefixMsg    = 'm' // m<seq> → one message's record: the layout before batches (see migrate.go)
	prefixFlush  = 'f' // a placeholder whose drop flushes the memtables (see reclaim)
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

	// writes is held for reading by every write transaction, and for
	// writing by value-log GC. Badger 4.9.6's GC reads the memtables'
	// newest version (DB.MaxVersion, for its fix of its issue 2286) with
	// none of the synchronization a write uses to set it: the race
	// detector caught the two at once in the power-cut test, and on 32-bit
	// boards the read could be torn. Commits wait out a GC run.
	writes sync.RWMutex

	reqs    chan *request
	syncq   chan *written // written batches awaiting fsync (Sync durability)
	kick    chan struct{} // nudges the committer to persist cursors or trim
	gcKick  chan struct{}
	stop    chan struct{}
	stopped chan struct{}
	gcDone  chan struct{}

	intake sync.RWMutex // write-held by Close so no append slips past it
	closed bool         // guarded by intake and mu

	mu             sync.Mutex
	cursorTimer    *time.Timer // pending persist of acked cursors
	pendingCursors []*Consumer // closed consumers whose final cursor is unwritten
	assigned       uint64      // first seq not yet written (owned by the committer)
	next           uint64      // first seq not yet durable (readers may read below it)
	oldest         uint64      // first seq not yet deleted
	bytes          int64       // stored message bytes (keys and records)
	diskLow        bool        // free space under MinFree at the last commit, or unknown
	diskUnknown    string      // why the free space could not be checked at the last commit, if it could not
	sinceReclaim   uint64      // messages deleted since the log was last empty and reclaimed
	lastFullLog    time.Time
	consumers      map[string]*Consumer
	arrived        chan struct{}  // closed and replaced whenever next advances
	saved          chan struct{}  // closed and replaced whenever cursors are written
	scans          sync.WaitGroup // consumers' backlogs being counted (pending.go)
	scanPause      func()         // tests only: called before a count's scan reads each batch

	stats Stats // guarded by mu

	files         *fileSyncer
	syncGap       time.Duration // 1s / MaxSyncsPerSecond; 0 when unpaced
	finishedRound atomic.Uint64 // the last hand-off syncLoop has finished
	lastSync      atomic.Int64  // when the last sync started, Unix nanoseconds

	recovery Recovery // what Open set aside
	scratch  string   // with Inspect, the temporary copy read instead of Dir, removed by Close
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
	Corrupt     uint64 // unreadable records skipped by readers: messages, and KV values (KV.Unreadable)
	Head        uint64 // next sequence number
	Oldest      uint64 // oldest sequence number still stored
	Bytes       int64  // stored message bytes
	DiskLow     bool   // free space was under MinFree at the last commit, or could not be checked
	DiskUnknown bool   // it could not be checked (DiskLow is set, LastError says why)
	LastError   string // the last commit or fsync failure, cleared by a success; first, why the free space cannot be checked, while it cannot
}

type request struct {
	msgs []*Message
	at   time.Time // when it was handed over
	done func(error)
	err  error // set when the request is refused
}

// Open opens (or creates) the queue in opts.Dir.
func Open(opts Options) (*Queue, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	d := configs.Default().Queue
	if opts.SyncInterval <= 0 {
		opts.SyncInterval = d.SyncInterval.Duration
	}
	if opts.MinFree == 0 {
		opts.MinFree = int64(d.MinFree)
	}
	var db *badger.DB
	var rec Recovery
	var scratch string
	var err error
	if opts.Inspect {
		db, scratch, err = openInspect(opts.Dir, opts)
	} else {
		db, rec, err = openDB(opts)
	}
	if err != nil {
		return nil, fmt.Errorf("queue: open %s: %w", opts.Dir, err)
	}
	dir := opts.Dir
	if scratch != "" {
		dir = scratch
	}
	q := &Queue{
		db:        db,
		syncGap:   pacing(opts.MaxSyncsPerSecond),
		files:     newFileSyncer(dir),
		recovery:  rec,
		scratch:   scratch,
		opts:      opts,
		log:       opts.Logger,
		reqs:      make(chan *request, maxBatchMsgs),
		syncq:     make(chan *written, 64),
		kick:      make(chan struct{}, 1),
		gcKick:    make(chan struct{}, 1),
		stop:      make(chan struct{}),
		stopped:   make(chan struct{}),
		gcDone:    make(chan struct{}),
		consumers: make(map[string]*Consumer),
		arrived:   make(chan struct{}),
		saved:     make(chan struct{}),
	}
	if err := q.load(); err != nil {
		db.Close()
		q.removeScratch()
		return nil, fmt.Errorf("queue: open %s: %w", opts.Dir, err)
	}
	// With Inspect, a log to upgrade is a copy's (inspect.go).
	if err := q.migrate(); err != nil {
		q.files.close()
		db.Close()
		q.removeScratch()
		return nil, fmt.Errorf("queue: open %s: upgrading the log: %w", opts.Dir, err)
	}
	q.assigned = q.next
	if opts.Inspect {
		// Nothing commits, nothing is collected.
		close(q.stopped)
		close(q.gcDone)
		return q, nil
	}
	go q.commitLoop()
	go q.gcLoop()
	return q, nil
}

// removeScratch removes the temporary copy that Inspect read, if any.
func (q *Queue) removeScratch() {
	if q.scratch == "" {
		return
	}
	if err := os.RemoveAll(q.scratch); err != nil {
		q.log.Warn("queue: removing the temporary copy", "dir", q.scratch, "err", err)
	}
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
		// Seq 0 means "none" to callers: numbering starts at 1, and keyOldest
		// is written only once something is deleted.
		q.next, q.oldest = max(q.next, 1), max(q.oldest, 1)
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
	if q.opts.Inspect {
		done(ErrReadOnly)
		return
	}
	q.intake.RLock()
	defer q.intake.RUnlock()
	if q.closed {
		done(ErrClosed)
		return
	}
	q.reqs <- &request{msgs: msgs, at: time.Now(), done: done}
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
	s.Head, s.Oldest, s.Bytes, s.DiskLow, s.DiskUnknown = q.next, q.oldest, q.bytes, q.diskLow, q.diskUnknown != ""
	if s.DiskUnknown {
		s.LastError = strings.TrimSuffix(q.diskUnknown+"; "+s.LastError, "; ")
	}
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
	<-q.gcDone // GC must not touch the database once it is closed
	q.scans.Wait()
	q.files.close()
	err := q.db.Close()
	q.removeScratch()
	if err != nil {
		return fmt.Errorf("queue: close %s: %w", q.opts.Dir, err)
	}
	return nil
}
