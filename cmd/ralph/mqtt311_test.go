package main

// End-to-end tests of a bridge with protocol = "3.1.1": a real ralph
// forwarding into nats-server's MQTT gateway (which speaks MQTT 3.1.1
// only) across a restart of nats-server, a command coming down from it,
// the upstream over mutual TLS with a password (Mosquitto), `ralph check`
// on the protocol key, and a SIGHUP that switches a bridge refused as
// MQTT 5 to 3.1.1.

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/ralph-gateway/ralph/gateway"
	"github.com/ralph-gateway/ralph/internal/mqtttest"
)

// natsServer is Debian's nats-server with its MQTT gateway on addr and
// JetStream (where MQTT sessions live) in a directory kept across
// restarts.
type natsServer struct {
	addr, conf string
	cmd        *exec.Cmd
	out        *strings.Builder
}

func startNATSServer(t *testing.T, addr string) *natsServer {
	t.Helper()
	const path = "/usr/sbin/nats-server"
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("this test needs nats-server (an MQTT 3.1.1-only broker) at %s: apt-get install -y nats-server (%v)", path, err)
	}
	dir := t.TempDir()
	n := &natsServer{addr: addr, conf: filepath.Join(dir, "nats.conf")}
	conf := fmt.Sprintf("server_name: ralph_e2e\nlisten: 127.0.0.1:-1\nhttp: 0\njetstream { store_dir: %q }\nmqtt { listen: %q }\n",
		filepath.Join(dir, "js"), addr)
	if err := os.WriteFile(n.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	n.start(t)
	t.Cleanup(n.stop)
	return n
}

func (n *natsServer) start(t *testing.T) {
	t.Helper()
	n.cmd = exec.Command("/usr/sbin/nats-server", "-c", n.conf)
	n.out = new(strings.Builder)
	n.cmd.Stdout, n.cmd.Stderr = n.out, n.out
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if c, err := net.Dial("tcp", n.addr); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server did not listen for MQTT on %s:\n%s", n.addr, n.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop ends nats-server cleanly (its JetStream state, sessions included,
// is kept for the next start).
func (n *natsServer) stop() {
	if n.cmd == nil {
		return
	}
	n.cmd.Process.Signal(os.Interrupt)
	n.cmd.Wait()
	n.cmd = nil
}

// kill ends nats-server at once, as a crash would. JetStream writes a
// message to its file before the PUBACK, so what was acknowledged is
// there at the next start; consumer state it had yet to write comes back
// as redeliveries.
func (n *natsServer) kill() {
	n.cmd.Process.Kill()
	n.cmd.Wait()
	n.cmd = nil
}

// collector311 is an MQTT 3.1.1 subscriber (paho.mqtt.golang, persistent
// session, reconnecting by itself) recording what it receives.
type collector311 struct {
	mu   sync.Mutex
	msgs []mqtttest.Received
}

func subscribe311(t *testing.T, addr, clientID, filter string) *collector311 {
	t.Helper()
	c := new(collector311)
	subscribed := make(chan struct{})
	var once sync.Once
	opts := paho3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(clientID).SetProtocolVersion(4).
		SetCleanSession(false).SetAutoReconnect(true).SetMaxReconnectInterval(200 * time.Millisecond).
		SetDefaultPublishHandler(func(_ paho3.Client, m paho3.Message) {
			c.mu.Lock()
			c.msgs = append(c.msgs, mqtttest.Received{Topic: m.Topic(), Payload: string(m.Payload()), QoS: m.Qos()})
			c.mu.Unlock()
		}).
		SetOnConnectHandler(func(cl paho3.Client) {
			go func() {
				if tok := cl.Subscribe(filter, 1, nil); tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
					once.Do(func() { close(subscribed) })
				}
			}()
		})
	cl := paho3.NewClient(opts)
	if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber %s could not connect to %s: %v", clientID, addr, tok.Error())
	}
	t.Cleanup(func() { cl.Disconnect(100) })
	select {
	case <-subscribed:
	case <-time.After(10 * time.Second):
		t.Fatalf("subscriber %s could not subscribe to %s", clientID, filter)
	}
	return c
}

// waitAll waits until every payload of want has arrived and returns all
// that did.
func (c *collector311) waitAll(t *testing.T, want []string, timeout time.Duration) []mqtttest.Received {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c.mu.Lock()
		got := append([]mqtttest.Received(nil), c.msgs...)
		c.mu.Unlock()
		seen := map[string]bool{}
		for _, m := range got {
			seen[m.Payload] = true
		}
		missing := 0
		for _, w := range want {
			if !seen[w] {
				missing++
			}
		}
		if missing == 0 {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v: %d of %d messages missing upstream", timeout, missing, len(want))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestBridgeMQTT311IntoNATS: ralph with protocol = "3.1.1" bridges into
// nats-server, which speaks no MQTT 5. Three devices publish QoS 1
// locally while nats-server is restarted mid-stream: a subscriber on
// nats-server's MQTT port receives every message, in order per publisher.
// A command published on nats-server comes down to a device through a
// [[bridge.subscribe]] rule.
func TestBridgeMQTT311IntoNATS(t *testing.T) {
	natsAddr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	n := startNATSServer(t, natsAddr)
	c := subscribe311(t, natsAddr, "cloud-sub", "edge/#")
	s := newSetup(t, natsAddr, `protocol = "3.1.1"
max_inflight = 16
state_topic = "site/edge-1/state"
  [[bridge.subscribe]]
  remote = "site/edge-1/cmd/#"
  strip_prefix = "site/edge-1/"
  qos = 1`)
	p := startRalph(t, s.config, s.addr)
	waitStatus(t, s, "the bridge connected", func(st gateway.Status) bool {
		return len(st.Bridges) == 1 && st.Bridges[0].Connected && st.Bridges[0].Protocol == "3.1.1"
	})

	var want []string
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, v := range []byte{4, 5, 4} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("p%d", i)
			acked := publish(t, s.addr, name, v, "sensors/"+name, payloads(name, 0, 300))
			mu.Lock()
			want = append(want, acked...)
			mu.Unlock()
		}()
	}
	// Restart nats-server (sessions kept in JetStream) once some of the
	// messages are through. It is killed rather than stopped: a clean
	// stop of nats-server 2.9.10 (Debian's) shuts JetStream down while
	// its MQTT connections are still open, and in between it answers QoS 1
	// PUBLISHes with a PUBACK although their stream, its consumers already
	// detached, skipped them instead of storing them (fixed in 2.9.16).
	waitStatus(t, s, "messages forwarded", func(st gateway.Status) bool { return st.Bridges[0].Forwarded >= 100 })
	n.kill()
	n.start(t)
	wg.Wait()
	got := c.waitAll(t, want, 60*time.Second)
	dups := verify(t, got, want, func(p string) string { pub, _, _ := strings.Cut(p, "-"); return "edge/sensors/" + pub })
	st := waitStatus(t, s, "the backlog forwarded", func(st gateway.Status) bool { return st.Bridges[0].Queued == 0 && st.Bridges[0].Connected })
	t.Logf("%d messages, %d duplicates, %d reconnects", len(want), dups, st.Bridges[0].Reconnects)

	dev := mqtttest.DialSession(t, s.addr, "device", 4, false)
	dev.Subscribe("cmd/#", 1)
	cloud := mqtttest.Dial(t, natsAddr, "cloud-cmd", 4)
	cloud.Publish(1, 1, "site/edge-1/cmd/valve", []byte("open"))
	for {
		pk := dev.Read(15 * time.Second)
		if pk.FixedHeader.Type == 3 { // PUBLISH
			if pk.TopicName != "cmd/valve" || string(pk.Payload) != "open" {
				t.Fatalf("device got %q %q, want cmd/valve open", pk.TopicName, pk.Payload)
			}
			break
		}
	}
	p.stop()
}

// TestBridgeMQTT311TLS: protocol = "3.1.1" over mutual TLS with a
// password, into Mosquitto; a wrong password is refused and reported.
func TestBridgeMQTT311TLS(t *testing.T) {
	dir := t.TempDir()
	pki := mqtttest.NewPKI(t, dir, "good")
	pwFile := filepath.Join(dir, "passwd")
	if out, err := exec.Command("mosquitto_passwd", "-b", "-c", pwFile, "ralph", "s3cret").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v %s", err, out)
	}
	os.WriteFile(filepath.Join(dir, "right"), []byte("s3cret\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "wrong"), []byte("guess\n"), 0o600)
	for _, tt := range []struct {
		name, password, wantErr string
	}{
		{"mutual tls and password", "right", ""},
		{"wrong password", "wrong", "connect refused: return code 0x5 (not authorized)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tlsPort, plainPort := mqtttest.FreePort(t), mqtttest.FreePort(t)
			mqtttest.StartMosquittoConf(t, plainPort, t.TempDir(), fmt.Sprintf(`per_listener_settings true
persistence false
log_dest none
listener %d 127.0.0.1
cafile %s
certfile %s
keyfile %s
require_certificate true
allow_anonymous false
password_file %s
listener %d 127.0.0.1
allow_anonymous true
`, tlsPort, pki.CA, pki.ServerCert, pki.ServerKey, pwFile, plainPort))
			c := mqtttest.Subscribe(t, fmt.Sprintf("127.0.0.1:%d", plainPort), "collector", "edge/#", nil)
			s := newSetup(t, "unused:1", "")
			cfg, _ := os.ReadFile(s.config)
			conf := strings.Replace(string(cfg), `urls = ["mqtt://unused:1"]`, fmt.Sprintf(`urls = ["mqtts://127.0.0.1:%d"]
protocol = "3.1.1"
ca_file = %q
cert_file = %q
key_file = %q
username = "ralph"
password_file = %q`, tlsPort, pki.CA, pki.ClientCert, pki.ClientKey, filepath.Join(dir, tt.password)), 1)
			os.WriteFile(s.config, []byte(conf), 0o644)
			p := startRalph(t, s.config, s.addr)
			want := publish(t, s.addr, "dev", 5, "sensors/a", payloads("a", 0, 5))
			if tt.wantErr == "" {
				verify(t, c.WaitAll(t, want, 15*time.Second), want, edgeTopic("a"))
				p.stop()
				return
			}
			st := waitStatus(t, s, "a connection error", func(st gateway.Status) bool { return st.Bridges[0].LastError != "" })
			if st.Bridges[0].Connected || st.Bridges[0].LastError != tt.wantErr {
				t.Fatalf("bridge %+v: want disconnected with the error %q", st.Bridges[0], tt.wantErr)
			}
			if st.Bridges[0].Queued != 5 {
				t.Fatalf("%d queued, want the 5 kept for later", st.Bridges[0].Queued)
			}
			p.stop()
		})
	}
}

// TestBridgeMQTT311CheckAndReload: `ralph check` warns about a 3.1.1
// bridge that forwards and rejects an unknown protocol with file, line
// and key; a running ralph whose MQTT 5 bridge nats-server refuses
// forwards what it kept once a SIGHUP switches the bridge to 3.1.1.
func TestBridgeMQTT311CheckAndReload(t *testing.T) {
	natsAddr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	startNATSServer(t, natsAddr)
	c := subscribe311(t, natsAddr, "cloud-sub", "edge/#")
	s := newSetup(t, natsAddr, "")
	cfg, _ := os.ReadFile(s.config)

	bad := strings.Replace(string(cfg), `client_id = "ralph-edge-1"`, "client_id = \"ralph-edge-1\"\nprotocol = \"4\"", 1)
	os.WriteFile(s.config, []byte(bad), 0o644)
	out, code := ralphCmd(t, "check", "--config", s.config)
	if wantErr := s.config + `:10: bridge[0].protocol: "4" is not one of 5, 3.1.1`; code != 1 || !strings.Contains(out, wantErr) {
		t.Fatalf("check of protocol 4: exit %d, output:\n%s\nwant exit 1 and %q", code, out, wantErr)
	}
	v311 := strings.Replace(bad, `protocol = "4"`, `protocol = "3.1.1"`, 1)
	os.WriteFile(s.config, []byte(v311), 0o644)
	out, code = ralphCmd(t, "check", "--config", s.config)
	if wantWarn := "bridge up speaks MQTT 3.1.1: user properties, message expiry and content type of forwarded messages are dropped"; code != 0 || !strings.Contains(out, wantWarn) {
		t.Fatalf("check of protocol 3.1.1: exit %d, output:\n%s\nwant exit 0 and the warning %q", code, out, wantWarn)
	}

	os.WriteFile(s.config, cfg, 0o644) // protocol "5", the default
	p := startRalph(t, s.config, s.addr)
	st := waitStatus(t, s, "nats-server refusing MQTT 5", func(st gateway.Status) bool {
		return strings.Contains(st.Bridges[0].LastError, "upstream refused MQTT 5")
	})
	if st.Bridges[0].Protocol != "5" {
		t.Fatalf("status protocol %q, want 5", st.Bridges[0].Protocol)
	}
	want := publish(t, s.addr, "dev", 4, "sensors/a", payloads("a", 0, 50))
	os.WriteFile(s.config, []byte(v311), 0o644)
	p.cmd.Process.Signal(syscall.SIGHUP)
	verify(t, c.waitAll(t, want, 30*time.Second), want, edgeTopic("a"))
	waitStatus(t, s, "the bridge connected over 3.1.1", func(st gateway.Status) bool {
		return st.Bridges[0].Connected && st.Bridges[0].Protocol == "3.1.1" && st.Bridges[0].Queued == 0
	})
	p.stop()
}
