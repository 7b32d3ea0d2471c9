package configs

import (
	"errors"
	"io/fs"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// doc joins lines into a TOML document: line n of the file is lines[n-1],
// which keeps the line numbers in expected errors easy to check.
func doc(lines ...string) string { return strings.Join(lines, "\n") + "\n" }

func TestDefaultConfig(t *testing.T) {
	cfg := Default()
	want := &Config{
		DataDir: "ralph-data",
		Log:     Log{Level: "info", Format: "text"},
		Broker: Broker{
			Listen:         []string{"127.0.0.1:1883"},
			AllowAnonymous: false,
			MaxPacketSize:  256 * 1024,
			ReceiveMaximum: 256,
			Anonymous:      ACL{Publish: []string{"#"}, Subscribe: []string{"#", "$SYS/#"}, PublishDeny: []string{}, SubscribeDeny: []string{}},
			MaxClients:     10000, MaxKeepAlive: Duration{time.Hour}, MaxTopicLength: 1024, MaxTopicLevels: 32,
			MaxMessageExpiry: Duration{720 * time.Hour},
		},
		Queue: Queue{Durability: "sync", SyncInterval: Duration{100 * time.Millisecond}, MaxSyncsPerSecond: 10,
			MaxBytes: 1 << 30, OnFull: "drop-oldest", MinFree: 64 << 20},
		HTTP: HTTP{Listen: "127.0.0.1:9883"},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("DefaultConfig() = %+v, want %+v", cfg, want)
	}
	// An empty file means all defaults.
	empty, err := Parse("empty.toml", nil)
	if err != nil || !reflect.DeepEqual(empty, want) {
		t.Errorf("ParseConfig(empty) = %+v, %v; want %+v", empty, err, want)
	}
	// Each call returns its own copy.
	cfg.Broker.Listen[0] = "changed"
	if got := Default().Broker.Listen[0]; got != "127.0.0.1:1883" {
		t.Errorf("DefaultConfig shares state between calls: listen[0] = %q", got)
	}
}

func TestLoadExampleConfig(t *testing.T) {
	cfg, err := Load("ralph.toml")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Bridges) != 1 {
		t.Fatalf("got %d bridges, want 1", len(cfg.Bridges))
	}
	b := cfg.Bridges[0]
	if b.Name != "cloud" || !reflect.DeepEqual(b.URLs, []string{"mqtts://mqtt.example.com:8883"}) {
		t.Errorf("bridge = %q %q", b.Name, b.URLs)
	}
	if len(b.Forward) != 1 || b.Forward[0].Local != "sensors/#" || b.Forward[0].QoS != 1 {
		t.Errorf("forward = %+v", b.Forward)
	}
	if !reflect.DeepEqual(cfg.Broker.Listen, []string{"127.0.0.1:1883"}) || cfg.Broker.AllowAnonymous {
		t.Errorf("broker = %+v", cfg.Broker)
	}
	// The values the example spells out are the defaults.
	def := Default()
	if cfg.Log != def.Log || cfg.Queue != def.Queue || cfg.Broker.MaxPacketSize != def.Broker.MaxPacketSize ||
		cfg.Broker.ReceiveMaximum != def.Broker.ReceiveMaximum {
		t.Errorf("example differs from the defaults: %+v", cfg)
	}
	db := DefaultBridge(b.Name)
	if b.MaxInflight != db.MaxInflight || b.KeepAlive != db.KeepAlive ||
		b.ConnectTimeout != db.ConnectTimeout || b.ReconnectMin != db.ReconnectMin ||
		b.ReconnectMax != db.ReconnectMax || b.SessionExpiry != db.SessionExpiry {
		t.Errorf("example bridge differs from the defaults: %+v", b)
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	_, err := Load("testdata/does-not-exist.toml")
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadConfig(missing) = %v, want a not-exist error", err)
	}
}

// The minimal configuration from the issue.
const minimalConfig = `data_dir = "/tmp/ralph-data"
[broker]
listen = ["127.0.0.1:18830"]
[[bridge]]
name = "up"
urls = ["mqtt://127.0.0.1:18840"]
client_id = "ralph-edge-1"
  [[bridge.forward]]
  local = "sensors/#"
  remote_prefix = "edge/"
  qos = 1
`

func TestParseConfigMinimal(t *testing.T) {
	cfg, err := Parse("ralph.toml", []byte(minimalConfig))
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.DataDir = "/tmp/ralph-data"
	want.Broker.Listen = []string{"127.0.0.1:18830"}
	want.Bridges = []Bridge{{
		Name:           "up",
		Protocol:       "5",
		URLs:           []string{"mqtt://127.0.0.1:18840"},
		ClientID:       "ralph-edge-1",
		MaxInflight:    32,
		KeepAlive:      Duration{30 * time.Second},
		ConnectTimeout: Duration{10 * time.Second},
		ReconnectMin:   Duration{time.Second},
		ReconnectMax:   Duration{60 * time.Second},
		SessionExpiry:  Duration{time.Hour},
		PrimaryRetry:   Duration{5 * time.Minute},
		AckTimeout:     Duration{time.Minute},
		Auth:           "password",
		SASTTL:         Duration{time.Hour},
		Forward:        []ForwardRule{{Local: "sensors/#", RemotePrefix: "edge/", QoS: 1, Priority: 4}},
	}}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got  %+v\nwant %+v", cfg, want)
	}
}

func TestParseConfigBridgeDefaults(t *testing.T) {
	cfg, err := Parse("ralph.toml", []byte(doc(
		`[[bridge]]`,
		`name = "a_1"`,
		`urls = ["mqtt://h1", "tcp://h2/", "mqtts://h3", "ssl://h4", "tls://[::1]", "mqtt://h5:1234"]`,
		`[[bridge.forward]]`,
		`local = "a/#"`,
		`[[bridge.forward]]`,
		`local = "b/#"`,
		`qos = 0`,
		`[[bridge.forward]]`,
		`local = "c/#"`,
		`qos = 2`,
		`[[bridge]]`,
		`name = "b"`,
		`urls = ["mqtt://h"]`,
		`max_inflight = 1`,
		`keepalive = "1s"`,
		`connect_timeout = "1ms"`,
		`reconnect_min = "5s"`,
		`reconnect_max = "5s"`,
		`session_expiry = "0s"`,
		`forward = [{local = "d"}, {local = "e", qos = 0}]`,
	)))
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	a, b := cfg.Bridges[0], cfg.Bridges[1]
	if want := sanitizeClientID("ralph-" + host + "-a_1"); a.ClientID != want {
		t.Errorf("default client_id = %q, want %q", a.ClientID, want)
	}
	for _, r := range a.ClientID {
		if !isNameChar(r) {
			t.Errorf("default client_id %q contains %q", a.ClientID, r)
		}
	}
	wantURLs := []string{"mqtt://h1:1883", "tcp://h2:1883/", "mqtts://h3:8883", "ssl://h4:8883", "tls://[::1]:8883", "mqtt://h5:1234"}
	if !reflect.DeepEqual(a.URLs, wantURLs) {
		t.Errorf("urls = %q, want %q", a.URLs, wantURLs)
	}
	if got := []int{a.Forward[0].QoS, a.Forward[1].QoS, a.Forward[2].QoS, b.Forward[0].QoS, b.Forward[1].QoS}; !reflect.DeepEqual(got, []int{1, 0, 2, 1, 0}) {
		t.Errorf("qos = %v, want [1 0 2 1 0] (absent → 1, explicit 0 stays 0)", got)
	}
	if a.MaxInflight != 32 || a.KeepAlive.Duration != 30*time.Second || a.SessionExpiry.Duration != time.Hour {
		t.Errorf("bridge a defaults not filled in: %+v", a)
	}
	wantB := Bridge{
		Name: "b", Protocol: "5", URLs: []string{"mqtt://h:1883"}, ClientID: b.ClientID, MaxInflight: 1,
		KeepAlive: Duration{time.Second}, ConnectTimeout: Duration{time.Millisecond},
		ReconnectMin: Duration{5 * time.Second}, ReconnectMax: Duration{5 * time.Second},
		SessionExpiry: Duration{0}, PrimaryRetry: Duration{5 * time.Minute}, AckTimeout: Duration{time.Minute},
		Auth: "password", SASTTL: Duration{time.Hour},
		Forward: []ForwardRule{{Local: "d", QoS: 1, Priority: 4}, {Local: "e", QoS: 0, Priority: 4}},
	}
	if !reflect.DeepEqual(b, wantB) {
		t.Errorf("bridge b = %+v\nwant %+v", b, wantB)
	}
}

func TestParseConfigValid(t *testing.T) {
	tests := []struct {
		name, toml string
		check      func(*Config) bool
	}{
		{"size as integer", doc(`[broker]`, `max_packet_size = 2048`),
			func(c *Config) bool { return c.Broker.MaxPacketSize == 2048 }},
		{"size decimal unit", doc(`[broker]`, `max_packet_size = "10MB"`),
			func(c *Config) bool { return c.Broker.MaxPacketSize == 10_000_000 }},
		{"size binary unit", doc(`[broker]`, `max_packet_size = "256 MiB"`),
			func(c *Config) bool { return c.Broker.MaxPacketSize == 256<<20 }},
		{"allow_anonymous with all interfaces", doc(`[broker]`, `listen = [":1883", "0.0.0.0:1884", "[::]:1885"]`, `allow_anonymous = true`),
			func(c *Config) bool { return len(c.Broker.Listen) == 3 && c.Broker.AllowAnonymous }},
		{"loopback forms", doc(`[broker]`, `listen = ["localhost:1", "127.0.0.2:2", "[::1]:3", "[::ffff:127.0.0.1]:4", "127.0.0.1:0"]`),
			func(c *Config) bool { return len(c.Broker.Listen) == 5 }},
		{"dotted keys", doc(`broker.receive_maximum = 10`, `log.level = "debug"`),
			func(c *Config) bool { return c.Broker.ReceiveMaximum == 10 && c.Log.Level == "debug" }},
		{"unpaced syncs", doc(`[queue]`, `max_syncs_per_second = 0`),
			func(c *Config) bool { return c.Queue.MaxSyncsPerSecond == 0 && c.Queue.Durability == "sync" }},
		{"most syncs per second", doc(`queue.max_syncs_per_second = 1000`),
			func(c *Config) bool { return c.Queue.MaxSyncsPerSecond == 1000 }},
		{"interval durability", doc(`[queue]`, `durability = "interval"`, `sync_interval = "10s"`),
			func(c *Config) bool {
				return c.Queue.Durability == "interval" && c.Queue.SyncInterval.Duration == 10*time.Second
			}},
		{"maximum session expiry", doc(`[[bridge]]`, `name = "b"`, `urls = ["mqtt://h"]`, `session_expiry = "4294967295s"`, `[[bridge.forward]]`, `local = "#"`),
			func(c *Config) bool { return c.Bridges[0].SessionExpiry.Duration == 4294967295*time.Second }},
		{"serial defaults, two boards told apart by serial number", doc(`[[serial]]`, `name = "a"`, `match = { vid = "10c4", pid = "ea60", serial = "1" }`,
			`[[serial]]`, `name = "b"`, `match = { vid = "10c4", pid = "ea60", serial = "2" }`),
			func(c *Config) bool {
				a := c.Serial[0]
				return len(c.Serial) == 2 && a.Baud == 115200 && a.TopicPrefix == "serial/a/" && a.StatusTopic == "serial/a/$status" &&
					a.MaxLine == 4096 && a.Window == 1 && a.Resend.Duration == 2*time.Second && a.OfflineAfter.Duration == 30*time.Second
			}},
		{"the status topic follows the topic prefix", doc(`[[serial]]`, `name = "a"`, `path = "/dev/ttyUSB0"`, `topic_prefix = "shed/a/"`),
			func(c *Config) bool {
				return c.Serial[0].StatusTopic == "shed/a/$status" && c.Serial[0].ClientID() == "serial-a"
			}},
		{"an explicit status topic", doc(`[[serial]]`, `name = "a"`, `path = "/dev/ttyUSB0"`, `status_topic = "st/a"`),
			func(c *Config) bool {
				return c.Serial[0].StatusTopic == "st/a" && c.Serial[0].TopicPrefix == "serial/a/"
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("ralph.toml", []byte(tt.toml))
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(cfg) {
				t.Errorf("unexpected config %+v", cfg)
			}
		})
	}
}

// A bridge that is valid on its own, lines 1-4 of the documents that
// afterOKBridge builds; a second bridge can follow from line 5.
var okBridge = []string{
	`[[bridge]]`,
	`name = "ok"`,
	`urls = ["mqtt://127.0.0.1"]`,
	`forward = [{local = "ok/#"}]`,
}

func afterOKBridge(lines ...string) string { return doc(append(okBridge[:4:4], lines...)...) }

// bridgeWith returns a document with one valid bridge that has the given
// extra keys on lines 4, 5, ...
func bridgeWith(keys ...string) string {
	lines := append([]string{`[[bridge]]`, `name = "ok"`, `urls = ["mqtt://127.0.0.1"]`}, keys...)
	return doc(append(lines, `[[bridge.forward]]`, `local = "ok/#"`)...)
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(minimalConfig))
	if example, err := os.ReadFile("ralph.toml"); err == nil {
		f.Add(example)
	}
	f.Add([]byte(bridgeWith(`keepalive = "5 parsecs"`)))
	f.Add([]byte(doc(`bridge = [{name = "a", urls = ["ftp://x"], forward = [{local = "a"}]}]`)))
	f.Add([]byte(doc(`[broker`, `listen = [`)))
	f.Add([]byte(doc(`a = """x`, `"""`, `b = '''`, `'''`, `"c.d" . e = {f = [1, {g = 2}]}`)))
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = locateKeys(data) // must not panic on any input, valid TOML or not
		cfg, err := Parse("fuzz.toml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.toml:") {
				t.Fatalf("error without file name: %v", err)
			}
			return
		}
		if cfg == nil || len(cfg.Broker.Listen) == 0 {
			t.Fatalf("valid config without listen address: %+v", cfg)
		}
		for _, b := range cfg.Bridges {
			if len(b.URLs) == 0 || len(b.Forward) == 0 || b.ClientID == "" {
				t.Fatalf("invalid bridge accepted: %+v", b)
			}
		}
	})
}
