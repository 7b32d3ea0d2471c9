package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/internal/mqtttest"
)

// TestDeviceTLSAndWebSocket: devices reach the broker over TLS with client
// certificates (a certificate from another CA, or none, is refused) and
// over WebSocket, and the messages meet those of plain TCP clients.
func TestDeviceTLSAndWebSocket(t *testing.T) {
	dir := t.TempDir()
	pki := mqtttest.NewPKI(t, dir, "dev")
	other := mqtttest.NewPKI(t, dir, "other")
	tcp := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	tlsPort, wsPort := mqtttest.FreePort(t), mqtttest.FreePort(t)
	cfg := filepath.Join(dir, "ralph.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`data_dir = %q
[broker]
listen = [%q]
[[broker.tls]]
listen = "127.0.0.1:%d"
cert_file = %q
key_file = %q
client_ca_file = %q
[[broker.websocket]]
listen = "127.0.0.1:%d"
[http]
listen = ""
`, filepath.Join(dir, "data"), tcp, tlsPort, pki.ServerCert, pki.ServerKey, pki.CA, wsPort)), 0o644)
	p := startRalph(t, cfg, tcp)

	sub := mqtttest.Dial(t, tcp, "tcp-sub", 5)
	sub.Subscribe("dev/#", 1)
	pub := func(cert, key string) error {
		args := []string{"-h", "127.0.0.1", "-p", fmt.Sprint(tlsPort), "--cafile", pki.CA, "-q", "1", "-t", "dev/tls", "-m", "over-tls"}
		if cert != "" {
			args = append(args, "--cert", cert, "--key", key)
		}
		out, err := exec.Command("mosquitto_pub", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	if err := pub(pki.ClientCert, pki.ClientKey); err != nil {
		t.Fatalf("mosquitto_pub over TLS with a client certificate: %v", err)
	}
	if pk := sub.Read(5 * time.Second); string(pk.Payload) != "over-tls" {
		t.Fatalf("TCP subscriber got %q", pk.Payload)
	}
	sub.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 1})
	if err := pub(other.ClientCert, other.ClientKey); err == nil {
		t.Fatal("a client certificate from an unknown CA was accepted")
	}
	if err := pub("", ""); err == nil {
		t.Fatal("a TLS client without a certificate was accepted")
	}

	// WebSocket: subscribe and publish over ws://.../mqtt.
	wsURL := fmt.Sprintf("ws://127.0.0.1:%d/mqtt", wsPort)
	c := mqtttest.SubscribeURL(t, wsURL, "ws-sub", "dev/#", nil)
	u, _ := url.Parse(wsURL)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cm, err := autopaho.NewConnection(ctx, autopaho.ClientConfig{ServerUrls: []*url.URL{u}, KeepAlive: 30, ClientConfig: paho.ClientConfig{ClientID: "ws-pub"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := cm.AwaitConnection(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := cm.Publish(ctx, &paho.Publish{Topic: "dev/ws", QoS: 1, Payload: []byte("over-ws")}); err != nil {
		t.Fatalf("publish over WebSocket: %v", err)
	}
	c.WaitAll(t, []string{"over-ws"}, 10*time.Second)
	if pk := sub.Read(5 * time.Second); string(pk.Payload) != "over-ws" {
		t.Fatalf("TCP subscriber got %q from the WebSocket publisher", pk.Payload)
	}
	cm.Disconnect(ctx)
	p.stop()
}

// TestCertUsername: on a TLS listener with cert_username, a client's
// certificate names its user (the PKI's client certificate says
// "client"), whose ACL applies with %u; that user has no password, so it
// cannot log in with one.
func TestCertUsername(t *testing.T) {
	dir := t.TempDir()
	pki := mqtttest.NewPKI(t, dir, "dev")
	tcp := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	tlsPort := mqtttest.FreePort(t)
	cfg := filepath.Join(dir, "ralph.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`data_dir = %q
[broker]
listen = [%q]
[[broker.tls]]
listen = "127.0.0.1:%d"
cert_file = %q
key_file = %q
client_ca_file = %q
cert_username = true
[[broker.users]]
name = "client"
publish = ["dev/%%u/#"]
[http]
listen = ""
`, filepath.Join(dir, "data"), tcp, tlsPort, pki.ServerCert, pki.ServerKey, pki.CA)), 0o644)
	startRalph(t, cfg, tcp)
	sub := mqtttest.Dial(t, tcp, "tcp-sub", 5)
	sub.Subscribe("dev/#", 1)
	pub := func(topic, msg string) {
		t.Helper()
		args := []string{"-h", "127.0.0.1", "-p", fmt.Sprint(tlsPort), "--cafile", pki.CA, "--cert", pki.ClientCert, "--key", pki.ClientKey,
			"-u", "someone-else", "-P", "wrong", "-q", "1", "-t", topic, "-m", msg}
		if out, err := exec.Command("mosquitto_pub", args...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub %s: %v: %s", topic, err, out)
		}
	}
	pub("dev/other/x", "denied") // outside the ACL of "client": acked (MQTT 3.1.1) and dropped
	pub("dev/client/x", "allowed")
	if pk := sub.Read(5 * time.Second); pk.TopicName != "dev/client/x" || string(pk.Payload) != "allowed" {
		t.Fatalf("subscriber got %s %q, want dev/client/x allowed first", pk.TopicName, pk.Payload)
	}
	if _, pk := mqtttest.Login(t, tcp, "pw-login", 5, "client", ""); pk.ReasonCode == 0 {
		t.Fatal("a certificate-only user logged in with a password")
	}
}
