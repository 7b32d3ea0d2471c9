package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/internal/mqtttest"
)

// TestLinkState: the bridge's link state is a retained local topic that
// follows the upstream going down and coming back, and upstream it leaves
// a retained "online" birth and an "offline" will that the upstream
// publishes when ralph dies.
func TestLinkState(t *testing.T) {
	up := newMosquitto(t)
	s := newSetup(t, up.addr(), `state_topic = "edge/state/ralph-edge-1"`)
	p := startRalph(t, s.config, s.addr)

	type state struct{ State, URL, Error string }
	next := func(c *mqtttest.Raw) state {
		t.Helper()
		pk := c.Read(10 * time.Second)
		if pk.FixedHeader.Type != packets.Publish || pk.TopicName != "$SYS/ralph/bridges/up/state" {
			t.Fatalf("got type %d on %q", pk.FixedHeader.Type, pk.TopicName)
		}
		var st state
		if err := json.Unmarshal(pk.Payload, &st); err != nil {
			t.Fatalf("state payload %q: %v", pk.Payload, err)
		}
		return st
	}
	watcher := mqtttest.Dial(t, s.addr, "watcher", 5)
	watcher.Subscribe("$SYS/ralph/bridges/+/state", 0)
	if st := next(watcher); st.State != "online" || st.URL != "mqtt://"+up.addr() {
		t.Fatalf("retained state %+v, want online at mqtt://%s", st, up.addr())
	}
	up.collector().WaitAll(t, []string{"online"}, 10*time.Second)

	// The retained state and a live announcement can both arrive at a
	// new subscription: skip repeats of the state already seen.
	until := func(want string) state {
		t.Helper()
		for {
			if st := next(watcher); st.State == want {
				return st
			}
		}
	}
	up.stop()
	if st := until("offline"); st.Error == "" {
		t.Fatalf("state after the upstream stopped: %+v, want offline with an error", st)
	}
	up.start(t)
	until("online")

	// Killed without a word: the upstream publishes the will.
	p.kill()
	deadline := time.Now().Add(60 * time.Second)
	for {
		msgs := up.collector().Messages()
		if last := msgs[len(msgs)-1]; last.Topic == "edge/state/ralph-edge-1" && last.Payload == "offline" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no offline will upstream after SIGKILL; last messages %v", tail(msgs))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(msgs []mqtttest.Received) string {
	var b strings.Builder
	for _, m := range msgs[max(0, len(msgs)-3):] {
		fmt.Fprintf(&b, "%s=%q ", m.Topic, m.Payload)
	}
	return b.String()
}
