// Package configs is Ralph's configuration: the TOML file
// /etc/ralph/ralph.toml, documented key by key in ralph.toml beside this
// package.
//
// Load and Parse decode a file, fill in the defaults (Default, the one
// source of truth for every default value) and validate the result.
// Unknown keys, wrong types and invalid values are errors, each naming the
// file, the line and the key path ("ralph.toml:12: bridge[0].urls[1]:
// ..."). A Config that Parse returns is valid: the gateway runs it without
// checking it again. Warnings lists what is valid but probably not meant.
//
// Where things are: the types are in this file; parse.go decodes and words
// errors, schema.go checks keys and types against the types, locate.go finds
// the line of a key, defaults.go holds the defaults, validate.go, broker.go,
// bridge.go and serial.go check values by section.
package configs

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

// Serial is a board on a USB serial port, speaking the line protocol
// of serialin/PROTOCOL.md. It appears on the broker as the MQTT client
// ClientID() with a persistent session.
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

// ClientID is the MQTT client id the board appears as: "serial-<name>".
// ACLs name it with %c.
func (s Serial) ClientID() string { return "serial-" + s.Name }

// USBMatch selects a USB serial device: vid and pid are 4 hex digits (as
// lsusb shows them), serial its serial number. Empty keys match anything.
type USBMatch struct {
	VID    string `toml:"vid"`
	PID    string `toml:"pid"`
	Serial string `toml:"serial"`
}

// HTTP configures the local HTTP endpoint: /healthz, /metrics
// (Prometheus) and /status, which `ralph status` reads.
type HTTP struct {
	// Listen is a host:port, default "127.0.0.1:9883"; "" turns the
	// endpoint off. It has no authentication: keep it on loopback.
	Listen string `toml:"listen"`
}

// Log selects how much Ralph logs and in which format.
type Log struct {
	Level  string `toml:"level"`  // debug|info|warn|error, default "info"
	Format string `toml:"format"` // text|json, default "text"
}

// Broker configures the local MQTT broker that devices publish to.
type Broker struct {
	// Listen lists TCP host:port addresses, default ["127.0.0.1:1883"]. The
	// host may be empty (all interfaces), an IP address or "localhost".
	Listen []string `toml:"listen"`
	// TLS and WebSocket are further listeners; the same rules on anonymous
	// clients apply by address.
	TLS       []TLSListener       `toml:"tls"`
	WebSocket []WebSocketListener `toml:"websocket"`
	// Users may log in with a username and password; see User.
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

// TLSListener is an MQTT-over-TLS listener for devices.
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

// WebSocketListener is an MQTT-over-WebSocket listener (any path, e.g.
// /mqtt); with cert_file and key_file it serves wss.
type WebSocketListener struct {
	Listen   string `toml:"listen"`
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
}

// User is an account for devices.
type User struct {
	Name         string   `toml:"name"`          // required, unique
	PasswordHash string   `toml:"password_hash"` // bcrypt, from "ralph passwd"; none: certificate login only (cert_username)
	Publish      []string `toml:"publish"`       // topic filters it may publish to; %u username, %c client id; default ["#"]
	Subscribe    []string `toml:"subscribe"`     // filters it may subscribe within; default ["#", "$SYS/#"]
	// PublishDeny and SubscribeDeny are evaluated before the two above and
	// win: see ACL. Default [] (nothing denied).
	PublishDeny   []string `toml:"publish_deny"`
	SubscribeDeny []string `toml:"subscribe_deny"`
}

// ACL lists topic filters (%u and %c substituted) a client may
// publish to and subscribe within, and deny lists evaluated first, which
// win: a publish to a topic a publish_deny filter matches is refused, as
// is a subscription to a filter a subscribe_deny filter covers (one that
// could match only denied topics), and a message on a topic a
// subscribe_deny filter matches is delivered to no subscription.
type ACL struct {
	Publish       []string `toml:"publish"`
	Subscribe     []string `toml:"subscribe"`
	PublishDeny   []string `toml:"publish_deny"`
	SubscribeDeny []string `toml:"subscribe_deny"`
}

// Queue configures the durable store-and-forward queue.
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

// Bridge is one upstream MQTT broker that local messages are forwarded
// to (and downlink messages come from).
type Bridge struct {
	// Name identifies the bridge: 1 to 64 of A-Z a-z 0-9 _ -, unique.
	Name string `toml:"name"`
	// Protocol is the MQTT version spoken upstream: "5" (default) or
	// "3.1.1", for brokers without MQTT 5. 3.1.1 cannot carry MQTT 5
	// properties (user properties, message expiry, content type, ...):
	// they are dropped, and counted.
	Protocol string `toml:"protocol"`
	// URLs of the upstream broker, tried in order. Schemes mqtt:// and tcp://
	// are plain TCP, mqtts://, ssl:// and tls:// are TLS, ws:// and wss://
	// MQTT over WebSocket (over TLS), which may have a path ("/mqtt"). A
	// missing port is filled in (1883 plain, 8883 TLS, 80 ws, 443 wss).
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
	// 1h, 0 .. 4294967295s, whole seconds. MQTT 3.1.1 has none: the
	// upstream's own settings decide how long it keeps the session.
	SessionExpiry Duration `toml:"session_expiry"`
	// Username and Password authenticate to the upstream broker;
	// PasswordFile reads the password from a file (its first line) so
	// that it can be kept out of this one.
	Username     string `toml:"username"`
	Password     string `toml:"password"`
	PasswordFile string `toml:"password_file"`
	// Auth is how the bridge logs in: "password" (the keys above, or no
	// credentials) or "azure-sas", as an Azure IoT Hub device whose id is
	// ClientID: the username is <hub host>/<device>/?api-version=…, and the
	// password a SAS token signed with the device's key (base64, the first
	// line of SASKeyFile), valid for SASTTL and renewed before it expires.
	Auth       string   `toml:"auth"`
	SASKeyFile string   `toml:"sas_key_file"`
	SASTTL     Duration `toml:"sas_ttl"`
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
	// ALPN lists the protocols the TLS handshake offers (on mqtts:// and
	// wss:// URLs only), of which the server must agree to one: AWS IoT
	// Core on port 443 wants ["x-amzn-mqtt-ca"]. Not set by default (no
	// ALPN).
	ALPN []string `toml:"alpn"`
	// Proxy is an HTTP proxy, "http://[user:password@]host[:port]" (port
	// 80 if none is given), that every connection of the bridge goes
	// through, whatever the URL's scheme: a CONNECT tunnel, with Basic
	// credentials when the proxy URL has a user. Default "" (none).
	Proxy string `toml:"proxy"`
	// Upstream limits, checked before a message is published: a message
	// over one is not sent but moved to the local dead-letter topic with
	// the reason. Limits is a preset of them: "aws-iot-core" (AWS IoT
	// Core's quotas) is MaxPayload 128KB, MaxTopicLevels 8, MaxTopicLength
	// 256 and MaxQoS 1; a key set in the file wins over its preset. The
	// topic counts as it goes upstream, without the prefix
	// $aws/rules/<rule>/ of AWS IoT Basic Ingest. Defaults: "" (no
	// preset), and 0 (no limit) for the three limits.
	Limits         string `toml:"limits"`
	MaxPayload     Size   `toml:"max_payload"`      // bytes of payload, at most 256MiB
	MaxTopicLevels int    `toml:"max_topic_levels"` // levels (slashes + 1) of the upstream topic, at most 65535
	MaxTopicLength int    `toml:"max_topic_length"` // bytes of the upstream topic, at most 65535
	// MaxQoS, 1 or 2, caps the QoS of every forward and subscribe rule: a
	// QoS 2 rule forwards and subscribes at 1 with max_qos = 1 (AWS IoT
	// Core has no QoS 2). Not set (0) by default: each rule's qos holds.
	MaxQoS int `toml:"max_qos"`
	// TimestampProperty, if set, is the name of an MQTT 5 user property
	// added to every message forwarded, holding when Ralph stored it (RFC
	// 3339, UTC, milliseconds), so that a backlog keeps its times. MQTT
	// 5 upstreams only. Default "" (none).
	TimestampProperty string `toml:"timestamp_property"`
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
	// RemoteTopic, instead of the two above, is the one upstream topic of
	// every message the rule selects (Azure IoT Hub's device-to-cloud
	// topic devices/<device>/messages/events/, say).
	RemoteTopic string `toml:"remote_topic"`
	QoS         int    `toml:"qos"` // 0, 1 or 2; default 1
	// Priority, 0 (the most urgent) to 9, default 4: with a backlog, what
	// rules of a lower number select is forwarded before what rules of a
	// higher one do; within one priority, in queue order.
	Priority int `toml:"priority"`
	// TimestampProperty, if set, overrides the bridge's for this rule.
	TimestampProperty string `toml:"timestamp_property"`
}
