package configs

// The defaults: Default for keys with fixed defaults, and those that depend
// on presence (elements of arrays of tables start empty, and some defaults
// derive from other keys).

import (
	"math"
	"os"
	"strings"
	"time"
)

// DefaultHTTPListen is where the HTTP endpoint listens unless configured.
const DefaultHTTPListen = "127.0.0.1:9883"

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
			Anonymous:        ACL{Publish: defaultPublishACL(), Subscribe: defaultSubscribeACL()},
			ReceiveMaximum:   256,
		},
		Queue: Queue{
			Durability:        "sync",
			SyncInterval:      Duration{100 * time.Millisecond},
			MaxSyncsPerSecond: defaultMaxSyncsPerSecond,
			MaxBytes:          giB,
			OnFull:            "drop-oldest",
			MinFree:           64 * miB,
		},
		HTTP: HTTP{Listen: DefaultHTTPListen},
	}
}

const (
	defaultMaxInflight    = 32
	defaultKeepAlive      = 30 * time.Second
	defaultConnectTimeout = 10 * time.Second
	defaultReconnectMin   = time.Second
	defaultReconnectMax   = 60 * time.Second
	defaultSessionExpiry  = time.Hour
	defaultQoS            = 1

	maxSessionExpiry = math.MaxUint32 * time.Second
	maxKeepAlive     = 18 * time.Hour
	maxSyncInterval  = 10 * time.Second

	defaultMaxSyncsPerSecond = 10
	maxSyncsPerSecond        = 1000
)

// The default ACL: everything, including reading Ralph's own $SYS
// topics. Functions, so that each config gets slices of its own.
func defaultPublishACL() []string { return []string{"#"} }

func defaultSubscribeACL() []string { return []string{"#", "$SYS/#"} }

func (p *configParser) fillACLDefaults(cfg *Config) {
	fill := func(path keyPath, acl *[]string, def func() []string) {
		if _, ok := lookup(p.tree, path); !ok {
			*acl = def()
		}
	}
	bp := keyPath{}.key("broker")
	fill(bp.key("anonymous").key("publish"), &cfg.Broker.Anonymous.Publish, defaultPublishACL)
	fill(bp.key("anonymous").key("subscribe"), &cfg.Broker.Anonymous.Subscribe, defaultSubscribeACL)
	for i := range cfg.Broker.Users {
		u := &cfg.Broker.Users[i]
		up := bp.key("users").index(i)
		fill(up.key("publish"), &u.Publish, defaultPublishACL)
		fill(up.key("subscribe"), &u.Subscribe, defaultSubscribeACL)
	}
}

func (p *configParser) fillBridgeDefaults(cfg *Config) {
	host, _ := os.Hostname()
	for i := range cfg.Bridges {
		b := &cfg.Bridges[i]
		bp := keyPath{}.key("bridge").index(i)
		has := func(k string) bool { _, ok := lookup(p.tree, bp.key(k)); return ok }
		if !has("client_id") {
			id := "ralph-" + b.Name
			if host != "" {
				id = "ralph-" + host + "-" + b.Name
			}
			b.ClientID = sanitizeClientID(id)
		}
		if !has("max_inflight") {
			b.MaxInflight = defaultMaxInflight
		}
		for _, d := range []struct {
			key string
			dst *Duration
			def time.Duration
		}{
			{"keepalive", &b.KeepAlive, defaultKeepAlive},
			{"connect_timeout", &b.ConnectTimeout, defaultConnectTimeout},
			{"reconnect_min", &b.ReconnectMin, defaultReconnectMin},
			{"reconnect_max", &b.ReconnectMax, defaultReconnectMax},
			{"session_expiry", &b.SessionExpiry, defaultSessionExpiry},
			{"primary_retry", &b.PrimaryRetry, 5 * time.Minute},
			{"ack_timeout", &b.AckTimeout, time.Minute},
		} {
			if !has(d.key) {
				d.dst.Duration = d.def
			}
		}
		for j := range b.Forward {
			if _, ok := lookup(p.tree, bp.key("forward").index(j).key("qos")); !ok {
				b.Forward[j].QoS = defaultQoS
			}
		}
		for j := range b.Subscribe {
			if _, ok := lookup(p.tree, bp.key("subscribe").index(j).key("qos")); !ok {
				b.Subscribe[j].QoS = defaultQoS
			}
		}
	}
}

func (p *configParser) fillSerialDefaults(cfg *Config) {
	for i := range cfg.Serial {
		s := &cfg.Serial[i]
		sp := keyPath{}.key("serial").index(i)
		has := func(k string) bool { _, ok := lookup(p.tree, sp.key(k)); return ok }
		if !has("baud") {
			s.Baud = 115200
		}
		if !has("topic_prefix") {
			s.TopicPrefix = "serial/" + s.Name + "/"
		}
		if !has("status_topic") {
			s.StatusTopic = s.TopicPrefix + "$status"
		}
		if !has("max_line") {
			s.MaxLine = 4096
		}
		if !has("offline_after") {
			s.OfflineAfter.Duration = 30 * time.Second
		}
		if !has("resend") {
			s.Resend.Duration = 2 * time.Second
		}
		if !has("window") {
			s.Window = 1
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
