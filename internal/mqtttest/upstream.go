package mqtttest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"io"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Received is a message as an upstream broker's subscriber saw it.
type Received struct {
	Topic   string
	Payload string
	QoS     byte
	Retain  bool
	Props   map[string]string // user properties
}

// Collector records messages in arrival order.
type Collector struct {
	mu   sync.Mutex
	msgs []Received
	more chan struct{}
}

func newCollector() *Collector { return &Collector{more: make(chan struct{})} }

func (c *Collector) add(r Received) {
	c.mu.Lock()
	c.msgs = append(c.msgs, r)
	close(c.more)
	c.more = make(chan struct{})
	c.mu.Unlock()
}

// Messages returns what has arrived so far.
func (c *Collector) Messages() []Received {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Received(nil), c.msgs...)
}

// WaitAll waits until every payload in want has arrived and returns
// everything received, duplicates and unwanted messages included.
func (c *Collector) WaitAll(t testing.TB, want []string, timeout time.Duration) []Received {
	t.Helper()
	deadline := time.After(timeout)
	for {
		c.mu.Lock()
		seen := make(map[string]bool, len(c.msgs))
		for _, m := range c.msgs {
			seen[m.Payload] = true
		}
		more := c.more
		var missing []string
		for _, w := range want {
			if !seen[w] {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 {
			out := append([]Received(nil), c.msgs...)
			c.mu.Unlock()
			return out
		}
		c.mu.Unlock()
		select {
		case <-more:
		case <-deadline:
			t.Fatalf("timed out after %v: %d of %d messages missing upstream, e.g. %q", timeout, len(missing), len(want), missing[:min(5, len(missing))])
		}
	}
}

// WaitDistinct waits until n distinct payloads have arrived and returns
// everything received, duplicates included.
func (c *Collector) WaitDistinct(t testing.TB, n int, timeout time.Duration) []Received {
	t.Helper()
	deadline := time.After(timeout)
	for {
		c.mu.Lock()
		seen := make(map[string]bool)
		for _, m := range c.msgs {
			seen[m.Payload] = true
		}
		more := c.more
		if len(seen) >= n {
			out := append([]Received(nil), c.msgs...)
			c.mu.Unlock()
			return out
		}
		got := len(seen)
		c.mu.Unlock()
		select {
		case <-more:
		case <-deadline:
			t.Fatalf("timed out after %v with %d of %d distinct messages upstream", timeout, got, n)
		}
	}
}

// Mochi is an in-process upstream broker (mochi-mqtt) that records
// everything published to it.
type Mochi struct {
	Addr string
	*Collector
	srv *mqtt.Server
	// Stall makes the broker swallow publishes from clients: no ack, no
	// delivery — an upstream that is connected but stuck.
	Stall atomic.Bool
	// StallPrefix, if set, makes it swallow those whose topic begins
	// with it.
	StallPrefix atomic.Pointer[string]
}

// StartMochi starts an upstream broker on addr ("127.0.0.1:0" for any port).
// The recording subscription exists before the listener accepts anyone.
func StartMochi(t testing.TB, addr string, c *Collector) *Mochi {
	t.Helper()
	if c == nil {
		c = newCollector()
	}
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	m := &Mochi{Collector: c, srv: srv}
	srv.AddHook(new(AllowAll), nil)
	srv.AddHook(&stallHook{m: m}, nil)
	err := srv.Subscribe("#", 1, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		if strings.HasPrefix(pk.TopicName, "$") {
			return // mochi's inline subscriptions see $SYS too
		}
		r := Received{Topic: pk.TopicName, Payload: string(pk.Payload), QoS: pk.FixedHeader.Qos, Retain: pk.FixedHeader.Retain}
		for _, u := range pk.Properties.User {
			if r.Props == nil {
				r.Props = make(map[string]string)
			}
			r.Props[u.Key] = u.Val
		}
		c.add(r)
	})
	if err != nil {
		t.Fatal(err)
	}
	l := NewListener("t", addr)
	// A restarted upstream rebinds the port its predecessor used; it may
	// take a moment to be released.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err = srv.AddListener(l); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("upstream listen %s: %v", addr, err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	m.Addr = l.Address()
	t.Cleanup(m.Stop)
	return m
}

// Stop shuts the broker down; Stop twice is fine.
func (m *Mochi) Stop() {
	if m.srv != nil {
		m.srv.Close()
		m.srv = nil
	}
}

type stallHook struct {
	mqtt.HookBase
	m *Mochi
}

func (*stallHook) ID() string           { return "stall" }
func (*stallHook) Provides(b byte) bool { return b == mqtt.OnPublish }
func (h *stallHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	if p := h.m.StallPrefix.Load(); h.m.Stall.Load() || p != nil && strings.HasPrefix(pk.TopicName, *p) {
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

// AllowAll is a mochi hook that lets every client in and allows every
// topic.
type AllowAll struct{ mqtt.HookBase }

func (AllowAll) ID() string { return "allow" }
func (AllowAll) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}
func (AllowAll) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }
func (AllowAll) OnACLCheck(*mqtt.Client, string, bool) bool              { return true }

// FreePort returns a loopback TCP port nobody listens on right now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Mosquitto is a real Eclipse Mosquitto broker run by a test.
type Mosquitto struct {
	Port int
	dir  string
	cmd  *exec.Cmd
	t    testing.TB
}

// MosquittoPath is where Debian installs the broker.
const MosquittoPath = "/usr/sbin/mosquitto"

// StartMosquitto runs mosquitto on port with persistence in dir, so that a
// restarted broker keeps its subscribers' sessions. It fails the test, with
// how to fix it, when mosquitto is not installed.
func StartMosquitto(t testing.TB, port int, dir string) *Mosquitto {
	t.Helper()
	if _, err := os.Stat(MosquittoPath); err != nil {
		t.Fatalf("this test needs Eclipse Mosquitto at %s: apt-get install -y mosquitto mosquitto-clients (%v)", MosquittoPath, err)
	}
	conf := filepath.Join(dir, "mosquitto.conf")
	cfg := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\nmax_queued_messages 0\nmax_inflight_messages 0\nlog_dest none\n", port, dir)
	if os.Geteuid() == 0 {
		// As root, mosquitto switches to the mosquitto user, which cannot
		// write the test's persistence directory: sessions would be lost
		// across restarts without a word.
		cfg += "user root\n"
	}
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return startMosquitto(t, port, dir, conf)
}

// StartMosquittoConf runs mosquitto with the given configuration text
// (listeners included), waiting until port accepts connections.
func StartMosquittoConf(t testing.TB, port int, dir, cfg string) *Mosquitto {
	t.Helper()
	if _, err := os.Stat(MosquittoPath); err != nil {
		t.Fatalf("this test needs Eclipse Mosquitto at %s: apt-get install -y mosquitto mosquitto-clients (%v)", MosquittoPath, err)
	}
	if os.Geteuid() == 0 {
		cfg += "user root\n"
	}
	conf := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return startMosquitto(t, port, dir, conf)
}

func startMosquitto(t testing.TB, port int, dir, conf string) *Mosquitto {
	t.Helper()
	m := &Mosquitto{Port: port, dir: dir, t: t}
	m.cmd = exec.Command(MosquittoPath, "-c", conf)
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", m.Addr())
		if err == nil {
			c.Close()
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto did not start listening on %s: %v", m.Addr(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill ends mosquitto with SIGKILL: no saving, no goodbye to clients.
func (m *Mosquitto) Kill() {
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Kill()
	m.cmd.Wait()
	m.cmd = nil
}

// Addr is the broker's host:port.
func (m *Mosquitto) Addr() string { return fmt.Sprintf("127.0.0.1:%d", m.Port) }

// Stop terminates mosquitto (SIGTERM, so it saves its sessions) and waits.
func (m *Mosquitto) Stop() {
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Signal(os.Interrupt)
	m.cmd.Wait()
	m.cmd = nil
}

// Subscribe connects a persistent-session subscriber to addr, subscribed to
// filter at QoS 1, recording into c. Its session outlives disconnections,
// so messages published while it reconnects are kept for it.
func Subscribe(t testing.TB, addr, clientID, filter string, c *Collector) *Collector {
	t.Helper()
	return SubscribeURL(t, "mqtt://"+addr, clientID, filter, c)
}

// SubscribeURL is Subscribe for any URL autopaho takes (ws://, mqtts://...).
func SubscribeURL(t testing.TB, rawURL, clientID, filter string, c *Collector) *Collector {
	t.Helper()
	if c == nil {
		c = newCollector()
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	addr := u.Host
	ctx, cancel := context.WithCancel(context.Background())
	subscribed := make(chan error, 1)
	cm, err := autopaho.NewConnection(ctx, autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		KeepAlive:                     30,
		CleanStartOnInitialConnection: false,
		SessionExpiryInterval:         3600,
		ReconnectBackoff:              autopaho.NewConstantBackoff(100 * time.Millisecond),
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			go func() {
				_, err := cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
				select {
				case subscribed <- err:
				default:
				}
			}()
		},
		ClientConfig: paho.ClientConfig{
			ClientID: clientID,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				r := Received{Topic: pr.Packet.Topic, Payload: string(pr.Packet.Payload), QoS: pr.Packet.QoS, Retain: pr.Packet.Retain}
				if pr.Packet.Properties != nil {
					for _, up := range pr.Packet.Properties.User {
						if r.Props == nil {
							r.Props = make(map[string]string)
						}
						r.Props[up.Key] = up.Value
					}
				}
				c.add(r)
				return true, nil
			}},
		},
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		<-cm.Done()
	})
	select {
	case err := <-subscribed:
		if err != nil {
			t.Fatalf("subscribe %s on %s: %v", filter, addr, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("subscriber could not connect to %s", addr)
	}
	return c
}
