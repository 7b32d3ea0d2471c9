package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/internal/mqtttest"
)

// TestACLDeny: a real ralph applies the deny lists of its config (the
// interoperability suites' rule among them): a subscription within
// subscribe_deny gets 0x80 while "#" is granted, and a publish within
// publish_deny is refused.
func TestACLDeny(t *testing.T) {
	cfg, addr := brokerConfig(t, `[broker.anonymous]
subscribe_deny = ["test/nosubscribe"]
publish_deny = ["secret/#"]
`)
	p := startRalph(t, cfg, addr)
	c := mqtttest.Dial(t, addr, "c", 5)
	for i, s := range []struct {
		filter string
		code   byte
	}{{"test/nosubscribe", 0x80}, {"#", 1}} {
		c.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: uint16(i + 1),
			Filters: packets.Subscriptions{{Filter: s.filter, Qos: 1}}})
		sa := c.Read(5 * time.Second)
		if sa.FixedHeader.Type != packets.Suback || len(sa.ReasonCodes) != 1 || sa.ReasonCodes[0] != s.code {
			t.Fatalf("subscribe %s: type %d codes %v, want SUBACK %#x", s.filter, sa.FixedHeader.Type, sa.ReasonCodes, s.code)
		}
	}
	c.Publish(3, 1, "secret/x", []byte("no"))
	if ack := c.Read(5 * time.Second); ack.FixedHeader.Type != packets.Puback || ack.ReasonCode != packets.ErrNotAuthorized.Code {
		t.Fatalf("denied publish: type %d reason %#x, want PUBACK %#x", ack.FixedHeader.Type, ack.ReasonCode, packets.ErrNotAuthorized.Code)
	}
	p.stop()
}

// brokerConfig writes a config with no bridge and the HTTP endpoint off,
// whose [broker] listens on a free loopback port and ends with keys
// (which may open tables of their own, such as [broker.anonymous]).
func brokerConfig(t *testing.T, keys string) (path, addr string) {
	t.Helper()
	dir := t.TempDir()
	addr = fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	path = filepath.Join(dir, "ralph.toml")
	cfg := fmt.Sprintf("data_dir = %q\n[http]\nlisten = \"\"\n[broker]\nlisten = [%q]\n%s", filepath.Join(dir, "data"), addr, keys)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, addr
}
