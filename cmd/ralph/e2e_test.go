package main

// End-to-end tests: a real ralph binary, real MQTT clients, and real
// upstream brokers (Eclipse Mosquitto, and mochi in process), with the
// process killed by SIGKILL where the guarantee is about crashes.

import (
	"errors"
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

	"github.com/ralph-gateway/ralph/internal/mqtttest"
	"github.com/ralph-gateway/ralph/internal/testlog"
)

var ralphBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ralph-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ralphBin = filepath.Join(dir, "ralph")
	args := []string{"build", "-o", ralphBin}
	if raceBuild {
		// The gateway itself is race-checked too: every ralph the tests
		// start reports data races in its log (noRaces fails the test).
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...)
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building ralph:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running ralph.
type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	logs *testlog.Buffer
	done chan struct{}
}

// startRalph runs ralph with the config and waits until addr accepts MQTT
// connections.
func startRalph(t *testing.T, config, addr string) *proc {
	t.Helper()
	p := &proc{t: t, logs: new(testlog.Buffer), done: make(chan struct{})}
	p.cmd = exec.Command(ralphBin, "run", "--config", config)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		noRaces(t, p.logs.String())
		if t.Failed() {
			t.Logf("ralph log:\n%s", p.logs)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-p.done:
			t.Fatalf("ralph exited early: %v\n%s", p.cmd.ProcessState, p.logs)
		default:
		}
		// The listener is bound early; the gateway is up (sessions
		// loaded, HTTP endpoint listening) once it says so.
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			if strings.Contains(p.logs.String(), "ralph is running") {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("ralph did not listen on %s:\n%s", addr, p.logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// noRaces fails the test if a race-built ralph's log reports a data race.
func noRaces(t *testing.T, log string) {
	t.Helper()
	if i := strings.Index(log, "WARNING: DATA RACE"); i >= 0 {
		report := log[i:]
		if j := strings.Index(report, "\n==================\n"); j >= 0 {
			report = report[:j]
		}
		t.Errorf("ralph reported a data race:\n%s", report)
	}
}

func (p *proc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and expects a clean exit.
func (p *proc) stop() {
	p.t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.t.Fatalf("ralph did not stop on SIGTERM:\n%s", p.logs)
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		p.t.Fatalf("ralph exited %d on SIGTERM:\n%s", code, p.logs)
	}
}

type setup struct {
	dir, config, addr, upAddr, httpAddr string
}

// newSetup writes a config: the minimal example, on free ports,
// with quick reconnects so tests do not wait on backoff.
func newSetup(t *testing.T, upAddr string, extra string) setup {
	t.Helper()
	dir := t.TempDir()
	s := setup{dir: dir, addr: fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t)), upAddr: upAddr,
		httpAddr: fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))}
	s.config = filepath.Join(dir, "ralph.toml")
	cfg := fmt.Sprintf(`data_dir = %q
[broker]
listen = [%q]
[http]
listen = %q
[[bridge]]
name = "up"
urls = ["mqtt://%s"]
client_id = "ralph-edge-1"
reconnect_min = "50ms"
reconnect_max = "200ms"
%s
  [[bridge.forward]]
  local = "sensors/#"
  remote_prefix = "edge/"
  qos = 1
`, filepath.Join(dir, "data"), s.addr, s.httpAddr, upAddr, extra)
	if err := os.WriteFile(s.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

func payloads(prefix string, from, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%06d", prefix, from+i)
	}
	return out
}

// verify checks every payload in want arrived upstream under topic, in order
// per publisher (the prefix before "-"), and returns the duplicate count.
func verify(t *testing.T, got []mqtttest.Received, want []string, topicFor func(payload string) string) int {
	t.Helper()
	wanted := make(map[string]bool, len(want))
	for _, w := range want {
		wanted[w] = true
	}
	seen := make(map[string]bool)
	last := make(map[string]string) // publisher → last payload seen
	dups := 0
	for _, m := range got {
		if !wanted[m.Payload] {
			continue
		}
		if want := topicFor(m.Payload); m.Topic != want {
			t.Fatalf("%q arrived on %q, want %q", m.Payload, m.Topic, want)
		}
		if seen[m.Payload] {
			dups++
			continue
		}
		seen[m.Payload] = true
		pub, _, _ := strings.Cut(m.Payload, "-")
		if l := last[pub]; l > m.Payload {
			t.Fatalf("publisher %s: %q arrived after %q", pub, m.Payload, l)
		}
		last[pub] = m.Payload
	}
	if len(seen) != len(want) {
		missing := []string{}
		for _, w := range want {
			if !seen[w] && len(missing) < 5 {
				missing = append(missing, w)
			}
		}
		t.Fatalf("%d of %d acknowledged messages arrived upstream; missing e.g. %v", len(seen), len(want), missing)
	}
	return dups
}

func publish(t *testing.T, addr, clientID string, version byte, topic string, ps []string) []string {
	t.Helper()
	c := mqtttest.Dial(t, addr, clientID, version)
	defer c.Close()
	acked, err := c.PublishAll(topic, 1, ps, 32)
	if err != nil {
		t.Fatalf("%s: %d of %d acked, then: %v", clientID, len(acked), len(ps), err)
	}
	return acked
}

// upstream is a broker the bridge forwards to, which can be stopped and
// started again on the same address, keeping its subscriber's session.
type upstream interface {
	addr() string
	start(t *testing.T)
	stop()
	collector() *mqtttest.Collector
}

type mosquittoUp struct {
	port int
	dir  string
	m    *mqtttest.Mosquitto
	c    *mqtttest.Collector
}

func newMosquitto(t *testing.T) *mosquittoUp {
	u := &mosquittoUp{port: mqtttest.FreePort(t), dir: t.TempDir()}
	// Subscribe once so that the broker persists the subscriber's session
	// and queues for it across restarts.
	u.start(t)
	return u
}

func (u *mosquittoUp) addr() string { return fmt.Sprintf("127.0.0.1:%d", u.port) }
func (u *mosquittoUp) start(t *testing.T) {
	u.m = mqtttest.StartMosquitto(t, u.port, u.dir)
	if u.c == nil {
		u.c = mqtttest.Subscribe(t, u.addr(), "collector", "edge/#", nil)
	}
}
func (u *mosquittoUp) stop()                          { u.m.Stop() }
func (u *mosquittoUp) collector() *mqtttest.Collector { return u.c }

type mochiUp struct {
	a string
	m *mqtttest.Mochi
	c *mqtttest.Collector
}

func newMochi(t *testing.T) *mochiUp {
	u := &mochiUp{a: fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))}
	u.start(t)
	return u
}

func (u *mochiUp) addr() string { return u.a }
func (u *mochiUp) start(t *testing.T) {
	u.m = mqtttest.StartMochi(t, u.a, u.c)
	u.c = u.m.Collector
}
func (u *mochiUp) stop()                          { u.m.Stop() }
func (u *mochiUp) collector() *mqtttest.Collector { return u.c }

var upstreams = []struct {
	name string
	new  func(*testing.T) upstream
}{
	{"mosquitto", func(t *testing.T) upstream { return newMosquitto(t) }},
	{"mochi", func(t *testing.T) upstream { return newMochi(t) }},
}

func edgeTopic(sub string) func(string) string {
	return func(string) string { return "edge/sensors/" + sub }
}

// TestOnlineForwarding: with the upstream up, what devices publish under
// sensors/# reaches it as edge/sensors/..., from MQTT 3.1.1 and 5 clients
// and from mosquitto_pub.
func TestOnlineForwarding(t *testing.T) {
	for _, us := range upstreams {
		t.Run(us.name, func(t *testing.T) {
			up := us.new(t)
			s := newSetup(t, up.addr(), "")
			p := startRalph(t, s.config, s.addr)
			a := publish(t, s.addr, "dev-v311", 4, "sensors/a", payloads("a", 0, 300))
			b := publish(t, s.addr, "dev-v5", 5, "sensors/a", payloads("b", 0, 300))
			publish(t, s.addr, "dev-other", 5, "elsewhere/x", payloads("x", 0, 10))
			if us.name == "mosquitto" {
				out, err := exec.Command("mosquitto_pub", "-V", "mqttv311", "-h", "127.0.0.1", "-p", strings.Split(s.addr, ":")[1], "-q", "1", "-t", "sensors/a", "-m", "c-000000").CombinedOutput()
				if err != nil {
					t.Fatalf("mosquitto_pub: %v %s", err, out)
				}
				a = append(a, "c-000000")
			}
			want := append(a, b...)
			got := up.collector().WaitAll(t, want, 20*time.Second)
			if dups := verify(t, got, want, edgeTopic("a")); dups != 0 {
				t.Fatalf("%d duplicates without any failure", dups)
			}
			for _, m := range up.collector().Messages() {
				if strings.HasPrefix(m.Payload, "x-") || strings.HasPrefix(m.Topic, "$") {
					t.Fatalf("forwarded %q on %q: matches no forward rule", m.Payload, m.Topic)
				}
			}
			p.stop()
		})
	}
}

// TestOutageThenRecovery: the upstream is down while devices publish; every
// acknowledged message arrives once it is back.
func TestOutageThenRecovery(t *testing.T) {
	for _, us := range upstreams {
		t.Run(us.name, func(t *testing.T) {
			up := us.new(t)
			up.stop()
			s := newSetup(t, up.addr(), "")
			p := startRalph(t, s.config, s.addr)
			var want []string
			want = append(want, publish(t, s.addr, "dev-v311", 4, "sensors/a", payloads("a", 0, 1000))...)
			want = append(want, publish(t, s.addr, "dev-v5", 5, "sensors/a", payloads("b", 0, 1000))...)
			up.start(t)
			got := up.collector().WaitAll(t, want, 30*time.Second)
			verify(t, got, want, edgeTopic("a"))
			p.stop()
		})
	}
}

// TestKillWhileUpstreamDown: ralph is SIGKILLed while devices publish and
// the upstream is down; after a restart and the upstream's return, every
// message that was acknowledged arrives, in order per publisher.
func TestKillWhileUpstreamDown(t *testing.T) {
	up := newMosquitto(t)
	up.stop()
	s := newSetup(t, up.addr(), "")
	p := startRalph(t, s.config, s.addr)

	var mu sync.Mutex
	var want []string
	var wg sync.WaitGroup
	var clients []*mqtttest.Raw
	for i, v := range []byte{4, 5} {
		c := mqtttest.Dial(t, s.addr, fmt.Sprintf("dev%d", i), v)
		clients = append(clients, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			acked, _ := c.PublishAll("sensors/a", 1, payloads(fmt.Sprintf("p%d", i), 0, 1_000_000), 32)
			mu.Lock()
			want = append(want, acked...)
			mu.Unlock()
		}()
	}
	// Kill in the middle of the stream.
	deadline := time.Now().Add(20 * time.Second)
	for clients[0].Acked.Load()+clients[1].Acked.Load() < 3000 {
		if time.Now().After(deadline) {
			t.Fatal("publishers did not get 3000 acks")
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.kill()
	wg.Wait()
	if len(want) < 100 {
		t.Fatalf("only %d messages acknowledged before the kill", len(want))
	}
	t.Logf("%d messages acknowledged before SIGKILL", len(want))

	p = startRalph(t, s.config, s.addr)
	want = append(want, publish(t, s.addr, "dev-after", 5, "sensors/a", payloads("q", 0, 200))...)
	up.start(t)
	got := up.collector().WaitAll(t, want, 60*time.Second)
	verify(t, got, want, edgeTopic("a"))
	p.stop()
}

// TestKillDuringDrain: ralph is SIGKILLed while it drains a backlog to the
// upstream; after a restart nothing is missing, order per publisher holds,
// and duplicates stay within the bridge's resend limit: twice its window.
func TestKillDuringDrain(t *testing.T) {
	const window = 32
	up := newMosquitto(t)
	up.stop()
	s := newSetup(t, up.addr(), fmt.Sprintf("max_inflight = %d", window))
	p := startRalph(t, s.config, s.addr)
	var want []string
	want = append(want, publish(t, s.addr, "dev-v311", 4, "sensors/a", payloads("a", 0, 5000))...)
	want = append(want, publish(t, s.addr, "dev-v5", 5, "sensors/a", payloads("b", 0, 5000))...)
	up.start(t)
	up.collector().WaitDistinct(t, 2000, 30*time.Second)
	p.kill()
	before := len(up.collector().Messages())
	if before >= len(want) {
		t.Fatalf("the whole backlog drained before the kill; nothing tested")
	}
	p = startRalph(t, s.config, s.addr)
	got := up.collector().WaitAll(t, want, 60*time.Second)
	dups := verify(t, got, want, edgeTopic("a"))
	t.Logf("killed after %d of %d arrived; %d duplicates after restart", before, len(want), dups)
	if dups > 2*window {
		t.Fatalf("%d duplicates after a kill during drain; want at most %d", dups, 2*window)
	}
	p.stop()
}

// TestBadConfig: ralph run refuses a bad config with the file, line and key
// at fault, and a non-zero exit.
func TestBadConfig(t *testing.T) {
	tests := []struct {
		name, config, want string
	}{
		{"unknown key", "data_dir = \"x\"\n[broker]\nlisten = [\"127.0.0.1:1883\"]\nfrobnicate = 1\n", ":4: broker.frobnicate: unknown key"},
		{"bad url", "[[bridge]]\nname = \"up\"\nurls = [\"http://x:1883\"]\n[[bridge.forward]]\nlocal = \"#\"\n", `:3: bridge[0].urls[0]: unsupported scheme "http"`},
		{"bad filter", "[[bridge]]\nname = \"up\"\nurls = [\"mqtt://x\"]\n[[bridge.forward]]\nlocal = \"a/#/b\"\n", ":5: bridge[0].forward[0].local:"},
		{"duplicate bridge", "[[bridge]]\nname = \"up\"\nurls = [\"mqtt://x\"]\n[[bridge.forward]]\nlocal = \"#\"\n[[bridge]]\nname = \"up\"\nurls = [\"mqtt://y\"]\n[[bridge.forward]]\nlocal = \"#\"\n", `:7: bridge[1].name: duplicate bridge name "up"`},
		{"wrong type", "[broker]\nlisten = 1883\n", ":2: broker.listen:"},
		{"syntax", "[broker\n", ":1:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bad.toml")
			os.WriteFile(path, []byte(tt.config), 0o644)
			for _, cmd := range []string{"run", "check"} {
				out, err := exec.Command(ralphBin, cmd, "--config", path).CombinedOutput()
				var ee *exec.ExitError
				if err == nil || !errors.As(err, &ee) || ee.ExitCode() == 0 {
					t.Fatalf("ralph %s: exit %v, want non-zero\n%s", cmd, err, out)
				}
				if !strings.Contains(string(out), path+tt.want) {
					t.Fatalf("ralph %s output:\n%s\nwant it to contain %q", cmd, out, path+tt.want)
				}
			}
		})
	}
}
