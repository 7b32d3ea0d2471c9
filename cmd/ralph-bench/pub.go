package main

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// stampConn wraps a publisher's network connection and stamps each outgoing
// PUBLISH with the payload header (see payload.go).
//
// A publisher runs -inflight goroutines that call paho's blocking Publish
// concurrently, so the order in which they take a sequence number is not the
// order in which their packets reach the wire. To make the per-publisher
// order check meaningful the sequence number and send time are assigned at
// the moment of writing: paho's packets.ControlPacket.WriteTo locks a
// connection that implements sync.Locker around the writes that make up one
// control packet, so stampConn sees every packet whole and in wire order. It
// gathers the pieces, stamps the payload if the packet is a PUBLISH and sends
// the packet with a single Write, as net.Buffers would with writev.
type stampConn struct {
	net.Conn
	pub uint32

	mu  sync.Mutex
	buf []byte
	seq uint32 // sequence number for the next PUBLISH; guarded by mu
}

func newStampConn(c net.Conn, pub int) *stampConn {
	return &stampConn{Conn: c, pub: uint32(pub), buf: make([]byte, 0, 4096)}
}

// Lock implements sync.Locker; paho holds it while writing one packet.
func (c *stampConn) Lock() { c.mu.Lock() }

// Unlock implements sync.Locker.
func (c *stampConn) Unlock() {
	if len(c.buf) > 0 { // never happens with paho's writers; pass it on as is
		_, _ = c.Conn.Write(c.buf)
		c.buf = c.buf[:0]
	}
	c.mu.Unlock()
}

// Write buffers p until a whole control packet has been gathered, then
// stamps and sends it. The caller must hold the lock.
func (c *stampConn) Write(p []byte) (int, error) {
	c.buf = append(c.buf, p...)
	n := packetLen(c.buf)
	if n == 0 || n > len(c.buf) {
		return len(p), nil // need more
	}
	if n > 0 {
		if pl := publishPayload(c.buf[:n]); len(pl) >= headerLen {
			encodeHeader(pl, c.pub, c.seq, time.Now().UnixNano())
			c.seq++
		}
	}
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// published returns how many PUBLISH packets have been written.
func (c *stampConn) published() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return int64(c.seq)
}

// pacer spreads publishes evenly to cap the total rate across all publishers.
// A nil *pacer does not limit.
type pacer struct {
	start    time.Time
	perMsgNs float64
	n        atomic.Int64
}

func newPacer(msgsPerSec float64) *pacer {
	if msgsPerSec <= 0 {
		return nil
	}
	return &pacer{perMsgNs: 1e9 / msgsPerSec}
}

// begin sets the time the first message is due.
func (p *pacer) begin(t time.Time) {
	if p != nil {
		p.start = t
	}
}

// wait blocks until the caller's turn to publish.
func (p *pacer) wait(ctx context.Context) error {
	if p == nil {
		return nil
	}
	k := p.n.Add(1) - 1
	d := time.Until(p.start.Add(time.Duration(float64(k) * p.perMsgNs)))
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// publisher is one publishing connection.
type publisher struct {
	idx     int
	topic   string
	conn    *stampConn
	client  *paho.Client
	connack *paho.Connack

	next   atomic.Int64    // next work item
	ackLat []time.Duration // per work item: Publish call to return; -1 unless it succeeded
	slots  []slotStats
}

// slotStats is what one in-flight slot (goroutine) of a publisher measured.
type slotStats struct {
	acked, errors int64
	first, last   time.Time // first Publish call; last successful return
	err           error     // first error
}

func newPublisher(idx int, topic string, messages int) *publisher {
	lat := make([]time.Duration, messages)
	for i := range lat {
		lat[i] = -1
	}
	return &publisher{idx: idx, topic: fmt.Sprintf("%s/%d", topic, idx), ackLat: lat}
}

// run publishes the publisher's messages using inflight concurrent slots and
// returns when all have been acknowledged (or have failed), or ctx is done.
func (p *publisher) run(ctx context.Context, inflight int, qos byte, size int, pace *pacer) {
	p.slots = make([]slotStats, inflight)
	var wg sync.WaitGroup
	for i := range p.slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.slot(ctx, &p.slots[i], qos, size, pace)
		}()
	}
	wg.Wait()
}

func (p *publisher) slot(ctx context.Context, st *slotStats, qos byte, size int, pace *pacer) {
	// The header is stamped into the copy on the wire (stampConn), so the
	// buffer can be reused as is for every message.
	msg := &paho.Publish{Topic: p.topic, QoS: qos, Payload: make([]byte, size)}
	for ctx.Err() == nil {
		n := p.next.Add(1) - 1
		if n >= int64(len(p.ackLat)) {
			return
		}
		if pace.wait(ctx) != nil {
			return
		}
		t0 := time.Now()
		if st.first.IsZero() {
			st.first = t0
		}
		resp, err := p.client.Publish(ctx, msg)
		t1 := time.Now()
		if err == nil && resp != nil && resp.ReasonCode >= 0x80 {
			err = fmt.Errorf("publish refused: reason code 0x%02x", resp.ReasonCode)
		}
		if err != nil {
			st.errors++
			if st.err == nil {
				st.err = err
			}
			continue
		}
		st.acked++
		st.last = t1
		p.ackLat[n] = t1.Sub(t0)
	}
}
