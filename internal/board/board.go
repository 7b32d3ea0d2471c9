// Package board simulates a board that speaks Ralph's serial line protocol
// (serialin/PROTOCOL.md) on a pseudo-terminal. Tests and the benchmark use
// it in place of an ESP32: Ralph opens the pty's device path as it would
// /dev/ttyUSB0.
package board

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/term"

	"github.com/ralph-gateway/ralph/configs"
	"github.com/ralph-gateway/ralph/serialin/line"
)

// Options configure a simulated board.
type Options struct {
	ID        string        // sent in HELLO; default "sim"
	Link      string        // if set, a symlink to the pty made here (as /dev/serial/by-id does) and removed on Unplug
	Baud      int           // pace writes as a UART at this rate would (10 bits a byte); 0: as fast as the pty takes them
	Resend    time.Duration // QoS 1 publish retransmission; default 2s
	MaxLine   int           // announced in HELLO; default a port's
	NoAutoAck bool          // leave MSGs unacknowledged (to test the gateway's resends)
	// Window is how many QoS 1 publishes may await their ACK; PublishAsync
	// blocks beyond it. Default 16; more than the gateway remembers for
	// duplicate detection (256) would let resends through as new messages.
	Window int
}

// Msg is a message the gateway sent in a MSG frame.
type Msg struct {
	line.Publish
	Dup bool // a resend of one already acknowledged
}

// NAKError is the gateway's refusal of a publish or subscription.
type NAKError struct {
	ID     uint16
	Reason string
}

func (e *NAKError) Error() string { return fmt.Sprintf("NAK %d: %s", e.ID, e.Reason) }

// ErrUnplugged is returned for operations on an unplugged board.
var ErrUnplugged = errors.New("board: unplugged")

// Board is a simulated board.
type Board struct {
	opts     Options
	ptmx     *os.File
	tty      *os.File
	wmu      sync.Mutex
	msgs     chan Msg
	slots    chan struct{}
	done     chan struct{}
	lineFree time.Time // with Baud, when the simulated UART can take the next byte

	mu        sync.Mutex
	boot      uint64 // this run of the board, sent in HELLO
	nextID    uint16
	pending   map[uint16]chan error // publishes and (un)subscriptions awaiting an answer
	granted   map[uint16]int
	acked     []uint16 // last MSG ids acknowledged
	hellos    int      // gateway HELLOs received
	frames    [][]byte // every frame from the gateway, in order
	unplugged bool
	hung      bool
	stalled   chan struct{} // non-nil while the board does not read at all
}

// New creates a board on a new pseudo-terminal.
func New(opts Options) (*Board, error) {
	if opts.ID == "" {
		opts.ID = "sim"
	}
	if opts.Resend == 0 {
		opts.Resend = 2 * time.Second
	}
	if opts.Window == 0 {
		opts.Window = 16
	}
	if opts.MaxLine == 0 {
		opts.MaxLine = configs.DefaultSerial("").MaxLine
	}
	ptmx, tty, err := pty.Open()
	if err != nil {
		return nil, fmt.Errorf("board: open pty: %w", err)
	}
	// Raw until Ralph sets its own mode: no echo, no line editing.
	if _, err := term.MakeRaw(int(tty.Fd())); err != nil {
		ptmx.Close()
		tty.Close()
		return nil, fmt.Errorf("board: raw mode: %w", err)
	}
	b := &Board{opts: opts, ptmx: ptmx, tty: tty, msgs: make(chan Msg, 4096), slots: make(chan struct{}, opts.Window), done: make(chan struct{}),
		pending: make(map[uint16]chan error), granted: make(map[uint16]int), lineFree: time.Now(), boot: rand.Uint64()}
	if opts.Link != "" {
		os.Remove(opts.Link)
		if err := os.Symlink(tty.Name(), opts.Link); err != nil {
			b.Unplug()
			return nil, fmt.Errorf("board: %w", err)
		}
	}
	go b.read()
	return b, nil
}

// Path is the device path Ralph should open.
func (b *Board) Path() string {
	if b.opts.Link != "" {
		return b.opts.Link
	}
	return b.tty.Name()
}

// Msgs delivers the messages the gateway sends, resends of acknowledged
// ones included (marked Dup).
func (b *Board) Msgs() <-chan Msg { return b.msgs }

// Unplug closes the pty, as pulling the USB cable would.
func (b *Board) Unplug() {
	b.mu.Lock()
	if b.unplugged {
		b.mu.Unlock()
		return
	}
	b.unplugged = true
	if b.stalled != nil { // let the reader see the pty close
		close(b.stalled)
		b.stalled = nil
	}
	for id, ch := range b.pending {
		ch <- ErrUnplugged
		delete(b.pending, id)
	}
	b.mu.Unlock()
	if b.opts.Link != "" {
		os.Remove(b.opts.Link)
	}
	b.ptmx.Close()
	b.tty.Close()
	<-b.done
}

// Write sends raw bytes (log lines, garbage, partial frames), paced at
// the board's baud rate.
func (b *Board) Write(p []byte) error {
	b.wmu.Lock()
	defer b.wmu.Unlock()
	if b.opts.Baud > 0 {
		// Pace by the clock, not by sleeping per write: sleeps overshoot.
		due := time.Duration(len(p)*10) * time.Second / time.Duration(b.opts.Baud)
		b.lineFree = maxTime(b.lineFree, time.Now().Add(-time.Second)).Add(due)
		if d := time.Until(b.lineFree); d > 0 {
			time.Sleep(d)
		}
	}
	_, err := b.ptmx.Write(p)
	return err
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Hello sends the board's HELLO and waits for the gateway's.
func (b *Board) Hello(ctx context.Context) error {
	b.mu.Lock()
	n := b.hellos
	b.mu.Unlock()
	b.mu.Lock()
	boot := strconv.FormatUint(b.boot, 16)
	b.mu.Unlock()
	if err := b.Write(line.Hello{Name: b.opts.ID, Firmware: "sim-1", MaxLine: b.opts.MaxLine, Boot: boot}.Append(nil, true)); err != nil {
		return err
	}
	return b.waitFor(ctx, func() bool { return b.hellos > n })
}

func (b *Board) waitFor(ctx context.Context, cond func() bool) error {
	for {
		b.mu.Lock()
		ok, gone := cond(), b.unplugged
		b.mu.Unlock()
		if ok {
			return nil
		}
		if gone {
			return ErrUnplugged
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Reboot makes the board a new run of itself: its next HELLO says so, and
// its message ids start again from 1.
func (b *Board) Reboot() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.boot = rand.Uint64()
	b.nextID = 0
}

// Frames returns every frame received from the gateway so far.
func (b *Board) Frames() [][]byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([][]byte(nil), b.frames...)
}

func (b *Board) newID() uint16 {
	for {
		b.nextID++
		if b.nextID == 0 {
			b.nextID = 1
		}
		if _, busy := b.pending[b.nextID]; !busy {
			return b.nextID
		}
	}
}

// PublishAsync sends a publish and returns its id and a channel that gets
// nil once it is acknowledged (at once for QoS 0), or a *NAKError. A QoS 1
// publish is resent with the same id until answered or ctx is done.
func (b *Board) PublishAsync(ctx context.Context, qos byte, topic string, payload []byte) (uint16, <-chan error) {
	res := make(chan error, 1)
	if qos == 0 {
		res <- b.Write(line.Publish{QoS: 0, Topic: topic, Payload: payload}.Append(nil, "PUB"))
		return 0, res
	}
	select {
	case b.slots <- struct{}{}:
	case <-ctx.Done():
		res <- ctx.Err()
		return 0, res
	}
	b.mu.Lock()
	id := b.newID()
	b.pending[id] = res
	b.mu.Unlock()
	frame := line.Publish{ID: id, QoS: qos, Topic: topic, Payload: payload}.Append(nil, "PUB")
	out := make(chan error, 1)
	b.Write(frame) // here, not in the goroutine: frames go out in call order
	go b.resendUntilAnswered(ctx, id, frame, res, out)
	return id, out
}

func (b *Board) resendUntilAnswered(ctx context.Context, id uint16, frame []byte, res, out chan error) {
	t := time.NewTicker(b.opts.Resend)
	defer t.Stop()
	defer func() { <-b.slots }()
	for {
		select {
		case err := <-res:
			out <- err
			return
		case <-ctx.Done():
			b.mu.Lock()
			delete(b.pending, id)
			b.mu.Unlock()
			out <- ctx.Err()
			return
		case <-t.C:
			b.Write(frame)
		}
	}
}

// Publish sends a publish and waits for its ACK (QoS 1).
func (b *Board) Publish(ctx context.Context, qos byte, topic string, payload []byte) error {
	_, res := b.PublishAsync(ctx, qos, topic, payload)
	return <-res
}

// Subscribe subscribes and returns the granted QoS.
func (b *Board) Subscribe(ctx context.Context, filter string, qos byte) (int, error) {
	return b.subscribe(ctx, line.Subscribe{QoS: qos, Filter: filter}, false)
}

// Unsubscribe unsubscribes.
func (b *Board) Unsubscribe(ctx context.Context, filter string) error {
	_, err := b.subscribe(ctx, line.Subscribe{Filter: filter}, true)
	return err
}

func (b *Board) subscribe(ctx context.Context, s line.Subscribe, unsub bool) (int, error) {
	res := make(chan error, 1)
	b.mu.Lock()
	s.ID = b.newID()
	b.pending[s.ID] = res
	b.mu.Unlock()
	if err := b.Write(s.Append(nil, unsub)); err != nil {
		return 0, err
	}
	select {
	case err := <-res:
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.granted[s.ID], err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Ack acknowledges a MSG (for boards made with NoAutoAck).
func (b *Board) Ack(id uint16) error {
	return b.Write(line.Append(nil, "ACK", strconv.Itoa(int(id))))
}

// Hang makes the board ignore everything the gateway sends, as a board
// stuck in a loop would, until called with false.
func (b *Board) Hang(hung bool) {
	b.mu.Lock()
	b.hung = hung
	b.mu.Unlock()
}

// Stall stops the board reading from the line at all, as a board whose
// firmware hangs on native USB does: the gateway's writes back up. Stall
// with false resumes reading.
func (b *Board) Stall(stall bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case stall && b.stalled == nil:
		b.stalled = make(chan struct{})
	case !stall && b.stalled != nil:
		close(b.stalled)
		b.stalled = nil
	}
}

func (b *Board) waitUnstalled() {
	b.mu.Lock()
	ch := b.stalled
	b.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

// GatewayHellos counts the gateway's HELLO frames.
func (b *Board) GatewayHellos() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.hellos
}

func (b *Board) read() {
	defer close(b.done)
	r := line.NewReader(stallReader{b}, 1<<16)
	for {
		l, err := r.ReadLine()
		if errors.Is(err, line.ErrTooLong) {
			continue
		}
		if err != nil {
			return // the pty is closed: unplugged
		}
		f, err := line.Parse(l)
		if err != nil {
			continue
		}
		b.mu.Lock()
		b.frames = append(b.frames, bytes.Clone(l))
		hung := b.hung
		b.mu.Unlock()
		if !hung {
			b.handle(f)
		}
	}
}

// stallReader reads the pty unless the board is stalled.
type stallReader struct{ b *Board }

func (r stallReader) Read(p []byte) (int, error) {
	r.b.waitUnstalled()
	return r.b.ptmx.Read(p)
}

func (b *Board) answer(id uint16, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ch, ok := b.pending[id]; ok {
		delete(b.pending, id)
		ch <- err
	}
}

func (b *Board) handle(f line.Frame) {
	id := func() uint16 {
		if len(f.Fields) == 0 {
			return 0
		}
		v, _ := line.ParseID(f.Fields[0], true)
		return v
	}
	switch f.Verb {
	case "HELLO":
		b.mu.Lock()
		b.hellos++
		b.mu.Unlock()
	case "ACK", "UNSUBACK":
		b.answer(id(), nil)
	case "SUBACK":
		if len(f.Fields) > 1 {
			g, _ := strconv.Atoi(f.Fields[1])
			b.mu.Lock()
			b.granted[id()] = g
			b.mu.Unlock()
		}
		b.answer(id(), nil)
	case "NAK":
		reason := ""
		if len(f.Fields) > 1 {
			reason = f.Fields[1]
		}
		b.answer(id(), &NAKError{ID: id(), Reason: reason})
	case "PING":
		b.Write(line.Append(nil, "PONG"))
	case "MSG":
		p, err := line.ParsePublish(f)
		if err != nil {
			return
		}
		dup := false
		if p.QoS == 1 {
			b.mu.Lock()
			for _, a := range b.acked {
				dup = dup || a == p.ID
			}
			if !dup && !b.opts.NoAutoAck {
				b.acked = append(b.acked, p.ID)
				if len(b.acked) > 32 {
					b.acked = b.acked[1:]
				}
			}
			b.mu.Unlock()
		}
		b.msgs <- Msg{Publish: p, Dup: dup}
		if p.QoS == 1 && (!b.opts.NoAutoAck || dup) {
			b.Ack(p.ID)
		}
	}
}

// NewT is New for tests: it fails t on error, and unplugs the board when
// the test ends.
func NewT(t testing.TB, o Options) *Board {
	t.Helper()
	b, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Unplug)
	return b
}
