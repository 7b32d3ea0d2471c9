package serialin

// The session core: one open device and the MQTT connection that carries
// its traffic. serve starts the goroutines that read the board's lines and
// write its frames; connected (re)connects to the broker and runs the loop
// that owns the session's state, with its timers. What the loop does with
// a line from the board is in board.go, with a packet from the broker in
// delivery.go; the board's online/offline state is in status.go.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"go.bug.st/serial"

	"github.com/ralph-gateway/ralph/serialin/line"
)

// mqttKeepAlive is the keepalive of the in-process connection; the
// session pings at half of it.
const mqttKeepAlive = 60 * time.Second

// session is one open device: the board on the line and the MQTT
// connection that carries its traffic. One goroutine (loop) owns all of
// its state; readers feed it through channels.
type session struct {
	p   *Port
	out chan<- []byte // frames to write to the board
	dev string
	mq  *mqttConn

	recvMax int // publishes the broker accepts unacknowledged

	pubs     map[uint16]uint64   // QoS 1 publishes being stored: id → content hash
	stale    map[uint16]bool     // of those, the ones sent before the board's last HELLO
	subs     map[uint16]bool     // ids of (un)subscriptions awaiting the broker
	acked    map[uint16]ackEntry // recently acknowledged publishes by id
	ackRing  [ackMemory]ackEntry // the same, oldest first from ackNext
	ackNext  int
	ackSeq   uint64
	down     []*outMsg          // MSGs sent to the board, not yet acked, in the order sent
	waiting  []*outMsg          // MSGs not sent yet: beyond the window, or no room to write
	resuming []*packets.Publish // the broker's resends after a reconnect, until put in order
	fenced   bool               // a PINGREQ marks the end of those resends
	boardMax int                // the board's receive buffer, from its HELLO

	online    bool
	askedName bool // sent an unsolicited HELLO to a board heard without one
	board     string
	firmware  string
	boot      string    // from the board's HELLO
	heard     time.Time // last valid frame
	pinged    time.Time
	mqttPing  time.Time
	logTokens float64
	logTime   time.Time
	logMissed int
}

type lineEvent struct {
	line []byte
	err  error
}

// serve runs a session on an open device until the device fails or ctx is
// done. The MQTT connection is re-established if the broker drops it; the
// device stays open, since reopening it may reset the board.
func (p *Port) serve(ctx context.Context, port serial.Port, dev string) error {
	lines := make(chan lineEvent)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := line.NewReader(liveReader{port, dev, stop}, p.opts.MaxLine)
		for {
			l, err := r.ReadLine()
			ev := lineEvent{err: err}
			if err == nil {
				ev.line = bytes.Clone(l)
			}
			select {
			case lines <- ev:
			case <-stop:
				return
			}
			if err != nil && !errors.Is(err, line.ErrTooLong) {
				return
			}
		}
	}()
	// Frames to the board go through a queue to their own goroutine: a
	// board that stops reading (native USB CDC then blocks the writes)
	// must not stall the session. When the queue is full, frames are
	// dropped; the protocol's resends make up for them.
	out := make(chan []byte, writeQueue)
	written := make(chan struct{})
	go func() {
		defer close(written)
		for {
			select {
			case f := <-out:
				select {
				case <-stop:
					return
				default:
				}
				if _, err := port.Write(f); err != nil {
					p.log.Debug("writing to the board", "err", err)
				}
			case <-stop:
				return
			}
		}
	}()
	defer func() {
		close(stop)
		// A write to a board that does not read may block for good (and
		// closing the device does not end it). The device is closed only
		// after the last write: its descriptor must not be reused under a
		// write still going.
		select {
		case <-written:
			port.Close()
		case <-time.After(2 * time.Second):
			p.log.Warn("a write to the board is stuck (it is not reading); the device will be closed when the write returns")
			go func() { <-written; port.Close() }()
		}
		wg.Wait() // the reader sees stop within livenessCheck
	}()

	s := &session{p: p, out: out, dev: dev, acked: make(map[uint16]ackEntry), logTokens: logBurst}
	s.sayHello()
	for {
		err := s.connected(ctx, lines)
		var gone deviceError
		if errors.As(err, &gone) || ctx.Err() != nil {
			return err
		}
		p.log.Warn("connection to the broker lost; reconnecting", "err", err)
		sleep(ctx, p.opts.Poll)
	}
}

// liveReader reads a serial port and notices when its device node is
// gone. A hangup usually ends a read at once, but not always: a pty whose
// master is held open elsewhere, or an adapter whose driver is slow to
// report the unplug, can leave a read waiting for good.
type liveReader struct {
	port serial.Port
	dev  string
	stop <-chan struct{}
}

const livenessCheck = 500 * time.Millisecond

func (r liveReader) Read(b []byte) (int, error) {
	for {
		n, err := r.port.Read(b)
		if n > 0 || err != nil {
			return n, err
		}
		if _, err := os.Stat(r.dev); err != nil {
			return 0, fmt.Errorf("device node gone: %w", err)
		}
		select {
		case <-r.stop:
			return 0, errStopped
		default:
		}
	}
}

var errStopped = errors.New("serialin: port stopped")

// deviceError is a failure of the serial device, which ends the session.
type deviceError struct{ error }

// connected connects to the broker and runs the session loop until the
// device or the connection fails.
func (s *session) connected(ctx context.Context, lines <-chan lineEvent) error {
	p := s.p
	conn := p.opts.Dial()
	sessionExpiry := uint32(0xFFFFFFFF)
	// The window is kept here, not by the broker: mochi (2.7.9) forgets a
	// message it held back for a client's receive maximum once it sends
	// it, so it would be neither resent nor kept across an unplug.
	recvMax := uint16(65535)
	c := p.connectPacket(p.ClientID())
	c.KeepAlive = uint16(mqttKeepAlive / time.Second)
	c.Properties = &packets.Properties{SessionExpiryInterval: &sessionExpiry, ReceiveMaximum: &recvMax}
	c.WillFlag, c.WillQOS, c.WillRetain = true, 1, true
	c.WillTopic, c.WillMessage, c.WillProperties = p.opts.StatusTopic, s.statusJSON("offline"), &packets.Properties{}
	var err error
	if s.recvMax, err = connect(conn, c); err != nil {
		conn.Close()
		return err
	}
	s.recvMax = min(s.recvMax, 256)
	s.mq = newMQTTConn(conn)
	pkts := make(chan *packets.ControlPacket)
	readErr := make(chan error, 1)
	stop := make(chan struct{})
	go func() {
		for {
			cp, err := packets.ReadPacket(conn)
			if err != nil {
				readErr <- err
				return
			}
			select {
			case pkts <- cp:
			case <-stop:
				return
			}
		}
	}()
	// The broker resends its unacknowledged messages on the new
	// connection, and answers none of the old connection's requests.
	s.pubs, s.stale, s.subs = make(map[uint16]uint64), make(map[uint16]bool), make(map[uint16]bool)
	s.down, s.waiting, s.resuming = nil, nil, nil
	s.mqttPing = time.Now()
	// mochi resends a session's unacknowledged messages on reconnect in an
	// order that is only right to the second. It sends them all before it
	// reads anything from us, so they end at the answer to this PINGREQ;
	// until then messages are held and then sorted by packet id.
	s.fenced = true
	s.mq.send(&packets.Pingreq{})
	if s.online {
		s.publishStatus("online")
	}
	defer func() {
		close(stop)
		s.mq.close()
	}()

	tick := time.NewTicker(min(250*time.Millisecond, p.opts.Resend/2))
	defer tick.Stop()
	for {
		in := lines
		if len(s.pubs) >= s.recvMax {
			in = nil // the queue is behind: stop reading, the board waits
		}
		select {
		case <-ctx.Done():
			s.goOffline("gateway stopping")
			s.mq.send(&packets.Disconnect{ReasonCode: packets.DisconnectNormalDisconnection})
			return ctx.Err()
		case ev := <-in:
			if ev.err != nil {
				if errors.Is(ev.err, line.ErrTooLong) {
					s.p.n.oversize.Add(1)
					s.p.log.Warn("board sent a line over the limit; skipped it", "max_line", p.opts.MaxLine)
					continue
				}
				s.goOffline("device gone")
				s.mq.send(&packets.Disconnect{ReasonCode: packets.DisconnectNormalDisconnection})
				return deviceError{ev.err}
			}
			s.handleLine(ev.line)
		case cp := <-pkts:
			if err := s.handlePacket(cp); err != nil {
				return err
			}
		case err := <-readErr:
			return fmt.Errorf("reading from the broker: %w", err)
		case now := <-tick.C:
			s.timers(now)
		}
	}
}

func (s *session) timers(now time.Time) {
	for _, m := range s.down {
		if now.Sub(m.sent) >= s.p.opts.Resend {
			s.p.n.resent.Add(1)
			s.resend(m, now)
		}
	}
	s.pump(now)
	silent := now.Sub(s.heard)
	if s.online && silent >= s.p.opts.OfflineAfter {
		s.goOffline("board silent")
	}
	if silent >= s.p.opts.OfflineAfter/2 && now.Sub(s.pinged) >= s.p.opts.OfflineAfter/2 {
		s.pinged = now
		s.write(line.Append(nil, "PING"))
	}
	if now.Sub(s.mqttPing) >= mqttKeepAlive/2 {
		s.mqttPing = now
		s.mq.send(&packets.Pingreq{})
	}
}

// writeQueue is how many frames may wait to be written to the board.
const writeQueue = 256

// write queues a frame for the board, or drops it if the board has not
// been reading. A write error means the device is gone; the reader sees
// that too and ends the session.
func (s *session) write(frame []byte) {
	select {
	case s.out <- frame:
	default:
		s.p.n.unwritten.Add(1)
	}
}

// connectPacket is an MQTT 5 CONNECT as the port's user.
func (p *Port) connectPacket(clientID string) *packets.Connect {
	c := &packets.Connect{ProtocolName: "MQTT", ProtocolVersion: 5, ClientID: clientID, Properties: &packets.Properties{}}
	if p.opts.User != "" {
		c.UsernameFlag, c.Username = true, p.opts.User
	}
	return c
}
