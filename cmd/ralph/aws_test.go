package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/gateway"
	"github.com/ralph-gateway/ralph/internal/mqtttest"
)

// readmeAWSExample returns the README's AWS IoT Core example config.
func readmeAWSExample(t *testing.T) string {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n### AWS IoT Core\n")
	_, block, ok2 := strings.Cut(section, "```toml\n")
	block, _, ok3 := strings.Cut(block, "```\n")
	if !ok || !ok2 || !ok3 {
		t.Fatal("README.md: no ```toml block in the section AWS IoT Core")
	}
	return block
}

// TestAWSIoTCoreExample runs the README's AWS IoT Core example, its host
// and files replaced, against what AWS does on port 443: a TLS front that
// requires a client certificate and the ALPN protocol x-amzn-mqtt-ca,
// relaying to Mosquitto. Messages arrive in order, at QoS 1 from a
// qos = 2 rule; a payload over 128 KB and a topic of 9 levels go to the
// dead-letter topic with their reasons, counted; a command comes down.
// Without alpn the handshake fails and the status says why.
func TestAWSIoTCoreExample(t *testing.T) {
	dir := t.TempDir()
	pki := mqtttest.NewPKI(t, dir, "aws")
	port := mqtttest.FreePort(t)
	mqtttest.StartMosquittoConf(t, port, t.TempDir(), fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n", port))
	broker := fmt.Sprintf("127.0.0.1:%d", port)
	front := mqtttest.StartALPNFront(t, pki, broker, mqtttest.AWSALPN, true)

	// A QoS 2 subscriber sees each message at the QoS it was published with.
	watch := mqtttest.Dial(t, broker, "watcher", 5)
	watch.Subscribe("things/#", 2)

	example := readmeAWSExample(t)
	for old, repl := range map[string]string{
		"a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com:443": front.Addr,
		"/etc/ralph/AmazonRootCA1.pem":                       pki.CA,
		"/etc/ralph/shed-pi-1.cert.pem":                      pki.ClientCert,
		"/etc/ralph/shed-pi-1.private.key":                   pki.ClientKey,
		"  qos = 1\n":                                        "  qos = 2\n", // capped at 1 by the preset
	} {
		if !strings.Contains(example, old) {
			t.Fatalf("the README example has no %q:\n%s", old, example)
		}
		example = strings.Replace(example, old, repl, 1)
	}
	example = strings.Replace(example, `name = "aws"`, "name = \"aws\"\nreconnect_min = \"50ms\"\nreconnect_max = \"200ms\"", 1)
	s := setup{dir: dir, addr: fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t)), httpAddr: fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))}
	s.config = filepath.Join(dir, "ralph.toml")
	head := fmt.Sprintf("data_dir = %q\n[broker]\nlisten = [%q]\n[http]\nlisten = %q\n", filepath.Join(dir, "data"), s.addr, s.httpAddr)
	if err := os.WriteFile(s.config, []byte(head+example), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := ralphCmd(t, "check", "--config", s.config); code != 0 || strings.Contains(out, "warning") {
		t.Fatalf("ralph check: exit %d, want 0 and no warning:\n%s", code, out)
	}

	p := startRalph(t, s.config, s.addr)
	waitStatus(t, s, "the bridge connected", func(st gateway.Status) bool { return st.Bridges[0].Connected })
	dl := mqtttest.Dial(t, s.addr, "ops", 5)
	dl.Subscribe("$SYS/ralph/bridges/aws/deadletter", 1)
	local := mqtttest.Dial(t, s.addr, "device", 5)
	local.Subscribe("cmd/#", 1)

	big := "big-" + strings.Repeat("x", 200000-4)
	publish(t, s.addr, "dev", 5, "sensors/a", []string{"a-000000", big, "a-000001"})
	publish(t, s.addr, "dev2", 5, "sensors/a/b/c/d/e/f", []string{"deep-000000"}) // 9 levels upstream
	publish(t, s.addr, "dev3", 5, "sensors/a/b/c/d/e", []string{"ok-000000"})     // 8
	want := []string{"a-000000", "a-000001", "ok-000000"}
	var got []string
	for len(got) < len(want) {
		pk := watch.Read(15 * time.Second)
		if pk.FixedHeader.Type != packets.Publish {
			continue
		}
		if pk.FixedHeader.Qos != 1 {
			t.Fatalf("%q arrived at QoS %d, want 1 (max_qos of aws-iot-core)", pk.Payload, pk.FixedHeader.Qos)
		}
		watch.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
		if !strings.HasPrefix(pk.TopicName, "things/shed-pi-1/sensors/a") {
			t.Fatalf("%q arrived on %q", pk.Payload, pk.TopicName)
		}
		got = append(got, string(pk.Payload))
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("upstream got %q, want %q", got, want)
	}
	for _, w := range []struct{ topic, payload, reason string }{
		{"sensors/a", big, "payload of 200000 bytes is over max_payload (128KB)"},
		{"sensors/a/b/c/d/e/f", "deep-000000", "topic of 9 levels is over max_topic_levels (8)"},
	} {
		pk := dl.Read(10 * time.Second)
		dl.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
		props := map[string]string{}
		for _, u := range pk.Properties.User {
			props[u.Key] = u.Val
		}
		if string(pk.Payload) != w.payload || props["topic"] != w.topic || props["reason"] != w.reason {
			t.Fatalf("dead letter of %d bytes, properties %v; want %d bytes, topic %q, reason %q", len(pk.Payload), props, len(w.payload), w.topic, w.reason)
		}
	}
	waitStatus(t, s, "two dead-lettered, three forwarded, nothing queued", func(st gateway.Status) bool {
		b := st.Bridges[0]
		return b.DeadLetter == 2 && b.Forwarded == 3 && b.Queued == 0
	})

	cloud := mqtttest.Dial(t, broker, "cloud", 5)
	cloud.Publish(1, 1, "things/shed-pi-1/cmd/led", []byte("on"))
	if pk := local.Read(10 * time.Second); pk.TopicName != "cmd/led" || string(pk.Payload) != "on" {
		t.Fatalf("downlink: got %q %q, want cmd/led on", pk.TopicName, pk.Payload)
	}
	if n := front.Negotiated(); len(n) == 0 || front.Refused.Load() != 0 {
		t.Fatalf("front negotiated %q and refused %d", n, front.Refused.Load())
	}
	p.stop()

	// The same without alpn: refused in the handshake, and said so.
	cfg, _ := os.ReadFile(s.config)
	os.WriteFile(s.config, []byte(strings.Replace(string(cfg), `alpn = ["x-amzn-mqtt-ca"]`, "", 1)), 0o644)
	p = startRalph(t, s.config, s.addr)
	st := waitStatus(t, s, "a connection error", func(st gateway.Status) bool { return st.Bridges[0].LastError != "" })
	wantErr := "TLS handshake with " + front.Addr + `: remote error: tls: internal error (the server refused the handshake, and this bridge offers no ALPN protocol: a server that requires one refuses such handshakes, e.g. AWS IoT Core on port 443 wants alpn = ["x-amzn-mqtt-ca"])`
	if b := st.Bridges[0]; b.Connected || b.LastError != wantErr {
		t.Fatalf("bridge %+v,\nwant disconnected with the error %q", b, wantErr)
	}
	p.stop()
}

// TestCheckUpstreamErrors: ralph check names the file, line and key of
// an unknown URL scheme, alpn without TLS and a proxy URL that does not
// parse, and warns about an AWS bridge without max_rate.
func TestCheckUpstreamErrors(t *testing.T) {
	bridge := func(url string, keys ...string) string {
		return "[[bridge]]\nname = \"up\"\nurls = [\"" + url + "\"]\n" + strings.Join(keys, "\n") + "\n[[bridge.forward]]\nlocal = \"#\"\n"
	}
	for _, tt := range []struct{ name, config, want string }{
		{"unknown scheme", bridge("websocket://h/mqtt"), `:3: bridge[0].urls[0]: unsupported scheme "websocket" in "websocket://h/mqtt" (use mqtt://, tcp://, mqtts://, ssl://, ws:// or wss://)`},
		{"protocol websocket", bridge("mqtt://h", `protocol = "websocket"`), `:4: bridge[0].protocol: "websocket" is not one of 5, 3.1.1 (protocol is the MQTT version: for MQTT over WebSocket, give ws:// or wss:// URLs)`},
		{"alpn without TLS", bridge("ws://h/mqtt", `alpn = ["x-amzn-mqtt-ca"]`), `:4: bridge[0].alpn: applies to TLS only, and no URL of this bridge is mqtts://, ssl://, tls:// or wss://`},
		{"proxy that does not parse", bridge("mqtts://h", `proxy = "http://u:secret@proxy corp:3128"`), `:4: bridge[0].proxy: invalid proxy URL "http://xxxxx@proxy corp:3128": invalid character " " in host name (use "http://host:port" or "http://user:password@host:port")`},
		{"socks proxy", bridge("mqtts://h", `proxy = "socks5://proxy:1080"`), `:4: bridge[0].proxy: unsupported scheme "socks5" in "socks5://proxy:1080" (use http://host:port: an HTTP proxy that takes CONNECT)`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bad.toml")
			os.WriteFile(path, []byte(tt.config), 0o644)
			out, err := exec.Command(ralphBin, "check", "--config", path).CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("ralph check: %v, want exit 1\n%s", err, out)
			}
			if want := path + tt.want + "\n"; !strings.Contains(string(out), want) {
				t.Fatalf("ralph check output:\n%s\nwant it to contain %q", out, want)
			}
			if strings.Contains(string(out), "secret") {
				t.Fatalf("ralph check shows the proxy password:\n%s", out)
			}
		})
	}
	path := filepath.Join(t.TempDir(), "aws.toml")
	os.WriteFile(path, []byte(bridge("mqtts://h:443", `alpn = ["x-amzn-mqtt-ca"]`, `limits = "aws-iot-core"`)), 0o644)
	out, code := ralphCmd(t, "check", "--config", path)
	want := `warning: bridge up: limits = "aws-iot-core" allows 100 publishes a second on a connection, and max_rate is no cap: a backlog would be throttled upstream (set max_rate below it, e.g. 90)` + "\n"
	if code != 0 || !strings.Contains(out, want) {
		t.Fatalf("ralph check: exit %d, output:\n%s\nwant exit 0 and %q", code, out, want)
	}
}
