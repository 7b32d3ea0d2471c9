package queue

// The committer: one goroutine gathers appends into group commits, and,
// with Sync durability, a second makes them durable. A commit waits for
// the pacing interval only while it is worth it (pacing.go): for sensors
// that publish on their own clocks, at most MaxSyncsPerSecond sync rounds
// a second.

import "time"

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
	// What no append's sync covers (everything with Interval; cursors and
	// deletions with Sync) is synced on a tick. With Sync this bounds what
	// a power cut takes of the bridges' progress: after one, a bridge
	// resends at most what was acknowledged upstream in the last
	// stateSyncEvery, on top of its window.
	syncEvery := stateSyncEvery
	if q.opts.Durability == Interval {
		syncEvery = q.opts.SyncInterval
	}
	st := time.NewTicker(syncEvery)
	defer st.Stop()
	syncTick := st.C
	// Time alone makes messages due for deletion under MaxAge and KeepLocal.
	var tick <-chan time.Time
	if period := min(max(q.opts.MaxAge, q.opts.KeepLocal)/10, time.Minute); period > 0 {
		t := time.NewTicker(max(period, time.Second))
		defer t.Stop()
		tick = t.C
	}
	g := gatherer{q: q}
	if q.opts.Durability == Sync && q.syncGap > 0 {
		g.arrivals = newArrivals(q.syncGap, &q.finishedRound)
	}
	for {
		g.reset()
		select {
		case r := <-q.reqs:
			g.add(r)
		case <-q.kick:
		case <-tick:
		case <-syncTick:
			// A sync that started after the first unsynced write covers it.
			if !g.unsynced.IsZero() && q.lastSync.Load() < g.unsynced.UnixNano() {
				q.sync(q.opts.Durability == Interval)
			}
			g.unsynced = time.Time{}
			continue
		case <-q.stop:
			// Intake is closed (q.closed is set), so whatever is queued is all
			// there will be: commit it, then leave.
			g.takeWaiting()
			g.commit()
			g.handOff()
			close(q.syncq)
			<-syncDone
			if err := q.sync(true); err != nil {
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
	unsynced time.Time // the first write no sync covers yet
	batch    []*request
	n, size  int

	// Committed batches not yet handed to syncLoop, and when the last
	// were: the pacing clock. A batch committed early (a full
	// transaction) waits here for the next fsync that is due.
	written  []*written
	lastHand time.Time

	arrivals *arrivals // who has been appending (pacing.go); nil when unpaced
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
	if g.arrivals != nil {
		for _, m := range r.msgs {
			g.arrivals.add(m.Origin, r.at)
		}
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

// takeUntil adds requests as they arrive until deadline, or until no one
// else is expected (see pacing.go). What a publisher sends meanwhile
// beyond its first append (the rest of its window) joins the next commit,
// which is written while this one syncs.
func (g *gatherer) takeUntil(deadline time.Time) {
	wait := time.Until(deadline)
	if wait <= 0 || g.arrivals == nil || g.size >= amortized || !g.arrivals.othersExpected(time.Now()) {
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case r := <-g.q.reqs:
			g.add(r)
			if g.size >= amortized || !g.arrivals.othersExpected(r.at) {
				g.takeWaiting()
				return
			}
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
	} else if wrote && g.unsynced.IsZero() {
		g.unsynced = time.Now()
	}
}

// amortized is what a commit may hold before it stops waiting for the
// pacing interval: the few pages and the journal commit a sync writes
// beside it (about 16 KiB on ext4) then cost no more than the messages
// themselves, and waiting longer would only slow a heavy load down.
const amortized = 16 << 10

// stateSyncEvery is how often, with Sync durability, cursors and
// deletions that no append's sync has covered are synced.
const stateSyncEvery = time.Second

// due is when the next fsync may start: at once when the disk has been
// idle, else one pacing interval after the previous one.
func (g *gatherer) due() time.Time { return g.lastHand.Add(g.q.syncGap) }

// handOff passes the committed batches to syncLoop, which syncs them
// together.
func (g *gatherer) handOff() {
	if len(g.written) == 0 {
		return
	}
	var round uint64
	if g.arrivals != nil {
		round = g.arrivals.handOff(time.Now())
	}
	for _, w := range g.written {
		w.round = round
		g.q.syncq <- w
	}
	g.written = g.written[:0]
	g.lastHand = time.Now()
}

// written is a committed batch of appends awaiting its fsync.
type written struct {
	batch []*request
	next  uint64 // first seq after the batch
	round uint64 // the committer's hand-off it was part of
	vlog  bool   // its entry went to the value log
}

// syncLoop makes written batches durable: one sync round for every batch
// written since the last one, then their acknowledgements, in order. The
// committer paces what it hands over.
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
		vlog := false
		for _, w := range ws {
			vlog = vlog || w.vlog
		}
		err := q.sync(vlog)
		for _, w := range ws {
			q.finish(w.batch, w.next, err)
			q.finishedRound.Store(w.round)
		}
	}
}

// sync makes every write so far durable; vlog says whether any of those
// it must cover went to the value log.
func (q *Queue) sync(vlog bool) error {
	q.lastSync.Store(time.Now().UnixNano())
	calls, err := q.files.sync(vlog)
	q.mu.Lock()
	q.stats.SyncRounds++
	q.stats.Syncs += uint64(calls)
	q.mu.Unlock()
	if err != nil {
		q.log.Error("queue: fsync failed", "err", err)
	}
	return err
}
