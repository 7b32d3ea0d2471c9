package configs

// Validation of [broker]: listeners, users and limits.

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"

	"github.com/ralph-gateway/ralph/internal/listen"
	"golang.org/x/crypto/bcrypt"
)

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
		if err := p.validateACL(up, ACL{Publish: u.Publish, Subscribe: u.Subscribe, PublishDeny: u.PublishDeny, SubscribeDeny: u.SubscribeDeny}); err != nil {
			return err
		}
	}
	if err := p.validateACL(bp.key("anonymous"), b.Anonymous); err != nil {
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
	if host == "" || listen.LoopbackHost(host) {
		return host != "", nil
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return false, fmt.Errorf("host %q in %q is not an IP address or localhost (%s)", truncate(host), truncate(addr), use)
	}
	return false, nil
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
