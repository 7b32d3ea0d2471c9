package mqtttest

// Servers that stand in front of a real broker: a TLS front that, like AWS
// IoT Core on port 443, takes only clients asking for an ALPN protocol
// (and presenting a client certificate), and an HTTP proxy that opens
// CONNECT tunnels, with Basic credentials.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// AWSALPN is the ALPN protocol AWS IoT Core wants for MQTT on port 443.
const AWSALPN = "x-amzn-mqtt-ca"

// ALPNFront is a TLS server relaying each connection it accepts to a
// broker.
type ALPNFront struct {
	Addr string
	// Accepted and Refused count handshakes.
	Accepted, Refused atomic.Int32
	mu                sync.Mutex
	negotiated        []string
}

// StartALPNFront serves TLS with pki's server certificate on a loopback
// port and relays to target. With proto, it requires that ALPN protocol:
// a client that does not ask for it is refused in the handshake (Go's
// server would go on without ALPN), and every accepted connection's
// NegotiatedProtocol is checked. With clientCerts it requires a client
// certificate from pki's CA.
func StartALPNFront(t testing.TB, pki PKI, target, proto string, clientCerts bool) *ALPNFront {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(pki.ServerCert, pki.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	f := &ALPNFront{}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if clientCerts {
		pem, err := os.ReadFile(pki.CA)
		if err != nil {
			t.Fatal(err)
		}
		cfg.ClientCAs, cfg.ClientAuth = x509.NewCertPool(), tls.RequireAndVerifyClientCert
		cfg.ClientCAs.AppendCertsFromPEM(pem)
	}
	if proto != "" {
		cfg.NextProtos = []string{proto}
		cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			if !slices.Contains(hello.SupportedProtos, proto) {
				f.Refused.Add(1)
				return nil, fmt.Errorf("client did not ask for ALPN %q", proto)
			}
			return nil, nil
		}
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.Addr = l.Addr().String()
	var conns sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		conns.Wait()
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			conns.Add(1)
			go func() {
				defer conns.Done()
				defer c.Close()
				tc := c.(*tls.Conn)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := tc.HandshakeContext(ctx)
				cancel()
				if err != nil {
					return
				}
				np := tc.ConnectionState().NegotiatedProtocol
				if proto != "" && np != proto {
					f.Refused.Add(1)
					return
				}
				f.Accepted.Add(1)
				f.mu.Lock()
				f.negotiated = append(f.negotiated, np)
				f.mu.Unlock()
				up, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer up.Close()
				go func() { io.Copy(up, tc); up.Close() }()
				io.Copy(tc, up)
			}()
		}
	}()
	return f
}

// Negotiated returns the ALPN protocol of each accepted connection.
func (f *ALPNFront) Negotiated() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.negotiated...)
}

// ConnectProxy is an HTTP proxy that opens tunnels (CONNECT) and nothing
// else.
type ConnectProxy struct {
	Addr    string
	mu      sync.Mutex
	targets []string
	refused int
}

// StartConnectProxy runs a CONNECT proxy on a loopback port, requiring
// Basic credentials user:pass when user is set (407 otherwise).
func StartConnectProxy(t testing.TB, user, pass string) *ConnectProxy {
	t.Helper()
	p := &ConnectProxy{}
	var conns sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		if user != "" && r.Header.Get("Proxy-Authorization") != "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":"+pass)) {
			p.mu.Lock()
			p.refused++
			p.mu.Unlock()
			w.Header().Set("Proxy-Authenticate", `Basic realm="test"`)
			http.Error(w, "credentials, please", http.StatusProxyAuthRequired)
			return
		}
		out, err := net.Dial("tcp", r.Host)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		p.mu.Lock()
		p.targets = append(p.targets, r.Host)
		p.mu.Unlock()
		in, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			out.Close()
			return
		}
		mu.Lock()
		open = append(open, in, out)
		mu.Unlock()
		conns.Add(1)
		defer conns.Done()
		in.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n"))
		go func() { io.Copy(out, brw); out.Close() }()
		io.Copy(in, out)
		in.Close()
	})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.Addr = l.Addr().String()
	go srv.Serve(l)
	t.Cleanup(func() {
		srv.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		conns.Wait()
	})
	return p
}

// Targets returns where the proxy opened tunnels to, in order.
func (p *ConnectProxy) Targets() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.targets...)
}

// Refused counts requests refused for their credentials.
func (p *ConnectProxy) Refused() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refused
}
