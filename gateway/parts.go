package gateway

// The bridges and serial ports the gateway runs, one per [[bridge]] and
// [[serial]] entry: how each is built from its entry (newBridge, with its
// queue consumer; newPort, with its serialin options) and run as a task,
// which Run and Reload start and Reload and the shutdown stop.

import (
	"context"
	"fmt"
	"sync"

	"github.com/ralph-gateway/ralph/bridge"
	"github.com/ralph-gateway/ralph/configs"
	"github.com/ralph-gateway/ralph/queue"
	"github.com/ralph-gateway/ralph/serialin"
)

// runningPort is one configured serial port.
type runningPort struct {
	task
	cfg configs.Serial
	p   *serialin.Port
}

// runningBridge is one configured bridge and the consumers it reads with.
type runningBridge struct {
	task
	cfg   configs.Bridge
	b     *bridge.Bridge
	lanes []bridge.Lane
}

// closeLanes unregisters the bridge's consumers: their cursors stay, but
// they no longer hold messages back.
func (rb *runningBridge) closeLanes() {
	for _, l := range rb.lanes {
		l.Consumer.Close()
	}
}

// dropped is how many messages the queue deleted before the bridge
// forwarded them.
func (rb *runningBridge) dropped() uint64 {
	var n uint64
	for _, l := range rb.lanes {
		n += l.Consumer.Dropped()
	}
	return n
}

// purge abandons the bridge's backlog, and returns how many messages
// that was.
func (rb *runningBridge) purge() uint64 {
	var n uint64
	for _, l := range rb.lanes {
		n += l.Consumer.Purge()
	}
	return n
}

// BridgeLanes registers the queue consumers the bridge bc reads through,
// one per priority of its forward rules (bridge.OpenLanes).
func BridgeLanes(q *queue.Queue, bc configs.Bridge) ([]bridge.Lane, error) {
	// Writing the cursor every quarter window keeps the bridge under its
	// resend limit of two windows (bridge.Bridge.resendLimit) while the
	// writes keep up: a window in flight and a quarter acknowledged.
	return bridge.OpenLanes(q, bc.Name, forwardRules(bc), max(1, bc.MaxInflight/4))
}

// task is a bridge's or a serial port's Run, which the gateway starts,
// and stops on reload or shutdown.
type task struct {
	cancel context.CancelFunc // nil until started
	done   chan struct{}
}

// start runs run under parent, counted in wg; g.tasks must be held. Before
// Gateway.Run (parent nil) it does nothing: Run starts every task.
func (t *task) start(parent context.Context, wg *sync.WaitGroup, run func(context.Context)) {
	if parent == nil {
		return
	}
	ctx, cancel := context.WithCancel(parent)
	t.cancel, t.done = cancel, make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(t.done)
		run(ctx)
	}()
}

// stop ends the task and waits for it (a bridge waits briefly for
// in-flight acknowledgements).
func (t *task) stop() {
	if t.cancel != nil {
		t.cancel()
		<-t.done
	}
}

// prepareBridge reads what the bridge bc needs (password and key files,
// TLS material) into the bridge's configuration. It starts nothing, so a
// reload can check a changed bridge before it stops the running one.
func (g *Gateway) prepareBridge(bc configs.Bridge) (bridge.Config, error) {
	bcfg, err := bridgeConfig(bc, g.log)
	if err != nil {
		return bridge.Config{}, fmt.Errorf("gateway: bridge %s: %w", bc.Name, err)
	}
	bcfg.Local = g.broker
	return bcfg, nil
}

// newBridge registers the consumers of the bridge bc, prepared as bcfg
// (prepareBridge). A bridge being replaced must have closed its own: the
// new ones resume where they were (queue.Consumer), and what the old
// bridge had in flight is sent again.
func (g *Gateway) newBridge(bc configs.Bridge, bcfg bridge.Config) (*runningBridge, error) {
	lanes, err := BridgeLanes(g.q, bc)
	if err != nil {
		return nil, fmt.Errorf("gateway: bridge %s: %w", bc.Name, err)
	}
	return &runningBridge{cfg: bc, b: bridge.New(bcfg, lanes), lanes: lanes}, nil
}

func (g *Gateway) newPort(sc configs.Serial) (*runningPort, error) {
	o := serialin.Options{
		Name: sc.Name, ClientID: sc.ClientID(), Path: sc.Path, Baud: sc.Baud,
		TopicPrefix: sc.TopicPrefix, AbsoluteTopics: sc.AbsoluteTopics, User: sc.User,
		StatusTopic: sc.StatusTopic, LogTopic: sc.LogTopic, MaxLine: sc.MaxLine,
		OfflineAfter: sc.OfflineAfter.Duration, Resend: sc.Resend.Duration, Window: sc.Window,
		Dial:   g.broker.Dial,
		Logger: g.log.With("component", "serial"),
	}
	if sc.Path == "" {
		o.Match = &serialin.Match{VID: sc.Match.VID, PID: sc.Match.PID, Serial: sc.Match.Serial}
	}
	p, err := serialin.New(o)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	return &runningPort{cfg: sc, p: p}, nil
}

// startBridge and startPort run rb's bridge and rp's port; g.tasks must
// be held.
func (g *Gateway) startBridge(rb *runningBridge) { rb.start(g.bctx, &g.bwg, rb.b.Run) }
func (g *Gateway) startPort(rp *runningPort) {
	rp.start(g.pctx, &g.pwg, func(ctx context.Context) { rp.p.Run(ctx) })
}

// parts returns the running bridges and serial ports.
func (g *Gateway) parts() ([]*runningBridge, []*runningPort) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.bridges, g.ports
}
