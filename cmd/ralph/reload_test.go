package main

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ralph-gateway/ralph/gateway"
	"github.com/ralph-gateway/ralph/internal/mqtttest"
)

// TestReload: SIGHUP changes a bridge, adds one and removes one while a
// device stays connected on the same connection; an invalid config is
// refused and the running one kept.
func TestReload(t *testing.T) {
	a, b := newMochi(t), newMochi(t)
	s := newSetup(t, a.addr(), "")
	cfg, _ := os.ReadFile(s.config)
	base := string(cfg)[:strings.Index(string(cfg), "[[bridge]]")] // everything but the bridges
	bridgeTOML := func(name, addr, prefix string) string {
		return fmt.Sprintf("[[bridge]]\nname = %q\nurls = [\"mqtt://%s\"]\nreconnect_min = \"50ms\"\n  [[bridge.forward]]\n  local = \"sensors/#\"\n  remote_prefix = %q\n", name, addr, prefix)
	}
	os.WriteFile(s.config, []byte(base+bridgeTOML("up", a.addr(), "edge/")), 0o644)
	p := startRalph(t, s.config, s.addr)
	dev := mqtttest.Dial(t, s.addr, "dev", 5) // stays connected throughout
	send := func(payload string) {
		t.Helper()
		if acked, err := dev.PublishAll("sensors/a", 1, []string{payload}, 1); err != nil || len(acked) != 1 {
			t.Fatalf("publish %s on the device's connection: %v", payload, err)
		}
	}
	reload := func(cfg string) {
		t.Helper()
		if err := os.WriteFile(s.config, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		p.cmd.Process.Signal(syscall.SIGHUP)
	}
	send("p-000000")
	a.collector().WaitAll(t, []string{"p-000000"}, 10*time.Second)

	// Bridge "up" gets another prefix; bridge "b" is new.
	changed := base + bridgeTOML("up", a.addr(), "edge2/") + bridgeTOML("b", b.addr(), "b/")
	reload(changed)
	waitStatus(t, s, "two connected bridges", func(st gateway.Status) bool {
		return len(st.Bridges) == 2 && st.Bridges[0].Connected && st.Bridges[1].Connected && st.Bridges[1].Name == "b"
	})
	send("p-000001")
	gotA := a.collector().WaitAll(t, []string{"p-000001"}, 10*time.Second)
	if last := gotA[len(gotA)-1]; last.Topic != "edge2/sensors/a" {
		t.Fatalf("after the change, bridge up sent %q, want edge2/sensors/a", last.Topic)
	}
	gotB := b.collector().WaitAll(t, []string{"p-000001"}, 10*time.Second)
	if gotB[0].Topic != "b/sensors/a" {
		t.Fatalf("new bridge b sent %q", gotB[0].Topic)
	}

	// An invalid config changes nothing.
	reload(changed + "\nbogus = 1\n")
	waitLog(t, p, "the new config is invalid; keeping the running one")

	// Remove bridge "up": only b forwards from now on.
	reload(base + bridgeTOML("b", b.addr(), "b/"))
	waitStatus(t, s, "bridge up removed", func(st gateway.Status) bool {
		return len(st.Bridges) == 1 && st.Bridges[0].Name == "b"
	})
	before := len(a.collector().Messages())
	send("p-000002")
	b.collector().WaitAll(t, []string{"p-000002"}, 10*time.Second)
	if n := len(a.collector().Messages()); n != before {
		t.Fatalf("the removed bridge still forwarded %d messages", n-before)
	}
	p.stop()
}

// TestReloadLogLevel: SIGHUP applies a changed log.level; a changed
// log.format is reported as needing a restart.
func TestReloadLogLevel(t *testing.T) {
	s := newSetup(t, "127.0.0.1:1", "")
	cfg, _ := os.ReadFile(s.config)
	write := func(log string) {
		t.Helper()
		if err := os.WriteFile(s.config, []byte(string(cfg)+"[log]\n"+log), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A stored message makes the queue log at debug.
	const debugLine = "level=DEBUG"
	n := 0
	store := func() {
		t.Helper()
		publish(t, s.addr, fmt.Sprintf("dev%d", n), 5, "sensors/a", []string{fmt.Sprintf("m-%06d", n)})
		n++
	}
	write("level = \"info\"\n")
	p := startRalph(t, s.config, s.addr)
	store()
	write("level = \"debug\"\n")
	p.cmd.Process.Signal(syscall.SIGHUP)
	const applied = `msg="reload: log level applied" level=debug`
	waitLog(t, p, applied)
	// The line is logged just before the level changes.
	if logs := p.logs.String(); strings.Contains(logs[:strings.Index(logs, applied)], debugLine) {
		t.Fatalf("logged at debug while the level was info:\n%s", logs)
	}
	store()
	waitLog(t, p, debugLine)
	if strings.Contains(p.logs.String(), "need a restart") {
		t.Fatalf("a log level change was said to need a restart:\n%s", p.logs)
	}

	write("level = \"debug\"\nformat = \"json\"\n")
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, p, "log.format) need a restart")
	p.stop()
}
