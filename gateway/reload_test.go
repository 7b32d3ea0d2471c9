package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ralph-gateway/ralph/configs"
	"github.com/ralph-gateway/ralph/internal/mqtttest"
	"github.com/ralph-gateway/ralph/internal/testlog"
)

// TestReloadDoesNotBlockStatus: while a reload waits for a stopping
// bridge's in-flight messages (its upstream acknowledges nothing), Status
// still answers.
func TestReloadDoesNotBlockStatus(t *testing.T) {
	up := mqtttest.StartMochi(t, "127.0.0.1:0", nil)
	up.Stall.Store(true)
	addr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	text := func(prefix string) string {
		return fmt.Sprintf(`data_dir = %q
[broker]
listen = [%q]
[http]
listen = ""
[[bridge]]
name = "up"
urls = ["mqtt://%s"]
ack_timeout = "0s"
  [[bridge.forward]]
  local = "sensors/#"
  remote_prefix = %q
`, filepath.Join(t.TempDir(), "data"), addr, up.Addr, prefix)
	}
	cfg, err := configs.Parse("ralph.toml", []byte(text("a/")))
	if err != nil {
		t.Fatal(err)
	}
	logs := new(testlog.Buffer)
	g, err := New(cfg, slog.New(slog.NewTextHandler(logs, nil)), "test")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	if err := g.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	dev := mqtttest.Dial(t, addr, "dev", 5)
	if _, err := dev.PublishAll("sensors/x", 1, []string{"m1", "m2", "m3"}, 3); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for g.Status().Bridges[0].Inflight != 3 {
		if time.Now().After(deadline) {
			t.Fatalf("the bridge never had the 3 messages in flight: %+v\n%s", g.Status().Bridges, logs)
		}
		time.Sleep(10 * time.Millisecond)
	}

	next, err := configs.Parse("ralph.toml", []byte(text("b/")))
	if err != nil {
		t.Fatal(err)
	}
	next.DataDir = cfg.DataDir
	reloaded := make(chan struct{})
	go func() { defer close(reloaded); g.Reload(next) }()
	// The stopping bridge waits for its acknowledgements, which never come.
	for !strings.Contains(logs.String(), "reload: bridge changed, stopping it") {
		if time.Now().After(deadline) {
			t.Fatalf("the reload never stopped the bridge:\n%s", logs)
		}
		time.Sleep(time.Millisecond)
	}
	st := g.Status()
	select {
	case <-reloaded:
		t.Fatalf("the reload was over before Status returned: it did not wait for the in-flight messages, or Status waited for it\n%s", logs)
	default:
	}
	if len(st.Bridges) != 1 || st.Bridges[0].Name != "up" {
		t.Errorf("Status during the reload: bridges %+v", st.Bridges)
	}
	<-reloaded
}
