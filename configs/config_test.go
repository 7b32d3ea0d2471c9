package configs

import (
	"errors"
	"io/fs"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
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
			Anonymous:      ACL{Publish: []string{"#"}, Subscribe: []string{"#", "$SYS/#"}},
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
		Forward:        []ForwardRule{{Local: "sensors/#", RemotePrefix: "edge/", QoS: 1}},
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
		Name: "b", URLs: []string{"mqtt://h:1883"}, ClientID: b.ClientID, MaxInflight: 1,
		KeepAlive: Duration{time.Second}, ConnectTimeout: Duration{time.Millisecond},
		ReconnectMin: Duration{5 * time.Second}, ReconnectMax: Duration{5 * time.Second},
		SessionExpiry: Duration{0}, PrimaryRetry: Duration{5 * time.Minute}, AckTimeout: Duration{time.Minute},
		Forward: []ForwardRule{{Local: "d", QoS: 1}, {Local: "e", QoS: 0}},
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

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name, toml, want string
	}{
		// Syntax.
		{"syntax error", doc(`data_dir = "x"`, `[broker`, `listen = []`),
			`ralph.toml:2: syntax error: expected '.' or ']' to end table name, but got '\n' instead`},
		{"missing value", doc(`[log]`, `level =`, `format = "text"`),
			`ralph.toml:2: syntax error: expected value but found '\n' instead`},
		{"bad escape in multi-line string", doc(`data_dir = """`, `a`, `b\q`, `"""`),
			`ralph.toml:3: syntax error: invalid escape in string '\q'`},
		{"unterminated array", doc(`[broker]`, `listen = ["127.0.0.1:1883"`),
			`ralph.toml:2: syntax error: expected a comma (',') or array terminator (']'), but got end of file`},
		{"key defined twice", doc(`data_dir = "a"`, `data_dir = "b"`),
			`ralph.toml:2: syntax error: Key 'data_dir' has already been defined.`},

		// Unknown keys.
		{"unknown top-level key", doc(`data_dir = "/tmp/x"`, ``, `frobnicate = true`),
			`ralph.toml:3: frobnicate: unknown key`},
		{"unknown top-level key, suggestion", doc(`datadir = "x"`),
			`ralph.toml:1: datadir: unknown key (did you mean "data_dir"?)`},
		{"key in wrong case", doc(`Data_Dir = "x"`),
			`ralph.toml:1: Data_Dir: unknown key (did you mean "data_dir"?)`},
		{"unknown table", doc(`[log]`, `level = "info"`, `[brokers]`, `listen = []`),
			`ralph.toml:3: brokers: unknown key (did you mean "broker"?)`},
		{"unknown key in table", doc(`[broker]`, `listen = ["127.0.0.1:1883"]`, `frobnicate = 1`),
			`ralph.toml:3: broker.frobnicate: unknown key`},
		{"unknown dotted key", doc(`log.level = "info"`, `broker.frobnicate = 1`),
			`ralph.toml:2: broker.frobnicate: unknown key`},
		{"unknown quoted key", doc(`[broker]`, `"listen address" = 1`),
			`ralph.toml:2: broker."listen address": unknown key`},
		{"first unknown key in file order", doc(`[log]`, `zzz = 1`, `aaa = 1`, `[broker]`, `bbb = 1`),
			`ralph.toml:2: log.zzz: unknown key`},
		{"unknown key in [[bridge.forward]]", doc(
			`[[bridge]]`,
			`name = "a"`,
			`urls = ["mqtt://a"]`,
			`[[bridge.forward]]`,
			`local = "x/#"`,
			`[[bridge]]`,
			`name = "b"`,
			`urls = ["mqtt://b"]`,
			`[[bridge.forward]]`,
			`local = "y/#"`,
			`[[bridge.forward]]`,
			`local = "z/#"`,
			`remote_prefx = "up/"`),
			`ralph.toml:13: bridge[1].forward[1].remote_prefx: unknown key (did you mean "remote_prefix"?)`},
		{"unknown key in inline forward", afterOKBridge(`[[bridge]]`, `name = "b"`, `urls = ["mqtt://b"]`, `forward = [{local = "a"}, {local = "b", topic = "c"}]`),
			`ralph.toml:8: bridge[1].forward[1].topic: unknown key`},

		// Types.
		{"listen given an integer", doc(`[broker]`, `listen = 1883`),
			`ralph.toml:2: broker.listen: expected an array of strings, got integer 1883`},
		{"listen given a string", doc(`[broker]`, `listen = "127.0.0.1:1883"`),
			`ralph.toml:2: broker.listen: expected an array of strings, got string "127.0.0.1:1883"`},
		{"listen element given an integer", doc(`[broker]`, `listen = [`, `  "127.0.0.1:1883",`, `  1884,`, `]`),
			`ralph.toml:4: broker.listen[1]: expected a string, got integer 1884`},
		{"qos given a string", afterOKBridge(`[[bridge]]`, `name = "b"`, `urls = ["mqtt://b"]`, `[[bridge.forward]]`, `local = "a"`, `qos = "1"`),
			`ralph.toml:10: bridge[1].forward[0].qos: expected an integer, got string "1"`},
		{"boolean given a string", doc(`[broker]`, `allow_anonymous = "yes"`),
			`ralph.toml:2: broker.allow_anonymous: expected a boolean (true or false), got string "yes"`},
		{"duration given an integer", bridgeWith(`keepalive = 30`),
			`ralph.toml:4: bridge[0].keepalive: expected a duration string such as "30s", got integer 30`},
		{"size given a float", doc(`[broker]`, `max_packet_size = 1.5`),
			`ralph.toml:2: broker.max_packet_size: expected a size such as "256KiB" or an integer byte count, got float 1.5`},
		{"table given a value", doc(`log = "debug"`),
			`ralph.toml:1: log: expected a table ([log]), got string "debug"`},
		{"[bridge] instead of [[bridge]]", doc(`[bridge]`, `name = "x"`),
			`ralph.toml:1: bridge: expected an array of tables ([[bridge]]), got a table`},
		{"[bridge.forward] instead of [[bridge.forward]]", doc(`[[bridge]]`, `name = "x"`, `[bridge.forward]`, `local = "a"`),
			`ralph.toml:3: bridge[0].forward: expected an array of tables ([[bridge.forward]]), got a table`},
		{"data_dir given a date", doc(`data_dir = 2024-01-01`),
			`ralph.toml:1: data_dir: expected a string, got a date/time`},

		// Values: top level, log, broker, queue.
		{"empty data_dir", doc(`data_dir = ""`),
			`ralph.toml:1: data_dir: must not be empty`},
		{"bad log level", doc(`[log]`, `level = "verbose"`),
			`ralph.toml:2: log.level: "verbose" is not one of debug, info, warn, error`},
		{"bad log format", doc(`[log]`, `format = "xml"`),
			`ralph.toml:2: log.format: "xml" is not one of text, json`},
		{"non-loopback listen without allow_anonymous", doc(`[broker]`, `listen = ["127.0.0.1:1883", "0.0.0.0:1883"]`),
			`ralph.toml:2: broker.listen[1]: "0.0.0.0:1883" is not a loopback address and there are no [[broker.users]]: ` +
				`nobody could connect from other machines (add users, or set allow_anonymous = true explicitly)`},
		{"all interfaces without allow_anonymous", doc(`[broker]`, `listen = [":1883"]`, `allow_anonymous = false`),
			`ralph.toml:2: broker.listen[0]: ":1883" is not a loopback address and there are no [[broker.users]]: ` +
				`nobody could connect from other machines (add users, or set allow_anonymous = true explicitly)`},
		{"bad password hash", doc(`[broker]`, `[[broker.users]]`, `name = "esp32"`, `password_hash = "secret"`),
			`ralph.toml:4: broker.users[0].password_hash: not a bcrypt hash (crypto/bcrypt: hashedSecret too short to be a bcrypted password): make one with "ralph passwd"`},
		{"duplicate user", doc(`[[broker.users]]`, `name = "a"`, `password_hash = "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"`, `[[broker.users]]`, `name = "a"`, `password_hash = "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"`),
			`ralph.toml:5: broker.users[1].name: duplicate user "a"`},
		{"bad ACL filter", doc(`[broker.anonymous]`, `subscribe = ["cmd/#/x"]`),
			`ralph.toml:2: broker.anonymous.subscribe[0]: topic filter "cmd/#/x": # must be the last level`},
		{"listen without port", doc(`[broker]`, `listen = ["1883"]`),
			`ralph.toml:2: broker.listen[0]: invalid address "1883": missing port in address (use host:port, e.g. "127.0.0.1:1883", or ":1883" for all interfaces)`},
		{"listen port out of range", doc(`[broker]`, `listen = ["127.0.0.1:65536"]`),
			`ralph.toml:2: broker.listen[0]: invalid port "65536" in "127.0.0.1:65536" (use a number 0-65535)`},
		{"listen host name", doc(`[broker]`, `listen = ["example.com:1883"]`),
			`ralph.toml:2: broker.listen[0]: host "example.com" in "example.com:1883" is not an IP address or localhost (use host:port, e.g. "127.0.0.1:1883", or ":1883" for all interfaces)`},
		{"listen empty", doc(`[broker]`, `listen = []`),
			`ralph.toml:2: broker.listen: at least one address is required (e.g. "127.0.0.1:1883")`},
		{"listen duplicate", doc(`[broker]`, `listen = ["127.0.0.1:1883", "127.0.0.1:1883"]`),
			`ralph.toml:2: broker.listen[1]: duplicate address "127.0.0.1:1883"`},
		{"bad size", doc(`[broker]`, `max_packet_size = "64 kilobytes"`),
			`ralph.toml:2: broker.max_packet_size: invalid size "64 kilobytes" (use a byte count or a whole number with a unit: B, KB, MB, GB, KiB, MiB or GiB, e.g. "256KiB")`},
		{"size too small", doc(`[broker]`, `max_packet_size = 512`),
			`ralph.toml:2: broker.max_packet_size: 512B is out of range (allowed 1KiB .. 256MiB)`},
		{"size too large", doc(`[broker]`, `max_packet_size = "1GiB"`),
			`ralph.toml:2: broker.max_packet_size: 1GiB is out of range (allowed 1KiB .. 256MiB)`},
		{"negative size", doc(`[broker]`, `max_packet_size = -1`),
			`ralph.toml:2: broker.max_packet_size: size -1 is negative`},
		{"receive_maximum zero", doc(`[broker]`, `receive_maximum = 0`),
			`ralph.toml:2: broker.receive_maximum: 0 is out of range (allowed 1 .. 65535)`},
		{"bad durability", doc(`data_dir = "d"`, ``, `[queue]`, `durability = "fast"`),
			`ralph.toml:4: queue.durability: "fast" is not one of sync, interval`},
		{"password without username", doc(`[[bridge]]`, `name = "a"`, `urls = ["mqtt://x"]`, `password = "p"`, `[[bridge.forward]]`, `local = "#"`),
			`ralph.toml:1: bridge[0].username: required with a password`},
		{"password and password_file", doc(`[[bridge]]`, `name = "a"`, `urls = ["mqtt://x"]`, `username = "u"`, `password = "p"`, `password_file = "/nonexistent"`, `[[bridge.forward]]`, `local = "#"`),
			`ralph.toml:6: bridge[0].password_file: set password or password_file, not both`},
		{"missing password_file", doc(`[[bridge]]`, `name = "a"`, `urls = ["mqtt://x"]`, `username = "u"`, `password_file = "/nonexistent/pw"`, `[[bridge.forward]]`, `local = "#"`),
			`ralph.toml:5: bridge[0].password_file: open /nonexistent/pw: no such file or directory`},
		{"ca_file without TLS", doc(`[[bridge]]`, `name = "a"`, `urls = ["mqtt://x"]`, `ca_file = "/etc/ssl/x.pem"`, `[[bridge.forward]]`, `local = "#"`),
			`ralph.toml:4: bridge[0].ca_file: applies to TLS only, and no URL of this bridge is mqtts://, ssl:// or tls://`},
		{"missing ca_file", doc(`[[bridge]]`, `name = "a"`, `urls = ["mqtts://x"]`, `ca_file = "/nonexistent/ca.pem"`, `[[bridge.forward]]`, `local = "#"`),
			`ralph.toml:4: bridge[0].ca_file: open /nonexistent/ca.pem: no such file or directory`},
		{"cert without key", doc(`[[bridge]]`, `name = "a"`, `urls = ["mqtts://x"]`, `cert_file = "/x.pem"`, `[[bridge.forward]]`, `local = "#"`),
			`ralph.toml:1: bridge[0].key_file: required with cert_file`},
		{"bad subscribe filter", doc(`[[bridge]]`, `name = "a"`, `urls = ["mqtt://x"]`, `[[bridge.subscribe]]`, `remote = "cmd/#/x"`),
			`ralph.toml:5: bridge[0].subscribe[0].remote: topic filter "cmd/#/x": # must be the last level`},
		{"subscribe without remote", doc(`[[bridge]]`, `name = "a"`, `urls = ["mqtt://x"]`, `[[bridge.subscribe]]`, `qos = 1`),
			`ralph.toml:4: bridge[0].subscribe[0].remote: required key is missing (an MQTT topic filter, e.g. "site/shed/cmd/#")`},
		{"bad on_full", doc(`[queue]`, `on_full = "drop-newest"`),
			`ralph.toml:2: queue.on_full: "drop-newest" is not one of drop-oldest, reject`},
		{"tiny max_bytes", doc(`[queue]`, `max_bytes = "1KiB"`),
			`ralph.toml:2: queue.max_bytes: 1KiB is too small (allowed: 0 for no budget, or at least 1MiB)`},
		{"negative max_age", doc(`[queue]`, `max_age = "-1h"`),
			`ralph.toml:2: queue.max_age: -1h is negative (use "0s" for off)`},
		{"negative max_rate", doc(`[[bridge]]`, `name = "a"`, `urls = ["mqtt://x"]`, `max_rate = -5`, `[[bridge.forward]]`, `local = "#"`),
			`ralph.toml:4: bridge[0].max_rate: -5 must be 0 (no cap) or a positive number of messages per second`},
		{"sync_interval zero", doc(`[queue]`, `sync_interval = "0s"`),
			`ralph.toml:2: queue.sync_interval: 0s is out of range (allowed: more than 0s, at most 10s)`},
		{"sync_interval too long", doc(`[queue]`, `sync_interval = "1m"`),
			`ralph.toml:2: queue.sync_interval: 1m is out of range (allowed: more than 0s, at most 10s)`},
		{"max_syncs_per_second negative", doc(`[queue]`, `max_syncs_per_second = -1`),
			`ralph.toml:2: queue.max_syncs_per_second: -1 is out of range (allowed 0 .. 1000; 0 for no pacing)`},
		{"max_syncs_per_second too high", doc(`data_dir = "d"`, `[queue]`, `durability = "sync"`, `max_syncs_per_second = 1001`),
			`ralph.toml:4: queue.max_syncs_per_second: 1001 is out of range (allowed 0 .. 1000; 0 for no pacing)`},
		{"max_syncs_per_second a string", doc(`[queue]`, `max_syncs_per_second = "10"`),
			`ralph.toml:2: queue.max_syncs_per_second: expected an integer, got string "10"`},
		{"max_syncs_per_second a fraction", doc(`[queue]`, `max_syncs_per_second = 2.5`),
			`ralph.toml:2: queue.max_syncs_per_second: expected an integer, got float 2.5`},

		// Values: bridges.
		{"bad URL scheme", doc(
			`[[bridge]]`,
			`name = "up"`,
			`urls = [`,
			`  "mqtt://a:1883",`,
			`  "http://x:1883",`,
			`]`,
			`[[bridge.forward]]`,
			`local = "a"`),
			`ralph.toml:5: bridge[0].urls[1]: unsupported scheme "http" in "http://x:1883" (use mqtt://, tcp://, mqtts:// or ssl://)`},
		{"URL without host", afterOKBridge(`[[bridge]]`, `name = "b"`, `urls = ["mqtt://:1883"]`),
			`ralph.toml:7: bridge[1].urls[0]: missing host in "mqtt://:1883" (e.g. "mqtts://mqtt.example.com:8883")`},
		{"URL without scheme", doc(`[[bridge]]`, `name = "b"`, `urls = ["mqtt.example.com:8883"]`),
			`ralph.toml:3: bridge[0].urls[0]: "mqtt.example.com:8883" has no scheme (use mqtt://, tcp://, mqtts:// or ssl://, e.g. "mqtts://mqtt.example.com:8883")`},
		{"URL with path", doc(`[[bridge]]`, `name = "b"`, `urls = ["mqtt://h/topic"]`),
			`ralph.toml:3: bridge[0].urls[0]: unexpected path "/topic" in "mqtt://h/topic" (a broker URL has none)`},
		{"URL with query", doc(`[[bridge]]`, `name = "b"`, `urls = ["mqtt://h?x=1"]`),
			`ralph.toml:3: bridge[0].urls[0]: unexpected query in "mqtt://h?x=1" (a broker URL has none)`},
		{"URL with user", doc(`[[bridge]]`, `name = "b"`, `urls = ["mqtt://u:p@h"]`),
			`ralph.toml:3: bridge[0].urls[0]: user information is not supported in "mqtt://u:p@h"`},
		{"URL with port 0", doc(`[[bridge]]`, `name = "b"`, `urls = ["mqtt://h:0"]`),
			`ralph.toml:3: bridge[0].urls[0]: invalid port "0" in "mqtt://h:0" (use 1-65535)`},
		{"URL with bad port", doc(`[[bridge]]`, `name = "b"`, `urls = ["mqtt://h:x"]`),
			`ralph.toml:3: bridge[0].urls[0]: invalid URL "mqtt://h:x": invalid port ":x" after host`},
		{"no URLs", doc(`[[bridge]]`, `name = "b"`, `urls = []`),
			`ralph.toml:3: bridge[0].urls: at least one URL is required (e.g. "mqtts://mqtt.example.com:8883")`},
		{"missing urls", doc(`[[bridge]]`, `name = "b"`),
			`ralph.toml:1: bridge[0].urls: required key is missing (at least one broker URL, e.g. ["mqtts://mqtt.example.com:8883"])`},
		{"missing bridge name", afterOKBridge(``, `[[bridge]]`, `urls = ["mqtt://a"]`, `[[bridge.forward]]`, `local = "a"`),
			`ralph.toml:6: bridge[1].name: required key is missing (1 to 64 letters, digits, _ or -, unique among bridges)`},
		{"bad bridge name", doc(`[[bridge]]`, `name = "up stream"`),
			`ralph.toml:2: bridge[0].name: "up stream" is not a valid name (use 1 to 64 letters, digits, _ or -)`},
		{"duplicate bridge names", doc(
			`data_dir = "d"`,
			`[broker]`,
			`listen = ["127.0.0.1:1883"]`,
			`[[bridge]]`,
			`name = "up"`,
			`urls = ["mqtt://a"]`,
			`[[bridge.forward]]`,
			`local = "a/#"`,
			`# second bridge`,
			``,
			`[[bridge]]`,
			`name = "up"`,
			`urls = ["mqtt://b"]`,
			`[[bridge.forward]]`,
			`local = "b/#"`),
			`ralph.toml:12: bridge[1].name: duplicate bridge name "up" (first defined on line 5)`},
		{"no forward rules", doc(`[[bridge]]`, `name = "up"`, `urls = ["mqtt://a"]`),
			`ralph.toml:1: bridge[0].forward: at least one [[bridge.forward]] or [[bridge.subscribe]] rule is required`},
		{"empty forward array", doc(`[[bridge]]`, `name = "up"`, `urls = ["mqtt://a"]`, `forward = []`),
			`ralph.toml:4: bridge[0].forward: at least one [[bridge.forward]] or [[bridge.subscribe]] rule is required`},
		{"missing local", doc(`[[bridge]]`, `name = "up"`, `urls = ["mqtt://a"]`, `[[bridge.forward]]`, `local = "a"`, `[[bridge.forward]]`, `qos = 0`),
			`ralph.toml:6: bridge[0].forward[1].local: required key is missing (an MQTT topic filter, e.g. "sensors/#")`},
		{"bad topic filter", doc(`[[bridge]]`, `name = "up"`, `urls = ["mqtt://a"]`, `[[bridge.forward]]`, `local = "sensors/#/x"`),
			`ralph.toml:5: bridge[0].forward[0].local: topic filter "sensors/#/x": # must be the last level`},
		{"wildcard in remote_prefix", bridgeWith(`[[bridge.forward]]`, `local = "a"`, `remote_prefix = "edge/+/"`),
			`ralph.toml:6: bridge[0].forward[0].remote_prefix: topic "edge/+/": wildcards + and # are not allowed in a topic name`},
		{"qos 3", doc(`[[bridge]]`, `name = "up"`, `urls = ["mqtt://a"]`, `[[bridge.forward]]`, `local = "a"`, `[[bridge.forward]]`, `local = "b"`, `qos = 3`),
			`ralph.toml:8: bridge[0].forward[1].qos: 3 is not one of 0, 1, 2`},
		{"bad duration", bridgeWith(`keepalive = "5 parsecs"`),
			`ralph.toml:4: bridge[0].keepalive: invalid duration "5 parsecs" (use a number with a unit: ns, us, ms, s, m or h, e.g. "30s" or "1h30m")`},
		{"keepalive too short", bridgeWith(`keepalive = "0s"`),
			`ralph.toml:4: bridge[0].keepalive: 0s is out of range (allowed 1s .. 18h)`},
		{"keepalive fraction", bridgeWith(`keepalive = "1.5s"`),
			`ralph.toml:4: bridge[0].keepalive: 1.5s is not a whole number of seconds`},
		{"connect_timeout zero", bridgeWith(`connect_timeout = "0s"`),
			`ralph.toml:4: bridge[0].connect_timeout: 0s is out of range (allowed: more than 0s)`},
		{"reconnect_max below reconnect_min", bridgeWith(`reconnect_min = "1m"`, `reconnect_max = "30s"`),
			`ralph.toml:5: bridge[0].reconnect_max: 30s is less than reconnect_min (1m)`},
		{"reconnect_min above default reconnect_max", bridgeWith(`reconnect_min = "2m"`),
			`ralph.toml:4: bridge[0].reconnect_min: 2m is more than reconnect_max (default 1m)`},
		{"negative session_expiry", bridgeWith(`session_expiry = "-1s"`),
			`ralph.toml:4: bridge[0].session_expiry: -1s is out of range (allowed 0s .. 1193046h28m15s)`},
		{"max_inflight too large", bridgeWith(`max_inflight = 70000`),
			`ralph.toml:4: bridge[0].max_inflight: 70000 is out of range (allowed 1 .. 65535)`},
		{"empty client_id", bridgeWith(`client_id = ""`),
			`ralph.toml:4: bridge[0].client_id: must not be empty (leave the key out for the default "ralph-<hostname>-<name>")`},

		// Inline tables and dotted keys are located too.
		{"inline bridge", doc(`# comment`, `bridge = [{name = "a", urls = ["ftp://x"], forward = [{local = "a"}]}]`),
			`ralph.toml:2: bridge[0].urls[0]: unsupported scheme "ftp" in "ftp://x" (use mqtt://, tcp://, mqtts:// or ssl://)`},
		{"inline table over lines", doc(`bridge = [`, `  {name = "a", urls = ["mqtt://x"], forward = [{local = "a"}]},`, `  {name = "b", urls = ["mqtt://x"], forward = [{local = "a"}, {local = "#/a"}]},`, `]`),
			`ralph.toml:3: bridge[1].forward[1].local: topic filter "#/a": # must be the last level`},
		{"dotted key in table", doc(`[[bridge]]`, `name = "a"`, `urls = ["mqtt://x"]`, `forward = [{local = "a"}]`, `queue.durability = "x"`),
			`ralph.toml:5: bridge[0].queue: unknown key`},
		{"dotted key value", doc(`queue.durability = "fast"`),
			`ralph.toml:1: queue.durability: "fast" is not one of sync, interval`},
		{"CRLF line endings", "[log]\r\nlevel = \"info\"\r\nformat = \"xml\"\r\n",
			`ralph.toml:3: log.format: "xml" is not one of text, json`},
		{"byte order mark", "\xef\xbb\xbf[log]\nformat = \"xml\"\n",
			`ralph.toml:2: log.format: "xml" is not one of text, json`},
		{"URL scheme in capitals", doc(`[[bridge]]`, `name = "b"`, `urls = ["HTTP://h"]`),
			`ralph.toml:3: bridge[0].urls[0]: unsupported scheme "http" in "HTTP://h" (use mqtt://, tcp://, mqtts:// or ssl://)`},

		// Serial ports.
		{"user without a password", doc(`[[broker.users]]`, `name = "a"`),
			`ralph.toml:1: broker.users[0].password_hash: required: a bcrypt hash from "ralph passwd" (or a [[broker.tls]] listener with cert_username, for certificate login only)`},
		{"cert_username without a client CA", doc(`[[broker.tls]]`, `listen = "127.0.0.1:8883"`, `cert_file = "/x.pem"`, `key_file = "/x.key"`, `cert_username = true`),
			`ralph.toml:5: broker.tls[0].cert_username: needs client_ca_file: only a verified certificate can name a user`},
		{"serial without a device", doc(`[[serial]]`, `name = "k"`),
			`ralph.toml:1: serial[0].path: required key is missing (a device such as "/dev/ttyUSB0", or match = { vid = "10c4", pid = "ea60" })`},
		{"serial path and match", doc(`[[serial]]`, `name = "k"`, `path = "/dev/ttyUSB0"`, `match = { vid = "10c4" }`),
			`ralph.toml:4: serial[0].match: set path or match, not both`},
		{"serial relative path", doc(`[[serial]]`, `name = "k"`, `path = "ttyUSB0"`),
			`ralph.toml:3: serial[0].path: "ttyUSB0" is not an absolute path`},
		{"serial bad vid", doc(`[[serial]]`, `name = "k"`, `match = { vid = "10c4", pid = "ea6" }`),
			`ralph.toml:3: serial[0].match.pid: "ea6" is not 4 hex digits (as lsusb shows it, e.g. "10c4")`},
		{"serial empty match", doc(`[[serial]]`, `name = "k"`, `[serial.match]`),
			`ralph.toml:3: serial[0].match: matches every USB serial device: give vid, pid or serial`},
		{"serial unknown match key", doc(`[[serial]]`, `name = "k"`, `match = { vendor = "10c4" }`),
			`ralph.toml:3: serial[0].match.vendor: unknown key`},
		{"serial duplicate name", doc(`[[serial]]`, `name = "k"`, `path = "/dev/a"`, `[[serial]]`, `name = "k"`, `path = "/dev/b"`),
			`ralph.toml:5: serial[1].name: duplicate serial port name "k" (first defined on line 2)`},
		{"serial same path", doc(`[[serial]]`, `name = "a"`, `path = "/dev/ttyUSB0"`, `[[serial]]`, `name = "b"`, `path = "/dev/ttyUSB0"`),
			`ralph.toml:6: serial[1].path: "/dev/ttyUSB0" is also the path of serial[0]`},
		{"serial matches overlap", doc(`[[serial]]`, `name = "a"`, `match = { vid = "10c4", pid = "ea60" }`, `[[serial]]`, `name = "b"`, `match = { vid = "10C4", serial = "7" }`),
			"ralph.toml:6: serial[1].match: matches the same devices as serial[0] (tell them apart with serial = \"...\"; `ralph serial` lists them)"},
		{"serial prefix without slash", doc(`[[serial]]`, `name = "k"`, `path = "/dev/a"`, `topic_prefix = "devices/k"`),
			`ralph.toml:4: serial[0].topic_prefix: "devices/k" must end with "/" (the board's topics are appended to it)`},
		{"serial prefix with wildcard", doc(`[[serial]]`, `name = "k"`, `path = "/dev/a"`, `topic_prefix = "devices/+/"`),
			`ralph.toml:4: serial[0].topic_prefix: topic "devices/+/": wildcards + and # are not allowed in a topic name`},
		{"serial unknown user", doc(`[[serial]]`, `name = "k"`, `path = "/dev/a"`, `user = "nobody"`),
			`ralph.toml:4: serial[0].user: "nobody" is not one of the [[broker.users]]`},
		{"serial window", doc(`[[serial]]`, `name = "k"`, `path = "/dev/a"`, `window = 0`),
			`ralph.toml:4: serial[0].window: 0 is out of range (allowed 1 .. 256)`},
		{"serial max_line", doc(`[[serial]]`, `name = "k"`, `path = "/dev/a"`, `max_line = 100`),
			`ralph.toml:4: serial[0].max_line: 100 is out of range (allowed 256 .. 65536)`},
		{"serial baud type", doc(`[[serial]]`, `name = "k"`, `path = "/dev/a"`, `baud = "fast"`),
			`ralph.toml:4: serial[0].baud: expected an integer, got string "fast"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("ralph.toml", []byte(tt.toml))
			if err == nil {
				t.Fatalf("no error, config %+v\nwant %s", cfg, tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("wrong error\n got: %s\nwant: %s", err, tt.want)
			}
		})
	}
}

// Errors carry the file name given to LoadConfig.
func TestLoadConfigErrorName(t *testing.T) {
	path := t.TempDir() + "/bad.toml"
	if err := os.WriteFile(path, []byte(doc(`[queue]`, `durability = "fast"`)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	want := path + `:2: queue.durability: "fast" is not one of sync, interval`
	if err == nil || err.Error() != want {
		t.Errorf("LoadConfig = %v, want %s", err, want)
	}
}

// A line that cannot be determined is left out rather than guessed.
func TestConfigErrorWithoutLine(t *testing.T) {
	p := &configParser{name: "x.toml", tree: map[string]any{"broker": map[string]any{"listen": []any{}}}, lines: map[string]int{}}
	got := p.errorf(keyPath{}.key("broker", "listen"), "bad").Error()
	if want := "x.toml: broker.listen: bad"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	// Absent key: the line of its table.
	p.lines["broker"] = 7
	got = p.errorf(keyPath{}.key("broker", "receive_maximum"), "bad").Error()
	if want := "x.toml:7: broker.receive_maximum: bad"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	// The library's own error formats are rewritten with the line once.
	p.lines["broker.listen"] = 3
	got = p.decodeError(errors.New(`toml: line 9 (last key "broker.listen"): incompatible types: TOML value has type int64; destination has type slice`), false).Error()
	if want := "x.toml:3: broker.listen: incompatible types: TOML value has type int64; destination has type slice"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	got = p.decodeError(errors.New(`toml: line 9 (last key "bridge.forward.qos"): incompatible types`), false).Error()
	if want := "x.toml: bridge.forward.qos: incompatible types"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestConfigLocateKeys(t *testing.T) {
	data := doc(
		`# [not] a = "table"`, // 1
		`data_dir = 'C:\dir' # comment [x]`,
		`[ log ]`,
		`level = """`,
		`multi "" [line]`, // 5
		`"""`,
		`format = '''`,
		`x'''`,
		`[broker]`,
		`listen = [ # comment`, // 10
		`  "a", 'b',`,
		`  # [c]`,
		`  "d\"]",`,
		`]`,
		`"quoted key" = { a = 1, b.c = [1, 2] }`, // 15
		`[[bridge]]`,
		`name = "a"`,
		`[[bridge.forward]]`,
		`local = "x"`,
		`  [[bridge.forward]]`, // 20
		`  local = "y"`,
		`[[ bridge ]]`,
		`name = "b"`,
		`  [[ bridge . forward ]]`,
		`  local = "z"`, // 25
		`[bridge.tls]`,
		`ca = "f"`,
		`[queue]`,
		`sync_interval = 1979-05-27 07:32:00`,
		`durability = "sync"`, // 30
	)
	want := map[string]int{
		"data_dir":                   2,
		"log":                        3,
		"log.level":                  4,
		"log.format":                 7,
		"broker":                     9,
		"broker.listen":              10,
		"broker.listen[0]":           11,
		"broker.listen[1]":           11,
		"broker.listen[2]":           13,
		`broker."quoted key"`:        15,
		`broker."quoted key".a`:      15,
		`broker."quoted key".b.c`:    15,
		`broker."quoted key".b.c[1]`: 15,
		"bridge":                     16,
		"bridge[0]":                  16,
		"bridge[0].name":             17,
		"bridge[0].forward":          18,
		"bridge[0].forward[0]":       18,
		"bridge[0].forward[0].local": 19,
		"bridge[0].forward[1]":       20,
		"bridge[0].forward[1].local": 21,
		"bridge[1]":                  22,
		"bridge[1].name":             23,
		"bridge[1].forward[0]":       24,
		"bridge[1].forward[0].local": 25,
		"bridge[1].tls":              26,
		"bridge[1].tls.ca":           27,
		"queue.sync_interval":        29,
		"queue.durability":           30,
	}
	if _, err := toml.Decode(data, new(any)); err != nil {
		t.Fatalf("test document is not valid TOML: %v", err)
	}
	got := locateKeys([]byte(data))
	for k, line := range want {
		if got[k] != line {
			t.Errorf("line of %s = %d, want %d", k, got[k], line)
		}
	}
	if _, ok := got["a"]; ok {
		t.Errorf("key in a comment was located")
	}
}

func TestConfigSize(t *testing.T) {
	tests := []struct {
		in   string
		want Size
		err  bool
	}{
		{"0", 0, false},
		{"512", 512, false},
		{"512B", 512, false},
		{"64KiB", 64 << 10, false},
		{"64kib", 64 << 10, false},
		{"64Ki", 64 << 10, false},
		{"10KB", 10_000, false},
		{"10 MB", 10_000_000, false},
		{"2GiB", 2 << 30, false},
		{"3GB", 3_000_000_000, false},
		{"1.5MiB", 0, true},
		{"-1", 0, true},
		{"", 0, true},
		{"KiB", 0, true},
		{"10TB", 0, true},
		{"99999999999999999999", 0, true},
		{"9999999999GiB", 0, true},
	}
	for _, tt := range tests {
		var s Size
		err := s.UnmarshalText([]byte(tt.in))
		if (err != nil) != tt.err || s != tt.want {
			t.Errorf("Size.UnmarshalText(%q) = %d, %v; want %d, error %v", tt.in, s, err, tt.want, tt.err)
		}
	}
	for _, s := range []Size{0, 1, 1000, 1024, 256 << 10, 3 << 20, 5 << 30, 1<<30 + 1} {
		text, _ := s.MarshalText()
		var back Size
		if err := back.UnmarshalText(text); err != nil || back != s {
			t.Errorf("Size %d marshals to %q, reads back %d, %v", s, text, back, err)
		}
	}
	if text, _ := Size(256 << 10).MarshalText(); string(text) != "256KiB" {
		t.Errorf("MarshalText(256KiB) = %q", text)
	}
	// Through the toml package: integers and strings.
	var v struct{ A, B Size }
	if _, err := toml.Decode("A = 4096\nB = \"4KiB\"\n", &v); err != nil || v.A != 4096 || v.B != 4096 {
		t.Errorf("toml.Decode = %+v, %v", v, err)
	}
	if _, err := toml.Decode("A = true\n", &v); err == nil {
		t.Errorf("toml.Decode accepted a boolean size")
	}
}

func TestConfigDuration(t *testing.T) {
	var d Duration
	if err := d.UnmarshalText([]byte("1h30m")); err != nil || d.Duration != 90*time.Minute {
		t.Errorf("UnmarshalText(1h30m) = %v, %v", d, err)
	}
	if err := d.UnmarshalText([]byte("30")); err == nil {
		t.Errorf("UnmarshalText(30) accepted a duration without unit")
	}
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{{time.Hour, "1h"}, {90 * time.Minute, "1h30m"}, {time.Minute, "1m"}, {100 * time.Millisecond, "100ms"}, {0, "0s"}, {time.Hour + time.Second, "1h0m1s"}} {
		text, _ := Duration{tt.d}.MarshalText()
		var back Duration
		if string(text) != tt.want || back.UnmarshalText(text) != nil || back.Duration != tt.d {
			t.Errorf("Duration(%v).MarshalText() = %q, want %q (reads back %v)", tt.d, text, tt.want, back)
		}
	}
	var v struct{ D Duration }
	if _, err := toml.Decode(`D = "2s"`, &v); err != nil || v.D.Duration != 2*time.Second {
		t.Errorf("toml.Decode = %+v, %v", v, err)
	}
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
