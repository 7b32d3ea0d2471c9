package configs

// The defaults, all of them: Default for the sections with fixed keys,
// DefaultBridge and DefaultSerial for the elements of arrays of tables
// (which the file starts empty), and fillAbsent, which gives each key a
// file leaves out its default. The packages that run a section take their
// zero-value defaults from here too.

import (
	"math"
	"os"
	"reflect"
	"strings"
	"time"
)

// Default returns the configuration Ralph runs with when no file is
// given, and the values of every key a file leaves out: the one source of
// truth for defaults (configs/ralph.toml and the README are checked
// against it).
func Default() *Config {
	return &Config{
		DataDir: "ralph-data",
		Log:     Log{Level: "info", Format: "text"},
		Broker: Broker{
			Listen:           []string{"127.0.0.1:1883"},
			AllowAnonymous:   false,
			MaxPacketSize:    256 * kiB,
			MaxClients:       10000,
			MaxKeepAlive:     Duration{time.Hour},
			MaxTopicLength:   1024,
			MaxTopicLevels:   32,
			MaxMessageExpiry: Duration{720 * time.Hour},
			Anonymous:        defaultACL(),
			ReceiveMaximum:   256,
		},
		Queue: Queue{
			Durability:        "sync",
			SyncInterval:      Duration{100 * time.Millisecond},
			MaxSyncsPerSecond: 10,
			MaxBytes:          giB,
			OnFull:            "drop-oldest",
			MinFree:           64 * miB,
		},
		HTTP: HTTP{Listen: "127.0.0.1:9883"},
	}
}

// DefaultBridge returns the defaults of a [[bridge]] named name: its
// client id is "ralph-<hostname>-<name>", with what is not a letter,
// digit, _ or - turned into -.
func DefaultBridge(name string) Bridge {
	id := "ralph-" + name
	if host, _ := os.Hostname(); host != "" {
		id = "ralph-" + host + "-" + name
	}
	return Bridge{
		Protocol:       "5",
		ClientID:       sanitizeClientID(id),
		MaxInflight:    32,
		KeepAlive:      Duration{30 * time.Second},
		ConnectTimeout: Duration{10 * time.Second},
		ReconnectMin:   Duration{time.Second},
		ReconnectMax:   Duration{time.Minute},
		SessionExpiry:  Duration{time.Hour},
		PrimaryRetry:   Duration{5 * time.Minute},
		AckTimeout:     Duration{time.Minute},
		Auth:           "password",
		SASTTL:         Duration{time.Hour},
	}
}

// defaultQoS is that of a [[bridge.forward]] or [[bridge.subscribe]] rule.
const defaultQoS = 1

// maxPriority is the least urgent priority of a [[bridge.forward]] rule;
// 0 is the most.
const maxPriority = 9

// defaultForward and defaultSubscribe are the defaults of a rule's keys.
func defaultForward() ForwardRule     { return ForwardRule{QoS: defaultQoS, Priority: 4} }
func defaultSubscribe() SubscribeRule { return SubscribeRule{QoS: defaultQoS} }

// DefaultSerial returns the defaults of a [[serial]] port named name. Its
// status topic follows its topic prefix, whatever that is: StatusTopic.
func DefaultSerial(name string) Serial {
	prefix := "serial/" + name + "/"
	return Serial{
		Baud:         115200,
		TopicPrefix:  prefix,
		StatusTopic:  StatusTopic(prefix),
		MaxLine:      4096,
		OfflineAfter: Duration{30 * time.Second},
		Resend:       Duration{2 * time.Second},
		Window:       1,
	}
}

// StatusTopic is the default status topic of a serial port whose topic
// prefix is prefix.
func StatusTopic(prefix string) string { return prefix + "$status" }

// defaultACL is that of anonymous clients and of users without one of
// their own: everything, including reading Ralph's own $SYS topics, and
// nothing denied. A function, so that each config gets slices of its own.
func defaultACL() ACL {
	return ACL{Publish: []string{"#"}, Subscribe: []string{"#", "$SYS/#"}, PublishDeny: []string{}, SubscribeDeny: []string{}}
}

// defaultUser is the ACL part of a [[broker.users]] entry's defaults.
func defaultUser() User {
	acl := defaultACL()
	return User{Publish: acl.Publish, Subscribe: acl.Subscribe, PublishDeny: acl.PublishDeny, SubscribeDeny: acl.SubscribeDeny}
}

// Limits of values, for validation.
const (
	maxSessionExpiry  = math.MaxUint32 * time.Second
	maxKeepAlive      = 18 * time.Hour
	maxSyncInterval   = 10 * time.Second
	maxSyncsPerSecond = 1000
)

// fillDefaults gives every key the file leaves out in an element of an
// array of tables (and in the ACLs, whose lists the decoder would share)
// its default.
func (p *configParser) fillDefaults(cfg *Config) {
	bp := keyPath{}.key("broker")
	p.fillAbsent(&cfg.Broker.Anonymous, defaultACL(), bp.key("anonymous"))
	for i := range cfg.Broker.Users {
		p.fillAbsent(&cfg.Broker.Users[i], defaultUser(), bp.key("users").index(i))
	}
	for i := range cfg.Bridges {
		b := &cfg.Bridges[i]
		path := keyPath{}.key("bridge").index(i)
		p.fillAbsent(b, DefaultBridge(b.Name), path)
		for j := range b.Forward {
			p.fillAbsent(&b.Forward[j], defaultForward(), path.key("forward").index(j))
		}
		for j := range b.Subscribe {
			p.fillAbsent(&b.Subscribe[j], defaultSubscribe(), path.key("subscribe").index(j))
		}
	}
	for i := range cfg.Serial {
		s := &cfg.Serial[i]
		path := keyPath{}.key("serial").index(i)
		def := DefaultSerial(s.Name)
		if _, ok := lookup(p.tree, path.key("topic_prefix")); ok {
			def.StatusTopic = StatusTopic(s.TopicPrefix)
		}
		p.fillAbsent(s, def, path)
	}
}

// fillAbsent sets each field of the struct *dst whose key is absent from
// the file at path to that field of def.
func (p *configParser) fillAbsent(dst, def any, path keyPath) {
	d, v := reflect.ValueOf(dst).Elem(), reflect.ValueOf(def)
	for i := range d.NumField() {
		key, _, _ := strings.Cut(d.Type().Field(i).Tag.Get("toml"), ",")
		if key == "" {
			continue
		}
		if _, ok := lookup(p.tree, path.key(key)); !ok {
			d.Field(i).Set(v.Field(i))
		}
	}
}

func sanitizeClientID(s string) string {
	return strings.Map(func(r rune) rune {
		if isNameChar(r) {
			return r
		}
		return '-'
	}, s)
}

func isNameChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-'
}
