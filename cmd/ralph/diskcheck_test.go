package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDiskCheckFailure: while the free space on the data dir cannot be
// checked (statfs fails: the queue's directory renamed away under the
// running gateway, ENOENT), publishes are refused as with a full disk,
// the failure is logged once at warn, and /healthz and `ralph status` say
// why; once the check works again, publishes are accepted and forwarded.
func TestDiskCheckFailure(t *testing.T) {
	up := newMosquitto(t)
	s := newSetup(t, up.addr(), "")
	p := startRalph(t, s.config, s.addr)
	before, _ := publishEach(t, s.addr, "dev", "sensors/a", payloads("a", 0, 3))
	if len(before) != 3 {
		t.Fatalf("%d of 3 accepted before", len(before))
	}

	db := filepath.Join(s.dir, "data", "db")
	away := db + ".away"
	if err := os.Rename(db, away); err != nil {
		t.Fatal(err)
	}
	defer os.Rename(away, db)
	acked, refused := publishEach(t, s.addr, "dev", "sensors/a", payloads("b", 0, 5))
	if len(acked) != 0 || len(refused) != 5 {
		t.Fatalf("statfs failing: %d acked, %d refused; want all 5 refused", len(acked), len(refused))
	}
	want := "statfs " + db + ": no such file or directory"
	code, body := healthz(t, s)
	if code != 503 || !strings.Contains(body, "cannot check the free space") || !strings.Contains(body, want) {
		t.Fatalf("/healthz with statfs failing: %d %s; want 503 and %q", code, body, want)
	}
	if strings.Contains(body, "disk nearly full") {
		t.Fatalf("/healthz with statfs failing says the disk is nearly full, which nobody knows: %s", body)
	}
	out, code := ralphCmd(t, "status", "--addr", s.httpAddr)
	if code != 1 || !strings.Contains(out, "health: UNHEALTHY") || !strings.Contains(out, want) {
		t.Fatalf("ralph status with statfs failing: exit %d, want 1 and %q:\n%s", code, want, out)
	}
	var lines []string
	for _, l := range strings.Split(p.logs.String(), "\n") {
		if strings.Contains(l, "cannot check the free space") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 || !strings.Contains(lines[0], "level=WARN") || !strings.Contains(lines[0], want) {
		t.Fatalf("log lines about the free space check: %q; want one at WARN with %q", lines, want)
	}

	if err := os.Rename(away, db); err != nil {
		t.Fatal(err)
	}
	after, _ := publishEach(t, s.addr, "dev", "sensors/a", payloads("c", 0, 3))
	if len(after) != 3 {
		t.Fatalf("statfs working again: %d of 3 accepted", len(after))
	}
	waitLog(t, p, "the free space can be checked again")
	if code, body := healthz(t, s); code != 200 {
		t.Fatalf("/healthz with statfs working again: %d %s", code, body)
	}
	want2 := append(before, after...)
	got := up.collector().WaitAll(t, want2, 15*time.Second)
	verify(t, got, want2, edgeTopic("a"))
	p.stop()
}
