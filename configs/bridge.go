package configs

// Validation of [[bridge]]: protocol, URLs, authentication, TLS and topic
// rules; ALPN, the proxy and the upstream limits are in upstream.go.

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ralph-gateway/ralph/internal/topic"
)

func (p *configParser) validateBridge(b *Bridge, bp keyPath, firstName map[string]int) error {
	has := func(k string) bool { _, ok := lookup(p.tree, bp.key(k)); return ok }
	if err := p.validateName(bp, b.Name, "bridge", firstName); err != nil {
		return err
	}
	if isWebSocketWord(b.Protocol) {
		return p.errorf(bp.key("protocol"), `%q is not one of 5, 3.1.1 (protocol is the MQTT version: for MQTT over WebSocket, give ws:// or wss:// URLs)`, truncate(b.Protocol))
	}
	if err := p.oneOf(bp.key("protocol"), b.Protocol, "5", "3.1.1"); err != nil {
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
	if err := p.validateTransport(b, bp); err != nil {
		return err
	}
	if err := p.validateLimits(b, bp, has); err != nil {
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
	if err := p.validateTimestamp(b.TimestampProperty, b, bp); err != nil {
		return err
	}
	for i := range b.Forward {
		rp := bp.key("forward").index(i)
		if err := p.validateForward(&b.Forward[i], rp); err != nil {
			return err
		}
		if err := p.validateTimestamp(b.Forward[i].TimestampProperty, b, rp); err != nil {
			return err
		}
	}
	return p.validateRuleLimits(b, bp)
}

// validateBridgeAuth checks credentials and TLS files now, so that a bad
// path or PEM is reported with its line rather than at the first connect.
func (p *configParser) validateBridgeAuth(b *Bridge, bp keyPath, has func(string) bool) error {
	if err := p.oneOf(bp.key("auth"), b.Auth, "password", "azure-sas"); err != nil {
		return err
	}
	if err := p.validateSAS(b, bp, has); err != nil {
		return err
	}
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
			return p.errorf(bp.key(k.key), "applies to TLS only, and no URL of this bridge is mqtts://, ssl://, tls:// or wss://")
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

// validateSAS checks the keys of auth = "azure-sas", and that they are
// not used without it.
func (p *configParser) validateSAS(b *Bridge, bp keyPath, has func(string) bool) error {
	const sas = `auth = "azure-sas"`
	if b.Auth != "azure-sas" {
		for _, k := range []string{"sas_key_file", "sas_ttl"} {
			if has(k) {
				return p.errorf(bp.key(k), "applies to %s only", sas)
			}
		}
		return nil
	}
	for _, k := range []string{"username", "password", "password_file"} {
		if has(k) {
			return p.errorf(bp.key(k), "not with %s: the username is <hub>/<device>/?api-version=…, the password a SAS token Ralph makes", sas)
		}
	}
	if !has("client_id") {
		return p.errorf(bp.key("client_id"), "required with %s: the IoT Hub device id", sas)
	}
	if !has("sas_key_file") {
		return p.errorf(bp.key("sas_key_file"), "required with %s: a file holding the device's key (base64, as the portal shows it)", sas)
	}
	if _, err := ReadSASKey(b.SASKeyFile); err != nil {
		return p.errorf(bp.key("sas_key_file"), "%v", err)
	}
	if d := b.SASTTL.Duration; d < time.Second || d > 365*24*time.Hour {
		return p.errorf(bp.key("sas_ttl"), "%s is out of range (allowed 1s .. 8760h)", formatDuration(d))
	}
	for _, u := range b.URLs {
		if !isTLSURL(u) {
			return p.errorf(bp.key("urls"), "%s needs TLS, and %q is not mqtts://, ssl:// or tls:// (IoT Hub listens on mqtts://<hub>.azure-devices.net:8883)", sas, u)
		}
	}
	return nil
}

// ReadSASKey returns the key in a SAS key file: the first line, decoded
// from base64.
func ReadSASKey(path string) ([]byte, error) {
	line, err := ReadPasswordFile(path)
	if err != nil {
		return nil, err
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(line))
	if err != nil || len(key) == 0 {
		return nil, fmt.Errorf("%s does not hold a base64 key on its first line", path)
	}
	return key, nil
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
	for _, s := range []string{"mqtts://", "ssl://", "tls://", "wss://"} {
		if strings.HasPrefix(strings.ToLower(u), s) {
			return true
		}
	}
	return false
}

// normalizeBrokerURL checks an upstream broker URL and adds the default
// port when it has none.
func normalizeBrokerURL(s string) (string, error) {
	const use = "use mqtt://, tcp://, mqtts://, ssl://, ws:// or wss://"
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
	case "ws":
		port = "80"
	case "wss":
		port = "443"
	default:
		return "", fmt.Errorf("unsupported scheme %q in %q (%s)", truncate(u.Scheme), ts, use)
	}
	switch {
	case u.User != nil:
		return "", fmt.Errorf("user information is not supported in %q", ts)
	case u.Hostname() == "":
		return "", fmt.Errorf("missing host in %q (e.g. \"mqtts://mqtt.example.com:8883\")", ts)
	case u.Path != "" && u.Path != "/" && !isWebSocket(u.Scheme): // a WebSocket's path is its endpoint
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

func (p *configParser) validateForward(r *ForwardRule, rp keyPath) error {
	if r.RemoteTopic != "" {
		for _, k := range []struct{ key, v string }{{"strip_prefix", r.StripPrefix}, {"remote_prefix", r.RemotePrefix}} {
			if k.v != "" {
				return p.errorf(rp.key(k.key), "set remote_topic or %s, not both", k.key)
			}
		}
		if err := topic.ValidateName(r.RemoteTopic); err != nil {
			return p.errorf(rp.key("remote_topic"), "%v", err)
		}
	}
	if r.Priority < 0 || r.Priority > maxPriority {
		return p.errorf(rp.key("priority"), "must be 0 (the most urgent) to %d, got %d", maxPriority, r.Priority)
	}
	return p.validateRule(rp, "local", r.Local, "sensors/#", r.QoS,
		[2]string{"strip_prefix", r.StripPrefix}, [2]string{"remote_prefix", r.RemotePrefix})
}

// validateTimestamp checks a timestamp_property: a user property name,
// which only MQTT 5 carries.
func (p *configParser) validateTimestamp(name string, b *Bridge, kp keyPath) error {
	if name == "" {
		return nil
	}
	if b.Protocol == "3.1.1" {
		return p.errorf(kp.key("timestamp_property"), "needs an MQTT 5 upstream (protocol = \"5\"): MQTT 3.1.1 has no user properties to carry it")
	}
	if !utf8.ValidString(name) || strings.ContainsRune(name, 0) || len(name) > 65535 {
		return p.errorf(kp.key("timestamp_property"), "%q is not a valid user property name (UTF-8, no NUL, at most 65535 bytes)", name)
	}
	return nil
}

func (p *configParser) validateSubscribe(r *SubscribeRule, rp keyPath) error {
	return p.validateRule(rp, "remote", r.Remote, "site/shed/cmd/#", r.QoS,
		[2]string{"strip_prefix", r.StripPrefix}, [2]string{"local_prefix", r.LocalPrefix})
}
