package configs

// Validation of values: the top level, [log], [queue], [http], and the
// checks every section shares (names, one-of, ACLs, topic rules).

import (
	"strconv"
	"strings"
	"time"

	"github.com/ralph-gateway/ralph/internal/topic"
)

func (p *configParser) validate(cfg *Config) error {
	root := keyPath{}
	if cfg.DataDir == "" {
		return p.errorf(root.key("data_dir"), "must not be empty")
	}
	if err := p.oneOf(root.key("log", "level"), cfg.Log.Level, "debug", "info", "warn", "error"); err != nil {
		return err
	}
	if err := p.oneOf(root.key("log", "format"), cfg.Log.Format, "text", "json"); err != nil {
		return err
	}
	if err := p.validateBroker(&cfg.Broker); err != nil {
		return err
	}
	if err := p.validateQueue(&cfg.Queue); err != nil {
		return err
	}
	if a := cfg.HTTP.Listen; a != "" {
		if _, err := checkListenAddr(a); err != nil {
			return p.errorf(root.key("http", "listen"), "%v", err)
		}
	}
	firstName := map[string]int{} // bridge name → index of its first bridge
	for i := range cfg.Bridges {
		if err := p.validateBridge(&cfg.Bridges[i], root.key("bridge").index(i), firstName); err != nil {
			return err
		}
	}
	users := map[string]bool{}
	for _, u := range cfg.Broker.Users {
		users[u.Name] = true
	}
	firstName = map[string]int{}
	for i := range cfg.Serial {
		sp := root.key("serial").index(i)
		if err := p.validateSerial(&cfg.Serial[i], sp, firstName, users); err != nil {
			return err
		}
		// Two ports must not want the same device: they would take turns
		// failing to open it.
		for j := range i {
			a, b := cfg.Serial[j], cfg.Serial[i]
			switch {
			case a.Path != "" && a.Path == b.Path:
				return p.errorf(sp.key("path"), "%q is also the path of %s", b.Path, root.key("serial").index(j))
			case a.Path == "" && b.Path == "" && a.Match.overlaps(b.Match):
				return p.errorf(sp.key("match"), "matches the same devices as %s (tell them apart with serial = \"...\"; `ralph serial` lists them)", root.key("serial").index(j))
			}
		}
	}
	return nil
}

func (p *configParser) validateQueue(q *Queue) error {
	qp := keyPath{}.key("queue")
	if err := p.oneOf(qp.key("durability"), q.Durability, "sync", "interval"); err != nil {
		return err
	}
	if d := q.SyncInterval.Duration; d <= 0 || d > maxSyncInterval {
		return p.errorf(qp.key("sync_interval"), "%s is out of range (allowed: more than 0s, at most %s)",
			formatDuration(d), formatDuration(maxSyncInterval))
	}
	if n := q.MaxSyncsPerSecond; n < 0 || n > maxSyncsPerSecond {
		return p.errorf(qp.key("max_syncs_per_second"), "%d is out of range (allowed 0 .. %d; 0 for no pacing)", n, maxSyncsPerSecond)
	}
	if s := q.MaxBytes; s != 0 && s < miB {
		return p.errorf(qp.key("max_bytes"), "%s is too small (allowed: 0 for no budget, or at least %s)", formatSize(s), formatSize(miB))
	}
	if err := p.oneOf(qp.key("on_full"), q.OnFull, "drop-oldest", "reject"); err != nil {
		return err
	}
	if s := q.MinFree; s < 0 {
		return p.errorf(qp.key("min_free"), "must not be negative")
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"max_age", q.MaxAge.Duration}, {"keep_local", q.KeepLocal.Duration}} {
		if d.v < 0 {
			return p.errorf(qp.key(d.key), "%s is negative (use \"0s\" for off)", formatDuration(d.v))
		}
	}
	return nil
}

// validateName checks the name of the table at tp (a bridge or a serial
// port): present, well formed and unique among those of its kind, whose
// indexes by name firstName collects.
func (p *configParser) validateName(tp keyPath, name, kind string, firstName map[string]int) error {
	if _, ok := lookup(p.tree, tp.key("name")); !ok {
		return p.errorf(tp.key("name"), "required key is missing (1 to 64 letters, digits, _ or -, unique among %ss)", kind)
	}
	if !validName(name) {
		return p.errorf(tp.key("name"), "%q is not a valid name (use 1 to 64 letters, digits, _ or -)", truncate(name))
	}
	if j, dup := firstName[name]; dup {
		first := tp.parent().index(j)
		where := "in " + first.String()
		if line, ok := p.lines[first.key("name").String()]; ok {
			where = "on line " + strconv.Itoa(line)
		}
		return p.errorf(tp.key("name"), "duplicate %s name %q (first defined %s)", kind, name, where)
	}
	firstName[name] = tp[len(tp)-1].index
	return nil
}

func (p *configParser) oneOf(path keyPath, v string, allowed ...string) error {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	return p.errorf(path, "%q is not one of %s", truncate(v), strings.Join(allowed, ", "))
}

func validName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !isNameChar(r) {
			return false
		}
	}
	return true
}

func (p *configParser) validateACL(at keyPath, acl ACL) error {
	for _, l := range []struct {
		key     string
		filters []string
	}{{"publish", acl.Publish}, {"subscribe", acl.Subscribe}, {"publish_deny", acl.PublishDeny}, {"subscribe_deny", acl.SubscribeDeny}} {
		for j, f := range l.filters {
			g := topic.Expand(f, "u", "c")
			if err := topic.ValidateFilter(g); err != nil {
				return p.errorf(at.key(l.key).index(j), "%v", err)
			}
		}
	}
	return nil
}

// validateRule checks a forward or subscribe rule: its required topic
// filter, its optional prefixes (key, value) and its QoS.
func (p *configParser) validateRule(rp keyPath, filterKey, filter, example string, qos int, prefixes ...[2]string) error {
	if _, ok := lookup(p.tree, rp.key(filterKey)); !ok {
		return p.errorf(rp.key(filterKey), `required key is missing (an MQTT topic filter, e.g. %q)`, example)
	}
	if err := topic.ValidateFilter(filter); err != nil {
		return p.errorf(rp.key(filterKey), "%v", err)
	}
	for _, k := range prefixes {
		if k[1] == "" {
			continue
		}
		if err := topic.ValidateName(k[1]); err != nil {
			return p.errorf(rp.key(k[0]), "%v", err)
		}
	}
	if qos < 0 || qos > 2 {
		return p.errorf(rp.key("qos"), "%d is not one of 0, 1, 2", qos)
	}
	return nil
}
