package bridge

// Tests of the transports against real servers: a TLS front that, like AWS
// IoT Core on port 443, takes only clients asking for the ALPN protocol
// x-amzn-mqtt-ca and relays them to a real broker (mqtttest.ALPNFront);
// Mosquitto's WebSocket listeners (ws and wss); and an HTTP CONNECT proxy
// of the test's own in front of Mosquitto, for plain TCP, TLS and
// WebSocket (mqtttest.ConnectProxy).

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/ralph-gateway/ralph/internal/mqtttest"
	"github.com/ralph-gateway/ralph/queue"
)

const awsALPN = mqtttest.AWSALPN

// tlsConfig is the bridge's TLS configuration for pki: its CA, and its
// client certificate when client is true, asking for alpn.
func tlsConfig(t *testing.T, pki mqtttest.PKI, client bool, alpn ...string) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(pki.CA)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: x509.NewCertPool(), NextProtos: alpn}
	cfg.RootCAs.AppendCertsFromPEM(pem)
	if client {
		cert, err := tls.LoadX509KeyPair(pki.ClientCert, pki.ClientKey)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

var protocols = []string{ProtocolMQTT5, ProtocolMQTT311}

// TestALPN: through a TLS front that requires ALPN x-amzn-mqtt-ca and a
// client certificate (as AWS IoT Core on port 443 does), a bridge with
// that ALPN protocol forwards every message, in either protocol.
func TestALPN(t *testing.T) {
	for _, proto := range protocols {
		t.Run("MQTT "+proto, func(t *testing.T) {
			pki := mqtttest.NewPKI(t, t.TempDir(), "aws")
			up := mqtttest.StartMochi(t, "127.0.0.1:0", nil)
			front := mqtttest.StartALPNFront(t, pki, up.Addr, awsALPN, true)
			r := startBridge(t, front.Addr, []Rule{{Filter: "#", RemotePrefix: "thing/", QoS: 1}}, func(c *Config) {
				c.Protocol = proto
				c.URLs = []*url.URL{mustURL(t, "mqtts://"+front.Addr)}
				c.TLS = tlsConfig(t, pki, true, awsALPN)
			})
			want := seqPayloads("a", 50)
			r.publish(t, "sensors/t", want...)
			checkInOrder(t, up.WaitDistinct(t, len(want), 20*time.Second), want)
			if n := front.Negotiated(); front.Refused.Load() != 0 || len(n) == 0 || slices.IndexFunc(n, func(p string) bool { return p != awsALPN }) >= 0 {
				t.Fatalf("front refused %d, negotiated %q: want every connection on %q", front.Refused.Load(), n, awsALPN)
			}
		})
	}
}

// TestALPNMissing: without alpn, the front refuses the handshake, and the
// bridge's error says so, and what to set. Nothing is lost: the messages
// wait in the queue.
func TestALPNMissing(t *testing.T) {
	pki := mqtttest.NewPKI(t, t.TempDir(), "aws")
	up := mqtttest.StartMochi(t, "127.0.0.1:0", nil)
	front := mqtttest.StartALPNFront(t, pki, up.Addr, awsALPN, true)
	r := startBridge(t, front.Addr, []Rule{{Filter: "#", QoS: 1}}, func(c *Config) {
		c.URLs = []*url.URL{mustURL(t, "mqtts://"+front.Addr)}
		c.TLS = tlsConfig(t, pki, true)
	})
	r.publish(t, "t", "kept")
	waitFor(t, "a failed connection", func() bool { return r.b.Stats().LastError != "" })
	want := "TLS handshake with " + front.Addr + `: remote error: tls: internal error (the server refused the handshake, and this bridge offers no ALPN protocol: a server that requires one refuses such handshakes, e.g. AWS IoT Core on port 443 wants alpn = ["x-amzn-mqtt-ca"])`
	if s := r.b.Stats(); s.LastError != want || s.Connected || s.Backlog != 1 {
		t.Fatalf("stats %+v,\nwant the error %q, disconnected, 1 queued", s, want)
	}
	if front.Refused.Load() == 0 || front.Accepted.Load() != 0 {
		t.Fatalf("front refused %d and accepted %d handshakes; want only refusals", front.Refused.Load(), front.Accepted.Load())
	}
}

// TestALPNNotAgreed: a server that takes TLS without ALPN while the bridge
// asks for a protocol is not used: the bridge says the server agreed to
// none of them.
func TestALPNNotAgreed(t *testing.T) {
	pki := mqtttest.NewPKI(t, t.TempDir(), "plain")
	up := mqtttest.StartMochi(t, "127.0.0.1:0", nil)
	front := mqtttest.StartALPNFront(t, pki, up.Addr, "", false)
	r := startBridge(t, front.Addr, []Rule{{Filter: "#", QoS: 1}}, func(c *Config) {
		c.URLs = []*url.URL{mustURL(t, "mqtts://"+front.Addr)}
		c.TLS = tlsConfig(t, pki, false, awsALPN, "mqtt")
	})
	waitFor(t, "a failed connection", func() bool { return r.b.Stats().LastError != "" })
	want := "TLS handshake with " + front.Addr + `: the server agreed to none of the ALPN protocols offered ("x-amzn-mqtt-ca", "mqtt")`
	if s := r.b.Stats(); s.LastError != want || s.Connected {
		t.Fatalf("stats %+v,\nwant the error %q, disconnected", s, want)
	}
}

// mosquittoWS runs Mosquitto with a plain MQTT listener (for the test's
// subscriber), a WebSocket one and a WebSocket-over-TLS one.
type mosquittoWS struct {
	plain, ws, wss string // host:port
	pki            mqtttest.PKI
}

func startMosquittoWS(t *testing.T) mosquittoWS {
	t.Helper()
	dir := t.TempDir()
	pki := mqtttest.NewPKI(t, dir, "ws")
	plain, ws, wss := mqtttest.FreePort(t), mqtttest.FreePort(t), mqtttest.FreePort(t)
	mqtttest.StartMosquittoConf(t, plain, dir, fmt.Sprintf(`allow_anonymous true
persistence false
log_dest none
listener %d 127.0.0.1
listener %d 127.0.0.1
protocol websockets
listener %d 127.0.0.1
protocol websockets
cafile %s
certfile %s
keyfile %s
`, plain, ws, wss, pki.CA, pki.ServerCert, pki.ServerKey))
	m := mosquittoWS{plain: fmt.Sprintf("127.0.0.1:%d", plain), ws: fmt.Sprintf("127.0.0.1:%d", ws), wss: fmt.Sprintf("127.0.0.1:%d", wss), pki: pki}
	for _, addr := range []string{m.ws, m.wss} { // listeners open one after the other
		waitFor(t, "mosquitto listening on "+addr, func() bool {
			c, err := net.Dial("tcp", addr)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
	}
	return m
}

// TestWebSocket: MQTT over WebSocket into Mosquitto's WebSocket
// listeners, ws:// and wss://, with a path, in either protocol: every
// message arrives in order, and a downlink message comes back.
func TestWebSocket(t *testing.T) {
	m := startMosquittoWS(t)
	for _, proto := range protocols {
		for _, scheme := range []string{"ws", "wss"} {
			t.Run(scheme+" MQTT "+proto, func(t *testing.T) {
				c := mqtttest.Subscribe(t, m.plain, "collector-"+scheme+proto, "edge/"+scheme+proto+"/#", nil)
				q, lb := startLocal(t)
				cons, err := q.Consumer("up", queue.ConsumerOptions{})
				if err != nil {
					t.Fatal(err)
				}
				addr := m.ws
				if scheme == "wss" {
					addr = m.wss
				}
				local := mqtttest.Dial(t, lb.Addrs()[0], "device", 5)
				local.Subscribe("cmd/#", 1)
				cfg := Config{
					Name: "up", Protocol: proto, URLs: []*url.URL{mustURL(t, scheme+"://"+addr+"/mqtt")}, ClientID: "ralph-" + scheme + proto,
					MaxInflight: 8, KeepAlive: 30 * time.Second, ReconnectMin: 20 * time.Millisecond, ReconnectMax: 100 * time.Millisecond,
					SessionExpiry: time.Hour, Local: lb, Logger: quiet,
					Forward:   []Rule{{Filter: "sensors/#", RemotePrefix: "edge/" + scheme + proto + "/", QoS: 1}},
					Subscribe: []SubRule{{Filter: "cloud/" + scheme + proto + "/#", StripPrefix: "cloud/" + scheme + proto + "/", LocalPrefix: "cmd/", QoS: 1}},
				}
				if scheme == "wss" {
					cfg.TLS = tlsConfig(t, m.pki, false)
				}
				b, _ := runBridge(t, cfg, cons)
				want := seqPayloads("w", 200)
				for _, p := range want {
					m := &queue.Message{Topic: "sensors/x", Payload: []byte(p), QoS: 1, Origin: "dev", Arrived: time.Now()}
					if err := q.Append(context.Background(), m); err != nil {
						t.Fatal(err)
					}
				}
				checkInOrder(t, c.WaitDistinct(t, len(want), 20*time.Second), want)
				if s := b.Stats(); !s.Connected || !strings.HasPrefix(s.URL, scheme+"://") {
					t.Fatalf("stats %+v: want connected over %s", s, scheme)
				}

				cloud := mqtttest.Dial(t, m.plain, "cloud-"+scheme+proto, 5)
				cloud.Publish(1, 1, "cloud/"+scheme+proto+"/led", []byte("on"))
				pk := local.Read(10 * time.Second)
				if pk.TopicName != "cmd/led" || string(pk.Payload) != "on" {
					t.Fatalf("downlink: got %q %q, want cmd/led on", pk.TopicName, pk.Payload)
				}
			})
		}
	}
}

// TestWebSocketRefused: a server that is not a WebSocket endpoint, and
// one that will not speak the subprotocol mqtt, are reported as such.
func TestWebSocketRefused(t *testing.T) {
	mux := http.NewServeMux()
	up := websocket.Upgrader{} // chooses no subprotocol
	mux.HandleFunc("/nomqtt", func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err == nil {
			c.Close()
		}
	})
	other := websocket.Upgrader{Subprotocols: []string{"wamp"}}
	mux.HandleFunc("/wamp", func(w http.ResponseWriter, r *http.Request) {
		r.Header.Set("Sec-WebSocket-Protocol", "wamp") // as if asked: a server that ignores the request
		c, err := other.Upgrade(w, r, nil)
		if err == nil {
			c.Close()
		}
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	base := "ws://" + l.Addr().String()
	for _, tt := range []struct{ path, want string }{
		{"/missing", `WebSocket handshake with ` + base + `/missing: the server answered "404 Not Found", not 101 Switching Protocols to a WebSocket`},
		{"/nomqtt", `WebSocket handshake with ` + base + `/nomqtt: the server chose no subprotocol, where MQTT needs "mqtt"`},
		{"/wamp", `WebSocket handshake with ` + base + `/wamp: the server chose the subprotocol "wamp", where MQTT needs "mqtt"`},
	} {
		t.Run(tt.path, func(t *testing.T) {
			r := startBridge(t, l.Addr().String(), []Rule{{Filter: "#", QoS: 1}}, func(c *Config) {
				c.URLs = []*url.URL{mustURL(t, base+tt.path)}
			})
			waitFor(t, "a failed connection", func() bool { return r.b.Stats().LastError != "" })
			if s := r.b.Stats(); s.LastError != tt.want || s.Connected {
				t.Fatalf("stats %+v,\nwant the error %q", s, tt.want)
			}
		})
	}
}

// TestProxy: through an HTTP CONNECT proxy that wants credentials, into
// Mosquitto over plain TCP, TLS and WebSocket, in either protocol: every
// message arrives, and the proxy carried the connection.
func TestProxy(t *testing.T) {
	dir := t.TempDir()
	pki := mqtttest.NewPKI(t, dir, "px")
	plain, tlsPort, ws := mqtttest.FreePort(t), mqtttest.FreePort(t), mqtttest.FreePort(t)
	mqtttest.StartMosquittoConf(t, plain, dir, fmt.Sprintf(`allow_anonymous true
persistence false
log_dest none
listener %d 127.0.0.1
listener %d 127.0.0.1
cafile %s
certfile %s
keyfile %s
listener %d 127.0.0.1
protocol websockets
`, plain, tlsPort, pki.CA, pki.ServerCert, pki.ServerKey, ws))
	proxy := mqtttest.StartConnectProxy(t, "ralph", "p@ss:word")
	for _, proto := range protocols {
		for _, tt := range []struct{ name, url string }{
			{"mqtt", fmt.Sprintf("mqtt://127.0.0.1:%d", plain)},
			{"mqtts", fmt.Sprintf("mqtts://127.0.0.1:%d", tlsPort)},
			{"ws", fmt.Sprintf("ws://127.0.0.1:%d/mqtt", ws)},
		} {
			t.Run(tt.name+" MQTT "+proto, func(t *testing.T) {
				sub := tt.name + proto
				c := mqtttest.Subscribe(t, fmt.Sprintf("127.0.0.1:%d", plain), "collector-"+sub, "edge/"+sub+"/#", nil)
				u := mustURL(t, tt.url)
				r := startBridge(t, u.Host, []Rule{{Filter: "#", RemotePrefix: "edge/" + sub + "/", QoS: 1}}, func(c *Config) {
					c.Protocol, c.ClientID = proto, "ralph-"+sub
					c.URLs = []*url.URL{u}
					c.Proxy = &url.URL{Scheme: "http", User: url.UserPassword("ralph", "p@ss:word"), Host: proxy.Addr}
					c.TLS = tlsConfig(t, pki, false)
				})
				want := seqPayloads("p", 100)
				r.publish(t, "t", want...)
				checkInOrder(t, c.WaitDistinct(t, len(want), 20*time.Second), want)
				if !slices.Contains(proxy.Targets(), u.Host) {
					t.Fatalf("the proxy connected to %v, never to %s", proxy.Targets(), u.Host)
				}
			})
		}
	}
}

// TestProxyRefused: a proxy that wants credentials, given none or wrong
// ones, and a proxy that is not there, are reported as such.
func TestProxyRefused(t *testing.T) {
	up := mqtttest.StartMochi(t, "127.0.0.1:0", nil)
	proxy := mqtttest.StartConnectProxy(t, "ralph", "secret")
	absent := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	for _, tt := range []struct {
		name  string
		proxy *url.URL
		want  string
	}{
		{"no credentials", &url.URL{Scheme: "http", Host: proxy.Addr},
			"proxy " + proxy.Addr + " refused CONNECT " + up.Addr + `: 407 Proxy Authentication Required (it wants credentials: proxy = "http://user:password@host:port")`},
		{"wrong credentials", &url.URL{Scheme: "http", User: url.UserPassword("ralph", "guess"), Host: proxy.Addr},
			"proxy " + proxy.Addr + " refused CONNECT " + up.Addr + ": 407 Proxy Authentication Required (it did not accept the credentials in the proxy URL)"},
		{"no proxy there", &url.URL{Scheme: "http", Host: absent},
			"proxy " + absent + ": dial tcp " + absent + ": connect: connection refused"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := startBridge(t, up.Addr, []Rule{{Filter: "#", QoS: 1}}, func(c *Config) { c.Proxy = tt.proxy })
			r.publish(t, "t", "kept")
			waitFor(t, "a failed connection", func() bool { return r.b.Stats().LastError != "" })
			if s := r.b.Stats(); s.LastError != tt.want || s.Connected || s.Backlog != 1 {
				t.Fatalf("stats %+v,\nwant the error %q, disconnected, 1 queued", s, tt.want)
			}
		})
	}
	if len(up.Messages()) != 0 || proxy.Refused() == 0 || len(proxy.Targets()) != 0 {
		t.Fatalf("%d messages reached the upstream, the proxy refused %d requests and opened tunnels to %v: want nothing through",
			len(up.Messages()), proxy.Refused(), proxy.Targets())
	}
}
