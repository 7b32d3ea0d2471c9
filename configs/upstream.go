package configs

// Validation of how a [[bridge]] reaches its upstream and what the
// upstream takes: ALPN, the HTTP proxy, MQTT over WebSocket, and the
// upstream limits (limits, its presets, max_payload, max_topic_levels,
// max_topic_length, max_qos).

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// limitPreset is what a limits preset sets (the keys the file leaves out)
// and checks.
type limitPreset struct {
	MaxPayload     Size
	MaxTopicLevels int
	MaxTopicLength int
	MaxQoS         int
	MaxClientID    int    // a longer client_id is an error
	MaxRate        int    // publishes a second a connection may make (for a warning)
	TopicBytes     string // bytes a topic must not hold (see Bridge.TopicBytes)
}

// limitPresets are the values of limits. "aws-iot-core" is AWS IoT Core's
// message broker quotas: a payload of 128 KB, a topic of at most 7
// slashes and 256 bytes (not counting a Basic Ingest prefix), no QoS 2, a
// client id of at most 128 bytes, 100 publishes a second per connection.
//
// "nats" is nats-server's MQTT gateway (2.9): no QoS 2, and no "." or " "
// in a topic (NATS subjects use them); it closes the connection on either,
// so a message that breaks them must go to the dead-letter topic instead.
var limitPresets = map[string]limitPreset{
	"aws-iot-core": {MaxPayload: 128 * 1000, MaxTopicLevels: 8, MaxTopicLength: 256, MaxQoS: 1, MaxClientID: 128, MaxRate: 100},
	"nats":         {MaxQoS: 1, TopicBytes: ". "},
}

// TopicBytes are the bytes the bridge's limits preset forbids in an
// upstream topic ("" for none).
func (b Bridge) TopicBytes() string { return limitPresets[b.Limits].TopicBytes }

// Limits of the keys' values.
const (
	maxPayloadLimit = 256 * miB // MQTT's largest packet is 256 MiB less a byte
	maxTopicLimit   = 65535     // MQTT's longest topic
	maxALPNLength   = 255       // RFC 7301
)

func isWebSocket(scheme string) bool { return scheme == "ws" || scheme == "wss" }

// isWebSocketWord says whether a protocol value means MQTT over
// WebSocket, which is a matter of URLs.
func isWebSocketWord(v string) bool {
	v = strings.ToLower(v)
	return v == "ws" || v == "wss" || strings.Contains(v, "websocket")
}

// validateTransport checks alpn and proxy.
func (p *configParser) validateTransport(b *Bridge, bp keyPath) error {
	if b.ALPN != nil {
		tlsURL := false
		for _, u := range b.URLs {
			tlsURL = tlsURL || isTLSURL(u)
		}
		if !tlsURL {
			return p.errorf(bp.key("alpn"), "applies to TLS only, and no URL of this bridge is mqtts://, ssl://, tls:// or wss://")
		}
		for i, proto := range b.ALPN {
			switch {
			case proto == "":
				return p.errorf(bp.key("alpn").index(i), `must not be empty (e.g. "x-amzn-mqtt-ca")`)
			case len(proto) > maxALPNLength:
				return p.errorf(bp.key("alpn").index(i), "is %d bytes, longer than %d", len(proto), maxALPNLength)
			}
		}
	}
	if b.Proxy != "" {
		norm, err := normalizeProxyURL(b.Proxy)
		if err != nil {
			return p.errorf(bp.key("proxy"), "%v", err)
		}
		b.Proxy = norm
	}
	return nil
}

// normalizeProxyURL checks an HTTP proxy URL and adds port 80 when it
// has none. Its messages leave out the password.
func normalizeProxyURL(s string) (string, error) {
	const use = `use "http://host:port" or "http://user:password@host:port"`
	if !strings.Contains(s, "://") {
		return "", fmt.Errorf("%q has no scheme (%s)", redactRaw(s), use)
	}
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", fmt.Errorf("invalid proxy URL %q: %v (%s)", redactRaw(s), err, use)
	}
	ts := truncate(u.Redacted())
	switch {
	case u.Scheme == "https":
		return "", fmt.Errorf("unsupported scheme %q in %q: Ralph speaks plain HTTP to the proxy (use http://; the tunnel carries TLS to the broker when its URL is mqtts:// or wss://)", u.Scheme, ts)
	case u.Scheme != "http":
		return "", fmt.Errorf("unsupported scheme %q in %q (use http://host:port: an HTTP proxy that takes CONNECT)", truncate(u.Scheme), ts)
	case u.Hostname() == "":
		return "", fmt.Errorf("missing host in %q (%s)", ts, use)
	case u.Path != "" && u.Path != "/":
		return "", fmt.Errorf("unexpected path %q in %q (a proxy URL has none)", truncate(u.Path), ts)
	case u.RawQuery != "" || u.ForceQuery:
		return "", fmt.Errorf("unexpected query in %q (a proxy URL has none)", ts)
	case u.Fragment != "":
		return "", fmt.Errorf("unexpected fragment in %q (a proxy URL has none)", ts)
	}
	u.Path = ""
	if p := u.Port(); p != "" {
		if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
			return "", fmt.Errorf("invalid port %q in %q (use 1-65535)", truncate(p), ts)
		}
		return u.String(), nil
	}
	if strings.HasSuffix(u.Host, ":") {
		return "", fmt.Errorf("empty port in %q (give a port or leave out the colon)", ts)
	}
	u.Host = net.JoinHostPort(u.Hostname(), "80")
	return u.String(), nil
}

// redactRaw is s, a URL that does not parse, with what may be a password
// (between "://" or the start and the last "@") left out.
func redactRaw(s string) string {
	at := strings.LastIndex(s, "@")
	if at < 0 {
		return truncate(s)
	}
	start := 0
	if i := strings.Index(s, "://"); i >= 0 && i < at {
		start = i + 3
	}
	return truncate(s[:start] + "xxxxx" + s[at:])
}

// validateLimits checks limits and the limits keys, and fills in what
// the preset sets and the file leaves out.
func (p *configParser) validateLimits(b *Bridge, bp keyPath, has func(string) bool) error {
	if b.Limits != "" {
		preset, ok := limitPresets[b.Limits]
		if !ok {
			return p.errorf(bp.key("limits"), `%q is not a preset (those there are: "aws-iot-core", "nats"; or leave limits out and set max_payload, max_topic_levels, max_topic_length, max_qos)`, truncate(b.Limits))
		}
		for _, k := range []struct {
			key string
			set func()
		}{
			{"max_payload", func() { b.MaxPayload = preset.MaxPayload }},
			{"max_topic_levels", func() { b.MaxTopicLevels = preset.MaxTopicLevels }},
			{"max_topic_length", func() { b.MaxTopicLength = preset.MaxTopicLength }},
			{"max_qos", func() { b.MaxQoS = preset.MaxQoS }},
		} {
			if !has(k.key) {
				k.set()
			}
		}
		if n := preset.MaxClientID; n > 0 && len(b.ClientID) > n { // the default one too
			return p.errorf(bp.key("client_id"), "is %d bytes, longer than the %d that limits = %q allows", len(b.ClientID), n, b.Limits)
		}
	}
	if s := b.MaxPayload; s < 0 || s > maxPayloadLimit {
		return p.errorf(bp.key("max_payload"), "%s is out of range (allowed 0 (no limit) .. %s)", formatSize(s), formatSize(maxPayloadLimit))
	}
	for _, k := range []struct {
		key string
		n   int
	}{{"max_topic_levels", b.MaxTopicLevels}, {"max_topic_length", b.MaxTopicLength}} {
		if k.n < 0 || k.n > maxTopicLimit {
			return p.errorf(bp.key(k.key), "%d is out of range (allowed 0 (no limit) .. %d)", k.n, maxTopicLimit)
		}
	}
	if has("max_qos") && (b.MaxQoS < 1 || b.MaxQoS > 2) {
		return p.errorf(bp.key("max_qos"), "%d is not one of 1, 2 (leave max_qos out for no cap; a rule's qos = 0 is QoS 0 already)", b.MaxQoS)
	}
	return nil
}

// validateRuleLimits checks the subscribe rules' filters against
// max_topic_levels and max_topic_length, which the upstream applies to
// them too (AWS IoT Core does).
func (p *configParser) validateRuleLimits(b *Bridge, bp keyPath) error {
	for i, r := range b.Subscribe {
		at := bp.key("subscribe").index(i).key("remote")
		if n := strings.Count(r.Remote, "/") + 1; b.MaxTopicLevels > 0 && n > b.MaxTopicLevels {
			return p.errorf(at, "topic filter %q has %d levels, more than max_topic_levels (%d)", truncate(r.Remote), n, b.MaxTopicLevels)
		}
		if n := len(r.Remote); b.MaxTopicLength > 0 && n > b.MaxTopicLength {
			return p.errorf(at, "topic filter %q is %d bytes, longer than max_topic_length (%d)", truncate(r.Remote), n, b.MaxTopicLength)
		}
		if c := b.TopicBytes(); c != "" && strings.ContainsAny(r.Remote, c) {
			return p.errorf(at, "topic filter %q holds one of %q, which limits = %q forbids", truncate(r.Remote), c, b.Limits)
		}
	}
	for i, r := range b.Forward {
		rp := bp.key("forward").index(i)
		for _, k := range []struct{ key, v string }{{"remote_prefix", r.RemotePrefix}, {"remote_topic", r.RemoteTopic}} {
			if c := b.TopicBytes(); c != "" && strings.ContainsAny(k.v, c) {
				return p.errorf(rp.key(k.key), "%q holds one of %q, which limits = %q forbids", truncate(k.v), c, b.Limits)
			}
		}
	}
	return nil
}
