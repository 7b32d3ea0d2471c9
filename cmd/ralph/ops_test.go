package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ralph-gateway/ralph/gateway"
	"github.com/ralph-gateway/ralph/internal/testlog"
)

// ralphCmd runs ralph and returns its combined output and exit status.
func ralphCmd(t *testing.T, args ...string) (string, int) {
	t.Helper()
	return runRalph(t, "", true, args...)
}

// ralphCmdIn runs ralph with stdin and returns its standard output.
func ralphCmdIn(t *testing.T, stdin string, args ...string) (string, int) {
	t.Helper()
	return runRalph(t, stdin, false, args...)
}

func runRalph(t *testing.T, stdin string, combined bool, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(ralphBin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out []byte
	var err error
	if combined {
		out, err = cmd.CombinedOutput()
	} else {
		out, err = cmd.Output()
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitStatus(t *testing.T, s setup, what string, cond func(gateway.Status) bool) gateway.Status {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, _ := ralphCmd(t, "status", "--json", "--addr", s.httpAddr)
		var st gateway.Status
		if err := json.Unmarshal([]byte(out), &st); err == nil && cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never showed %s; last:\n%s", what, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestStatusAndMetrics: `ralph status` and /metrics against a running
// gateway whose bridge is up, then down.
func TestStatusAndMetrics(t *testing.T) {
	up := newMosquitto(t)
	s := newSetup(t, up.addr(), "")
	p := startRalph(t, s.config, s.addr)
	want := publish(t, s.addr, "dev", 5, "sensors/a", payloads("a", 0, 10))
	up.collector().WaitAll(t, want, 10*time.Second)
	waitStatus(t, s, "10 forwarded", func(st gateway.Status) bool {
		return len(st.Bridges) == 1 && st.Bridges[0].Forwarded == 10 && st.Bridges[0].Connected
	})
	out, code := ralphCmd(t, "status", "--addr", s.httpAddr)
	for _, w := range []string{"health: ok", "bridge up: online", "forwarded 10", "queue: 0 messages"} {
		if !strings.Contains(out, w) {
			t.Fatalf("status output lacks %q:\n%s", w, out)
		}
	}
	if code != 0 {
		t.Fatalf("status exit %d while healthy", code)
	}
	code, body := httpGet(t, "http://"+s.httpAddr+"/metrics")
	for _, w := range []string{
		`ralph_bridge_forwarded_total{bridge="up"} 10`,
		`ralph_bridge_connected{bridge="up"} 1`,
		`ralph_queue_appended_total 10`,
		`ralph_healthy 1`,
		"process_resident_memory_bytes",
	} {
		if code != 200 || !strings.Contains(body, w) {
			t.Fatalf("/metrics (%d) lacks %q", code, w)
		}
	}

	up.stop()
	publish(t, s.addr, "dev", 5, "sensors/a", payloads("b", 0, 5))
	st := waitStatus(t, s, "the bridge offline with 5 queued", func(st gateway.Status) bool {
		return !st.Bridges[0].Connected && st.Bridges[0].Queued == 5
	})
	if st.Bridges[0].LastError == "" {
		t.Fatalf("offline bridge without a last error: %+v", st.Bridges[0])
	}
	out, _ = ralphCmd(t, "status", "--addr", s.httpAddr)
	if !strings.Contains(out, "bridge up: offline") || !strings.Contains(out, "queued 5") || !strings.Contains(out, "last error:") {
		t.Fatalf("status output with the upstream down:\n%s", out)
	}
	_, body = httpGet(t, "http://"+s.httpAddr+"/metrics")
	if !strings.Contains(body, `ralph_bridge_connected{bridge="up"} 0`) || !strings.Contains(body, `ralph_bridge_queued{bridge="up"} 5`) {
		t.Fatal("/metrics does not show the bridge down with 5 queued")
	}
	p.stop()
}

// TestQueueCommands: peek and purge through the running gateway, then
// stats straight from the data dir once it is stopped.
func TestQueueCommands(t *testing.T) {
	up := newMosquitto(t)
	up.stop()
	s := newSetup(t, up.addr(), "")
	p := startRalph(t, s.config, s.addr)
	publish(t, s.addr, "dev", 5, "sensors/a", payloads("a", 0, 5))

	out, code := ralphCmd(t, "queue", "peek", "3", "--addr", s.httpAddr)
	var peeked []gateway.PeekedMessage
	if err := json.Unmarshal([]byte(out), &peeked); err != nil || code != 0 || len(peeked) != 3 ||
		peeked[0].Payload != "a-000000" || peeked[0].Topic != "sensors/a" || peeked[0].Origin != "dev" {
		t.Fatalf("queue peek 3: exit %d, %v\n%s", code, err, out)
	}
	out, code = ralphCmd(t, "queue", "purge", "--bridge", "up", "--addr", s.httpAddr)
	if code != 0 || !strings.Contains(out, "purged 5 messages for bridge up") {
		t.Fatalf("queue purge: exit %d\n%s", code, out)
	}
	out, code = ralphCmd(t, "queue", "purge", "--bridge", "nope", "--addr", s.httpAddr)
	if code == 0 || !strings.Contains(out, `no bridge named "nope"`) {
		t.Fatalf("purge of an unknown bridge: exit %d\n%s", code, out)
	}
	publish(t, s.addr, "dev", 5, "sensors/a", payloads("b", 0, 2))
	p.stop()

	// Stopped: the command opens the data dir itself.
	out, code = ralphCmd(t, "queue", "stats", "--config", s.config)
	var st struct {
		Bridges []struct {
			Name    string
			Backlog uint64
			Dropped uint64
		}
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != 0 || len(st.Bridges) != 1 || st.Bridges[0].Backlog != 2 {
		t.Fatalf("queue stats on a stopped gateway: exit %d, %v\n%s", code, err, out)
	}
	out, code = ralphCmd(t, "queue", "peek", "5", "--config", s.config)
	if err := json.Unmarshal([]byte(out), &peeked); err != nil || code != 0 || len(peeked) != 2 || peeked[0].Payload != "b-000000" {
		t.Fatalf("queue peek on a stopped gateway: exit %d, %v\n%s", code, err, out)
	}
	// What is left is forwarded once the upstream is back.
	up.start(t)
	p = startRalph(t, s.config, s.addr)
	up.collector().WaitAll(t, []string{"b-000000", "b-000001"}, 15*time.Second)
	for _, m := range up.collector().Messages() {
		if strings.HasPrefix(m.Payload, "a-") {
			t.Fatalf("purged message %s was forwarded", m.Payload)
		}
	}
	p.stop()
}

func healthz(t *testing.T, s setup) (int, string) {
	t.Helper()
	return httpGet(t, fmt.Sprintf("http://%s/healthz", s.httpAddr))
}

// TestSystemdIntegration: ralph tells systemd it is ready (sd_notify, for
// Type=notify) once it serves, and reloads on the SIGHUP of `systemctl
// reload` instead of dying.
func TestSystemdIntegration(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	up := newMochi(t)
	s := newSetup(t, up.addr(), "")
	cmd := exec.Command(ralphBin, "run", "--config", s.config)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	logs := new(testlog.Buffer)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
		noRaces(t, logs.String())
	}()
	l.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	n, err := l.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Fatalf("notify socket got %q, %v; log:\n%s", buf[:n], err, logs)
	}
	// Ready means ready: a device can publish right away.
	publish(t, s.addr, "dev", 5, "sensors/a", payloads("a", 0, 1))

	cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "SIGHUP: reloading") {
		if time.Now().After(deadline) {
			t.Fatalf("no log line for SIGHUP:\n%s", logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	publish(t, s.addr, "dev", 5, "sensors/a", payloads("a", 1, 1))
	up.collector().WaitAll(t, []string{"a-000000", "a-000001"}, 10*time.Second)
}
