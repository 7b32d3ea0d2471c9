package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ralph-gateway/ralph/gateway"
)

// TestSetAsideDatabase: a database that does not open is set aside and
// Ralph starts with an empty queue, unhealthy until an operator
// acknowledges it; `ralph queue peek --dir` reads the copy once it opens,
// and leaves it as it was while it does not.
func TestSetAsideDatabase(t *testing.T) {
	up := newMosquitto(t)
	up.stop()
	s := newSetup(t, up.addr(), "")
	p := startRalph(t, s.config, s.addr)
	publish(t, s.addr, "dev", 5, "sensors/a", payloads("a", 0, 5))
	p.stop()

	// What a power cut can leave: an empty file (set aside, information
	// only), and a manifest that does not read (the whole database).
	db := filepath.Join(s.dir, "data", "db")
	manifest := filepath.Join(db, "MANIFEST")
	good, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(db, "00099.mem"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	bad := append([]byte("not a manifest"), good[min(len(good), 14):]...)
	if err := os.WriteFile(manifest, bad, 0o600); err != nil {
		t.Fatal(err)
	}

	p = startRalph(t, s.config, s.addr)
	st := waitStatus(t, s, "a database set aside", func(st gateway.Status) bool { return len(st.Queue.SetAside) == 1 })
	copyDir := st.Queue.SetAside[0].Path
	if filepath.Dir(copyDir) != filepath.Join(s.dir, "data", "lost+found") || st.Queue.SetAside[0].Acknowledged ||
		st.Queue.SetAside[0].Reason == "" || st.Queue.Messages != 0 {
		t.Fatalf("set aside: %+v, queue %+v", st.Queue.SetAside, st.Queue)
	}
	if len(st.Queue.RecoveredFiles) != 1 || !strings.HasSuffix(st.Queue.RecoveredFiles[0], "00099.mem") {
		t.Fatalf("recovered files = %q, want the empty 00099.mem", st.Queue.RecoveredFiles)
	}
	reason := st.Queue.SetAside[0].Reason
	if st.Healthy || len(st.Unhealthy) != 1 || !strings.Contains(st.Unhealthy[0], copyDir) || !strings.Contains(st.Unhealthy[0], reason) {
		t.Fatalf("unhealthy = %q, want one reason naming %s and %q", st.Unhealthy, copyDir, reason)
	}
	code, body := healthz(t, s)
	if code != 503 || !strings.Contains(body, copyDir) || !strings.Contains(body, reason) {
		t.Fatalf("/healthz = %d %s", code, body)
	}
	out, code := ralphCmd(t, "status", "--addr", s.httpAddr)
	for _, w := range []string{"health: UNHEALTHY: queue database set aside at " + copyDir, "DATABASE SET ASIDE at " + copyDir,
		"1 empty files a power cut left were moved aside", "00099.mem"} {
		if code != 1 || !strings.Contains(out, w) {
			t.Fatalf("status (exit %d) lacks %q:\n%s", code, w, out)
		}
	}
	_, body = httpGet(t, "http://"+s.httpAddr+"/metrics")
	if !strings.Contains(body, "\nralph_queue_set_aside_databases 1\n") || !strings.Contains(body, "\nralph_healthy 0\n") {
		t.Fatal("/metrics does not count the set-aside database")
	}

	// The copy does not open: peek says so and leaves it where it is.
	before := dirList(t, copyDir)
	out, code = ralphCmd(t, "queue", "peek", "--dir", copyDir, "--config", s.config)
	if code != 1 || !strings.Contains(out, "does not open either") || !strings.Contains(out, "left as it was") {
		t.Fatalf("peek of a copy that does not open: exit %d\n%s", code, out)
	}
	if after := dirList(t, copyDir); after != before {
		t.Fatalf("the copy changed:\nbefore %s\nafter  %s", before, after)
	}
	if got, _ := os.ReadFile(filepath.Join(copyDir, "REASON")); strings.TrimSpace(string(got)) != reason {
		t.Fatalf("REASON = %q, want %q", got, reason)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "data", "lost+found", "lost+found")); err == nil {
		t.Fatal("peek left a lost+found inside lost+found")
	}

	// Repaired by hand, it opens: its messages can be read while ralph runs.
	if err := os.WriteFile(filepath.Join(copyDir, "MANIFEST"), good, 0o600); err != nil {
		t.Fatal(err)
	}
	out, code = ralphCmd(t, "queue", "peek", "10", "--dir", copyDir, "--config", s.config)
	var peeked []gateway.PeekedMessage
	if err := json.Unmarshal([]byte(out), &peeked); err != nil || code != 0 || len(peeked) != 5 || peeked[0].Payload != "a-000000" {
		t.Fatalf("peek --dir: exit %d, %v\n%s", code, err, out)
	}
	// Reading deletes nothing, not even with no bridge to hold messages.
	bare := filepath.Join(s.dir, "bare.toml")
	if err := os.WriteFile(bare, []byte(fmt.Sprintf("data_dir = %q\n", filepath.Join(s.dir, "data"))), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		out, code = ralphCmd(t, "queue", "peek", "10", "--dir", copyDir, "--config", bare)
		if err := json.Unmarshal([]byte(out), &peeked); err != nil || code != 0 || len(peeked) != 5 {
			t.Fatalf("peek --dir without bridges: exit %d, %v\n%s", code, err, out)
		}
	}
	out, code = ralphCmd(t, "queue", "stats", "--dir", copyDir, "--config", s.config)
	var qs struct {
		Bridges []struct {
			Name    string
			Backlog uint64
		}
	}
	if err := json.Unmarshal([]byte(out), &qs); err != nil || code != 0 || len(qs.Bridges) != 1 || qs.Bridges[0].Backlog != 5 {
		t.Fatalf("stats --dir: exit %d, %v\n%s", code, err, out)
	}
	if out, code := ralphCmd(t, "queue", "purge", "--bridge", "up", "--dir", copyDir, "--config", s.config); code != 2 {
		t.Fatalf("purge --dir: exit %d, want 2\n%s", code, out)
	}
	if out, code := ralphCmd(t, "queue", "peek", "--dir", filepath.Join(s.dir, "nothing"), "--config", s.config); code != 1 ||
		!strings.Contains(out, "no queue database at") {
		t.Fatalf("peek --dir of nothing: exit %d\n%s", code, out)
	}

	// Acknowledged, with ralph running: healthy again, still listed.
	out, code = ralphCmd(t, "queue", "acknowledge", "--config", s.config)
	if code != 0 || !strings.Contains(out, "acknowledged "+copyDir+" ("+reason+")") {
		t.Fatalf("acknowledge: exit %d\n%s", code, out)
	}
	out, code = ralphCmd(t, "queue", "acknowledge", "--config", s.config)
	if code != 0 || !strings.Contains(out, "nothing to acknowledge") {
		t.Fatalf("acknowledge again: exit %d\n%s", code, out)
	}
	if code, body := healthz(t, s); code != 200 {
		t.Fatalf("/healthz after acknowledge = %d %s", code, body)
	}
	out, code = ralphCmd(t, "status", "--addr", s.httpAddr)
	if code != 0 || !strings.Contains(out, "health: ok") || !strings.Contains(out, "database set aside at "+copyDir+" (acknowledged)") {
		t.Fatalf("status after acknowledge: exit %d\n%s", code, out)
	}
	_, body = httpGet(t, "http://"+s.httpAddr+"/metrics")
	if !strings.Contains(body, "\nralph_queue_set_aside_databases 0\n") {
		t.Fatal("/metrics still counts the acknowledged database")
	}
	p.stop()

	// A restart does not bring it back, and the new queue works.
	p = startRalph(t, s.config, s.addr)
	if code, body := healthz(t, s); code != 200 {
		t.Fatalf("/healthz after restart = %d %s", code, body)
	}
	up.start(t)
	publish(t, s.addr, "dev", 5, "sensors/a", payloads("b", 0, 2))
	up.collector().WaitAll(t, []string{"b-000000", "b-000001"}, 15*time.Second)
	p.stop()
}

// TestQueueAcknowledgeNothing: with nothing set aside, and ralph stopped.
func TestQueueAcknowledgeNothing(t *testing.T) {
	s := newSetup(t, "127.0.0.1:1", "")
	out, code := ralphCmd(t, "queue", "acknowledge", "--config", s.config)
	if code != 0 || !strings.Contains(out, "nothing to acknowledge: no database set aside in "+filepath.Join(s.dir, "data", "lost+found")) {
		t.Fatalf("acknowledge: exit %d\n%s", code, out)
	}
}

// dirList describes a directory's files: names and sizes.
func dirList(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s:%d ", e.Name(), info.Size())
	}
	return b.String()
}
