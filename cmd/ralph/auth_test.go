package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/internal/mqtttest"
)

// TestAuthAndACL: a loopback listener admits anonymous clients, one on all
// interfaces only users with the right password; users publish and
// subscribe only where their ACL (%u substituted) allows; MQTT 3.1.1 and 5
// get the answers the protocol has for each; mosquitto_pub logs in too.
func TestAuthAndACL(t *testing.T) {
	hash, code := ralphCmdIn(t, "s3cret\n", "passwd")
	if code != 0 || !strings.HasPrefix(hash, "$2a$") {
		t.Fatalf("ralph passwd: exit %d, %q", code, hash)
	}
	local := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	netPort := mqtttest.FreePort(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "ralph.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`data_dir = %q
[broker]
listen = [%q, "0.0.0.0:%d"]
[[broker.users]]
name = "esp32"
password_hash = %q
publish = ["sensors/%%u/#"]
subscribe = ["cmd/%%u/#"]
[http]
listen = ""
`, filepath.Join(dir, "data"), local, netPort, strings.TrimSpace(hash))), 0o644)
	p := startRalph(t, cfg, local)
	remote := fmt.Sprintf("127.0.0.1:%d", netPort) // the all-interfaces listener

	for _, v := range []byte{4, 5} {
		t.Run(fmt.Sprintf("mqtt%d", v), func(t *testing.T) {
			notAuthorized := map[byte][]byte{4: {4, 5}, 5: {0x86, 0x87}}[v]
			refused := func(pk packets.Packet) bool {
				return pk.FixedHeader.Type == packets.Connack && (pk.ReasonCode == notAuthorized[0] || pk.ReasonCode == notAuthorized[1])
			}
			if _, pk := mqtttest.Login(t, local, "anon-local", v, "", ""); pk.ReasonCode != 0 {
				t.Fatalf("anonymous on loopback refused: %#x", pk.ReasonCode)
			}
			if _, pk := mqtttest.Login(t, remote, "anon-net", v, "", ""); !refused(pk) {
				t.Fatalf("anonymous on all interfaces: type %d reason %#x, want not authorized", pk.FixedHeader.Type, pk.ReasonCode)
			}
			if _, pk := mqtttest.Login(t, remote, "wrong", v, "esp32", "guess"); !refused(pk) {
				t.Fatalf("wrong password: type %d reason %#x, want not authorized", pk.FixedHeader.Type, pk.ReasonCode)
			}
			dev, pk := mqtttest.Login(t, remote, fmt.Sprintf("esp32-v%d", v), v, "esp32", "s3cret")
			if pk.ReasonCode != 0 {
				t.Fatalf("right password refused: %#x", pk.ReasonCode)
			}
			watcher := mqtttest.Dial(t, local, fmt.Sprintf("watcher-v%d", v), 5)
			watcher.Subscribe("sensors/#", 1)

			// Allowed publish: acked and delivered.
			dev.Publish(1, 1, "sensors/esp32/t", []byte("ok"))
			if ack := dev.Read(5 * time.Second); ack.FixedHeader.Type != packets.Puback || ack.ReasonCode != 0 {
				t.Fatalf("allowed publish: type %d reason %#x", ack.FixedHeader.Type, ack.ReasonCode)
			}
			if got := watcher.Read(5 * time.Second); string(got.Payload) != "ok" {
				t.Fatalf("watcher got %q", got.Payload)
			}
			// Denied publish: 0x87 on MQTT 5, a plain ack on 3.1.1; never delivered.
			dev.Publish(2, 1, "sensors/other/t", []byte("denied"))
			ack := dev.Read(5 * time.Second)
			want := byte(0)
			if v == 5 {
				want = packets.ErrNotAuthorized.Code
			}
			if ack.FixedHeader.Type != packets.Puback || ack.ReasonCode != want {
				t.Fatalf("denied publish: type %d reason %#x, want PUBACK %#x", ack.FixedHeader.Type, ack.ReasonCode, want)
			}
			if got, err := watcher.TryRead(300 * time.Millisecond); err == nil {
				t.Fatalf("a denied publish was delivered: %q", got.Payload)
			}
			// Subscriptions inside the ACL are granted, wider ones refused.
			for _, s := range []struct {
				filter string
				ok     bool
			}{{"cmd/esp32/#", true}, {"cmd/#", false}, {"sensors/#", false}} {
				dev.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 3,
					Filters: packets.Subscriptions{{Filter: s.filter, Qos: 1}}})
				sa := dev.Read(5 * time.Second)
				if sa.FixedHeader.Type != packets.Suback || len(sa.ReasonCodes) != 1 || (sa.ReasonCodes[0] < 0x80) != s.ok {
					t.Fatalf("subscribe %s: type %d codes %v, want granted=%v", s.filter, sa.FixedHeader.Type, sa.ReasonCodes, s.ok)
				}
			}
		})
	}

	// A stock client logs in too.
	port := fmt.Sprint(netPort)
	if out, err := exec.Command("mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-u", "esp32", "-P", "s3cret", "-q", "1", "-t", "sensors/esp32/x", "-m", "1").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub with the right password: %v %s", err, out)
	}
	if out, err := exec.Command("mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-u", "esp32", "-P", "nope", "-q", "1", "-t", "sensors/esp32/x", "-m", "1").CombinedOutput(); err == nil {
		t.Fatalf("mosquitto_pub with a wrong password succeeded: %s", out)
	}
	if !strings.Contains(p.logs.String(), "authentication failed") || !strings.Contains(p.logs.String(), "publish denied by ACL") {
		t.Fatalf("refusals not logged:\n%s", p.logs)
	}
	p.stop()
}

// TestReloadUsers: SIGHUP adds a user, changes another's ACL and removes
// a third without a restart: the new user logs in, the changed ACL applies
// to a client already connected, and the removed user's client is
// disconnected and cannot log in again.
func TestReloadUsers(t *testing.T) {
	hash, code := ralphCmdIn(t, "pw\n", "passwd")
	if code != 0 {
		t.Fatalf("ralph passwd: exit %d", code)
	}
	hash = strings.TrimSpace(hash)
	local := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	netPort := mqtttest.FreePort(t)
	remote := fmt.Sprintf("127.0.0.1:%d", netPort)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "ralph.toml")
	write := func(users string) {
		t.Helper()
		if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`data_dir = %q
[broker]
listen = [%q, "0.0.0.0:%d"]
[http]
listen = ""
%s`, filepath.Join(dir, "data"), local, netPort, users)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	user := func(name, publish string) string {
		return fmt.Sprintf("[[broker.users]]\nname = %q\npassword_hash = %q\npublish = [%q]\n", name, hash, publish)
	}
	write(user("stays", "a/#") + user("goes", "#"))
	p := startRalph(t, cfg, local)
	if _, pk := mqtttest.Login(t, remote, "new-1", 5, "new", "pw"); pk.ReasonCode == 0 {
		t.Fatal("an unknown user logged in")
	}
	stays, _ := mqtttest.Login(t, remote, "stays-1", 5, "stays", "pw")
	goes, _ := mqtttest.Login(t, remote, "goes-1", 5, "goes", "pw")
	stays.Publish(1, 1, "b/x", nil)
	if ack := stays.Read(5 * time.Second); ack.ReasonCode != packets.ErrNotAuthorized.Code {
		t.Fatalf("publish outside the ACL: reason %#x", ack.ReasonCode)
	}

	write(user("stays", "b/#") + user("new", "#"))
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, p, "reload: users and ACLs applied")
	if _, pk := mqtttest.Login(t, remote, "new-2", 5, "new", "pw"); pk.ReasonCode != 0 {
		t.Fatalf("the added user was refused: %#x", pk.ReasonCode)
	}
	stays.Publish(2, 1, "b/x", nil)
	if ack := stays.Read(5 * time.Second); ack.FixedHeader.Type != packets.Puback || ack.ReasonCode != 0 {
		t.Fatalf("publish the new ACL allows, on a connection from before: type %d reason %#x", ack.FixedHeader.Type, ack.ReasonCode)
	}
	if pk, err := goes.TryRead(5 * time.Second); err == nil && pk.FixedHeader.Type != packets.Disconnect {
		t.Fatalf("the removed user's client got packet type %d, want a disconnect", pk.FixedHeader.Type)
	}
	if _, pk := mqtttest.Login(t, remote, "goes-2", 5, "goes", "pw"); pk.ReasonCode == 0 {
		t.Fatal("the removed user logged in again")
	}
	if strings.Contains(p.logs.String(), "need a restart") {
		t.Fatalf("a users-only change was said to need a restart:\n%s", p.logs)
	}
}
