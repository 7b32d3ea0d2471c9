package main

import (
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/internal/mqtttest"
)

// TestLimits: the configured limits are applied as the protocol says.
func TestLimits(t *testing.T) {
	cfg, addr := brokerConfig(t, `max_clients = 3
max_keepalive = "30s"
max_topic_length = 32
max_topic_levels = 4
`)
	p := startRalph(t, cfg, addr)

	// Keepalive: a client asking for 60 s is given 30 s.
	r, ack := mqtttest.Login(t, addr, "ka", 5, "", "")
	if ack.Properties.ServerKeepAlive != 30 || !ack.Properties.ServerKeepAliveFlag {
		t.Fatalf("CONNACK server keep alive %d (flag %v), want 30", ack.Properties.ServerKeepAlive, ack.Properties.ServerKeepAliveFlag)
	}
	// Topics: too long or too deep.
	r.Publish(1, 1, strings.Repeat("x", 40), []byte("long"))
	if pk := r.Read(5 * time.Second); pk.FixedHeader.Type != packets.Puback || pk.ReasonCode != packets.ErrTopicNameInvalid.Code {
		t.Fatalf("publish to a 40-byte topic: type %d reason %#x, want PUBACK 0x90", pk.FixedHeader.Type, pk.ReasonCode)
	}
	r.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 2,
		Filters: packets.Subscriptions{{Filter: "a/b/c/d/e", Qos: 0}, {Filter: "a/b/#", Qos: 0}}})
	if pk := r.Read(5 * time.Second); pk.FixedHeader.Type != packets.Suback || len(pk.ReasonCodes) != 2 || pk.ReasonCodes[0] < 0x80 || pk.ReasonCodes[1] >= 0x80 {
		t.Fatalf("subscribe 5 levels and 3: type %d codes %v, want refused then granted", pk.FixedHeader.Type, pk.ReasonCodes)
	}
	// Clients: a second and third are allowed, a fourth refused (server busy).
	mqtttest.Dial(t, addr, "second", 4)
	mqtttest.Dial(t, addr, "third", 4)
	if _, ack := mqtttest.Login(t, addr, "fourth", 5, "", ""); ack.ReasonCode != packets.ErrServerBusy.Code {
		t.Fatalf("fourth client: reason %#x, want server busy 0x89", ack.ReasonCode)
	}
	p.stop()
}
