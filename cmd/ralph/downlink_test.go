package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/gateway"
	"github.com/ralph-gateway/ralph/internal/mqtttest"
)

// TestDownlink: a message published upstream under a subscribe rule
// reaches a local subscriber with its topic rewritten, retained if asked,
// and is never forwarded back up, even though a forward rule matches
// every local topic.
func TestDownlink(t *testing.T) {
	up := newMosquitto(t)
	s := newSetup(t, up.addr(), "")
	cfg, _ := os.ReadFile(s.config)
	conf := strings.Replace(string(cfg), `local = "sensors/#"`, `local = "#"`, 1) + `
  [[bridge.subscribe]]
  remote = "site/cmd/#"
  strip_prefix = "site/"
  qos = 1
  retain = true
`
	os.WriteFile(s.config, []byte(conf), 0o644)
	p := startRalph(t, s.config, s.addr)
	waitStatus(t, s, "the bridge connected", func(st gateway.Status) bool { return st.Bridges[0].Connected })

	sub := mqtttest.Dial(t, s.addr, "device", 5)
	sub.Subscribe("cmd/#", 1)
	port := strings.Split(up.addr(), ":")[1]
	if out, err := exec.Command("mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-q", "1", "-r", "-t", "site/cmd/led", "-m", "on").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v %s", err, out)
	}
	pk := sub.Read(10 * time.Second)
	if pk.FixedHeader.Type != packets.Publish || pk.TopicName != "cmd/led" || string(pk.Payload) != "on" {
		t.Fatalf("device got type %d %q %q, want cmd/led on", pk.FixedHeader.Type, pk.TopicName, pk.Payload)
	}
	if pk.FixedHeader.Qos > 0 {
		sub.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
	}
	// A device connecting later gets it as a retained message.
	late := mqtttest.Dial(t, s.addr, "late", 5)
	late.Subscribe("cmd/#", 0)
	if pk := late.Read(5 * time.Second); pk.TopicName != "cmd/led" || !pk.FixedHeader.Retain {
		t.Fatalf("late subscriber got %q retain=%v, want the retained cmd/led", pk.TopicName, pk.FixedHeader.Retain)
	}

	// Loop check: a local message published after the downlink one is
	// forwarded; the queue is forwarded in order, so had the downlink
	// message been forwarded it would have arrived first.
	want := publish(t, s.addr, "sensor", 5, "sensors/x", payloads("x", 0, 1))
	got := up.collector().WaitAll(t, want, 10*time.Second)
	for _, m := range got {
		if strings.Contains(m.Topic, "cmd/led") {
			t.Fatalf("downlink message went back upstream as %q", m.Topic)
		}
	}
	st := waitStatus(t, s, "one downlinked", func(st gateway.Status) bool { return st.Bridges[0].Downlinked == 1 })
	if st.Bridges[0].Forwarded != 1 {
		t.Fatalf("bridge forwarded %d, want 1 (only the local message)", st.Bridges[0].Forwarded)
	}
	p.stop()
}

// TestDownlinkWhileRalphIsDown: the upstream session outlives a crash of
// ralph, so a command sent upstream while ralph is down is delivered and
// stored once it is back.
func TestDownlinkWhileRalphIsDown(t *testing.T) {
	up := newMosquitto(t)
	s := newSetup(t, up.addr(), "")
	cfg, _ := os.ReadFile(s.config)
	conf := strings.Replace(string(cfg), "[[bridge]]", "[queue]\nkeep_local = \"1h\"\n[[bridge]]", 1) + `
  [[bridge.subscribe]]
  remote = "site/cmd/#"
  strip_prefix = "site/"
`
	os.WriteFile(s.config, []byte(conf), 0o644)
	p := startRalph(t, s.config, s.addr)
	waitStatus(t, s, "the bridge connected", func(st gateway.Status) bool { return st.Bridges[0].Connected })
	p.kill()

	port := strings.Split(up.addr(), ":")[1]
	if out, err := exec.Command("mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-q", "1", "-t", "site/cmd/led", "-m", "while-down").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v %s", err, out)
	}
	p = startRalph(t, s.config, s.addr)
	waitStatus(t, s, "the command delivered", func(st gateway.Status) bool { return st.Bridges[0].Downlinked == 1 })
	out, _ := ralphCmd(t, "queue", "peek", "10", "--addr", s.httpAddr)
	if !strings.Contains(out, `"topic": "cmd/led"`) || !strings.Contains(out, `"payload": "while-down"`) {
		t.Fatalf("the command is not in the queue:\n%s", out)
	}
	p.stop()
}

// TestDownlinkToOfflineDevice: a device with a persistent session that is
// offline when a command comes down gets it when it reconnects.
func TestDownlinkToOfflineDevice(t *testing.T) {
	up := newMosquitto(t)
	s := newSetup(t, up.addr(), "")
	cfg, _ := os.ReadFile(s.config)
	os.WriteFile(s.config, []byte(string(cfg)+"\n  [[bridge.subscribe]]\n  remote = \"site/cmd/#\"\n  strip_prefix = \"site/\"\n"), 0o644)
	p := startRalph(t, s.config, s.addr)
	waitStatus(t, s, "the bridge connected", func(st gateway.Status) bool { return st.Bridges[0].Connected })

	for _, v := range []byte{4, 5} {
		id := fmt.Sprintf("sleepy-v%d", v)
		dev := mqtttest.DialSession(t, s.addr, id, v, false)
		dev.Subscribe("cmd/#", 1)
		dev.Close()
		waitStatus(t, s, "the device gone", func(st gateway.Status) bool { return st.Clients == 0 })
		cmd := "wake-" + id
		port := strings.Split(up.addr(), ":")[1]
		if out, err := exec.Command("mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-q", "1", "-t", "site/cmd/"+id, "-m", cmd).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub: %v %s", err, out)
		}
		waitStatus(t, s, "the command downlinked", func(st gateway.Status) bool { return st.Bridges[0].Downlinked >= uint64(v-3) })
		dev = mqtttest.DialSession(t, s.addr, id, v, false)
		pk := dev.Read(10 * time.Second)
		if pk.FixedHeader.Type != packets.Publish || string(pk.Payload) != cmd || pk.TopicName != "cmd/"+id {
			t.Fatalf("%s after reconnecting got type %d %q %q", id, pk.FixedHeader.Type, pk.TopicName, pk.Payload)
		}
		dev.Close()
	}
	p.stop()
}
