package configs

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestInteroperabilityConfig: the config the README says the Eclipse
// interoperability suites run against loads, and sets what they need.
func TestInteroperabilityConfig(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Interoperability\n")
	_, block, ok2 := strings.Cut(section, "```toml\n")
	block, _, ok3 := strings.Cut(block, "```\n")
	if !ok || !ok2 || !ok3 {
		t.Fatal("README.md: no ```toml block in the section Interoperability")
	}
	cfg, err := Parse("interop.toml", []byte(block))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Broker.MaxKeepAlive.Duration; got != 60*time.Second {
		t.Errorf("max_keepalive %v, want 60s (test_server_keep_alive)", got)
	}
	if got := cfg.Broker.Anonymous.SubscribeDeny; !reflect.DeepEqual(got, []string{"test/nosubscribe"}) {
		t.Errorf("subscribe_deny %q, want [test/nosubscribe] (test_subscribe_failure)", got)
	}
	if got := cfg.Broker.Listen; !reflect.DeepEqual(got, []string{"127.0.0.1:1883"}) {
		t.Errorf("listen %q, want the suites' default localhost:1883", got)
	}
}
