// Package gateway is Ralph's composition root: it turns a Config into a
// running gateway — the durable queue, the local broker that feeds it and
// one bridge per upstream that drains it — and shuts them down in the
// order that loses nothing.
package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"sync"
	"time"

	"github.com/ralph-gateway/ralph/bridge"
	"github.com/ralph-gateway/ralph/configs"
	"github.com/ralph-gateway/ralph/localbroker"
	"github.com/ralph-gateway/ralph/queue"
	"github.com/ralph-gateway/ralph/serialin"
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

	mu      sync.Mutex
	bridges []*runningBridge // in config order
	bctx    context.Context  // parent of every bridge's Run; set by Run
	bwg     sync.WaitGroup
	ports   []*runningPort // serial ports, in config order
	pctx    context.Context
	pwg     sync.WaitGroup
}

// runningPort is one configured serial port.
type runningPort struct {
	task
	cfg configs.Serial
	p   *serialin.Port
}

// runningBridge is one configured bridge and the consumer it reads with.
type runningBridge struct {
	task
	cfg  configs.Bridge
	b    *bridge.Bridge
	cons *queue.Consumer
}

// task is a bridge's or a serial port's Run, which the gateway starts,
// and stops on reload or shutdown.
type task struct {
	cancel context.CancelFunc // nil until started
	done   chan struct{}
}

// start runs run under parent, counted in wg; g.mu must be held. Before
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
		Anonymous:      localbroker.ACL{Publish: cfg.Broker.Anonymous.Publish, Subscribe: cfg.Broker.Anonymous.Subscribe},
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
		rb, err := g.newBridge(bc, nil)
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

// deviceListeners builds the TLS and WebSocket listeners.
func deviceListeners(b configs.Broker) ([]localbroker.Listener, error) {
	var out []localbroker.Listener
	for _, l := range b.TLS {
		cert, err := tls.LoadX509KeyPair(l.CertFile, l.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls listener %s: %w", l.Listen, err)
		}
		tc := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
		if l.ClientCAFile != "" {
			pem, err := os.ReadFile(l.ClientCAFile)
			if err != nil {
				return nil, fmt.Errorf("tls listener %s: %w", l.Listen, err)
			}
			tc.ClientCAs = x509.NewCertPool()
			tc.ClientCAs.AppendCertsFromPEM(pem)
			tc.ClientAuth = tls.RequireAndVerifyClientCert
		}
		out = append(out, localbroker.Listener{Kind: "tls", Address: l.Listen, TLS: tc, CertUsername: l.CertUsername})
	}
	for _, l := range b.WebSocket {
		ws := localbroker.Listener{Kind: "ws", Address: l.Listen}
		if l.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(l.CertFile, l.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("websocket listener %s: %w", l.Listen, err)
			}
			ws.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
		}
		out = append(out, ws)
	}
	return out, nil
}

func users(cfg []configs.User) []localbroker.User {
	var out []localbroker.User
	for _, u := range cfg {
		out = append(out, localbroker.User{
			Name:         u.Name,
			PasswordHash: []byte(u.PasswordHash),
			ACL:          localbroker.ACL{Publish: u.Publish, Subscribe: u.Subscribe},
		})
	}
	return out
}

// newBridge prepares a bridge; cons is its existing consumer when the
// bridge is being replaced, or nil to register one.
func (g *Gateway) newBridge(bc configs.Bridge, cons *queue.Consumer) (*runningBridge, error) {
	bcfg, err := bridgeConfig(bc, g.log)
	if err != nil {
		return nil, fmt.Errorf("gateway: bridge %s: %w", bc.Name, err)
	}
	bcfg.Local = g.broker
	if cons == nil {
		// Persisting the cursor every quarter window keeps the re-sends
		// after a crash near one window.
		cons, err = g.q.Consumer("bridge/"+bc.Name, queue.ConsumerOptions{PersistEvery: max(1, bc.MaxInflight/4)})
		if err != nil {
			return nil, fmt.Errorf("gateway: bridge %s: %w", bc.Name, err)
		}
	} else {
		cons.Rewind() // what the old bridge had in flight is sent again
	}
	return &runningBridge{cfg: bc, b: bridge.New(bcfg, cons), cons: cons}, nil
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

// startBridge and startPort run rb's bridge and rp's port; g.mu must be
// held.
func (g *Gateway) startBridge(rb *runningBridge) { rb.start(g.bctx, &g.bwg, rb.b.Run) }
func (g *Gateway) startPort(rp *runningPort) {
	rp.start(g.pctx, &g.pwg, func(ctx context.Context) { rp.p.Run(ctx) })
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

// sampleWear records the storage counters every wearEvery, for the rates
// over the last wearWindow.
func (g *Gateway) sampleWear(ctx context.Context) {
	t := time.NewTicker(wearEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.wear.sample(g.q.Stats().Syncs)
		}
	}
}

// Reload applies a new configuration's bridges and serial ports without
// touching network device connections: bridges and ports whose settings
// changed are restarted (bridges keep their queue cursor, ports their
// board's session), new ones start, removed ones stop. Other changes need
// a restart; they are reported, not applied.
func (g *Gateway) Reload(cfg *configs.Config) {
	for _, w := range cfg.Warnings() {
		g.log.Warn("reload: " + w)
	}
	old, next := reloadable(*g.cfg), reloadable(*cfg)
	if !reflect.DeepEqual(old, next) {
		g.log.Warn("reload: changes outside [[bridge]], [[serial]], users and ACLs (listeners, limits, queue, http, data_dir) need a restart; they are not applied")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if b, nb := g.cfg.Broker, cfg.Broker; !reflect.DeepEqual(b.Users, nb.Users) || !reflect.DeepEqual(b.Anonymous, nb.Anonymous) || b.AllowAnonymous != nb.AllowAnonymous {
		g.broker.SetUsers(users(nb.Users), localbroker.ACL{Publish: nb.Anonymous.Publish, Subscribe: nb.Anonymous.Subscribe}, nb.AllowAnonymous)
		g.log.Info("reload: users and ACLs applied", "users", len(nb.Users))
	}
	g.cfg.Broker.Users, g.cfg.Broker.Anonymous, g.cfg.Broker.AllowAnonymous = cfg.Broker.Users, cfg.Broker.Anonymous, cfg.Broker.AllowAnonymous
	g.reloadPorts(cfg.Serial)
	byName := make(map[string]*runningBridge)
	for _, rb := range g.bridges {
		byName[rb.cfg.Name] = rb
	}
	var bridges []*runningBridge
	for _, bc := range cfg.Bridges {
		rb, ok := byName[bc.Name]
		delete(byName, bc.Name)
		switch {
		case ok && reflect.DeepEqual(rb.cfg, bc):
			bridges = append(bridges, rb)
			continue
		case ok:
			rb.stop()
			nrb, err := g.newBridge(bc, rb.cons)
			if err != nil {
				g.log.Error("reload: bridge not restarted", "bridge", bc.Name, "err", err)
				g.startBridge(rb) // keep the old one
				bridges = append(bridges, rb)
				continue
			}
			g.log.Info("reload: bridge changed, restarted", "bridge", bc.Name)
			rb = nrb
		default:
			nrb, err := g.newBridge(bc, nil)
			if err != nil {
				g.log.Error("reload: bridge not added", "bridge", bc.Name, "err", err)
				continue
			}
			g.log.Info("reload: bridge added", "bridge", bc.Name)
			rb = nrb
		}
		g.startBridge(rb)
		bridges = append(bridges, rb)
	}
	for name, rb := range byName {
		rb.stop()
		rb.cons.Close() // its cursor stays; it no longer holds messages back
		g.log.Info("reload: bridge removed", "bridge", name)
	}
	g.bridges = bridges
}

func bridgeConfig(bc configs.Bridge, log *slog.Logger) (bridge.Config, error) {
	c := bridge.Config{
		Name:           bc.Name,
		ClientID:       bc.ClientID,
		MaxInflight:    bc.MaxInflight,
		KeepAlive:      bc.KeepAlive.Duration,
		ConnectTimeout: bc.ConnectTimeout.Duration,
		ReconnectMin:   bc.ReconnectMin.Duration,
		ReconnectMax:   bc.ReconnectMax.Duration,
		SessionExpiry:  bc.SessionExpiry.Duration,
		MaxRate:        bc.MaxRate,
		StateTopic:     bc.StateTopic,
		PrimaryRetry:   bc.PrimaryRetry.Duration,
		AckTimeout:     bc.AckTimeout.Duration,
		Logger:         log.With("component", "bridge"),
	}
	for _, s := range bc.URLs {
		u, err := url.Parse(s)
		if err != nil {
			panic(fmt.Sprintf("gateway: URL %q passed validation but does not parse: %v", s, err))
		}
		c.URLs = append(c.URLs, u)
	}
	for _, r := range bc.Subscribe {
		c.Subscribe = append(c.Subscribe, bridge.SubRule{
			Filter:      r.Remote,
			StripPrefix: r.StripPrefix,
			LocalPrefix: r.LocalPrefix,
			QoS:         byte(r.QoS),
			Retain:      r.Retain,
		})
	}
	for _, f := range bc.Forward {
		c.Forward = append(c.Forward, bridge.Rule{
			Filter:       f.Local,
			StripPrefix:  f.StripPrefix,
			RemotePrefix: f.RemotePrefix,
			QoS:          byte(f.QoS),
		})
	}
	c.Username = bc.Username
	if bc.Password != "" {
		c.Password = []byte(bc.Password)
	}
	if bc.PasswordFile != "" {
		pw, err := configs.ReadPasswordFile(bc.PasswordFile)
		if err != nil {
			return c, err
		}
		c.Password = []byte(pw)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: bc.ServerName, InsecureSkipVerify: bc.InsecureSkipVerify}
	if bc.CAFile != "" {
		pem, err := os.ReadFile(bc.CAFile)
		if err != nil {
			return c, err
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return c, fmt.Errorf("%s holds no PEM certificate", bc.CAFile)
		}
	}
	if bc.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(bc.CertFile, bc.KeyFile)
		if err != nil {
			return c, err
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	if bc.InsecureSkipVerify {
		log.Warn("bridge: TLS certificate verification is OFF (insecure_skip_verify = true): anyone on the path can read and alter this link", "bridge", bc.Name)
	}
	c.TLS = tc
	return c, nil
}

// Ready returns once Run serves clients, or with ctx's error.
// reloadable is cfg without what Reload applies, to compare with what
// needs a restart.
func reloadable(cfg configs.Config) configs.Config {
	cfg.Bridges, cfg.Serial, cfg.Log = nil, nil, configs.Log{}
	cfg.Broker.Users, cfg.Broker.Anonymous, cfg.Broker.AllowAnonymous = nil, configs.ACL{}, false
	return cfg
}

// reloadPorts restarts changed serial ports, starts new ones and stops
// removed ones; g.mu must be held. A board's session (its subscriptions
// and undelivered messages) belongs to the port's name and survives.
func (g *Gateway) reloadPorts(cfgs []configs.Serial) {
	byName := make(map[string]*runningPort)
	for _, rp := range g.ports {
		byName[rp.cfg.Name] = rp
	}
	var ports []*runningPort
	for _, sc := range cfgs {
		rp, ok := byName[sc.Name]
		delete(byName, sc.Name)
		if ok && reflect.DeepEqual(rp.cfg, sc) {
			ports = append(ports, rp)
			continue
		}
		nrp, err := g.newPort(sc)
		if err != nil {
			g.log.Error("reload: serial port not applied", "port", sc.Name, "err", err)
			if ok {
				ports = append(ports, rp)
			}
			continue
		}
		if ok {
			rp.stop()
			g.log.Info("reload: serial port changed, restarted", "port", sc.Name)
		} else {
			g.log.Info("reload: serial port added", "port", sc.Name)
		}
		g.startPort(nrp)
		ports = append(ports, nrp)
	}
	for name, rp := range byName {
		rp.stop()
		g.log.Info("reload: serial port removed", "port", name)
	}
	g.ports = ports
}

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
	g.mu.Lock()
	g.bctx = bctx
	for _, rb := range g.bridges {
		g.startBridge(rb)
	}
	pctx, stopPorts := context.WithCancel(context.Background())
	g.pctx = pctx
	for _, rp := range g.ports {
		g.startPort(rp)
	}
	g.log.Info("ralph is running", "listen", g.broker.Addrs(), "http", g.cfg.HTTP.Listen, "data_dir", g.cfg.DataDir,
		"bridges", len(g.bridges), "serial_ports", len(g.ports))
	g.mu.Unlock()
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
	g.mu.Lock()
	stopPorts()
	g.pwg.Wait()
	stopBridges()
	g.bwg.Wait()
	g.mu.Unlock()
	err := g.broker.Close()
	if cerr := g.q.Close(); cerr != nil && err == nil {
		err = cerr
	}
	g.log.Info("stopped")
	return err
}
