package main

import (
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// Bounds on what a payload header may claim before the message is counted as
// undecodable instead of growing the trackers without limit.
const (
	maxTrackedPublishers = 1 << 16
	maxTrackedSeq        = 1 << 28
)

// subscriber is one subscribing connection. paho calls onPublish from a
// single goroutine per client, so the counters below need no locking; they
// are read only after the client has been disconnected (Disconnect waits for
// that goroutine to end), except unique, which the drain wait polls.
type subscriber struct {
	idx     int
	client  *paho.Client
	granted byte // QoS granted in the SUBACK

	// unique counts distinct messages with a valid header, and also those
	// without one if countUndecodable (-subscribe-only, where payloads need
	// not come from ralph-bench).
	unique           atomic.Int64
	countUndecodable bool

	maxPub      int // publisher indexes >= maxPub are counted as undecodable
	received    int64
	duplicates  int64
	outOfOrder  int64
	undecodable int64
	first, last time.Time
	e2e         []time.Duration
	pubs        []pubTrack // indexed by publisher
}

// pubTrack follows the sequence numbers received from one publisher.
type pubTrack struct {
	seen []uint64 // bitset of sequence numbers
	last int64    // highest sequence number so far, -1 before the first
}

// newSubscriber prepares a subscriber for publishers publishers of messages
// messages each; with publishers == 0 (subscribe-only mode) any publisher
// index is accepted and expect sizes the latency buffer.
func newSubscriber(idx, publishers, messages int, expect int64) *subscriber {
	s := &subscriber{idx: idx, maxPub: publishers}
	if publishers == 0 {
		s.maxPub = maxTrackedPublishers
	}
	// Preallocated so that recording a latency is an append into spare
	// capacity; -expect only hints (it may be far larger than what arrives).
	s.e2e = make([]time.Duration, 0, max(min(expect, 1<<22), int64(publishers)*int64(messages)))
	s.pubs = make([]pubTrack, publishers)
	for i := range s.pubs {
		s.pubs[i] = pubTrack{seen: make([]uint64, (messages+63)/64), last: -1}
	}
	return s
}

// onPublish is the paho OnPublishReceived callback.
func (s *subscriber) onPublish(pr paho.PublishReceived) (bool, error) {
	now := time.Now()
	if s.received == 0 {
		s.first = now
	}
	s.last = now
	s.received++

	pub, seq, sent, ok := decodeHeader(pr.Packet.Payload)
	if !ok || int(pub) >= s.maxPub || seq >= maxTrackedSeq {
		s.undecodable++
		if s.countUndecodable {
			s.unique.Add(1)
		}
		return true, nil
	}
	for int(pub) >= len(s.pubs) {
		s.pubs = append(s.pubs, pubTrack{last: -1})
	}
	t := &s.pubs[pub]
	w, bit := int(seq/64), uint64(1)<<(seq%64)
	if w >= len(t.seen) {
		t.seen = append(t.seen, make([]uint64, max(w+1-len(t.seen), len(t.seen)))...)
	}
	if t.seen[w]&bit != 0 {
		s.duplicates++
		return true, nil
	}
	t.seen[w] |= bit
	if int64(seq) < t.last {
		s.outOfOrder++
	} else {
		t.last = int64(seq)
	}
	s.e2e = append(s.e2e, max(0, time.Duration(now.UnixNano()-sent)))
	s.unique.Add(1)
	return true, nil
}
