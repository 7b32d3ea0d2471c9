package gateway

import (
	"io"
	"log/slog"
	"reflect"
	"testing"

	"github.com/ralph-gateway/ralph/bridge"
	"github.com/ralph-gateway/ralph/configs"
)

// TestBridgeConfigUpstream: alpn, proxy, limits and max_qos reach the
// bridge's Config: ALPN as the TLS configuration's NextProtos, the proxy
// as a URL with its credentials, the preset's limits resolved.
func TestBridgeConfigUpstream(t *testing.T) {
	cfg, err := configs.Parse("ralph.toml", []byte(`[[bridge]]
name = "aws"
urls = ["mqtts://a1b2c3-ats.iot.eu-west-1.amazonaws.com:443", "wss://backup.example.com/mqtt"]
client_id = "shed-gateway"
alpn = ["x-amzn-mqtt-ca"]
proxy = "http://ralph:s%40cret@proxy.corp:3128"
limits = "aws-iot-core"
max_rate = 90
  [[bridge.forward]]
  local = "sensors/#"
  remote_prefix = "things/shed-gateway/"
  qos = 2
  [[bridge.subscribe]]
  remote = "things/shed-gateway/cmd/#"
  qos = 2
`))
	if err != nil {
		t.Fatal(err)
	}
	c, err := bridgeConfig(cfg.Bridges[0], slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.TLS.NextProtos, []string{"x-amzn-mqtt-ca"}) {
		t.Errorf("NextProtos %q", c.TLS.NextProtos)
	}
	if c.Proxy == nil || c.Proxy.Host != "proxy.corp:3128" || c.Proxy.User.Username() != "ralph" {
		t.Fatalf("proxy %v", c.Proxy)
	}
	if pw, _ := c.Proxy.User.Password(); pw != "s@cret" {
		t.Errorf("proxy password %q, want s@cret", pw)
	}
	if want := (bridge.Limits{MaxPayload: 128000, MaxTopicLevels: 8, MaxTopicLength: 256}); c.Limits != want || c.MaxQoS != 1 || c.MaxRate != 90 {
		t.Errorf("limits %+v, max_qos %d, max_rate %d; want %+v, 1, 90", c.Limits, c.MaxQoS, c.MaxRate, want)
	}
	if u := c.URLs[1]; u.Scheme != "wss" || u.Host != "backup.example.com:443" || u.Path != "/mqtt" {
		t.Errorf("second URL %v", u)
	}
	// The rules keep their QoS here: the bridge caps them (bridge.New).
	if c.Forward[0].QoS != 2 || c.Subscribe[0].QoS != 2 {
		t.Errorf("rule QoS %d, %d", c.Forward[0].QoS, c.Subscribe[0].QoS)
	}
}
