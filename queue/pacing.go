package queue

// Which appends a commit waits for. Waiting for the pacing interval pays
// only if someone will append meanwhile. A publisher with a window (a QoS
// 1 client with 32 in flight, a serial board, a device that sends one
// message at a time) sends nothing more until it is acknowledged, so a
// commit waits only while some origin heard from lately is neither in it
// nor waiting for an earlier commit's sync: sensors publishing on their own
// clocks keep coming and share the interval's one sync, while a lone
// publisher, or publishers whose windows are all in flight, are not held
// back. Lately is recentSyncs pacing intervals.

import (
	"sync/atomic"
	"time"
)

const recentSyncs = 3

// arrivals tracks the origins of appends by round: a round is what the
// committer hands to syncLoop at once.
type arrivals struct {
	recent   time.Duration
	origins  map[string]*origin
	round    uint64              // the round being gathered
	byRound  map[uint64][]string // the origins of each round not yet acknowledged
	inRound  []string            // the origins of the round being gathered
	acked    uint64              // the last round whose acknowledgements were counted
	finished *atomic.Uint64      // the last round syncLoop finished
	idle     int                 // origins whose appends are all acknowledged
	pruned   time.Time
}

type origin struct {
	at    time.Time // its last append
	round uint64    // the round of its last append
}

func newArrivals(gap time.Duration, finished *atomic.Uint64) *arrivals {
	return &arrivals{recent: recentSyncs * gap, origins: make(map[string]*origin), byRound: make(map[uint64][]string),
		round: 1, finished: finished}
}

// add records an append from o at at, in the round being gathered.
func (a *arrivals) add(o string, at time.Time) {
	st := a.origins[o]
	switch {
	case st == nil:
		st = &origin{}
		a.origins[o] = st
	case st.round == a.round:
		st.at = at
		return
	case st.round <= a.acked:
		a.idle--
	}
	st.at, st.round = at, a.round
	a.inRound = append(a.inRound, o)
}

// handOff closes the round being gathered. It also catches up with the
// rounds acknowledged meanwhile, so that what is kept stays bounded by
// the rounds in flight and the origins heard from lately.
func (a *arrivals) handOff(now time.Time) uint64 {
	r := a.round
	if len(a.inRound) > 0 {
		a.byRound[r] = a.inRound
		a.inRound = nil
	}
	a.round++
	a.update(now)
	return r
}

// othersExpected reports whether some origin heard from lately is idle:
// not in the round being gathered and not waiting for a sync.
func (a *arrivals) othersExpected(now time.Time) bool {
	a.update(now)
	return a.idle > 0
}

// update counts the origins of rounds acknowledged since the last update
// as idle again, and forgets idle origins not heard from lately.
func (a *arrivals) update(now time.Time) {
	for done := a.finished.Load(); a.acked < done; {
		a.acked++
		for _, o := range a.byRound[a.acked] {
			if st := a.origins[o]; st != nil && st.round == a.acked {
				a.idle++
			}
		}
		delete(a.byRound, a.acked)
	}
	if now.Sub(a.pruned) > a.recent/4 {
		for o, st := range a.origins {
			if st.round <= a.acked && now.Sub(st.at) > a.recent {
				delete(a.origins, o)
				a.idle--
			}
		}
		a.pruned = now
	}
}
