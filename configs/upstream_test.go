package configs

// How a bridge reaches its upstream (ALPN, the proxy, ws:// and wss://
// URLs) and the upstream limits (limits and its preset, max_payload,
// max_topic_levels, max_topic_length, max_qos): what they parse to, every
// error with its line, and the warning about max_rate.

import (
	"reflect"
	"strings"
	"testing"
)

// upstreamBridge is a bridge to url with the given keys on lines 4, 5, ...
func upstreamBridge(url string, keys ...string) string {
	lines := append([]string{`[[bridge]]`, `name = "up"`, `urls = ["` + url + `"]`}, keys...)
	return doc(append(lines, `[[bridge.forward]]`, `local = "a/#"`)...)
}

func TestUpstreamTransport(t *testing.T) {
	for _, tt := range []struct {
		toml       string
		urls       []string
		alpn       []string
		proxy      string
		maxTopicLv int
	}{
		{upstreamBridge("ws://h"), []string{"ws://h:80"}, nil, "", 0},
		{upstreamBridge("wss://h/mqtt"), []string{"wss://h:443/mqtt"}, nil, "", 0},
		{upstreamBridge("ws://h:9001/mqtt"), []string{"ws://h:9001/mqtt"}, nil, "", 0},
		{upstreamBridge("mqtts://a.iot.eu-west-1.amazonaws.com:443", `alpn = ["x-amzn-mqtt-ca"]`),
			[]string{"mqtts://a.iot.eu-west-1.amazonaws.com:443"}, []string{"x-amzn-mqtt-ca"}, "", 0},
		{upstreamBridge("wss://h", `alpn = ["a", "b"]`), []string{"wss://h:443"}, []string{"a", "b"}, "", 0},
		{upstreamBridge("mqtt://h", `proxy = "http://proxy.corp:3128"`), []string{"mqtt://h:1883"}, nil, "http://proxy.corp:3128", 0},
		{upstreamBridge("mqtt://h", `proxy = "http://proxy.corp"`), []string{"mqtt://h:1883"}, nil, "http://proxy.corp:80", 0},
		{upstreamBridge("mqtt://h", `proxy = "http://me:p%40ss@proxy.corp:3128/"`), []string{"mqtt://h:1883"}, nil, "http://me:p%40ss@proxy.corp:3128", 0},
	} {
		cfg, err := Parse("ralph.toml", []byte(tt.toml))
		if err != nil {
			t.Errorf("%s: %v", tt.toml, err)
			continue
		}
		b := cfg.Bridges[0]
		if !reflect.DeepEqual(b.URLs, tt.urls) || !reflect.DeepEqual(b.ALPN, tt.alpn) || b.Proxy != tt.proxy {
			t.Errorf("%s: urls %q alpn %q proxy %q; want %q %q %q", tt.toml, b.URLs, b.ALPN, b.Proxy, tt.urls, tt.alpn, tt.proxy)
		}
	}
}

func TestUpstreamLimits(t *testing.T) {
	for _, tt := range []struct {
		toml string
		want [4]int // max_payload, max_topic_levels, max_topic_length, max_qos
	}{
		{upstreamBridge("mqtt://h"), [4]int{0, 0, 0, 0}},
		{upstreamBridge("mqtt://h", `limits = "aws-iot-core"`), [4]int{128000, 8, 256, 1}},
		// A key set in the file wins over the preset.
		{upstreamBridge("mqtt://h", `limits = "aws-iot-core"`, `max_payload = "64KiB"`, `max_qos = 2`), [4]int{65536, 8, 256, 2}},
		{upstreamBridge("mqtt://h", `limits = "aws-iot-core"`, `max_topic_levels = 0`, `max_topic_length = 0`), [4]int{128000, 0, 0, 1}},
		{upstreamBridge("mqtt://h", `max_payload = "128KB"`, `max_topic_levels = 8`, `max_topic_length = 100`, `max_qos = 1`), [4]int{128000, 8, 100, 1}},
	} {
		cfg, err := Parse("ralph.toml", []byte(tt.toml))
		if err != nil {
			t.Errorf("%s: %v", tt.toml, err)
			continue
		}
		b := cfg.Bridges[0]
		if got := [4]int{int(b.MaxPayload), b.MaxTopicLevels, b.MaxTopicLength, b.MaxQoS}; got != tt.want {
			t.Errorf("%s: max_payload, max_topic_levels, max_topic_length, max_qos = %v, want %v", tt.toml, got, tt.want)
		}
	}
}

// TestUpstreamErrors: every error of these keys, byte for byte, with its
// line and key.
func TestUpstreamErrors(t *testing.T) {
	long := strings.Repeat("x", 129)
	for _, tt := range []struct{ name, toml, want string }{
		// URLs and the protocol.
		{"unknown scheme", upstreamBridge("quic://h"),
			`ralph.toml:3: bridge[0].urls[0]: unsupported scheme "quic" in "quic://h" (use mqtt://, tcp://, mqtts://, ssl://, ws:// or wss://)`},
		{"ws with a query", upstreamBridge("ws://h/mqtt?token=1"),
			`ralph.toml:3: bridge[0].urls[0]: unexpected query in "ws://h/mqtt?token=1" (a broker URL has none)`},
		{"ws with a bad port", upstreamBridge("wss://h:99999/mqtt"),
			`ralph.toml:3: bridge[0].urls[0]: invalid port "99999" in "wss://h:99999/mqtt" (use 1-65535)`},
		{"protocol websockets", upstreamBridge("mqtt://h", `protocol = "websockets"`),
			`ralph.toml:4: bridge[0].protocol: "websockets" is not one of 5, 3.1.1 (protocol is the MQTT version: for MQTT over WebSocket, give ws:// or wss:// URLs)`},
		{"protocol ws", upstreamBridge("mqtt://h", `protocol = "WS"`),
			`ralph.toml:4: bridge[0].protocol: "WS" is not one of 5, 3.1.1 (protocol is the MQTT version: for MQTT over WebSocket, give ws:// or wss:// URLs)`},

		// ALPN.
		{"alpn without TLS", upstreamBridge("mqtt://h", `alpn = ["x-amzn-mqtt-ca"]`),
			`ralph.toml:4: bridge[0].alpn: applies to TLS only, and no URL of this bridge is mqtts://, ssl://, tls:// or wss://`},
		{"alpn on ws without TLS", upstreamBridge("ws://h", `alpn = []`),
			`ralph.toml:4: bridge[0].alpn: applies to TLS only, and no URL of this bridge is mqtts://, ssl://, tls:// or wss://`},
		{"alpn empty protocol", upstreamBridge("mqtts://h", `alpn = [`, `  "mqtt",`, `  "",`, `]`),
			`ralph.toml:6: bridge[0].alpn[1]: must not be empty (e.g. "x-amzn-mqtt-ca")`},
		{"alpn too long", upstreamBridge("mqtts://h", `alpn = ["`+strings.Repeat("a", 256)+`"]`),
			`ralph.toml:4: bridge[0].alpn[0]: is 256 bytes, longer than 255`},
		{"alpn a string", upstreamBridge("mqtts://h", `alpn = "x-amzn-mqtt-ca"`),
			`ralph.toml:4: bridge[0].alpn: expected an array of strings, got string "x-amzn-mqtt-ca"`},
		{"ca_file with only wss", upstreamBridge("ws://h", `ca_file = "/etc/ssl/x.pem"`),
			`ralph.toml:4: bridge[0].ca_file: applies to TLS only, and no URL of this bridge is mqtts://, ssl://, tls:// or wss://`},

		// The proxy.
		{"proxy without scheme", upstreamBridge("mqtt://h", `proxy = "proxy.corp:3128"`),
			`ralph.toml:4: bridge[0].proxy: "proxy.corp:3128" has no scheme (use "http://host:port" or "http://user:password@host:port")`},
		{"proxy that does not parse", upstreamBridge("mqtt://h", `proxy = "http://me:secret@proxy corp:3128"`),
			`ralph.toml:4: bridge[0].proxy: invalid proxy URL "http://xxxxx@proxy corp:3128": invalid character " " in host name (use "http://host:port" or "http://user:password@host:port")`},
		{"proxy with a bad port", upstreamBridge("mqtt://h", `proxy = "http://me:secret@proxy:x"`),
			`ralph.toml:4: bridge[0].proxy: invalid proxy URL "http://xxxxx@proxy:x": invalid port ":x" after host (use "http://host:port" or "http://user:password@host:port")`},
		{"proxy port 0", upstreamBridge("mqtt://h", `proxy = "http://me:secret@proxy:0"`),
			`ralph.toml:4: bridge[0].proxy: invalid port "0" in "http://me:xxxxx@proxy:0" (use 1-65535)`},
		{"https proxy", upstreamBridge("mqtt://h", `proxy = "https://proxy:3128"`),
			`ralph.toml:4: bridge[0].proxy: unsupported scheme "https" in "https://proxy:3128": Ralph speaks plain HTTP to the proxy (use http://; the tunnel carries TLS to the broker when its URL is mqtts:// or wss://)`},
		{"socks proxy", upstreamBridge("mqtt://h", `proxy = "socks5://proxy:1080"`),
			`ralph.toml:4: bridge[0].proxy: unsupported scheme "socks5" in "socks5://proxy:1080" (use http://host:port: an HTTP proxy that takes CONNECT)`},
		{"proxy without host", upstreamBridge("mqtt://h", `proxy = "http://:3128"`),
			`ralph.toml:4: bridge[0].proxy: missing host in "http://:3128" (use "http://host:port" or "http://user:password@host:port")`},
		{"proxy with a path", upstreamBridge("mqtt://h", `proxy = "http://proxy:3128/x"`),
			`ralph.toml:4: bridge[0].proxy: unexpected path "/x" in "http://proxy:3128/x" (a proxy URL has none)`},
		{"proxy with a query", upstreamBridge("mqtt://h", `proxy = "http://proxy:3128?a=b"`),
			`ralph.toml:4: bridge[0].proxy: unexpected query in "http://proxy:3128?a=b" (a proxy URL has none)`},
		{"proxy with a fragment", upstreamBridge("mqtt://h", `proxy = "http://proxy:3128#x"`),
			`ralph.toml:4: bridge[0].proxy: unexpected fragment in "http://proxy:3128#x" (a proxy URL has none)`},
		{"proxy with an empty port", upstreamBridge("mqtt://h", `proxy = "http://proxy:"`),
			`ralph.toml:4: bridge[0].proxy: empty port in "http://proxy:" (give a port or leave out the colon)`},

		// Limits.
		{"unknown preset", upstreamBridge("mqtt://h", `limits = "aws"`),
			`ralph.toml:4: bridge[0].limits: "aws" is not a preset (those there are: "aws-iot-core", "nats"; or leave limits out and set max_payload, max_topic_levels, max_topic_length, max_qos)`},
		{"max_payload too large", upstreamBridge("mqtt://h", `max_payload = "1GiB"`),
			`ralph.toml:4: bridge[0].max_payload: 1GiB is out of range (allowed 0 (no limit) .. 256MiB)`},
		{"max_payload not a size", upstreamBridge("mqtt://h", `max_payload = "128 kilobytes"`),
			`ralph.toml:4: bridge[0].max_payload: invalid size "128 kilobytes" (use a byte count or a whole number with a unit: B, KB, MB, GB, KiB, MiB or GiB, e.g. "256KiB")`},
		{"negative max_topic_levels", upstreamBridge("mqtt://h", `max_topic_levels = -1`),
			`ralph.toml:4: bridge[0].max_topic_levels: -1 is out of range (allowed 0 (no limit) .. 65535)`},
		{"max_topic_length too large", upstreamBridge("mqtt://h", `max_topic_length = 70000`),
			`ralph.toml:4: bridge[0].max_topic_length: 70000 is out of range (allowed 0 (no limit) .. 65535)`},
		{"max_qos 0", upstreamBridge("mqtt://h", `max_qos = 0`),
			`ralph.toml:4: bridge[0].max_qos: 0 is not one of 1, 2 (leave max_qos out for no cap; a rule's qos = 0 is QoS 0 already)`},
		{"max_qos 3", upstreamBridge("mqtt://h", `limits = "aws-iot-core"`, `max_qos = 3`),
			`ralph.toml:5: bridge[0].max_qos: 3 is not one of 1, 2 (leave max_qos out for no cap; a rule's qos = 0 is QoS 0 already)`},
		{"client_id too long for AWS", upstreamBridge("mqtt://h", `limits = "aws-iot-core"`, `client_id = "`+long+`"`),
			`ralph.toml:5: bridge[0].client_id: is 129 bytes, longer than the 128 that limits = "aws-iot-core" allows`},
		{"subscribe filter too deep", doc(`[[bridge]]`, `name = "up"`, `urls = ["mqtt://h"]`, `limits = "aws-iot-core"`, `[[bridge.subscribe]]`, `remote = "a/b/c/d/e/f/g/h/#"`),
			`ralph.toml:6: bridge[0].subscribe[0].remote: topic filter "a/b/c/d/e/f/g/h/#" has 9 levels, more than max_topic_levels (8)`},
		{"subscribe filter too long", doc(`[[bridge]]`, `name = "up"`, `urls = ["mqtt://h"]`, `max_topic_length = 10`, `[[bridge.subscribe]]`, `remote = "commands/for/me"`),
			`ralph.toml:6: bridge[0].subscribe[0].remote: topic filter "commands/for/me" is 15 bytes, longer than max_topic_length (10)`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("ralph.toml", []byte(tt.toml))
			if err == nil || err.Error() != tt.want {
				t.Errorf("%s\ngot  %v\nwant %s", tt.toml, err, tt.want)
			}
		})
	}
}

// TestLimitsWarning: a bridge with the aws-iot-core preset whose max_rate
// is over AWS's 100 publishes a second per connection, or not set, is
// warned about; one under it is not.
func TestLimitsWarning(t *testing.T) {
	for _, tt := range []struct{ rate, want string }{
		{``, `bridge up: limits = "aws-iot-core" allows 100 publishes a second on a connection, and max_rate is no cap: a backlog would be throttled upstream (set max_rate below it, e.g. 90)`},
		{`max_rate = 150`, `bridge up: limits = "aws-iot-core" allows 100 publishes a second on a connection, and max_rate is 150 a second: a backlog would be throttled upstream (set max_rate below it, e.g. 90)`},
		{`max_rate = 90`, ``},
		{`max_rate = 100`, ``},
	} {
		keys := []string{`limits = "aws-iot-core"`}
		if tt.rate != "" {
			keys = append(keys, tt.rate)
		}
		cfg, err := Parse("ralph.toml", []byte(upstreamBridge("mqtts://h:443", keys...)))
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		if tt.want != "" {
			want = []string{tt.want}
		}
		if got := cfg.Warnings(); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: warnings %q, want %q", tt.rate, got, want)
		}
	}
}

// TestLimitsNATS: limits = "nats" caps QoS at 1 and forbids "." and " "
// in the topics the bridge sends and subscribes to.
func TestLimitsNATS(t *testing.T) {
	cfg, err := Parse("ralph.toml", []byte(upstreamBridge("mqtt://h", `protocol = "3.1.1"`, `limits = "nats"`)))
	if err != nil {
		t.Fatal(err)
	}
	if b := cfg.Bridges[0]; b.MaxQoS != 1 || b.TopicBytes() != ". " {
		t.Errorf("limits = nats: max_qos %d, topic bytes %q", b.MaxQoS, b.TopicBytes())
	}
	if got := (Bridge{}).TopicBytes(); got != "" {
		t.Errorf("without a preset, topic bytes %q are forbidden", got)
	}
	for _, tt := range []struct{ toml, want string }{
		{doc(`[[bridge]]`, `name = "up"`, `urls = ["mqtt://h"]`, `limits = "nats"`, `[[bridge.subscribe]]`, `remote = "site.cmd/#"`),
			`ralph.toml:6: bridge[0].subscribe[0].remote: topic filter "site.cmd/#" holds one of ". ", which limits = "nats" forbids`},
		{doc(`[[bridge]]`, `name = "up"`, `urls = ["mqtt://h"]`, `limits = "nats"`, `[[bridge.forward]]`, `local = "a/#"`, `remote_prefix = "my site/"`),
			`ralph.toml:7: bridge[0].forward[0].remote_prefix: "my site/" holds one of ". ", which limits = "nats" forbids`},
	} {
		if _, err := Parse("ralph.toml", []byte(tt.toml)); err == nil || err.Error() != tt.want {
			t.Errorf("%s:\ngot  %v\nwant %s", tt.toml, err, tt.want)
		}
	}
}
