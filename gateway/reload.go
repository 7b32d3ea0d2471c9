package gateway

// Reload and what it needs: the part of a configuration it leaves for a
// restart (reloadable), the users and ACLs it swaps in the broker, and
// the bridges and serial ports it restarts, adds and removes (a bridge's
// replacement is built by newBridge, in parts.go).

import (
	"reflect"

	"github.com/ralph-gateway/ralph/configs"
	"github.com/ralph-gateway/ralph/localbroker"
)

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
