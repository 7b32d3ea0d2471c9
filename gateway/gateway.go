// Package gateway is Ralph's composition root: it turns a Config into a
// running gateway — the durable queue, the local broker that feeds it and
// one bridge per upstream that drains it — and shuts them down in the
// order that loses nothing.
package gateway

// This file holds the Gateway, its composition (New: the queue, then the
// broker, then the bridges and serial ports, then the HTTP listener) and its
// lifecycle (Run: serving, the $SYS announcements, and the shutdown order).

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/ralph-gateway/ralph/configs"
	"github.com/ralph-gateway/ralph/localbroker"
	"github.com/ralph-gateway/ralph/queue"
)

// Gateway is a configured, running Ralph.
type Gateway struct {
	cfg     *configs.Config
	log     *slog.Logger
	version string
	started time.Time
	q       *queue.Queue
	dbDir   string // the queue's directory, <data_dir>/db
	wear    *wear
	broker  *localbroker.Broker
	httpL   net.Listener  // nil when the endpoint is off
	ready   chan struct{} // closed once Run serves

	// tasks serializes what starts and stops bridges and serial ports:
	// Run's start and shutdown, and Reload. It is held while a stopping
	// bridge drains, so readers of the lists below take mu instead.
	tasks    sync.Mutex
	bctx     context.Context // parent of every bridge's Run; set by Run
	bwg      sync.WaitGroup
	pctx     context.Context
	pwg      sync.WaitGroup
	stopping bool // Run is shutting down: Reload applies nothing

	// mu guards the lists of running parts and the reloadable parts of cfg
	// (users, ACLs), for /status and the like; held only to read or swap.
	mu      sync.Mutex
	bridges []*runningBridge // in config order
	ports   []*runningPort   // serial ports, in config order
}

// New opens the queue in cfg.DataDir, binds the broker's and the HTTP
// endpoint's listeners and prepares the bridges. Nothing is served until
// Run. version is what /status reports.
func New(cfg *configs.Config, log *slog.Logger, version string) (*Gateway, error) {
	g := &Gateway{cfg: cfg, log: log, version: version, started: time.Now(), ready: make(chan struct{}), wear: newWear()}
	dir := filepath.Join(cfg.DataDir, "db")
	g.dbDir = dir
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("gateway: data dir: %w", err)
	}
	durability := queue.Sync
	if cfg.Queue.Durability == "interval" {
		durability = queue.Interval
	}
	onFull := queue.DropOldest
	if cfg.Queue.OnFull == "reject" {
		onFull = queue.Reject
	}
	minFree := int64(cfg.Queue.MinFree)
	if minFree == 0 {
		minFree = -1 // "0" in the config means no check
	}
	q, err := queue.Open(queue.Options{
		Dir:               dir,
		Durability:        durability,
		SyncInterval:      cfg.Queue.SyncInterval.Duration,
		MaxSyncsPerSecond: cfg.Queue.MaxSyncsPerSecond,
		MaxBytes:          int64(cfg.Queue.MaxBytes),
		OnFull:            onFull,
		MinFree:           minFree,
		MaxAge:            cfg.Queue.MaxAge.Duration,
		KeepLocal:         cfg.Queue.KeepLocal.Duration,
		Logger:            log.With("component", "queue"),
	})
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	g.q = q
	if list, err := queue.SetAsides(dir); err == nil {
		for _, sa := range list {
			if !sa.Acknowledged && sa.Path != q.Recovery().DB { // the queue logged that one
				log.Error("queue: a database set aside at an earlier start is not acknowledged: its messages were not forwarded "+
					"(read them with `ralph queue peek --dir`; acknowledge with `ralph queue acknowledge`)", "set_aside", sa.Path, "reason", sa.Reason)
			}
		}
	}
	// What the open itself wrote is not part of the rate.
	g.wear.sample(q.Stats().Syncs)
	extra, err := deviceListeners(cfg.Broker)
	if err != nil {
		q.Close()
		return nil, fmt.Errorf("gateway: %w", err)
	}
	// The broker binds its listeners now but accepts no one until Run.
	g.broker, err = localbroker.New(localbroker.Options{
		Listen:         cfg.Broker.Listen,
		Listeners:      extra,
		Queue:          q,
		MaxPacketSize:  int(cfg.Broker.MaxPacketSize),
		ReceiveMaximum: cfg.Broker.ReceiveMaximum,
		Users:          users(cfg.Broker.Users),
		AllowAnonymous: cfg.Broker.AllowAnonymous,
		Anonymous:      localbroker.ACL(cfg.Broker.Anonymous),
		Limits: localbroker.Limits{
			MaxClients:       cfg.Broker.MaxClients,
			MaxKeepAlive:     cfg.Broker.MaxKeepAlive.Duration,
			MaxTopicLength:   cfg.Broker.MaxTopicLength,
			MaxTopicLevels:   cfg.Broker.MaxTopicLevels,
			MaxMessageExpiry: cfg.Broker.MaxMessageExpiry.Duration,
		},
		Logger: log.With("component", "broker"),
	})
	if err != nil {
		q.Close()
		return nil, fmt.Errorf("gateway: %w", err)
	}
	fail := func(err error) (*Gateway, error) {
		g.broker.Close()
		q.Close()
		return nil, err
	}
	// Consumers register before the broker accepts anything, so no message
	// can be released before every bridge's cursor holds it.
	for _, bc := range cfg.Bridges {
		bcfg, err := g.prepareBridge(bc)
		if err != nil {
			return fail(err)
		}
		rb, err := g.newBridge(bc, bcfg)
		if err != nil {
			return fail(err)
		}
		g.bridges = append(g.bridges, rb)
	}
	for _, w := range cfg.Warnings() {
		log.Warn(w)
	}
	for _, sc := range cfg.Serial {
		rp, err := g.newPort(sc)
		if err != nil {
			return fail(err)
		}
		g.ports = append(g.ports, rp)
	}
	if a := cfg.HTTP.Listen; a != "" {
		if g.httpL, err = net.Listen("tcp", a); err != nil {
			return fail(fmt.Errorf("gateway: http endpoint: %w", err))
		}
	}
	return g, nil
}

// Ready returns once Run serves clients, or with ctx's error.
func (g *Gateway) Ready(ctx context.Context) error {
	select {
	case <-g.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Addrs returns the addresses the local broker listens on.
func (g *Gateway) Addrs() []string { return g.broker.Addrs() }

// Run serves until ctx is done, then shuts down: the bridges wait briefly
// for in-flight acknowledgements, the broker stops accepting and releases
// every message it handed to the queue, and the queue is closed cleanly.
func (g *Gateway) Run(ctx context.Context) error {
	if err := g.broker.Serve(); err != nil {
		g.broker.Close()
		g.q.Close()
		return err
	}
	httpCtx, stopHTTP := context.WithCancel(context.Background())
	httpDone := make(chan struct{})
	if g.httpL != nil {
		go func() { defer close(httpDone); g.serveHTTP(httpCtx, g.httpL) }()
	} else {
		close(httpDone)
	}
	close(g.ready)
	bctx, stopBridges := context.WithCancel(context.Background())
	pctx, stopPorts := context.WithCancel(context.Background())
	g.tasks.Lock()
	g.bctx, g.pctx = bctx, pctx
	bridges, ports := g.parts()
	for _, rb := range bridges {
		g.startBridge(rb)
	}
	for _, rp := range ports {
		g.startPort(rp)
	}
	g.tasks.Unlock()
	g.log.Info("ralph is running", "listen", g.broker.Addrs(), "http", g.cfg.HTTP.Listen, "data_dir", g.cfg.DataDir,
		"bridges", len(bridges), "serial_ports", len(ports))
	sysDone := make(chan struct{})
	go func() { defer close(sysDone); g.announceQueue(ctx) }()
	wearDone := make(chan struct{})
	go func() { defer close(wearDone); g.sampleWear(ctx) }()
	<-ctx.Done()
	<-sysDone
	<-wearDone
	g.log.Info("shutting down")
	stopHTTP()
	<-httpDone
	// Serial ports and bridges first: they announce their state through
	// the broker while it still runs, and bridges wait briefly for
	// in-flight acknowledgements.
	g.tasks.Lock()
	g.stopping = true
	stopPorts()
	g.pwg.Wait()
	stopBridges()
	g.bwg.Wait()
	g.tasks.Unlock()
	err := g.broker.Close()
	if cerr := g.q.Close(); cerr != nil && err == nil {
		err = cerr
	}
	g.log.Info("stopped")
	return err
}

// announceQueue publishes the queue's size on retained $SYS topics (next
// to mochi's $SYS/broker/...) at start and every sysInterval.
func (g *Gateway) announceQueue(ctx context.Context) {
	t := time.NewTicker(sysInterval)
	defer t.Stop()
	for {
		s := g.q.Stats()
		for topic, v := range map[string]int64{
			"$SYS/ralph/queue/messages": int64(s.Head - s.Oldest),
			"$SYS/ralph/queue/bytes":    s.Bytes,
			"$SYS/ralph/queue/dropped":  int64(s.DroppedFull + s.Expired),
		} {
			g.broker.Announce(topic, []byte(strconv.FormatInt(v, 10)))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

const sysInterval = 10 * time.Second
