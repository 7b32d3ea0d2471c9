package gateway

// Translation of configs types into other packages' options: the broker's
// TLS and WebSocket listeners and its users, and a bridge's bridge.Config
// (URLs, topic rules, credentials, TLS and ALPN, the proxy, the upstream
// limits). A serial port's options are set in newPort (parts.go).

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/url"
	"os"

	"github.com/ralph-gateway/ralph/bridge"
	"github.com/ralph-gateway/ralph/configs"
	"github.com/ralph-gateway/ralph/localbroker"
)

// deviceListeners builds the TLS and WebSocket listeners.
func deviceListeners(b configs.Broker) ([]localbroker.Listener, error) {
	var out []localbroker.Listener
	for _, l := range b.TLS {
		cert, err := tls.LoadX509KeyPair(l.CertFile, l.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls listener %s: %w", l.Listen, err)
		}
		tc := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
		if l.ClientCAFile != "" {
			pem, err := os.ReadFile(l.ClientCAFile)
			if err != nil {
				return nil, fmt.Errorf("tls listener %s: %w", l.Listen, err)
			}
			tc.ClientCAs = x509.NewCertPool()
			tc.ClientCAs.AppendCertsFromPEM(pem)
			tc.ClientAuth = tls.RequireAndVerifyClientCert
		}
		out = append(out, localbroker.Listener{Kind: "tls", Address: l.Listen, TLS: tc, CertUsername: l.CertUsername})
	}
	for _, l := range b.WebSocket {
		ws := localbroker.Listener{Kind: "ws", Address: l.Listen}
		if l.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(l.CertFile, l.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("websocket listener %s: %w", l.Listen, err)
			}
			ws.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
		}
		out = append(out, ws)
	}
	return out, nil
}

func users(cfg []configs.User) []localbroker.User {
	var out []localbroker.User
	for _, u := range cfg {
		out = append(out, localbroker.User{
			Name:         u.Name,
			PasswordHash: []byte(u.PasswordHash),
			ACL:          localbroker.ACL{Publish: u.Publish, Subscribe: u.Subscribe, PublishDeny: u.PublishDeny, SubscribeDeny: u.SubscribeDeny},
		})
	}
	return out
}

func bridgeConfig(bc configs.Bridge, log *slog.Logger) (bridge.Config, error) {
	c := bridge.Config{
		Name:           bc.Name,
		Protocol:       bc.Protocol,
		ClientID:       bc.ClientID,
		MaxInflight:    bc.MaxInflight,
		KeepAlive:      bc.KeepAlive.Duration,
		ConnectTimeout: bc.ConnectTimeout.Duration,
		ReconnectMin:   bc.ReconnectMin.Duration,
		ReconnectMax:   bc.ReconnectMax.Duration,
		SessionExpiry:  bc.SessionExpiry.Duration,
		MaxRate:        bc.MaxRate,
		StateTopic:     bc.StateTopic,
		PrimaryRetry:   bc.PrimaryRetry.Duration,
		AckTimeout:     bc.AckTimeout.Duration,
		MaxQoS:         byte(bc.MaxQoS),
		Limits:         bridge.Limits{MaxPayload: int(bc.MaxPayload), MaxTopicLevels: bc.MaxTopicLevels, MaxTopicLength: bc.MaxTopicLength, TopicBytes: bc.TopicBytes()},
		Logger:         log.With("component", "bridge"),
	}
	if bc.Proxy != "" {
		u, err := url.Parse(bc.Proxy)
		if err != nil {
			panic(fmt.Sprintf("gateway: proxy URL passed validation but does not parse: %v", err))
		}
		c.Proxy = u
	}
	for _, s := range bc.URLs {
		u, err := url.Parse(s)
		if err != nil {
			panic(fmt.Sprintf("gateway: URL %q passed validation but does not parse: %v", s, err))
		}
		c.URLs = append(c.URLs, u)
	}
	for _, r := range bc.Subscribe {
		c.Subscribe = append(c.Subscribe, bridge.SubRule{
			Filter:      r.Remote,
			StripPrefix: r.StripPrefix,
			LocalPrefix: r.LocalPrefix,
			QoS:         byte(r.QoS),
			Retain:      r.Retain,
		})
	}
	c.Forward = forwardRules(bc)
	if bc.Auth == "azure-sas" {
		key, err := configs.ReadSASKey(bc.SASKeyFile)
		if err != nil {
			return c, err
		}
		c.Credentials = bridge.AzureIoTHub(bc.ClientID, key, bc.SASTTL.Duration)
	}
	c.Username = bc.Username
	if bc.Password != "" {
		c.Password = []byte(bc.Password)
	}
	if bc.PasswordFile != "" {
		pw, err := configs.ReadPasswordFile(bc.PasswordFile)
		if err != nil {
			return c, err
		}
		c.Password = []byte(pw)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: bc.ServerName, InsecureSkipVerify: bc.InsecureSkipVerify}
	if bc.CAFile != "" {
		pem, err := os.ReadFile(bc.CAFile)
		if err != nil {
			return c, err
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return c, fmt.Errorf("%s holds no PEM certificate", bc.CAFile)
		}
	}
	if bc.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(bc.CertFile, bc.KeyFile)
		if err != nil {
			return c, err
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	if bc.InsecureSkipVerify {
		log.Warn("bridge: TLS certificate verification is OFF (insecure_skip_verify = true): anyone on the path can read and alter this link", "bridge", bc.Name)
	}
	tc.NextProtos = bc.ALPN
	c.TLS = tc
	return c, nil
}

// forwardRules are the bridge's forward rules as the bridge takes them.
func forwardRules(bc configs.Bridge) []bridge.Rule {
	var rules []bridge.Rule
	for _, f := range bc.Forward {
		ts := f.TimestampProperty
		if ts == "" {
			ts = bc.TimestampProperty
		}
		rules = append(rules, bridge.Rule{
			Filter:            f.Local,
			StripPrefix:       f.StripPrefix,
			RemotePrefix:      f.RemotePrefix,
			Topic:             f.RemoteTopic,
			QoS:               byte(f.QoS),
			Priority:          f.Priority,
			TimestampProperty: ts,
		})
	}
	return rules
}
