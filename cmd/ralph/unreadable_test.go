package main

import (
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/gateway"
	"github.com/ralph-gateway/ralph/internal/mqtttest"
	"github.com/ralph-gateway/ralph/queue"
)

// TestUnreadableSessionState: a stored subscription and a stored in-flight
// message whose values do not decode (written here, garbage, under their
// real keys in the stopped gateway's queue) are skipped at the next start,
// each logged at warn with its client id and key and counted in
// ralph_queue_unreadable_total; the rest of the session still works.
func TestUnreadableSessionState(t *testing.T) {
	up := newMochi(t)
	s := newSetup(t, up.addr(), "")
	p := startRalph(t, s.config, s.addr)
	dev := mqtttest.DialSession(t, s.addr, "sleepy", 5, false)
	dev.Subscribe("cmd/sleepy", 1)
	dev.Subscribe("cmd/broken", 1)
	dev.Close()
	waitStatus(t, s, "the device gone", func(st gateway.Status) bool { return st.Clients == 0 })
	publish(t, s.addr, "ctl", 5, "cmd/broken", []string{"lost"})
	p.stop()

	// Garbage under the subscription's key and the in-flight message's.
	q, err := queue.Open(queue.Options{Dir: filepath.Join(s.dir, "data", "db"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	subKey := "sleepy\x00cmd/broken"
	var inflightKey string
	var subs []string
	q.KV("subscriptions").Scan(func(k string, _ []byte) error { subs = append(subs, k); return nil })
	q.KV("inflight").Scan(func(k string, _ []byte) error { inflightKey = k; return nil })
	if fmt.Sprintf("%q", subs) != fmt.Sprintf("%q", []string{"sleepy\x00cmd/broken", "sleepy\x00cmd/sleepy"}) || !strings.HasPrefix(inflightKey, "sleepy\x00") {
		q.Close()
		t.Fatalf("stored subscriptions %q, in flight %q: want sleepy's two and one in flight to it", subs, inflightKey)
	}
	for _, w := range []struct {
		kv, key string
	}{{"subscriptions", subKey}, {"inflight", inflightKey}} {
		if err := q.KV(w.kv).Set(w.key, []byte("\xffnot a stored value")); err != nil {
			q.Close()
			t.Fatal(err)
		}
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}

	p = startRalph(t, s.config, s.addr)
	for _, w := range []struct{ what, key string }{
		{"subscription", subKey},
		{"in-flight message", inflightKey},
	} {
		var lines []string
		for _, l := range strings.Split(p.logs.String(), "\n") {
			if strings.Contains(l, "unreadable stored "+w.what) {
				lines = append(lines, l)
			}
		}
		if len(lines) != 1 || !strings.Contains(lines[0], "level=WARN") || !strings.Contains(lines[0], "client=sleepy") ||
			!strings.Contains(lines[0], fmt.Sprintf("key=%q", w.key)) {
			t.Fatalf("log lines about the unreadable %s: %q; want one at WARN with client=sleepy and key=%q", w.what, lines, w.key)
		}
	}
	if code, body := httpGet(t, "http://"+s.httpAddr+"/metrics"); code != 200 || !strings.Contains(body, "\nralph_queue_unreadable_total 2\n") {
		t.Fatalf("/metrics (%d) lacks ralph_queue_unreadable_total 2:\n%s", code, grepLines(body, "unreadable"))
	}

	// The readable subscription is still there.
	dev = mqtttest.DialSession(t, s.addr, "sleepy", 5, false)
	defer dev.Close()
	publish(t, s.addr, "ctl", 5, "cmd/sleepy", []string{"still subscribed"})
	pk := dev.Read(10 * time.Second)
	if pk.FixedHeader.Type != packets.Publish || string(pk.Payload) != "still subscribed" {
		t.Fatalf("after the restart the device got type %d %q, want the new message", pk.FixedHeader.Type, pk.Payload)
	}
	dev.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
	p.stop()
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
