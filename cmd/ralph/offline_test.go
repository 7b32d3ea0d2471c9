package main

// End-to-end tests of long offline periods: a bounded queue under each
// overflow policy, message age limits, a full filesystem, and a restart
// with a backlog. Real ralph, real Mosquitto upstream.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/internal/mqtttest"
)

// publishEach publishes payloads one at a time at QoS 1 over MQTT 5 and
// returns those acknowledged with success and those refused with 0x97.
func publishEach(t *testing.T, addr, clientID, topic string, ps []string) (acked, refused []string) {
	t.Helper()
	c := mqtttest.Dial(t, addr, clientID, 5)
	defer c.Close()
	for i, p := range ps {
		c.Publish(uint16(i%65535+1), 1, topic, []byte(p))
		pk := c.Read(10 * time.Second)
		switch {
		case pk.FixedHeader.Type != packets.Puback:
			t.Fatalf("publish %s: got packet type %d", p, pk.FixedHeader.Type)
		case pk.ReasonCode == 0:
			acked = append(acked, p)
		case pk.ReasonCode == packets.ErrQuotaExceeded.Code:
			refused = append(refused, p)
		default:
			t.Fatalf("publish %s: reason %#x", p, pk.ReasonCode)
		}
	}
	return acked, refused
}

// bigPayloads returns n payloads of about size bytes, each unique and
// ordered by its prefix.
func bigPayloads(prefix string, n, size int) []string {
	out := payloads(prefix, 0, n)
	for i := range out {
		out[i] += "-" + strings.Repeat("x", size)
	}
	return out
}

func waitLog(t *testing.T, p *proc, what string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(p.logs.String(), what) {
		if time.Now().After(deadline) {
			t.Fatalf("ralph never logged %q", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestQueueFullPolicies fills a 1 MiB queue with the upstream down and
// checks exactly what arrives once it is back, under each policy.
func TestQueueFullPolicies(t *testing.T) {
	const n, size = 2500, 1000 // 2.5 MB offered to a 1 MiB budget
	for _, policy := range []string{"reject", "drop-oldest"} {
		t.Run(policy, func(t *testing.T) {
			up := newMosquitto(t)
			up.stop()
			s := newSetup(t, up.addr(), "")
			appendQueue(t, s, fmt.Sprintf("max_bytes = \"1MiB\"\non_full = %q\n", policy))
			p := startRalph(t, s.config, s.addr)
			offered := bigPayloads("a", n, size)
			acked, refused := publishEach(t, s.addr, "dev", "sensors/a", offered)
			fit := 1 << 20 / (size + 100) // records carry ~60 bytes besides the payload
			switch policy {
			case "reject":
				// The first ones fit, every later one is refused.
				if len(acked) < fit || len(acked)+len(refused) != n || fmt.Sprint(acked) != fmt.Sprint(offered[:len(acked)]) {
					t.Fatalf("%d acked, %d refused: want the first ≥%d acked and the rest refused", len(acked), len(refused), fit)
				}
				up.start(t)
				got := up.collector().WaitAll(t, acked, 30*time.Second)
				verify(t, got, acked, edgeTopic("a"))
				wasRefused := map[string]bool{}
				for _, r := range refused {
					wasRefused[r] = true
				}
				for _, m := range got {
					if wasRefused[m.Payload] {
						t.Fatalf("refused message %.10s arrived upstream", m.Payload)
					}
				}
			case "drop-oldest":
				if len(refused) != 0 {
					t.Fatalf("%d refused with drop-oldest", len(refused))
				}
				waitLog(t, p, "dropped unforwarded messages")
				up.start(t)
				// What survives is the newest part, contiguous up to the end.
				newest := offered[n-fit:]
				got := up.collector().WaitAll(t, newest, 30*time.Second)
				seen := map[string]bool{}
				for _, m := range got {
					seen[m.Payload] = true
				}
				first := n
				for i := n - 1; i >= 0 && seen[offered[i]]; i-- {
					first = i
				}
				if len(seen) != n-first {
					t.Fatalf("%d messages arrived but the newest contiguous run is %d: older ones survived out of order", len(seen), n-first)
				}
				if n-first > 1<<20/size {
					t.Fatalf("%d messages of %d bytes survived a 1 MiB budget", n-first, size)
				}
				t.Logf("%d of %d newest messages kept under 1 MiB", n-first, n)
			}
			p.stop()
		})
	}
}

// appendQueue adds keys to the setup's [queue] table.
func appendQueue(t *testing.T, s setup, keys string) {
	t.Helper()
	b, err := os.ReadFile(s.config)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(b), "[[bridge]]", "[queue]\n"+keys+"[[bridge]]", 1)
	if err := os.WriteFile(s.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestMaxAge: messages older than max_age are dropped unforwarded; newer
// ones arrive.
func TestMaxAge(t *testing.T) {
	up := newMosquitto(t)
	up.stop()
	s := newSetup(t, up.addr(), "")
	appendQueue(t, s, "max_age = \"1s\"\n")
	p := startRalph(t, s.config, s.addr)
	old := publish(t, s.addr, "dev", 5, "sensors/a", payloads("a", 0, 100))
	waitLog(t, p, "dropped unforwarded messages")
	fresh := publish(t, s.addr, "dev", 5, "sensors/a", payloads("a", 100, 10))
	up.start(t)
	got := up.collector().WaitAll(t, fresh, 30*time.Second)
	isOld := map[string]bool{}
	for _, o := range old {
		isOld[o] = true
	}
	for _, m := range got {
		if isOld[m.Payload] {
			t.Fatalf("%s, older than max_age, was forwarded", m.Payload)
		}
	}
	p.stop()
}

// TestDiskFull runs ralph on a small tmpfs, fills the filesystem from
// outside, and checks: new messages are refused (0x97), the broker keeps
// delivering to local subscribers, the condition is logged once, and all
// is well once space returns — including after a SIGKILL.
func TestDiskFull(t *testing.T) {
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("this test mounts a small tmpfs and must run as root: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })

	up := newMosquitto(t)
	up.stop()
	s := newSetup(t, up.addr(), "")
	b, _ := os.ReadFile(s.config)
	cfg := strings.Replace(string(b), filepath.Join(s.dir, "data"), filepath.Join(mnt, "data"), 1)
	os.WriteFile(s.config, []byte(cfg), 0o644)
	appendQueue(t, s, "min_free = \"32MiB\"\n")
	p := startRalph(t, s.config, s.addr)

	before, _ := publishEach(t, s.addr, "dev", "sensors/a", payloads("a", 0, 50))
	if len(before) != 50 {
		t.Fatalf("%d of 50 accepted with the disk empty", len(before))
	}
	// Leave less than min_free.
	filler := filepath.Join(mnt, "filler")
	if out, err := exec.Command("dd", "if=/dev/zero", "of="+filler, "bs=1M", "count=70").CombinedOutput(); err != nil {
		t.Fatalf("filling the disk: %v %s", err, out)
	}
	sub := mqtttest.Dial(t, s.addr, "local-sub", 5)
	sub.Subscribe("sensors/#", 0)
	acked, refused := publishEach(t, s.addr, "dev", "sensors/a", payloads("b", 0, 20))
	if len(acked) != 0 || len(refused) != 20 {
		t.Fatalf("disk full: %d acked, %d refused; want all 20 refused", len(acked), len(refused))
	}
	// QoS 0 traffic between local devices still flows.
	q0 := mqtttest.Dial(t, s.addr, "q0", 5)
	q0.Publish(0, 0, "sensors/live", []byte("still here"))
	if pk := sub.Read(5 * time.Second); string(pk.Payload) != "still here" {
		t.Fatalf("local subscriber got %q", pk.Payload)
	}
	if c := strings.Count(p.logs.String(), "disk nearly full"); c != 1 {
		t.Fatalf("'disk nearly full' logged %d times, want once per episode", c)
	}
	if code, body := healthz(t, s); code != 503 || !strings.Contains(body, "disk nearly full") {
		t.Fatalf("/healthz with the disk full: %d %s", code, body)
	}

	os.Remove(filler)
	after, _ := publishEach(t, s.addr, "dev", "sensors/a", payloads("c", 0, 20))
	if len(after) != 20 {
		t.Fatalf("space back: %d of 20 accepted", len(after))
	}
	waitLog(t, p, "disk space back")
	if code, body := healthz(t, s); code != 200 {
		t.Fatalf("/healthz with space back: %d %s", code, body)
	}
	p.kill()
	p = startRalph(t, s.config, s.addr)
	want := append(before, after...)
	up.start(t)
	got := up.collector().WaitAll(t, want, 30*time.Second)
	verify(t, got, want, edgeTopic("a"))
	p.stop()
}

// TestRestartWithBacklog: a backlog survives a clean restart and drains in
// order.
func TestRestartWithBacklog(t *testing.T) {
	up := newMosquitto(t)
	up.stop()
	s := newSetup(t, up.addr(), "")
	p := startRalph(t, s.config, s.addr)
	want := publish(t, s.addr, "dev-a", 4, "sensors/a", payloads("a", 0, 10000))
	want = append(want, publish(t, s.addr, "dev-b", 5, "sensors/a", payloads("b", 0, 10000))...)
	p.stop()
	start := time.Now()
	p = startRalph(t, s.config, s.addr)
	t.Logf("restart with %d queued: accepting after %v", len(want), time.Since(start))
	up.start(t)
	got := up.collector().WaitAll(t, want, 60*time.Second)
	if dups := verify(t, got, want, edgeTopic("a")); dups != 0 {
		t.Fatalf("%d duplicates after a clean restart", dups)
	}
	p.stop()
}
