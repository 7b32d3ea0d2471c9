package configs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"golang.org/x/crypto/bcrypt"

	"github.com/ralph-gateway/ralph/internal/topic"
)

// Config is Ralph's whole configuration.
type Config struct {
	DataDir string   `toml:"data_dir"` // default "ralph-data" (relative to the working directory)
	Log     Log      `toml:"log"`
	Broker  Broker   `toml:"broker"`
	Queue   Queue    `toml:"queue"`
	HTTP    HTTP     `toml:"http"`
	Bridges []Bridge `toml:"bridge"`
	Serial  []Serial `toml:"serial"`
}

// SerialConfig is a board on a USB serial port, speaking the line protocol
// of serialin/PROTOCOL.md. It appears on the broker as the MQTT client
// "serial-<name>" with a persistent session.
type Serial struct {
	// Name identifies the port: 1 to 64 of A-Z a-z 0-9 _ -, unique.
	Name string `toml:"name"`
	// Path is the device, e.g. /dev/ttyUSB0 or, better, its stable
	// /dev/serial/by-id/... link. Or Match finds it by its USB descriptor
	// wherever it is plugged in. Set one of the two.
	Path  string   `toml:"path"`
	Match USBMatch `toml:"match"`
	// Baud is the line speed, default 115200.
	Baud int `toml:"baud"`
	// TopicPrefix is put in front of the board's topics and taken off the
	// topics it receives; it ends with "/". Default "serial/<name>/".
	TopicPrefix string `toml:"topic_prefix"`
	// AbsoluteTopics lets the board use topics outside its prefix by
	// starting them with "/". Default false.
	AbsoluteTopics bool `toml:"absolute_topics"`
	// User is the [[broker.users]] entry whose ACL applies to the board
	// (no password: the port vouches for it). Default: the anonymous ACL.
	User string `toml:"user"`
	// StatusTopic gets a retained JSON online/offline state; default
	// "<topic_prefix>$status".
	StatusTopic string `toml:"status_topic"`
	// LogTopic, if set, gets the board's log lines (QoS 0). Default "".
	LogTopic string `toml:"log_topic"`
	// MaxLine is the longest line accepted from or sent to the board,
	// default 4096, allowed 256 .. 65536.
	MaxLine int `toml:"max_line"`
	// OfflineAfter: the board is marked offline after this much silence
	// (it is pinged at half of it). Default 30s.
	OfflineAfter Duration `toml:"offline_after"`
	// Resend is how long an unacknowledged MSG waits before it is sent
	// again, default 2s; Window is how many may be unacknowledged at
	// once, default 1 (in order even when frames are lost), allowed
	// 1 .. 256.
	Resend Duration `toml:"resend"`
	Window int      `toml:"window"`
}

// USBMatch selects a USB serial device: vid and pid are 4 hex digits (as
// lsusb shows them), serial its serial number. Empty keys match anything.
type USBMatch struct {
	VID    string `toml:"vid"`
	PID    string `toml:"pid"`
	Serial string `toml:"serial"`
}

// HTTPConfig configures the local HTTP endpoint: /healthz, /metrics
// (Prometheus) and /status, which `ralph status` reads.
type HTTP struct {
	// Listen is a host:port, default "127.0.0.1:9883"; "" turns the
	// endpoint off. It has no authentication: keep it on loopback.
	Listen string `toml:"listen"`
}

// LogConfig selects how much Ralph logs and in which format.
type Log struct {
	Level  string `toml:"level"`  // debug|info|warn|error, default "info"
	Format string `toml:"format"` // text|json, default "text"
}

// BrokerConfig configures the local MQTT broker that devices publish to.
type Broker struct {
	// Listen lists TCP host:port addresses, default ["127.0.0.1:1883"]. The
	// host may be empty (all interfaces), an IP address or "localhost".
	Listen []string `toml:"listen"`
	// TLS and WebSocket are further listeners; the same rules on anonymous
	// clients apply by address.
	TLS       []TLSListener       `toml:"tls"`
	WebSocket []WebSocketListener `toml:"websocket"`
	// Users may log in with a username and password; see UserConfig.
	Users []User `toml:"users"`
	// Anonymous is what clients without a username may publish and
	// subscribe to; default everything.
	Anonymous ACL `toml:"anonymous"`
	// AllowAnonymous admits clients without a username on non-loopback
	// listeners too (loopback ones always admit them). Default false: from
	// the network, devices log in as one of Users.
	AllowAnonymous bool `toml:"allow_anonymous"`
	// MaxPacketSize is the largest MQTT packet accepted, default 256 KiB,
	// allowed 1 KiB .. 256 MiB.
	MaxPacketSize Size `toml:"max_packet_size"`
	// Limits: connections at once (default 10000); keepalive cap, longer or
	// no keepalives are cut to it (default 1h); topic length in bytes
	// (default 1024) and levels (default 32); MQTT 5 message expiry cap
	// (default 720h).
	MaxClients       int      `toml:"max_clients"`
	MaxKeepAlive     Duration `toml:"max_keepalive"`
	MaxTopicLength   int      `toml:"max_topic_length"`
	MaxTopicLevels   int      `toml:"max_topic_levels"`
	MaxMessageExpiry Duration `toml:"max_message_expiry"`
	// ReceiveMaximum is the number of QoS>0 publishes per client awaiting
	// acknowledgement; default 256, allowed 1..65535.
	ReceiveMaximum int `toml:"receive_maximum"`
}

// TLSListenerConfig is an MQTT-over-TLS listener for devices.
type TLSListener struct {
	Listen       string `toml:"listen"`         // host:port, required
	CertFile     string `toml:"cert_file"`      // PEM, required
	KeyFile      string `toml:"key_file"`       // PEM, required
	ClientCAFile string `toml:"client_ca_file"` // PEM; when set, clients must present a certificate it signed
	// CertUsername (with client_ca_file): the client certificate's common
	// name is the client's username, one of the [[broker.users]]; no
	// password is asked for. Default false.
	CertUsername bool `toml:"cert_username"`
}

// WSListenerConfig is an MQTT-over-WebSocket listener (any path, e.g.
// /mqtt); with cert_file and key_file it serves wss.
type WebSocketListener struct {
	Listen   string `toml:"listen"`
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
}

// UserConfig is an account for devices.
type User struct {
	Name         string   `toml:"name"`          // required, unique
	PasswordHash string   `toml:"password_hash"` // bcrypt, from "ralph passwd"; none: certificate login only (cert_username)
	Publish      []string `toml:"publish"`       // topic filters it may publish to; %u username, %c client id; default ["#"]
	Subscribe    []string `toml:"subscribe"`     // filters it may subscribe within; default ["#", "$SYS/#"]
}

// ACLConfig lists topic filters (%u and %c substituted) a client may
// publish to and subscribe within.
type ACL struct {
	Publish   []string `toml:"publish"`
	Subscribe []string `toml:"subscribe"`
}

// QueueConfig configures the durable store-and-forward queue.
type Queue struct {
	Durability   string   `toml:"durability"`    // "sync" (default) or "interval"
	SyncInterval Duration `toml:"sync_interval"` // default 100ms; > 0 and <= 10s; used with "interval"
	// MaxSyncsPerSecond caps the fsyncs a second with "sync": under load an
	// acknowledgement waits up to 1/MaxSyncsPerSecond for the fsync it
	// shares with what arrived meanwhile; after an idle spell a commit is
	// synced at once. Default 10; 0 to 1000; 0 syncs every commit at once.
	MaxSyncsPerSecond int `toml:"max_syncs_per_second"`
	// MaxBytes is the disk budget for queued messages, default 1 GiB; "0"
	// means no budget (only min_free applies).
	MaxBytes Size `toml:"max_bytes"`
	// OnFull is what happens at max_bytes: "drop-oldest" (default) deletes
	// the oldest messages, counted per bridge; "reject" refuses new ones.
	OnFull string `toml:"on_full"`
	// MinFree is the free space to keep on the data directory's
	// filesystem: below it new messages are refused. Default 64 MiB.
	MinFree Size `toml:"min_free"`
	// MaxAge deletes messages older than this even if not yet forwarded;
	// default "0s" (off).
	MaxAge Duration `toml:"max_age"`
	// KeepLocal keeps messages no bridge needs any more for this long;
	// default "0s" (deleted at once).
	KeepLocal Duration `toml:"keep_local"`
}

// BridgeConfig is one upstream MQTT 5 broker that local messages are
// forwarded to.
type Bridge struct {
	// Name identifies the bridge: 1 to 64 of A-Z a-z 0-9 _ -, unique.
	Name string `toml:"name"`
	// URLs of the upstream broker, tried in order. Schemes mqtt:// and tcp://
	// are plain TCP, mqtts://, ssl:// and tls:// are TLS. A missing port is
	// filled in (1883 plain, 8883 TLS).
	URLs []string `toml:"urls"`
	// ClientID defaults to "ralph-<hostname>-<name>".
	ClientID string `toml:"client_id"`
	// MaxRate caps forwarding in messages per second, 0 (default) for no
	// cap: a backlog drained after an outage does not swamp a metered link.
	MaxRate int `toml:"max_rate"`
	// MaxInflight is the number of QoS>0 publishes awaiting acknowledgement
	// from upstream; default 32, allowed 1..65535.
	MaxInflight    int      `toml:"max_inflight"`
	KeepAlive      Duration `toml:"keepalive"`       // default 30s, 1s..18h, whole seconds
	ConnectTimeout Duration `toml:"connect_timeout"` // default 10s, > 0
	ReconnectMin   Duration `toml:"reconnect_min"`   // default 1s, > 0
	ReconnectMax   Duration `toml:"reconnect_max"`   // default 60s, >= reconnect_min
	// SessionExpiry is the upstream MQTT 5 session expiry interval, default
	// 1h, 0 .. 4294967295s, whole seconds.
	SessionExpiry Duration `toml:"session_expiry"`
	// Username and Password authenticate to the upstream broker;
	// PasswordFile reads the password from a file (its first line) so
	// that it can be kept out of this one.
	Username     string `toml:"username"`
	Password     string `toml:"password"`
	PasswordFile string `toml:"password_file"`
	// TLS settings for mqtts:// URLs. CAFile (PEM) replaces the system
	// roots; CertFile and KeyFile (PEM) are a client certificate for
	// mutual TLS; ServerName overrides the name the server's certificate
	// must carry; InsecureSkipVerify turns verification off (testing only).
	CAFile             string `toml:"ca_file"`
	CertFile           string `toml:"cert_file"`
	KeyFile            string `toml:"key_file"`
	ServerName         string `toml:"server_name"`
	InsecureSkipVerify bool   `toml:"insecure_skip_verify"`
	// StateTopic is an upstream topic where the bridge publishes a
	// retained "online" when it connects and leaves "offline" as its will,
	// like Mosquitto's bridge notifications. Default "" (none).
	StateTopic string `toml:"state_topic"`
	// PrimaryRetry: connected to a later URL for this long, the bridge
	// goes back to the first one. Default 5m; "0s" stays.
	PrimaryRetry Duration `toml:"primary_retry"`
	// AckTimeout: messages in flight and no acknowledgement for this long
	// means a stuck link: reconnect. Default 60s; "0s" never.
	AckTimeout Duration `toml:"ack_timeout"`
	// Forward lists which local topics are forwarded; at least one.
	Forward []ForwardRule `toml:"forward"`
	// Subscribe lists which upstream topics come down to local devices.
	Subscribe []SubscribeRule `toml:"subscribe"`
}

// SubscribeRule brings messages from the upstream down to the local
// broker: Ralph subscribes to Remote upstream; a message received is
// published locally on its topic with StripPrefix removed (when present)
// and LocalPrefix prepended. Such messages are never forwarded upstream
// again, by any bridge.
type SubscribeRule struct {
	Remote      string `toml:"remote"`       // required MQTT topic filter
	StripPrefix string `toml:"strip_prefix"` // optional
	LocalPrefix string `toml:"local_prefix"` // optional
	QoS         int    `toml:"qos"`          // 0, 1 or 2; default 1
	Retain      bool   `toml:"retain"`       // keep the retain flag locally; default false
}

// ForwardRule forwards local messages whose topic matches Local upstream.
// The upstream topic is the local topic with StripPrefix removed (when the
// topic starts with it) and then RemotePrefix prepended.
type ForwardRule struct {
	Local        string `toml:"local"`         // required MQTT topic filter
	StripPrefix  string `toml:"strip_prefix"`  // optional
	RemotePrefix string `toml:"remote_prefix"` // optional
	QoS          int    `toml:"qos"`           // 0, 1 or 2; default 1
}

// Warnings lists what in cfg is valid but probably not meant: a serial
// port whose ACL lets its board publish nothing under its topic prefix
// (every publish would be refused, easy to miss until data is missing
// upstream).
func (cfg *Config) Warnings() []string {
	var out []string
	for _, sc := range cfg.Serial {
		acl, who := cfg.Broker.Anonymous.Publish, "the anonymous ACL"
		for _, u := range cfg.Broker.Users {
			if sc.User != "" && u.Name == sc.User {
				acl, who = u.Publish, "user "+u.Name+"'s ACL"
			}
		}
		allowed := false
		for _, f := range acl {
			f = strings.NewReplacer("%u", sc.User, "%c", "serial-"+sc.Name).Replace(f)
			allowed = allowed || topic.Overlap(f, sc.TopicPrefix+"#")
		}
		if !allowed {
			out = append(out, fmt.Sprintf("serial port %s: %s allows no publish under %q: the board's publishes will be refused", sc.Name, who, sc.TopicPrefix))
		}
	}
	return out
}

// DefaultHTTPListen is where the HTTP endpoint listens unless configured.
const DefaultHTTPListen = "127.0.0.1:9883"

// String formats s like the config does, e.g. "1GiB".
func (s Size) String() string { return formatSize(s) }

// Duration is a time.Duration written as a string such as "30s" or "1h30m".
type Duration struct{ time.Duration }

// UnmarshalText parses a duration such as "30s" or "1h30m".
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(string(text))
	if err != nil {
		return fmt.Errorf(`invalid duration %q (use a number with a unit: ns, us, ms, s, m or h, e.g. "30s" or "1h30m")`, truncate(string(text)))
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration the way UnmarshalText reads it, e.g. "1h30m".
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(formatDuration(d.Duration)), nil
}

// Size is a byte count written as a string: "512", "64KiB", "2GiB", "10MB"
// (KB, MB, GB are decimal, KiB, MiB, GiB binary; the B is optional and units
// are case-insensitive), or as a bare TOML integer.
type Size int64

const (
	kiB Size = 1 << 10
	miB Size = 1 << 20
	giB Size = 1 << 30
)

var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9,
	"ki": 1 << 10, "kib": 1 << 10, "mi": 1 << 20, "mib": 1 << 20, "gi": 1 << 30, "gib": 1 << 30,
}

// UnmarshalText parses a size such as "256KiB", "10MB" or "4096".
func (s *Size) UnmarshalText(text []byte) error {
	str := strings.TrimSpace(string(text))
	i := 0
	for i < len(str) && str[i] >= '0' && str[i] <= '9' {
		i++
	}
	mult, ok := sizeUnits[strings.ToLower(strings.TrimSpace(str[i:]))]
	if i == 0 || !ok {
		return fmt.Errorf(`invalid size %q (use a byte count or a whole number with a unit: B, KB, MB, GB, KiB, MiB or GiB, e.g. "256KiB")`, truncate(string(text)))
	}
	n, err := strconv.ParseInt(str[:i], 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return fmt.Errorf("size %q is too large", truncate(string(text)))
	}
	*s = Size(n * mult)
	return nil
}

// UnmarshalTOML accepts a TOML string (see UnmarshalText) or integer.
func (s *Size) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case int64:
		if v < 0 {
			return fmt.Errorf("size %d is negative", v)
		}
		*s = Size(v)
		return nil
	case string:
		return s.UnmarshalText([]byte(v))
	}
	return fmt.Errorf("expected %s, got %s", wantSize, describe(v))
}

// MarshalText writes the size with the largest exact binary unit, e.g. "256KiB".
func (s Size) MarshalText() ([]byte, error) {
	return []byte(formatSize(s)), nil
}

// LoadConfig reads, decodes and validates the configuration file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// ParseConfig decodes data, fills in defaults and validates the result.
// Unknown keys, wrong types and invalid values are errors. Every error
// message starts with "name:line: " (the line is left out when it cannot
// be determined) followed by the key path, e.g. bridge[0].urls[1].
func Parse(name string, data []byte) (*Config, error) {
	p := &configParser{name: name, data: data}

	// First pass: the generic tree. It holds syntax errors only, and lets
	// us check keys and types with the full key path (including the index
	// into arrays of tables, which toml's own errors leave out).
	if _, err := toml.Decode(string(data), &p.tree); err != nil {
		return nil, p.decodeError(err, true)
	}
	p.lines = locateKeys(data)
	if err := p.checkTable(p.tree, reflect.TypeOf(Config{}), nil); err != nil {
		return nil, err
	}

	// Second pass: decode into a Config that already holds the defaults, so
	// keys that are absent keep their default value.
	cfg := Default()
	md, err := toml.Decode(string(data), cfg)
	if err != nil {
		return nil, p.decodeError(err, false)
	}
	if und := md.Undecoded(); len(und) > 0 {
		// checkTable already reported every key that does not fit; this is
		// a safety net. toml's keys have no array index: print the line
		// only if the key is not inside an array of tables.
		k := und[0].String()
		return nil, p.lineError(p.lines[k], k+": unknown key")
	}
	p.fillBridgeDefaults(cfg)
	p.fillACLDefaults(cfg)
	p.fillSerialDefaults(cfg)
	if err := p.validate(cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

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

// configParser carries what error messages need: the file name, the decoded
// tree (to tell absent keys from present ones) and the line of every key.
type configParser struct {
	name  string
	data  []byte
	tree  map[string]any
	lines map[string]int
}

// errorf returns "name:line: path: message". The line is that of the key at
// path; for an absent key, that of the nearest enclosing table present in
// the file. When no line is known it is left out.
func (p *configParser) errorf(path keyPath, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if len(path) > 0 {
		msg = path.String() + ": " + msg
	}
	return p.lineError(p.lineFor(path), msg)
}

func (p *configParser) lineError(line int, msg string) error {
	if line > 0 {
		return fmt.Errorf("%s:%d: %s", p.name, line, msg)
	}
	return fmt.Errorf("%s: %s", p.name, msg)
}

func (p *configParser) lineFor(path keyPath) int {
	for q := path; len(q) > 0; q = q[:len(q)-1] {
		if line, ok := p.lines[q.String()]; ok {
			return line
		}
		if _, present := lookup(p.tree, q); present {
			return 0 // present but not located: print no line rather than a wrong one
		}
	}
	return 0
}

// libErrRE matches the errors toml builds with fmt.Errorf for type
// mismatches: `toml: line 3 (last key "broker.listen"): incompatible ...`.
var libErrRE = regexp.MustCompile(`^toml: (?:line (\d+) )?\(last key "((?:[^"\\]|\\.)*)"\): (.*)$`)

// decodeError turns an error from toml.Decode into "name:line: ...", with
// the line printed once. In the first pass (into a generic tree) only
// syntax errors occur; their position is exact. Errors of the second pass
// (into Config) are caught by checkTable first and should not occur; should
// one do, toml names the key without array indexes and gives the line of
// its last occurrence, so the line is printed only when the key is outside
// arrays of tables (found by the locator under the same name).
func (p *configParser) decodeError(err error, syntax bool) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		if syntax {
			return p.lineError(syntaxLine(p.data, pe.Position), "syntax error: "+pe.Message)
		}
		return p.lineError(p.lines[pe.LastKey], pe.LastKey+": "+pe.Message)
	}
	msg := err.Error()
	if m := libErrRE.FindStringSubmatch(msg); m != nil {
		key, uerr := strconv.Unquote(`"` + m[2] + `"`)
		if uerr != nil {
			key = m[2]
		}
		return p.lineError(p.lines[key], key+": "+m[3])
	}
	return p.lineError(0, strings.TrimPrefix(msg, "toml: "))
}

// syntaxLine corrects toml's line for errors about an unexpected newline
// ("got '\n' instead"): toml counts it as part of the next line, where the
// user sees nothing wrong. When the error starts on an earlier line than
// reported and only whitespace separates the two, the earlier line is used.
func syntaxLine(data []byte, pos toml.Position) int {
	s := stripBOM(string(data))
	line := pos.Line
	if line < 2 || pos.Start < 0 || pos.Start >= len(s) {
		return line
	}
	off := 0 // where line begins
	for n := 1; n < line; n++ {
		i := strings.IndexByte(s[off:], '\n')
		if i < 0 {
			return line
		}
		off += i + 1
	}
	if pos.Start < off && strings.TrimSpace(s[pos.Start:off]) == "" {
		return 1 + strings.Count(s[:pos.Start], "\n")
	}
	return line
}

// stripBOM removes a byte order mark the way toml does, so that offsets in
// its errors match.
func stripBOM(s string) string {
	for _, bom := range []string{"\xef\xbb\xbf", "\xff\xfe", "\xfe\xff"} {
		if strings.HasPrefix(s, bom) {
			return s[len(bom):]
		}
	}
	return s
}

// ---------------------------------------------------------------------------
// Key and type checking against the Config structure.

var (
	durationType = reflect.TypeOf(Duration{})
	sizeType     = reflect.TypeOf(Size(0))
)

const wantSize = `a size such as "256KiB" or an integer byte count`

// checkTable reports the first key of m (in file order) that is not a field
// of struct type t or whose value has the wrong type.
func (p *configParser) checkTable(m map[string]any, t reflect.Type, path keyPath) error {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	line := func(k string) int {
		if l, ok := p.lines[path.key(k).String()]; ok {
			return l
		}
		return math.MaxInt
	}
	sort.Slice(keys, func(i, j int) bool {
		li, lj := line(keys[i]), line(keys[j])
		if li != lj {
			return li < lj
		}
		return keys[i] < keys[j]
	})
	for _, k := range keys {
		f, ok := fieldByTag(t, k)
		if !ok {
			return p.errorf(path.key(k), "unknown key%s", suggest(t, k))
		}
		if err := p.checkValue(m[k], f.Type, path.key(k)); err != nil {
			return err
		}
	}
	return nil
}

func (p *configParser) checkValue(v any, t reflect.Type, path keyPath) error {
	mismatch := func() error {
		return p.errorf(path, "expected %s, got %s", want(t, path), describe(v))
	}
	switch t {
	case durationType:
		s, ok := v.(string)
		if !ok {
			return mismatch()
		}
		var d Duration
		if err := d.UnmarshalText([]byte(s)); err != nil {
			return p.errorf(path, "%v", err)
		}
		return nil
	case sizeType:
		switch v.(type) {
		case string, int64:
		default:
			return mismatch()
		}
		var s Size
		if err := s.UnmarshalTOML(v); err != nil {
			return p.errorf(path, "%v", err)
		}
		return nil
	}
	switch t.Kind() {
	case reflect.String:
		if _, ok := v.(string); !ok {
			return mismatch()
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			return mismatch()
		}
	case reflect.Int:
		n, ok := v.(int64)
		if !ok {
			return mismatch()
		}
		if n < math.MinInt || n > math.MaxInt {
			return p.errorf(path, "%d is out of range", n)
		}
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return mismatch()
		}
		return p.checkTable(m, t, path)
	case reflect.Slice:
		elems, ok := asSlice(v)
		if !ok {
			return mismatch()
		}
		for i, e := range elems {
			if err := p.checkValue(e, t.Elem(), path.index(i)); err != nil {
				return err
			}
		}
	default:
		return p.errorf(path, "unsupported type %s", t) // not reached with Config
	}
	return nil
}

// asSlice returns the elements of a TOML array or array of tables.
func asSlice(v any) ([]any, bool) {
	switch v := v.(type) {
	case []any:
		return v, true
	case []map[string]any:
		s := make([]any, len(v))
		for i := range v {
			s[i] = v[i]
		}
		return s, true
	}
	return nil, false
}

func fieldByTag(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if name, _, _ := strings.Cut(f.Tag.Get("toml"), ","); name == key && f.IsExported() {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// suggest returns ` (did you mean "x"?)` when key is a likely misspelling
// of a known key of t.
func suggest(t reflect.Type, key string) string {
	best, bestDist := "", 3
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ",")
		d := editDistance(strings.ToLower(key), name)
		if d < bestDist && (d == 0 || len(name) > 3) {
			best, bestDist = name, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// want describes the TOML value expected for a field of type t.
func want(t reflect.Type, path keyPath) string {
	switch t {
	case durationType:
		return `a duration string such as "30s"`
	case sizeType:
		return wantSize
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean (true or false)"
	case reflect.Int:
		return "an integer"
	case reflect.Struct:
		return fmt.Sprintf("a table ([%s])", path.unindexed())
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Struct {
			return fmt.Sprintf("an array of tables ([[%s]])", path.unindexed())
		}
		return "an array of strings"
	}
	return t.String()
}

// describe names the type (and, for scalars, the value) of a decoded TOML value.
func describe(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("string %q", truncate(v))
	case int64:
		return fmt.Sprintf("integer %d", v)
	case float64:
		return fmt.Sprintf("float %v", v)
	case bool:
		return fmt.Sprintf("boolean %t", v)
	case time.Time:
		return "a date/time"
	case []any:
		return "an array"
	case []map[string]any:
		return "an array of tables"
	case map[string]any:
		return "a table"
	}
	return fmt.Sprintf("%T", v)
}

func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}

// ---------------------------------------------------------------------------
// Defaults that depend on presence (elements of arrays of tables start empty).

// The default ACL: everything, including reading Ralph's own $SYS
// topics. Functions, so that each config gets slices of its own.
func defaultPublishACL() []string   { return []string{"#"} }
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

// ---------------------------------------------------------------------------
// Validation of values.

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
	if err := p.oneOf(root.key("queue", "durability"), cfg.Queue.Durability, "sync", "interval"); err != nil {
		return err
	}
	if d := cfg.Queue.SyncInterval.Duration; d <= 0 || d > maxSyncInterval {
		return p.errorf(root.key("queue", "sync_interval"), "%s is out of range (allowed: more than 0s, at most %s)",
			formatDuration(d), formatDuration(maxSyncInterval))
	}
	if n := cfg.Queue.MaxSyncsPerSecond; n < 0 || n > maxSyncsPerSecond {
		return p.errorf(root.key("queue", "max_syncs_per_second"), "%d is out of range (allowed 0 .. %d; 0 for no pacing)", n, maxSyncsPerSecond)
	}
	if s := cfg.Queue.MaxBytes; s != 0 && s < miB {
		return p.errorf(root.key("queue", "max_bytes"), "%s is too small (allowed: 0 for no budget, or at least %s)", formatSize(s), formatSize(miB))
	}
	if err := p.oneOf(root.key("queue", "on_full"), cfg.Queue.OnFull, "drop-oldest", "reject"); err != nil {
		return err
	}
	if s := cfg.Queue.MinFree; s < 0 {
		return p.errorf(root.key("queue", "min_free"), "must not be negative")
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"max_age", cfg.Queue.MaxAge.Duration}, {"keep_local", cfg.Queue.KeepLocal.Duration}} {
		if d.v < 0 {
			return p.errorf(root.key("queue", d.key), "%s is negative (use \"0s\" for off)", formatDuration(d.v))
		}
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

// overlaps reports whether a device could match both m and o.
func (m USBMatch) overlaps(o USBMatch) bool {
	same := func(a, b string) bool { return a == "" || b == "" || strings.EqualFold(a, b) }
	return same(m.VID, o.VID) && same(m.PID, o.PID) && same(m.Serial, o.Serial)
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

var hex4 = regexp.MustCompile(`^[0-9A-Fa-f]{4}$`)

func (p *configParser) validateSerial(s *Serial, sp keyPath, firstName map[string]int, users map[string]bool) error {
	has := func(k string) bool { _, ok := lookup(p.tree, sp.key(k)); return ok }
	if err := p.validateName(sp, s.Name, "serial port", firstName); err != nil {
		return err
	}
	switch {
	case has("path") && has("match"):
		return p.errorf(sp.key("match"), "set path or match, not both")
	case !has("path") && !has("match"):
		return p.errorf(sp.key("path"), `required key is missing (a device such as "/dev/ttyUSB0", or match = { vid = "10c4", pid = "ea60" })`)
	case has("path") && !strings.HasPrefix(s.Path, "/"):
		return p.errorf(sp.key("path"), "%q is not an absolute path", truncate(s.Path))
	case has("match"):
		m := s.Match
		if m.VID == "" && m.PID == "" && m.Serial == "" {
			return p.errorf(sp.key("match"), "matches every USB serial device: give vid, pid or serial")
		}
		for _, k := range [][2]string{{"vid", m.VID}, {"pid", m.PID}} {
			if k[1] != "" && !hex4.MatchString(k[1]) {
				return p.errorf(sp.key("match", k[0]), "%q is not 4 hex digits (as lsusb shows it, e.g. \"10c4\")", truncate(k[1]))
			}
		}
	}
	if s.Baud <= 0 || s.Baud > 12_000_000 {
		return p.errorf(sp.key("baud"), "%d is out of range (allowed 1 .. 12000000)", s.Baud)
	}
	if s.TopicPrefix != "" {
		if err := topic.ValidateName(s.TopicPrefix); err != nil {
			return p.errorf(sp.key("topic_prefix"), "%v", err)
		}
		if !strings.HasSuffix(s.TopicPrefix, "/") {
			return p.errorf(sp.key("topic_prefix"), "%q must end with \"/\" (the board's topics are appended to it)", truncate(s.TopicPrefix))
		}
	}
	if s.User != "" && !users[s.User] {
		return p.errorf(sp.key("user"), "%q is not one of the [[broker.users]]", truncate(s.User))
	}
	for _, k := range [][2]string{{"status_topic", s.StatusTopic}, {"log_topic", s.LogTopic}} {
		if k[1] == "" && k[0] == "log_topic" {
			continue
		}
		if err := topic.ValidateName(k[1]); err != nil {
			return p.errorf(sp.key(k[0]), "%v", err)
		}
	}
	if s.MaxLine < 256 || s.MaxLine > 65536 {
		return p.errorf(sp.key("max_line"), "%d is out of range (allowed 256 .. 65536)", s.MaxLine)
	}
	for _, k := range []struct {
		key string
		d   time.Duration
	}{{"offline_after", s.OfflineAfter.Duration}, {"resend", s.Resend.Duration}} {
		if k.d < 100*time.Millisecond {
			return p.errorf(sp.key(k.key), "%s is too short (allowed: at least 100ms)", formatDuration(k.d))
		}
	}
	if s.Window < 1 || s.Window > 256 {
		return p.errorf(sp.key("window"), "%d is out of range (allowed 1 .. 256)", s.Window)
	}
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

func (p *configParser) validateBroker(b *Broker) error {
	bp := keyPath{}.key("broker")
	if len(b.Listen) == 0 {
		return p.errorf(bp.key("listen"), `at least one address is required (e.g. "127.0.0.1:1883")`)
	}
	// nonLoopback checks a device listener's address, and that someone
	// could log in on it if it is not a loopback address.
	nonLoopback := func(at keyPath, addr string) error {
		loopback, err := checkListenAddr(addr)
		if err != nil {
			return p.errorf(at, "%v", err)
		}
		if !loopback && !b.AllowAnonymous && len(b.Users) == 0 {
			return p.errorf(at, "%q is not a loopback address and there are no [[broker.users]]: "+
				"nobody could connect from other machines (add users, or set allow_anonymous = true explicitly)", truncate(addr))
		}
		return nil
	}
	seen := map[string]bool{}
	for i, addr := range b.Listen {
		lp := bp.key("listen").index(i)
		if err := nonLoopback(lp, addr); err != nil {
			return err
		}
		if seen[addr] {
			return p.errorf(lp, "duplicate address %q", addr)
		}
		seen[addr] = true
	}
	for i, l := range b.TLS {
		lp := bp.key("tls").index(i)
		if err := nonLoopback(lp.key("listen"), l.Listen); err != nil {
			return err
		}
		if l.CertUsername && l.ClientCAFile == "" {
			return p.errorf(lp.key("cert_username"), "needs client_ca_file: only a verified certificate can name a user")
		}
		if _, err := tls.LoadX509KeyPair(l.CertFile, l.KeyFile); err != nil {
			return p.errorf(lp.key("cert_file"), "%v", err)
		}
		if l.ClientCAFile != "" {
			if err := checkCAFile(l.ClientCAFile); err != nil {
				return p.errorf(lp.key("client_ca_file"), "%v", err)
			}
		}
	}
	for i, l := range b.WebSocket {
		lp := bp.key("websocket").index(i)
		if err := nonLoopback(lp.key("listen"), l.Listen); err != nil {
			return err
		}
		if (l.CertFile == "") != (l.KeyFile == "") {
			return p.errorf(lp.key("cert_file"), "cert_file and key_file go together (for wss)")
		}
		if l.CertFile != "" {
			if _, err := tls.LoadX509KeyPair(l.CertFile, l.KeyFile); err != nil {
				return p.errorf(lp.key("cert_file"), "%v", err)
			}
		}
	}
	certLogin := false
	for _, l := range b.TLS {
		certLogin = certLogin || l.CertUsername
	}
	seenUser := map[string]bool{}
	for i := range b.Users {
		u := &b.Users[i]
		up := bp.key("users").index(i)
		switch {
		case u.Name == "":
			return p.errorf(up.key("name"), "required: the username devices log in with")
		case seenUser[u.Name]:
			return p.errorf(up.key("name"), "duplicate user %q", u.Name)
		case u.PasswordHash == "" && !certLogin:
			return p.errorf(up.key("password_hash"), `required: a bcrypt hash from "ralph passwd" (or a [[broker.tls]] listener with cert_username, for certificate login only)`)
		}
		seenUser[u.Name] = true
		if _, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil && u.PasswordHash != "" {
			return p.errorf(up.key("password_hash"), `not a bcrypt hash (%v): make one with "ralph passwd"`, err)
		}
		if err := p.validateACL(up, u.Publish, u.Subscribe); err != nil {
			return err
		}
	}
	if err := p.validateACL(bp.key("anonymous"), b.Anonymous.Publish, b.Anonymous.Subscribe); err != nil {
		return err
	}
	if s := b.MaxPacketSize; s < kiB || s > 256*miB {
		return p.errorf(bp.key("max_packet_size"), "%s is out of range (allowed %s .. %s)",
			formatSize(s), formatSize(kiB), formatSize(256*miB))
	}
	for _, l := range []struct {
		key, unit string
		v, lo, hi int64
	}{
		{"max_clients", "", int64(b.MaxClients), 1, 1 << 30},
		{"max_keepalive", " seconds", int64(b.MaxKeepAlive.Duration / time.Second), 5, 65535},
		{"max_topic_length", " bytes", int64(b.MaxTopicLength), 8, 65535},
		{"max_topic_levels", "", int64(b.MaxTopicLevels), 1, 1024},
		{"max_message_expiry", " seconds", int64(b.MaxMessageExpiry.Duration / time.Second), 1, 1<<32 - 1},
	} {
		if l.v < l.lo || l.v > l.hi {
			return p.errorf(bp.key(l.key), "%d%s is out of range (allowed %d .. %d%s)", l.v, l.unit, l.lo, l.hi, l.unit)
		}
	}
	if n := b.ReceiveMaximum; n < 1 || n > 65535 {
		return p.errorf(bp.key("receive_maximum"), "%d is out of range (allowed 1 .. 65535)", n)
	}
	return nil
}

// checkListenAddr validates a host:port listen address and reports whether
// it only accepts connections from this machine.
func checkListenAddr(addr string) (loopback bool, err error) {
	const use = `use host:port, e.g. "127.0.0.1:1883", or ":1883" for all interfaces`
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		reason := err.Error()
		var ae *net.AddrError
		if errors.As(err, &ae) {
			reason = ae.Err
		}
		return false, fmt.Errorf("invalid address %q: %s (%s)", truncate(addr), reason, use)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return false, fmt.Errorf("invalid port %q in %q (use a number 0-65535)", truncate(port), truncate(addr))
	}
	switch {
	case host == "":
		return false, nil
	case strings.EqualFold(host, "localhost"):
		return true, nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false, fmt.Errorf("host %q in %q is not an IP address or localhost (%s)", truncate(host), truncate(addr), use)
	}
	return ip.Unmap().IsLoopback(), nil
}

func (p *configParser) validateBridge(b *Bridge, bp keyPath, firstName map[string]int) error {
	has := func(k string) bool { _, ok := lookup(p.tree, bp.key(k)); return ok }
	if err := p.validateName(bp, b.Name, "bridge", firstName); err != nil {
		return err
	}
	if !has("urls") {
		return p.errorf(bp.key("urls"), `required key is missing (at least one broker URL, e.g. ["mqtts://mqtt.example.com:8883"])`)
	}
	if len(b.URLs) == 0 {
		return p.errorf(bp.key("urls"), `at least one URL is required (e.g. "mqtts://mqtt.example.com:8883")`)
	}
	for i, u := range b.URLs {
		norm, err := normalizeBrokerURL(u)
		if err != nil {
			return p.errorf(bp.key("urls").index(i), "%v", err)
		}
		b.URLs[i] = norm
	}
	switch {
	case b.ClientID == "":
		return p.errorf(bp.key("client_id"), `must not be empty (leave the key out for the default "ralph-<hostname>-<name>")`)
	case len(b.ClientID) > 65535:
		return p.errorf(bp.key("client_id"), "is %d bytes, longer than 65535", len(b.ClientID))
	case strings.ContainsRune(b.ClientID, 0):
		return p.errorf(bp.key("client_id"), "must not contain a NUL character")
	}
	if n := b.MaxInflight; n < 1 || n > 65535 {
		return p.errorf(bp.key("max_inflight"), "%d is out of range (allowed 1 .. 65535)", n)
	}
	if r := b.MaxRate; r < 0 {
		return p.errorf(bp.key("max_rate"), "%d must be 0 (no cap) or a positive number of messages per second", r)
	}
	if d := b.KeepAlive.Duration; d < time.Second || d > maxKeepAlive {
		return p.errorf(bp.key("keepalive"), "%s is out of range (allowed 1s .. %s)", formatDuration(d), formatDuration(maxKeepAlive))
	} else if d%time.Second != 0 {
		return p.errorf(bp.key("keepalive"), "%s is not a whole number of seconds", formatDuration(d))
	}
	for _, k := range []struct {
		key string
		d   time.Duration
	}{{"connect_timeout", b.ConnectTimeout.Duration}, {"reconnect_min", b.ReconnectMin.Duration}} {
		if k.d <= 0 {
			return p.errorf(bp.key(k.key), "%s is out of range (allowed: more than 0s)", formatDuration(k.d))
		}
	}
	if lo, hi := b.ReconnectMin.Duration, b.ReconnectMax.Duration; hi < lo {
		if has("reconnect_max") {
			return p.errorf(bp.key("reconnect_max"), "%s is less than reconnect_min (%s)", formatDuration(hi), formatDuration(lo))
		}
		return p.errorf(bp.key("reconnect_min"), "%s is more than reconnect_max (default %s)", formatDuration(lo), formatDuration(hi))
	}
	if d := b.SessionExpiry.Duration; d < 0 || d > maxSessionExpiry {
		return p.errorf(bp.key("session_expiry"), "%s is out of range (allowed 0s .. %s)", formatDuration(d), formatDuration(maxSessionExpiry))
	} else if d%time.Second != 0 {
		return p.errorf(bp.key("session_expiry"), "%s is not a whole number of seconds", formatDuration(d))
	}
	if err := p.validateBridgeAuth(b, bp, has); err != nil {
		return err
	}
	if len(b.Forward) == 0 && len(b.Subscribe) == 0 {
		return p.errorf(bp.key("forward"), "at least one [[bridge.forward]] or [[bridge.subscribe]] rule is required")
	}
	for i := range b.Subscribe {
		if err := p.validateSubscribe(&b.Subscribe[i], bp.key("subscribe").index(i)); err != nil {
			return err
		}
	}
	for i := range b.Forward {
		if err := p.validateForward(&b.Forward[i], bp.key("forward").index(i)); err != nil {
			return err
		}
	}
	return nil
}

// validateBridgeAuth checks credentials and TLS files now, so that a bad
// path or PEM is reported with its line rather than at the first connect.
func (p *configParser) validateBridgeAuth(b *Bridge, bp keyPath, has func(string) bool) error {
	if has("password") && has("password_file") {
		return p.errorf(bp.key("password_file"), "set password or password_file, not both")
	}
	if (has("password") || has("password_file")) && b.Username == "" {
		return p.errorf(bp.key("username"), "required with a password")
	}
	if b.PasswordFile != "" {
		if _, err := ReadPasswordFile(b.PasswordFile); err != nil {
			return p.errorf(bp.key("password_file"), "%v", err)
		}
	}
	tlsURL := false
	for _, u := range b.URLs {
		tlsURL = tlsURL || isTLSURL(u)
	}
	for _, k := range []struct {
		key string
		set bool
	}{{"ca_file", b.CAFile != ""}, {"cert_file", b.CertFile != ""}, {"key_file", b.KeyFile != ""}, {"server_name", b.ServerName != ""}, {"insecure_skip_verify", b.InsecureSkipVerify}} {
		if k.set && !tlsURL {
			return p.errorf(bp.key(k.key), "applies to TLS only, and no URL of this bridge is mqtts://, ssl:// or tls://")
		}
	}
	if b.CAFile != "" {
		pem, err := os.ReadFile(b.CAFile)
		if err != nil {
			return p.errorf(bp.key("ca_file"), "%v", err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return p.errorf(bp.key("ca_file"), "%s holds no PEM certificate", b.CAFile)
		}
	}
	switch {
	case b.CertFile != "" && b.KeyFile == "":
		return p.errorf(bp.key("key_file"), "required with cert_file")
	case b.KeyFile != "" && b.CertFile == "":
		return p.errorf(bp.key("cert_file"), "required with key_file")
	case b.CertFile != "":
		if _, err := tls.LoadX509KeyPair(b.CertFile, b.KeyFile); err != nil {
			return p.errorf(bp.key("cert_file"), "%v", err)
		}
	}
	return nil
}

func checkCAFile(path string) error {
	pem, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if !x509.NewCertPool().AppendCertsFromPEM(pem) {
		return fmt.Errorf("%s holds no PEM certificate", path)
	}
	return nil
}

// ReadPasswordFile returns the first line of a password file.
func ReadPasswordFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	line = strings.TrimRight(line, "\r")
	if line == "" {
		return "", fmt.Errorf("%s: the first line is empty", path)
	}
	return line, nil
}

func isTLSURL(u string) bool {
	for _, s := range []string{"mqtts://", "ssl://", "tls://"} {
		if strings.HasPrefix(strings.ToLower(u), s) {
			return true
		}
	}
	return false
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

// normalizeBrokerURL checks an upstream broker URL and adds the default
// port when it has none.
func normalizeBrokerURL(s string) (string, error) {
	const use = "use mqtt://, tcp://, mqtts:// or ssl://"
	ts := truncate(s)
	if !strings.Contains(s, "://") {
		return "", fmt.Errorf("%q has no scheme (%s, e.g. \"mqtts://mqtt.example.com:8883\")", ts, use)
	}
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", fmt.Errorf("invalid URL %q: %v", ts, err)
	}
	var port string
	switch u.Scheme {
	case "mqtt", "tcp":
		port = "1883"
	case "mqtts", "ssl", "tls":
		port = "8883"
	default:
		return "", fmt.Errorf("unsupported scheme %q in %q (%s)", truncate(u.Scheme), ts, use)
	}
	switch {
	case u.User != nil:
		return "", fmt.Errorf("user information is not supported in %q", ts)
	case u.Hostname() == "":
		return "", fmt.Errorf("missing host in %q (e.g. \"mqtts://mqtt.example.com:8883\")", ts)
	case u.Path != "" && u.Path != "/":
		return "", fmt.Errorf("unexpected path %q in %q (a broker URL has none)", truncate(u.Path), ts)
	case u.RawQuery != "" || u.ForceQuery:
		return "", fmt.Errorf("unexpected query in %q (a broker URL has none)", ts)
	case u.Fragment != "":
		return "", fmt.Errorf("unexpected fragment in %q (a broker URL has none)", ts)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
			return "", fmt.Errorf("invalid port %q in %q (use 1-65535)", truncate(p), ts)
		}
		return s, nil
	}
	if strings.HasSuffix(u.Host, ":") {
		return "", fmt.Errorf("empty port in %q (give a port or leave out the colon)", ts)
	}
	u.Host = net.JoinHostPort(u.Hostname(), port)
	return u.String(), nil
}

func (p *configParser) validateACL(at keyPath, publish, subscribe []string) error {
	for _, l := range []struct {
		key     string
		filters []string
	}{{"publish", publish}, {"subscribe", subscribe}} {
		for j, f := range l.filters {
			g := strings.NewReplacer("%u", "u", "%c", "c").Replace(f)
			if err := topic.ValidateFilter(g); err != nil {
				return p.errorf(at.key(l.key).index(j), "%v", err)
			}
		}
	}
	return nil
}

func (p *configParser) validateForward(r *ForwardRule, rp keyPath) error {
	return p.validateRule(rp, "local", r.Local, "sensors/#", r.QoS,
		[2]string{"strip_prefix", r.StripPrefix}, [2]string{"remote_prefix", r.RemotePrefix})
}

func (p *configParser) validateSubscribe(r *SubscribeRule, rp keyPath) error {
	return p.validateRule(rp, "remote", r.Remote, "site/shed/cmd/#", r.QoS,
		[2]string{"strip_prefix", r.StripPrefix}, [2]string{"local_prefix", r.LocalPrefix})
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

// ---------------------------------------------------------------------------
// Formatting.

func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

func formatSize(s Size) string {
	switch {
	case s != 0 && s%giB == 0:
		return strconv.FormatInt(int64(s/giB), 10) + "GiB"
	case s != 0 && s%miB == 0:
		return strconv.FormatInt(int64(s/miB), 10) + "MiB"
	case s != 0 && s%kiB == 0:
		return strconv.FormatInt(int64(s/kiB), 10) + "KiB"
	}
	return strconv.FormatInt(int64(s), 10) + "B"
}

// ---------------------------------------------------------------------------
// Key paths such as bridge[1].forward[0].local.

type pathElem struct {
	key   string
	index int // >= 0: an array index; key is unused
}

type keyPath []pathElem

func (p keyPath) key(keys ...string) keyPath {
	q := append(keyPath(nil), p...)
	for _, k := range keys {
		q = append(q, pathElem{key: k, index: -1})
	}
	return q
}

func (p keyPath) index(i int) keyPath {
	return append(append(keyPath(nil), p...), pathElem{index: i})
}

func (p keyPath) parent() keyPath { return p[:len(p)-1] }

func (p keyPath) String() string {
	var b strings.Builder
	for i, e := range p {
		if e.index >= 0 {
			fmt.Fprintf(&b, "[%d]", e.index)
			continue
		}
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(quoteKey(e.key))
	}
	return b.String()
}

// unindexed is the path as written in a table header: bridge.forward.
func (p keyPath) unindexed() string {
	var parts []string
	for _, e := range p {
		if e.index < 0 {
			parts = append(parts, quoteKey(e.key))
		}
	}
	return strings.Join(parts, ".")
}

func quoteKey(k string) string {
	if k == "" {
		return `""`
	}
	for _, r := range k {
		if !isNameChar(r) {
			return strconv.Quote(k)
		}
	}
	return k
}

// lookup finds the value at path in a decoded TOML tree.
func lookup(tree map[string]any, path keyPath) (any, bool) {
	var v any = tree
	for _, e := range path {
		if e.index >= 0 {
			s, ok := asSlice(v)
			if !ok || e.index >= len(s) {
				return nil, false
			}
			v = s[e.index]
			continue
		}
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[e.key]; !ok {
			return nil, false
		}
	}
	return v, true
}

// ---------------------------------------------------------------------------
// Key locator. toml does not export key positions, so this scans the raw
// (already successfully parsed) file and records the line of every table
// header, key and array element under its full path, e.g.
// "bridge[1].forward[0].local". It understands table headers, arrays of
// tables, dotted and quoted keys, inline tables, (multi-line) arrays and all
// string forms. It stops at anything it does not understand; keys it did
// not reach simply have no line.

func locateKeys(data []byte) map[string]int {
	l := &locator{s: stripBOM(string(data)), line: 1, lines: map[string]int{}, arrays: map[string]int{}}
	l.document()
	return l.lines
}

type locator struct {
	s      string
	i      int
	line   int
	lines  map[string]int
	arrays map[string]int // [[array]] path → number of tables so far
}

func (l *locator) eof() bool { return l.i >= len(l.s) }

func (l *locator) at(c byte) bool { return l.i < len(l.s) && l.s[l.i] == c }

// set records the line of path, overwriting; record only when unknown.
func (l *locator) set(p keyPath, line int) { l.lines[p.String()] = line }

func (l *locator) record(p keyPath, line int) {
	if _, ok := l.lines[p.String()]; !ok {
		l.set(p, line)
	}
}

func (l *locator) document() {
	var table keyPath
	for {
		l.skipTrivia()
		if l.eof() {
			return
		}
		if l.at('[') {
			line := l.line
			array := strings.HasPrefix(l.s[l.i:], "[[")
			l.i++
			if array {
				l.i++
			}
			parts, ok := l.key()
			if !ok {
				return
			}
			l.skipSpaces()
			if array {
				if !strings.HasPrefix(l.s[l.i:], "]]") {
					return
				}
				l.i += 2
			} else {
				if !l.at(']') {
					return
				}
				l.i++
			}
			table = l.header(parts, array, line)
		} else if !l.keyValue(table) {
			return
		}
		l.skipSpaces()
		if l.at('#') {
			l.skipComment()
		}
		if !l.eof() && !l.at('\n') && !l.at('\r') {
			return
		}
	}
}

// header resolves a [table] or [[array]] header to its full path, taking
// the latest table of each enclosing array of tables.
func (l *locator) header(parts []string, array bool, line int) keyPath {
	var p keyPath
	for k, part := range parts {
		p = p.key(part)
		last := k == len(parts)-1
		if !last {
			l.record(p, line)
			if n := l.arrays[p.String()]; n > 0 {
				p = p.index(n - 1)
			}
			continue
		}
		if array {
			n := l.arrays[p.String()]
			l.arrays[p.String()] = n + 1
			l.record(p, line)
			p = p.index(n)
		}
		l.set(p, line)
	}
	return p
}

// keyValue reads key = value in table.
func (l *locator) keyValue(table keyPath) bool {
	line := l.line
	parts, ok := l.key()
	if !ok {
		return false
	}
	l.skipSpaces()
	if !l.at('=') {
		return false
	}
	l.i++
	l.skipSpaces()
	p := table
	for k, part := range parts {
		p = p.key(part)
		if k < len(parts)-1 {
			l.record(p, line)
		}
	}
	l.set(p, line)
	return l.value(p)
}

// key reads a possibly dotted key of bare and quoted parts.
func (l *locator) key() ([]string, bool) {
	var parts []string
	for {
		l.skipSpaces()
		if l.eof() {
			return nil, false
		}
		start := l.i
		switch c := l.s[l.i]; {
		case c == '"' || c == '\'':
			if strings.HasPrefix(l.s[l.i:], string([]byte{c, c, c})) || !l.str() {
				return nil, false
			}
			raw := l.s[start:l.i]
			k := raw[1 : len(raw)-1]
			if c == '"' {
				if u, err := strconv.Unquote(raw); err == nil {
					k = u
				}
			}
			parts = append(parts, k)
		case isNameChar(rune(c)):
			for !l.eof() && isNameChar(rune(l.s[l.i])) {
				l.i++
			}
			parts = append(parts, l.s[start:l.i])
		default:
			return nil, false
		}
		l.skipSpaces()
		if !l.at('.') {
			return parts, true
		}
		l.i++
	}
}

// value reads one value, recording array elements and inline table keys.
func (l *locator) value(p keyPath) bool {
	if l.eof() {
		return false
	}
	switch c := l.s[l.i]; c {
	case '"', '\'':
		return l.str()
	case '[':
		l.i++
		for n := 0; ; n++ {
			l.skipTrivia()
			if l.eof() {
				return false
			}
			if l.at(']') {
				l.i++
				return true
			}
			ep := p.index(n)
			l.set(ep, l.line)
			if !l.value(ep) {
				return false
			}
			l.skipTrivia()
			switch {
			case l.at(','):
				l.i++
			case l.at(']'):
				l.i++
				return true
			default:
				return false
			}
		}
	case '{':
		l.i++
		for {
			l.skipTrivia()
			if l.eof() {
				return false
			}
			if l.at('}') {
				l.i++
				return true
			}
			if !l.keyValue(p) {
				return false
			}
			l.skipTrivia()
			switch {
			case l.at(','):
				l.i++
			case l.at('}'):
				l.i++
				return true
			default:
				return false
			}
		}
	default: // number, boolean, date/time
		start := l.i
		for !l.eof() && !strings.ContainsRune(",]}#\r\n", rune(l.s[l.i])) {
			l.i++
		}
		return l.i > start
	}
}

// str skips a basic, literal or multi-line string, counting lines.
func (l *locator) str() bool {
	q := l.s[l.i]
	triple := string([]byte{q, q, q})
	if strings.HasPrefix(l.s[l.i:], triple) {
		l.i += 3
		for !l.eof() {
			c := l.s[l.i]
			switch {
			case c == '\\' && q == '"':
				l.i++
				if l.at('\n') {
					l.line++
				}
				l.i++
			case c == q && strings.HasPrefix(l.s[l.i:], triple):
				l.i += 3
				// Up to two more quotes are part of the content: """a""""".
				for k := 0; k < 2 && l.at(q); k++ {
					l.i++
				}
				return true
			default:
				if c == '\n' {
					l.line++
				}
				l.i++
			}
		}
		return false
	}
	l.i++
	for !l.eof() {
		switch c := l.s[l.i]; {
		case c == '\\' && q == '"':
			l.i += 2
		case c == q:
			l.i++
			return true
		case c == '\n':
			return false
		default:
			l.i++
		}
	}
	return false
}

func (l *locator) skipSpaces() {
	for l.at(' ') || l.at('\t') {
		l.i++
	}
}

// skipTrivia skips whitespace, newlines and comments.
func (l *locator) skipTrivia() {
	for !l.eof() {
		switch l.s[l.i] {
		case ' ', '\t', '\r':
			l.i++
		case '\n':
			l.line++
			l.i++
		case '#':
			l.skipComment()
		default:
			return
		}
	}
}

func (l *locator) skipComment() {
	for !l.eof() && !l.at('\n') {
		l.i++
	}
}
