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
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	cfg := filepath.Join(dir, "ralph.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`data_dir = %q
[broker]
listen = [%q]
[broker.anonymous]
subscribe_deny = ["test/nosubscribe"]
publish_deny = ["secret/#"]
[http]
listen = ""
`, filepath.Join(dir, "data"), addr)), 0o644)
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
