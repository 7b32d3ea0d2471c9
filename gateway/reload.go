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

// Reload applies a new configuration's users, ACLs, bridges and serial
// ports without touching network device connections: bridges and ports
// whose settings changed are restarted (bridges keep their queue cursor,
// ports their board's session), new ones start, removed ones stop. The
// log level is the caller's to apply (it owns the logger). Other changes
// need a restart; they are reported, not applied.
//
// A stopping bridge waits up to a few seconds for its in-flight messages:
// meanwhile /status, /healthz and /metrics still answer, showing the parts
// as they were until the new ones replace them.
func (g *Gateway) Reload(cfg *configs.Config) {
	for _, w := range cfg.Warnings() {
		g.log.Warn("reload: " + w)
	}
	g.tasks.Lock()
	defer g.tasks.Unlock()
	if g.stopping {
		g.log.Warn("reload: shutting down; not applied")
		return
	}
	if !reflect.DeepEqual(reloadable(*g.cfg), reloadable(*cfg)) {
		g.log.Warn("reload: changes outside [[bridge]], [[serial]], users, ACLs and log.level (listeners, limits, queue, http, data_dir, log.format) need a restart; they are not applied")
	}
	g.mu.Lock()
	b, nb := g.cfg.Broker, cfg.Broker
	g.cfg.Broker.Users, g.cfg.Broker.Anonymous, g.cfg.Broker.AllowAnonymous = nb.Users, nb.Anonymous, nb.AllowAnonymous
	g.mu.Unlock()
	if !reflect.DeepEqual(b.Users, nb.Users) || !reflect.DeepEqual(b.Anonymous, nb.Anonymous) || b.AllowAnonymous != nb.AllowAnonymous {
		g.broker.SetUsers(users(nb.Users), localbroker.ACL(nb.Anonymous), nb.AllowAnonymous)
		g.log.Info("reload: users and ACLs applied", "users", len(nb.Users))
	}
	oldBridges, oldPorts := g.parts()
	ports := g.reloadPorts(oldPorts, cfg.Serial)
	bridges := g.reloadBridges(oldBridges, cfg.Bridges)
	g.mu.Lock()
	g.bridges, g.ports = bridges, ports
	g.mu.Unlock()
}

// reloadBridges restarts changed bridges, starts new ones and stops
// removed ones, and returns the bridges to run; g.tasks must be held.
func (g *Gateway) reloadBridges(running []*runningBridge, cfgs []configs.Bridge) []*runningBridge {
	byName := make(map[string]*runningBridge)
	for _, rb := range running {
		byName[rb.cfg.Name] = rb
	}
	var bridges []*runningBridge
	for _, bc := range cfgs {
		rb, ok := byName[bc.Name]
		delete(byName, bc.Name)
		switch {
		case ok && reflect.DeepEqual(rb.cfg, bc):
			bridges = append(bridges, rb)
			continue
		case ok:
			g.log.Info("reload: bridge changed, stopping it", "bridge", bc.Name, "inflight", rb.b.Stats().Inflight)
			bcfg, err := g.prepareBridge(bc)
			if err != nil {
				g.log.Error("reload: bridge not restarted", "bridge", bc.Name, "err", err)
				bridges = append(bridges, rb) // keep the old one
				continue
			}
			rb.stop()
			rb.closeLanes()
			nrb, err := g.newBridge(bc, bcfg)
			if err != nil {
				g.log.Error("reload: bridge not restarted, and stopped", "bridge", bc.Name, "err", err)
				continue
			}
			g.log.Info("reload: bridge changed, restarted", "bridge", bc.Name)
			rb = nrb
		default:
			bcfg, err := g.prepareBridge(bc)
			if err != nil {
				g.log.Error("reload: bridge not added", "bridge", bc.Name, "err", err)
				continue
			}
			nrb, err := g.newBridge(bc, bcfg)
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
		rb.closeLanes()
		g.log.Info("reload: bridge removed", "bridge", name)
	}
	return bridges
}

// reloadable is cfg without what Reload applies, to compare with what
// needs a restart.
func reloadable(cfg configs.Config) configs.Config {
	cfg.Bridges, cfg.Serial, cfg.Log.Level = nil, nil, ""
	cfg.Broker.Users, cfg.Broker.Anonymous, cfg.Broker.AllowAnonymous = nil, configs.ACL{}, false
	return cfg
}

// reloadPorts restarts changed serial ports, starts new ones and stops
// removed ones, and returns the ports to run; g.tasks must be held. A
// board's session (its subscriptions and undelivered messages) belongs to
// the port's name and survives.
func (g *Gateway) reloadPorts(running []*runningPort, cfgs []configs.Serial) []*runningPort {
	byName := make(map[string]*runningPort)
	for _, rp := range running {
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
	return ports
}
