// Package serialin connects boards on USB serial ports (ESP32s, typically)
// to the local broker.
//
// Each configured port is served by a Port. It finds the device, by path or
// by USB VID/PID/serial number, opens it without resetting the board, and
// speaks the line protocol of PROTOCOL.md with it. The board's publishes and
// subscriptions travel over an in-process MQTT 5 connection to the broker
// with a persistent session, under the client id its Options give (the
// gateway gives "serial-<name>"), so a serial board is an MQTT client like
// any other: its QoS 1 publishes are acked only once durable, the ACL of
// the port's user applies, and QoS 1 messages for its subscriptions wait
// in its session while it is unplugged.
// The protocol's message ids are the MQTT packet ids on that connection.
package serialin

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.bug.st/serial"
	"go.bug.st/serial/enumerator"

	"github.com/ralph-gateway/ralph/configs"
	"github.com/ralph-gateway/ralph/internal/topic"
)

// Options configure a Port. Name, ClientID, one of Path and Match,
// TopicPrefix and Dial are required.
type Options struct {
	Name string
	// ClientID is the MQTT client id the board appears as. The caller
	// gives it: the gateway gives "serial-<name>".
	ClientID string

	Path  string // device path, e.g. /dev/ttyUSB0 or a /dev/serial/by-id link
	Match *Match // or: the USB device to look for
	Baud  int    // zero values here: the configuration's defaults

	TopicPrefix    string // prepended to the board's topics, e.g. "devices/kitchen/"
	AbsoluteTopics bool   // allow topics starting with "/" to escape the prefix
	User           string // whose ACL applies; "" for the anonymous ACL
	StatusTopic    string // retained online/offline state; default configs.StatusTopic(TopicPrefix)
	LogTopic       string // if set, the board's log lines are published here (QoS 0)

	MaxLine      int           // longest line accepted or sent
	OfflineAfter time.Duration // silence after which the board is offline
	Resend       time.Duration // MSG retransmission interval
	Window       int           // unacknowledged QoS 1 MSGs per board
	Poll         time.Duration // how often to look for an absent device; default 1s

	// Dial connects to the broker; see localbroker.Broker.Dial.
	Dial   func() net.Conn
	Logger *slog.Logger
}

// Match selects a USB serial device by its descriptor. Empty fields match
// anything; hex ids compare without regard to case.
type Match struct {
	VID, PID, Serial string
}

func (m *Match) matches(d *enumerator.PortDetails) bool {
	return d.IsUSB &&
		(m.VID == "" || strings.EqualFold(m.VID, d.VID)) &&
		(m.PID == "" || strings.EqualFold(m.PID, d.PID)) &&
		(m.Serial == "" || m.Serial == d.SerialNumber)
}

func (m *Match) String() string {
	s := "vid=" + cmp.Or(m.VID, "*") + " pid=" + cmp.Or(m.PID, "*")
	if m.Serial != "" {
		s += " serial=" + m.Serial
	}
	return s
}

// Counters are a port's frame and message counts since Ralph started.
type Counters struct {
	FramesOK    uint64 // valid frames from the board
	BadChecksum uint64 // frames dropped for a CRC mismatch
	Malformed   uint64 // frames dropped for a bad verb or field
	Oversize    uint64 // lines over MaxLine, skipped
	LogLines    uint64 // lines that were board log output
	Duplicates  uint64 // resent publishes acked without storing them again
	Published   uint64 // publishes stored (QoS 1 acked, QoS 0 handed over)
	Delivered   uint64 // MSGs acknowledged by the board (or sent, for QoS 0)
	Resent      uint64 // MSG retransmissions
	TooLong     uint64 // messages too long for the board's line, dropped
	Unwritten   uint64 // frames dropped because the board was not reading (resends follow)
	NAKs        map[string]uint64
}

// Status is a port's state.
type Status struct {
	Name     string    `json:"name"`
	Device   string    `json:"device,omitempty"` // the path opened; "" while absent
	Present  bool      `json:"present"`          // the device is open
	Online   bool      `json:"online"`           // the board has been heard within OfflineAfter
	Board    string    `json:"board,omitempty"`  // from its HELLO
	Firmware string    `json:"firmware,omitempty"`
	Since    time.Time `json:"since"` // of the last change of Present or Online
	Counters Counters  `json:"counters"`
}

// Port serves one configured serial port.
type Port struct {
	opts Options
	log  *slog.Logger

	mu     sync.Mutex
	status Status

	n    counts
	naks sync.Map // reason → *atomic.Uint64
}

// counts are the Counters as the port keeps them.
type counts struct {
	frames, badCRC, malformed, oversize, logLines atomic.Uint64
	dups, published, delivered, resent            atomic.Uint64
	tooLong, unwritten                            atomic.Uint64
}

// New checks opts and returns a Port; Run serves it.
func New(opts Options) (*Port, error) {
	if opts.Name == "" {
		return nil, errors.New("serialin: a port needs a name")
	}
	if opts.ClientID == "" {
		return nil, fmt.Errorf("serialin: port %s: no MQTT client id", opts.Name)
	}
	if (opts.Path == "") == (opts.Match == nil) {
		return nil, fmt.Errorf("serialin: port %s: set either a path or a match", opts.Name)
	}
	if opts.Dial == nil {
		return nil, fmt.Errorf("serialin: port %s: no broker to dial", opts.Name)
	}
	if opts.TopicPrefix != "" {
		if err := topic.ValidateName(opts.TopicPrefix); err != nil {
			return nil, fmt.Errorf("serialin: port %s: topic prefix %q: %w", opts.Name, opts.TopicPrefix, err)
		}
	}
	// Zero values: the configuration's defaults.
	d := configs.DefaultSerial(opts.Name)
	opts.Baud = cmp.Or(opts.Baud, d.Baud)
	opts.StatusTopic = cmp.Or(opts.StatusTopic, configs.StatusTopic(opts.TopicPrefix))
	opts.MaxLine = cmp.Or(opts.MaxLine, d.MaxLine)
	opts.OfflineAfter = cmp.Or(opts.OfflineAfter, d.OfflineAfter.Duration)
	opts.Resend = cmp.Or(opts.Resend, d.Resend.Duration)
	opts.Window = cmp.Or(opts.Window, d.Window)
	opts.Poll = cmp.Or(opts.Poll, time.Second)
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	p := &Port{opts: opts, log: opts.Logger.With("port", opts.Name)}
	p.status = Status{Name: opts.Name, Since: time.Now()}
	return p, nil
}

// Name returns the port's configured name.
func (p *Port) Name() string { return p.opts.Name }

// ClientID is the MQTT client id the port's board appears as.
func (p *Port) ClientID() string { return p.opts.ClientID }

// Status returns the port's state and counters.
func (p *Port) Status() Status {
	p.mu.Lock()
	s := p.status
	p.mu.Unlock()
	s.Counters = Counters{
		FramesOK: p.n.frames.Load(), BadChecksum: p.n.badCRC.Load(), Malformed: p.n.malformed.Load(),
		Oversize: p.n.oversize.Load(), LogLines: p.n.logLines.Load(), Duplicates: p.n.dups.Load(),
		Published: p.n.published.Load(), Delivered: p.n.delivered.Load(), Resent: p.n.resent.Load(),
		TooLong: p.n.tooLong.Load(), Unwritten: p.n.unwritten.Load(), NAKs: map[string]uint64{},
	}
	p.naks.Range(func(k, v any) bool {
		s.Counters.NAKs[k.(string)] = v.(*atomic.Uint64).Load()
		return true
	})
	return s
}

func (p *Port) countNAK(reason string) {
	v, _ := p.naks.LoadOrStore(reason, new(atomic.Uint64))
	v.(*atomic.Uint64).Add(1)
}

func (p *Port) setStatus(f func(*Status)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(&p.status)
}

// Run serves the port until ctx is done: it waits for the device, serves
// it while it is there, and waits for it again when it goes.
func (p *Port) Run(ctx context.Context) error {
	announced, lastOpenErr := false, ""
	// wait marks the board offline the first time it cannot be reached (a
	// status left "online" by a crash would otherwise stay), then waits.
	wait := func() {
		if !announced {
			p.announceAbsent()
			announced = true
		}
		sleep(ctx, p.opts.Poll)
	}
	for ctx.Err() == nil {
		dev, err := p.find()
		if err != nil {
			if !announced {
				p.log.Warn("serial device not present; waiting for it", "want", p.want(), "err", err)
			}
			wait()
			continue
		}
		port, err := p.open(dev)
		if err != nil {
			// Said once per cause, not at every poll: a device held by
			// another program (ModemManager, a serial monitor) may stay so.
			if msg := err.Error(); msg != lastOpenErr {
				p.log.Warn("cannot open serial device; retrying", "device", dev, "err", err)
				lastOpenErr = msg
			}
			wait()
			continue
		}
		announced, lastOpenErr = true, ""
		p.log.Info("serial device connected", "device", dev)
		p.setStatus(func(s *Status) { s.Present, s.Device, s.Since = true, dev, time.Now() })
		err = p.serve(ctx, port, dev) // and closes port
		p.setStatus(func(s *Status) { s.Present, s.Online, s.Device, s.Since = false, false, "", time.Now() })
		if ctx.Err() == nil {
			p.log.Warn("serial device gone", "device", dev, "err", err)
			sleep(ctx, p.opts.Poll)
		}
	}
	return nil
}

func (p *Port) want() string {
	if p.opts.Path != "" {
		return p.opts.Path
	}
	return p.opts.Match.String()
}

// find returns the device path to open, if the device is there.
func (p *Port) find() (string, error) {
	if p.opts.Path != "" {
		if _, err := os.Stat(p.opts.Path); err != nil {
			return "", err
		}
		return p.opts.Path, nil
	}
	ports, err := enumerator.GetDetailedPortsList()
	if err != nil {
		return "", fmt.Errorf("listing serial ports: %w", err)
	}
	for _, d := range ports {
		if p.opts.Match.matches(d) {
			return d.Name, nil
		}
	}
	return "", fmt.Errorf("no USB serial device with %s", p.opts.Match)
}

// open opens dev with DTR and RTS deasserted, so that an ESP32's
// auto-reset circuit does not reboot the board. Pseudo-terminals (and some
// adapters) have no modem lines; they are opened without touching them.
func (p *Port) open(dev string) (serial.Port, error) {
	mode := &serial.Mode{BaudRate: p.opts.Baud, InitialStatusBits: &serial.ModemOutputBits{}}
	port, err := serial.Open(dev, mode)
	if err != nil {
		mode.InitialStatusBits = nil
		var err2 error
		if port, err2 = serial.Open(dev, mode); err2 != nil {
			return nil, err
		}
		p.log.Debug("device has no modem control lines; DTR/RTS left alone", "device", dev, "err", err)
	}
	if err := port.SetReadTimeout(livenessCheck); err != nil {
		port.Close()
		return nil, err
	}
	return port, nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Device is a USB serial device present on the system.
type Device struct {
	Path    string // e.g. /dev/ttyUSB0
	ByID    string // its stable /dev/serial/by-id link, if any
	VID     string
	PID     string
	Serial  string
	Product string
}

// Devices lists the USB serial devices present, to help write a port's
// path or match.
func Devices() ([]Device, error) {
	ports, err := enumerator.GetDetailedPortsList()
	if err != nil {
		return nil, fmt.Errorf("serialin: listing serial ports: %w", err)
	}
	byID := map[string]string{}
	if links, err := filepath.Glob("/dev/serial/by-id/*"); err == nil {
		for _, l := range links {
			if target, err := filepath.EvalSymlinks(l); err == nil {
				byID[target] = l
			}
		}
	}
	var out []Device
	for _, d := range ports {
		if !d.IsUSB {
			continue
		}
		out = append(out, Device{Path: d.Name, ByID: byID[d.Name], VID: strings.ToLower(d.VID), PID: strings.ToLower(d.PID),
			Serial: d.SerialNumber, Product: d.Product})
	}
	return out, nil
}
