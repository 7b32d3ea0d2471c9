package bridge

import (
	"fmt"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/internal/mqtttest"
)

// A backoff of an hour, and still the bridge is back within moments of
// the upstream: it probes while it waits.
func TestFastLinkUp(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	r := startBridge(t, addr, []Rule{{Filter: "#", QoS: 1}}, func(c *Config) {
		c.ReconnectMin, c.ReconnectMax, c.ProbeInterval = time.Hour, time.Hour, 50*time.Millisecond
	})
	waitFor(t, "the first attempt failed", func() bool { return r.b.Stats().LastError != "" })
	r.publish(t, "sensors/a", "after the outage")
	up := mqtttest.StartMochi(t, addr, nil)
	if got := up.WaitDistinct(t, 1, 20*time.Second); got[0].Payload != "after the outage" {
		t.Fatalf("upstream got %v", got)
	}
}

// refuser is an upstream that answers every CONNECT with a refusal, and
// counts them.
type refuser struct {
	mqtt.HookBase
	connects atomic.Int32
}

func (*refuser) ID() string { return "refuse" }
func (*refuser) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}
func (h *refuser) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool {
	h.connects.Add(1)
	return false
}
func (*refuser) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

// An upstream that answers and refuses the bridge keeps the long backoff:
// probing is only for upstreams that do not answer at all, and one that
// refuses in the round makes it an answered round.
func TestRefusalKeepsTheBackoff(t *testing.T) {
	dead := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	for _, tt := range []struct {
		name string
		urls func(refusing string) []string
	}{
		{"refusing", func(r string) []string { return []string{r} }},
		{"refusing, then nothing listening", func(r string) []string { return []string{r, dead} }},
		{"nothing listening, then refusing", func(r string) []string { return []string{dead, r} }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := new(refuser)
			addr := serveMochi(t, func(*mqtt.Options) {}, h)
			r := startBridge(t, addr, []Rule{{Filter: "#", QoS: 1}}, func(c *Config) {
				c.URLs = nil
				for _, a := range tt.urls(addr) {
					u, _ := url.Parse("mqtt://" + a)
					c.URLs = append(c.URLs, u)
				}
				c.ReconnectMin, c.ReconnectMax, c.ProbeInterval = time.Hour, time.Hour, 20*time.Millisecond
			})
			waitFor(t, "the refusal", func() bool { return h.connects.Load() == 1 && r.b.Stats().LastError != "" })
			// Fifty probe intervals: the absence of a retry cannot be
			// polled for.
			time.Sleep(time.Second)
			if n := h.connects.Load(); n != 1 {
				t.Fatalf("%d CONNECTs within a second of an hour's backoff, want 1", n)
			}
		})
	}
}
