package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ralph-gateway/ralph/gateway"
	"github.com/ralph-gateway/ralph/internal/board"
	"github.com/ralph-gateway/ralph/internal/mqtttest"
)

// serialSetup is newSetup with a serial board on a pty behind a stable
// link: devices/kitchen/# is forwarded to the upstream under edge/, and
// site/shed/cmd/kitchen/# comes down to the board's cmd/.
func serialSetup(t *testing.T, upAddr string) (setup, string) {
	t.Helper()
	s := newSetup(t, upAddr, "")
	link := filepath.Join(s.dir, "ttyKITCHEN")
	cfg, _ := os.ReadFile(s.config)
	conf := strings.Replace(string(cfg), `local = "sensors/#"`, `local = "devices/#"`, 1) + fmt.Sprintf(`
  [[bridge.subscribe]]
  remote = "site/shed/cmd/kitchen/#"
  strip_prefix = "site/shed/cmd/kitchen/"
  local_prefix = "devices/kitchen/cmd/"
  qos = 1

[[serial]]
name = "kitchen"
path = %q
topic_prefix = "devices/kitchen/"
resend = "300ms"
`, link)
	if err := os.WriteFile(s.config, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return s, link
}

func nextMsg(t *testing.T, b *board.Board, timeout time.Duration) board.Msg {
	t.Helper()
	select {
	case m := <-b.Msgs():
		return m
	case <-time.After(timeout):
		t.Fatalf("no MSG for the board within %s", timeout)
	}
	return board.Msg{}
}

func mosquittoPub(t *testing.T, addr, topic, payload string) {
	t.Helper()
	port := strings.Split(addr, ":")[1]
	if out, err := exec.Command("mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-q", "1", "-t", topic, "-m", payload).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v %s", err, out)
	}
}

// TestSerialBoardEndToEnd: a board's QoS 1 publishes reach a real
// Mosquitto upstream through the bridge, an upstream command reaches the
// board, ralph status shows the board, and a command sent while the board
// is unplugged and ralph restarted reaches it when it is back.
func TestSerialBoardEndToEnd(t *testing.T) {
	up := newMosquitto(t)
	s, link := serialSetup(t, up.addr())
	b := board.NewT(t, board.Options{ID: "esp32-kitchen", Link: link})
	p := startRalph(t, s.config, s.addr)
	waitStatus(t, s, "the bridge connected", func(st gateway.Status) bool { return st.Bridges[0].Connected })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := b.Hello(ctx); err != nil {
		t.Fatal(err)
	}
	if g, err := b.Subscribe(ctx, "cmd/#", 1); err != nil || g != 1 {
		t.Fatalf("subscribe: %d %v", g, err)
	}
	var want []string
	for i := range 10 {
		v := fmt.Sprintf("21.%d", i)
		if err := b.Publish(ctx, 1, "temp", []byte(v)); err != nil {
			t.Fatal(err)
		}
		want = append(want, v)
	}
	got := up.collector().WaitAll(t, want, 15*time.Second)
	verify(t, got, want, func(string) string { return "edge/devices/kitchen/temp" })

	mosquittoPub(t, up.addr(), "site/shed/cmd/kitchen/led", "on")
	if m := nextMsg(t, b, 10*time.Second); m.Topic != "cmd/led" || string(m.Payload) != "on" || m.QoS != 1 {
		t.Fatalf("board got %+v, want cmd/led on", m)
	}
	st := waitStatus(t, s, "the board online", func(st gateway.Status) bool {
		return len(st.Serial) == 1 && st.Serial[0].Online && st.Serial[0].Board == "esp32-kitchen"
	})
	if c := st.Serial[0].Counters; c.Published != 10 || c.Delivered != 1 {
		t.Fatalf("serial counters %+v", c)
	}
	out, _ := ralphCmd(t, "status", "--addr", s.httpAddr)
	if !strings.Contains(out, "serial kitchen: online") || !strings.Contains(out, "board esp32-kitchen") {
		t.Fatalf("ralph status:\n%s", out)
	}
	resp, err := http.Get("http://" + s.httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`ralph_serial_online{port="kitchen"} 1`,
		`ralph_serial_published_total{port="kitchen"} 10`,
		`ralph_serial_frames_total{port="kitchen",result="bad_checksum"} 0`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	out, code := ralphCmd(t, "check", "--config", s.config)
	if code != 0 || !strings.Contains(out, `serial kitchen: `+link+` at 115200 baud, topics under "devices/kitchen/", client serial-kitchen`) {
		t.Fatalf("ralph check (%d):\n%s", code, out)
	}

	// Unplugged, then ralph killed and restarted: the command waits.
	b.Unplug()
	waitStatus(t, s, "the board absent", func(st gateway.Status) bool { return !st.Serial[0].Present })
	mosquittoPub(t, up.addr(), "site/shed/cmd/kitchen/led", "off")
	waitStatus(t, s, "the command downlinked", func(st gateway.Status) bool { return st.Bridges[0].Downlinked >= 2 })
	p.kill()
	startRalph(t, s.config, s.addr)
	b2 := board.NewT(t, board.Options{ID: "esp32-kitchen", Link: link})
	if m := nextMsg(t, b2, 15*time.Second); m.Topic != "cmd/led" || string(m.Payload) != "off" {
		t.Fatalf("replugged board got %+v, want cmd/led off", m)
	}
}

// TestSerialKillWhilePublishing kills ralph with SIGKILL while a board
// publishes as fast as it can: after a restart every publish the board had
// an ACK for is upstream, and the board's resends complete the rest.
func TestSerialKillWhilePublishing(t *testing.T) {
	up := newMosquitto(t)
	s, link := serialSetup(t, up.addr())
	b := board.NewT(t, board.Options{ID: "esp32-kitchen", Link: link, Resend: 300 * time.Millisecond})
	p := startRalph(t, s.config, s.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	if err := b.Hello(ctx); err != nil {
		t.Fatal(err)
	}
	const n = 2000
	var mu sync.Mutex
	var acked []string
	all := make([]string, n)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		for i := range n {
			v := fmt.Sprintf("m%04d", i)
			all[i] = v
			_, res := b.PublishAsync(ctx, 1, "seq", []byte(v))
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := <-res; err == nil {
					mu.Lock()
					acked = append(acked, v)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	}()
	// Kill once a good part is acknowledged, mid-stream.
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		k := len(acked)
		mu.Unlock()
		if k >= n/4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d acked before the kill", k)
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.kill()
	mu.Lock()
	ackedBeforeKill := append([]string(nil), acked...)
	mu.Unlock()
	if len(ackedBeforeKill) == n {
		t.Fatal("everything was acked before the kill: the test proves nothing")
	}
	p2 := startRalph(t, s.config, s.addr)
	up.collector().WaitAll(t, ackedBeforeKill, 30*time.Second)
	<-done
	if len(acked) != n {
		// A stall: the goroutine dump goes into the log printed below.
		p2.cmd.Process.Signal(syscall.SIGQUIT)
		<-p2.done
		t.Fatalf("after the restart %d of %d publishes acked", len(acked), n)
	}
	got := up.collector().WaitAll(t, all, 30*time.Second)
	dups := verify(t, got, all, func(string) string { return "edge/devices/kitchen/seq" })
	t.Logf("%d acked before SIGKILL, %d duplicates upstream", len(ackedBeforeKill), dups)
}

// TestSerialReload: SIGHUP adds a serial port, changes its prefix and
// removes it, without a restart.
func TestSerialReload(t *testing.T) {
	up := newMosquitto(t)
	s := newSetup(t, up.addr(), "")
	base, _ := os.ReadFile(s.config)
	link := filepath.Join(s.dir, "ttyR")
	b := board.NewT(t, board.Options{ID: "r", Link: link})
	p := startRalph(t, s.config, s.addr)
	sub := mqtttest.Subscribe(t, s.addr, "watcher", "#", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	reload := func(serial string) {
		t.Helper()
		if err := os.WriteFile(s.config, append(append([]byte(nil), base...), serial...), 0o644); err != nil {
			t.Fatal(err)
		}
		p.cmd.Process.Signal(syscall.SIGHUP)
	}
	port := func(prefix string) string {
		return fmt.Sprintf("\n[[serial]]\nname = \"r\"\npath = %q\ntopic_prefix = %q\n", link, prefix)
	}
	reload(port("one/"))
	waitStatus(t, s, "the port added", func(st gateway.Status) bool { return len(st.Serial) == 1 && st.Serial[0].Present })
	if err := b.Publish(ctx, 1, "t", []byte("first")); err != nil {
		t.Fatal(err)
	}
	reload(port("two/"))
	waitLog(t, p, "reload: serial port changed, restarted")
	waitStatus(t, s, "the port reopened", func(st gateway.Status) bool { return len(st.Serial) == 1 && st.Serial[0].Present })
	if err := b.Publish(ctx, 1, "t", []byte("second")); err != nil {
		t.Fatal(err)
	}
	sub.WaitAll(t, []string{"first", "second"}, 10*time.Second)
	for _, m := range sub.Messages() {
		if (m.Payload == "first" && m.Topic != "one/t") || (m.Payload == "second" && m.Topic != "two/t") {
			t.Fatalf("%q arrived on %s", m.Payload, m.Topic)
		}
	}
	reload("")
	waitStatus(t, s, "the port removed", func(st gateway.Status) bool { return len(st.Serial) == 0 })
	waitLog(t, p, "reload: serial port removed")
}

// TestSerialCommand: `ralph serial` lists USB serial devices, each with a
// match line to paste into the config (this machine may have none).
func TestSerialCommand(t *testing.T) {
	out, code := ralphCmd(t, "serial")
	if code != 0 {
		t.Fatalf("ralph serial: exit %d\n%s", code, out)
	}
	if out != "no USB serial devices found (is the board plugged in, with a data cable?)\n" && !strings.Contains(out, "  match = { vid = ") {
		t.Fatalf("ralph serial printed:\n%s", out)
	}
	if out, code := ralphCmd(t, "serial", "extra"); code != 2 || !strings.Contains(out, `unexpected argument "extra"`) {
		t.Fatalf("ralph serial extra: exit %d\n%s", code, out)
	}
}

// TestSerialACLWarning: a port whose ACL lets its board publish nothing
// under its prefix is pointed out at start, not found out upstream.
func TestSerialACLWarning(t *testing.T) {
	hash, _ := ralphCmdIn(t, "pw\n", "passwd")
	s := newSetup(t, "127.0.0.1:1", "")
	cfg, _ := os.ReadFile(s.config)
	conf := string(cfg) + fmt.Sprintf(`
[[broker.users]]
name = "kitchen"
password_hash = %q
publish = ["elsewhere/#"]

[[serial]]
name = "kitchen"
path = "/dev/ralph-test-absent"
topic_prefix = "devices/kitchen/"
user = "kitchen"
`, strings.TrimSpace(hash))
	os.WriteFile(s.config, []byte(conf), 0o644)
	const want = `serial port kitchen: user kitchen's ACL allows no publish under "devices/kitchen/": the board's publishes will be refused`
	if out, code := ralphCmd(t, "check", "--config", s.config); code != 0 || !strings.Contains(out, "warning: "+want) {
		t.Fatalf("ralph check (exit %d) does not warn:\n%s", code, out)
	}
	p := startRalph(t, s.config, s.addr)
	waitLog(t, p, "serial port kitchen: user kitchen's ACL allows no publish under") // the log quotes the rest
}
