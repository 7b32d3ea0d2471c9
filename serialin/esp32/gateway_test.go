package esp32_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/term"

	"github.com/ralph-gateway/ralph/internal/mqtttest"
	"github.com/ralph-gateway/ralph/internal/testlog"
	"github.com/ralph-gateway/ralph/localbroker"
	"github.com/ralph-gateway/ralph/queue"
	"github.com/ralph-gateway/ralph/serialin"
)

// TestLibraryAgainstGateway runs the C++ library itself (host/board.cpp)
// on a pseudo-terminal against Ralph's serial port, broker and queue: its
// HELLO, subscription, 300 QoS 1 publishes through its publish slots, and
// the commands sent to it.
func TestLibraryAgainstGateway(t *testing.T) {
	bin := compile(t, "host/board.cpp")
	logs := new(testlog.Buffer)
	log := slog.New(slog.NewTextHandler(logs, nil))
	q, err := queue.Open(queue.Options{Dir: t.TempDir(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	b, err := localbroker.New(localbroker.Options{Listen: []string{"127.0.0.1:0"}, Queue: q, Logger: log,
		Anonymous: localbroker.ACL{Publish: []string{"#"}, Subscribe: []string{"#"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Serve(); err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	defer b.Close()
	addr := b.Addrs()[0]
	sub := mqtttest.Subscribe(t, addr, "watcher", "devices/cpp/#", nil)

	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	defer tty.Close() // held open, so that the master never sees a hangup
	if _, err := term.MakeRaw(int(tty.Fd())); err != nil {
		t.Fatal(err)
	}
	p, err := serialin.New(serialin.Options{Name: "cpp", ClientID: "serial-cpp", Path: tty.Name(), TopicPrefix: "devices/cpp/", Dial: b.Dial, Logger: log, Poll: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	portDone := make(chan struct{})
	go func() { defer close(portDone); p.Run(ctx) }()
	defer func() { cancel(); <-portDone }()

	const n = 300
	cmd := exec.Command(bin, "cpp-board", fmt.Sprint(n))
	cmd.ExtraFiles = []*os.File{ptmx}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	defer cmd.Process.Kill()
	expectLine := func(want string) {
		t.Helper()
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("board exited before %q: %v", want, <-exited)
				}
				if l == want {
					return
				}
				if !strings.HasPrefix(l, "msg ") {
					t.Fatalf("board printed %q, waiting for %q", l, want)
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("board did not print %q\n%s", want, logs)
			}
		}
	}
	expectLine(fmt.Sprintf("acked %d", n))
	var want []string
	for i := range n {
		want = append(want, fmt.Sprint("n", i))
	}
	got := sub.WaitAll(t, want, 10*time.Second)
	var seq []string
	for _, m := range got {
		if m.Topic == "devices/cpp/seq" {
			seq = append(seq, m.Payload)
		}
	}
	if strings.Join(seq, ",") != strings.Join(want, ",") {
		t.Fatalf("broker got %d messages, not n0..n%d once each in order", len(seq), n-1)
	}
	st := p.Status()
	if st.Board != "cpp-board" || st.Firmware != "host-1" || !st.Online || st.Counters.BadChecksum+st.Counters.Malformed != 0 {
		t.Fatalf("port status %+v", st)
	}

	cmdr := mqtttest.Dial(t, addr, "commander", 5)
	cmdr.Publish(1, 1, "devices/cpp/cmd/led", []byte("on"))
	cmdr.Read(5 * time.Second)
	expectLine("msg cmd/led on")
	cmdr.Publish(2, 1, "devices/cpp/cmd/quit", []byte("now"))
	cmdr.Read(5 * time.Second)
	expectLine("msg cmd/quit now")
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("board: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("board did not exit")
	}
	// The board acknowledged both before it exited; the port counts each
	// acknowledgement as it reads it.
	for deadline := time.Now().Add(10 * time.Second); p.Status().Counters.Delivered != 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d messages acknowledged by the board, want 2", p.Status().Counters.Delivered)
		}
	}
}
