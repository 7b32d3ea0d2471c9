package serialin_test

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ralph-gateway/ralph/internal/board"
	"github.com/ralph-gateway/ralph/internal/mqtttest"
	"github.com/ralph-gateway/ralph/internal/testlog"
	"github.com/ralph-gateway/ralph/localbroker"
	"github.com/ralph-gateway/ralph/queue"
	"github.com/ralph-gateway/ralph/serialin"
	"github.com/ralph-gateway/ralph/serialin/line"
)

type env struct {
	q    *queue.Queue
	b    *localbroker.Broker
	addr string
	logs *testlog.Buffer
	log  *slog.Logger
}

// startBroker runs a real broker on a real queue.
func startBroker(t *testing.T, opts ...func(*localbroker.Options)) *env {
	t.Helper()
	return startBrokerQueue(t, queue.Options{}, opts...)
}

func startBrokerQueue(t *testing.T, qo queue.Options, opts ...func(*localbroker.Options)) *env {
	t.Helper()
	logs := new(testlog.Buffer)
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	qo.Dir, qo.Logger = t.TempDir(), log
	q, err := queue.Open(qo)
	if err != nil {
		t.Fatal(err)
	}
	o := localbroker.Options{Listen: []string{"127.0.0.1:0"}, Queue: q, Logger: log,
		Anonymous: localbroker.ACL{Publish: []string{"#"}, Subscribe: []string{"#"}}}
	for _, f := range opts {
		f(&o)
	}
	b, err := localbroker.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.Close()
		q.Close()
	})
	return &env{q: q, b: b, addr: b.Addrs()[0], logs: logs, log: log}
}

// run serves a port until the test ends.
func (e *env) run(t *testing.T, o serialin.Options) *serialin.Port {
	t.Helper()
	o.ClientID = cmp.Or(o.ClientID, "serial-"+o.Name)
	o.Dial = e.b.Dial
	o.Logger = e.log
	o.Poll = cmp.Or(o.Poll, 50*time.Millisecond)
	p, err := serialin.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return p
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func payloads(rs []mqtttest.Received, topic string) []string {
	var out []string
	for _, r := range rs {
		if r.Topic == topic {
			out = append(out, r.Payload)
		}
	}
	return out
}

func TestPublishIsStoredThenAcked(t *testing.T) {
	e := startBroker(t)
	// A consumer keeps what is appended, so that Peek sees it.
	c, err := e.q.Consumer("test", queue.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sub := mqtttest.Subscribe(t, e.addr, "watcher", "devices/kitchen/#", nil)
	b := board.NewT(t, board.Options{ID: "esp32-1"})
	p := e.run(t, serialin.Options{Name: "kitchen", Path: b.Path(), TopicPrefix: "devices/kitchen/"})
	ctx := ctxT(t)
	if err := b.Hello(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := b.Publish(ctx, 1, "temp", []byte(fmt.Sprint(i))); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		// The ACK means stored: the queue has it before any subscriber need.
		msgs, err := e.q.Peek(1000)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, m := range msgs {
			found = found || (m.Topic == "devices/kitchen/temp" && string(m.Payload) == fmt.Sprint(i) && m.Origin == "serial-kitchen")
		}
		if !found {
			t.Fatalf("publish %d acked but not in the queue", i)
		}
	}
	var want []string
	for i := range 20 {
		want = append(want, fmt.Sprint(i))
	}
	sub.WaitAll(t, want, 10*time.Second)
	if got := payloads(sub.Messages(), "devices/kitchen/temp"); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("subscriber got %v, want %v in order", got, want)
	}
	st := p.Status()
	if !st.Present || !st.Online || st.Board != "esp32-1" || st.Firmware != "sim-1" || st.Counters.Published != 20 {
		t.Fatalf("status %+v", st)
	}
	waitFor(t, "online status", func() bool {
		for _, r := range sub.Messages() {
			if r.Topic == "devices/kitchen/$status" && strings.Contains(r.Payload, `"state":"online"`) && strings.Contains(r.Payload, `"board":"esp32-1"`) {
				return true
			}
		}
		return false
	})
}

func TestNoiseSplitFramesAndDamage(t *testing.T) {
	e := startBroker(t)
	sub := mqtttest.Subscribe(t, e.addr, "watcher", "n/#", nil)
	b := board.NewT(t, board.Options{})
	p := e.run(t, serialin.Options{Name: "noisy", Path: b.Path(), TopicPrefix: "n/", MaxLine: 256})
	ctx := ctxT(t)
	if err := b.Hello(ctx); err != nil {
		t.Fatal(err)
	}
	frame := func(id int, payload string) []byte {
		return line.Publish{ID: uint16(id), QoS: 1, Topic: "t", Payload: []byte(payload)}.Append(nil, "PUB")
	}
	f1, f2, f3 := frame(101, "one"), frame(102, "two"), frame(103, "three")
	bad := bytes.Clone(frame(104, "bad"))
	bad[len(bad)-3] ^= 1 // flip a bit in the CRC
	var chunks [][]byte
	chunks = append(chunks,
		[]byte("ets Jun  8 2016 00:22:57\r\nrst:0x1 (POWERON_RESET),boot:0x13\r\n"),
		[]byte("I (29) boot: ESP-IDF v5.1 \xff\xfe not utf-8\r\n"),
		f1[:7], f1[7:20], f1[20:], // one frame in three reads
		append(append(bytes.Clone(f2), f3...), "log after two frames\n"...), // several frames in one read
		bad,
		[]byte(strings.Repeat("x", 1000)+"\n"),                 // oversize
		[]byte("$RPUB,105,1,0,t,t,unterminated"), []byte("\n"), // no CRC: malformed
		[]byte("$RBOGUS*"+fmt.Sprintf("%04X", line.CRC16([]byte("RBOGUS")))+"\n"),
	)
	for _, c := range chunks {
		if err := b.Write(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Publish(ctx, 1, "t", []byte("four")); err != nil {
		t.Fatal(err)
	}
	sub.WaitAll(t, []string{"one", "two", "three", "four"}, 10*time.Second)
	if got := payloads(sub.Messages(), "n/t"); strings.Join(got, ",") != "one,two,three,four" {
		t.Fatalf("got %v", got)
	}
	c := p.Status().Counters
	if c.BadChecksum != 1 || c.Oversize != 1 || c.Malformed != 2 || c.LogLines != 4 || c.Published != 4 {
		t.Fatalf("counters %+v", c)
	}
	for _, want := range []string{"port=noisy", "POWERON_RESET", "not utf-8", "log after two frames", "line over the limit"} {
		if !strings.Contains(e.logs.String(), want) {
			t.Errorf("log lacks %q", want)
		}
	}
	for _, f := range b.Frames() {
		if bytes.HasPrefix(f, []byte("$RACK,104")) || bytes.HasPrefix(f, []byte("$RACK,105")) {
			t.Errorf("damaged frame acknowledged: %s", f)
		}
	}
}

func TestResentPublishIsStoredOnce(t *testing.T) {
	e := startBroker(t)
	sub := mqtttest.Subscribe(t, e.addr, "watcher", "d/#", nil)
	b := board.NewT(t, board.Options{})
	p := e.run(t, serialin.Options{Name: "dup", Path: b.Path(), TopicPrefix: "d/"})
	ctx := ctxT(t)
	if err := b.Hello(ctx); err != nil {
		t.Fatal(err)
	}
	acks := func() int {
		n := 0
		for _, f := range b.Frames() {
			if bytes.HasPrefix(f, []byte("$RACK,7*")) {
				n++
			}
		}
		return n
	}
	f := line.Publish{ID: 7, QoS: 1, Topic: "x", Payload: []byte("a")}.Append(nil, "PUB")
	b.Write(f)
	waitFor(t, "first ACK", func() bool { return acks() == 1 })
	b.Write(f) // its ACK was lost, say: the board resends
	waitFor(t, "second ACK", func() bool { return acks() == 2 })
	// The same id with other content is a new message, not a resend.
	b.Write(line.Publish{ID: 7, QoS: 1, Topic: "x", Payload: []byte("b")}.Append(nil, "PUB"))
	waitFor(t, "third ACK", func() bool { return acks() == 3 })
	// A HELLO from the same run (they crossed on the line) changes
	// nothing: the last content is still a resend.
	if err := b.Hello(ctx); err != nil {
		t.Fatal(err)
	}
	b.Write(line.Publish{ID: 7, QoS: 1, Topic: "x", Payload: []byte("b")}.Append(nil, "PUB"))
	waitFor(t, "fourth ACK", func() bool { return acks() == 4 })
	// After a reboot, the first content is new again.
	b.Reboot()
	if err := b.Hello(ctx); err != nil {
		t.Fatal(err)
	}
	b.Write(f)
	waitFor(t, "fifth ACK", func() bool { return acks() == 5 })
	sub.WaitAll(t, []string{"a", "b"}, 10*time.Second)
	waitFor(t, "three messages", func() bool { return len(payloads(sub.Messages(), "d/x")) >= 3 })
	if got := payloads(sub.Messages(), "d/x"); strings.Join(got, ",") != "a,b,a" {
		t.Fatalf("got %v, want a,b,a", got)
	}
	if c := p.Status().Counters; c.Duplicates != 2 || c.Published != 3 {
		t.Fatalf("counters %+v", c)
	}
}

func TestRefusals(t *testing.T) {
	hash := []byte("$2a$04$unused.unused.unused.unused.unused.unused.unused.uu")
	e := startBroker(t, func(o *localbroker.Options) {
		o.Users = []localbroker.User{{Name: "kitchen", PasswordHash: hash, ACL: localbroker.ACL{
			Publish:   []string{"devices/kitchen/#", "shared/ok"},
			Subscribe: []string{"devices/kitchen/#"},
		}}}
	})
	b := board.NewT(t, board.Options{})
	p := e.run(t, serialin.Options{Name: "kitchen", Path: b.Path(), TopicPrefix: "devices/kitchen/", User: "kitchen", AbsoluteTopics: true})
	b2 := board.NewT(t, board.Options{})
	e.run(t, serialin.Options{Name: "strict", Path: b2.Path(), TopicPrefix: "devices/strict/"})
	ctx := ctxT(t)
	b.Hello(ctx)
	b2.Hello(ctx)
	tests := []struct {
		b      *board.Board
		qos    byte
		topic  string
		reason string
	}{
		{b, 1, "temp", ""},
		{b, 1, "/shared/ok", ""},
		{b, 1, "/shared/forbidden", "denied"}, // the user's ACL
		{b2, 1, "/shared/ok", "denied"},       // absolute topics not allowed on this port
		{b, 1, "a/+/b", "invalid"},
		{b, 1, "a/\x00/b", "invalid"},
		{b, 2, "temp", "invalid"},
	}
	for _, tt := range tests {
		err := tt.b.Publish(ctx, tt.qos, tt.topic, []byte("x"))
		var nak *board.NAKError
		switch {
		case tt.reason == "" && err != nil:
			t.Errorf("publish %q: %v", tt.topic, err)
		case tt.reason != "" && (!errors.As(err, &nak) || nak.Reason != tt.reason):
			t.Errorf("publish %q: %v, want NAK %s", tt.topic, err, tt.reason)
		}
	}
	if _, err := b.Subscribe(ctx, "/elsewhere/#", 1); err == nil || !strings.Contains(err.Error(), "denied") {
		t.Errorf("subscribe outside the ACL: %v", err)
	}
	if _, err := b.Subscribe(ctx, "bad/#/x", 1); err == nil || !strings.Contains(err.Error(), "invalid") {
		t.Errorf("invalid filter: %v", err)
	}
	if c := p.Status().Counters; c.NAKs["denied"] != 2 || c.NAKs["invalid"] != 4 {
		t.Errorf("NAK counters %v", c.NAKs)
	}
}

func TestDownlinkWindowResendAndRetained(t *testing.T) {
	e := startBroker(t)
	pub := mqtttest.Dial(t, e.addr, "commander", 5)
	pub.Write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true},
		PacketID: 1, TopicName: "devices/k/cmd/led", Payload: []byte("on")})
	pub.Read(5 * time.Second)
	b := board.NewT(t, board.Options{NoAutoAck: true})
	p := e.run(t, serialin.Options{Name: "k", Path: b.Path(), TopicPrefix: "devices/k/", Window: 2, Resend: 200 * time.Millisecond})
	ctx := ctxT(t)
	b.Hello(ctx)
	if g, err := b.Subscribe(ctx, "cmd/#", 1); err != nil || g != 1 {
		t.Fatalf("subscribe: %d, %v", g, err)
	}
	next := func() board.Msg {
		select {
		case m := <-b.Msgs():
			return m
		case <-ctx.Done():
			t.Log(e.logs.String())
			for _, f := range b.Frames() {
				t.Logf("frame %s", f)
			}
			t.Fatal("no MSG before the deadline")
		}
		return board.Msg{}
	}
	m := next()
	if m.Topic != "cmd/led" || string(m.Payload) != "on" || !m.Retain || m.QoS != 1 {
		t.Fatalf("retained MSG %+v", m)
	}
	// Unacknowledged, it comes again with the same id.
	if again := next(); again.ID != m.ID || again.Topic != "cmd/led" {
		t.Fatalf("resend %+v, want id %d", again, m.ID)
	}
	b.Ack(m.ID)
	for i := range 5 {
		pub.Publish(uint16(10+i), 1, "devices/k/cmd/n", []byte(fmt.Sprint(i)))
	}
	// With a window of 2, the gateway resends the first two before it
	// sends a third.
	seen := map[uint16]bool{}
	var order []string
	for {
		m := next()
		if m.Topic == "cmd/led" {
			continue // a resend racing its ACK
		}
		if seen[m.ID] {
			break
		}
		seen[m.ID] = true
		order = append(order, string(m.Payload))
	}
	if strings.Join(order, ",") != "0,1" {
		t.Fatalf("before a resend the board got %v, want 0,1", order)
	}
	for id := range seen {
		b.Ack(id)
	}
	for len(order) < 5 {
		m := next()
		if !seen[m.ID] && m.Topic != "cmd/led" {
			seen[m.ID] = true
			order = append(order, string(m.Payload))
		}
		b.Ack(m.ID)
	}
	if strings.Join(order, ",") != "0,1,2,3,4" {
		t.Fatalf("MSG order %v", order)
	}
	waitFor(t, "6 deliveries", func() bool { return p.Status().Counters.Delivered == 6 })
	if c := p.Status().Counters; c.Resent < 2 {
		t.Fatalf("resends not counted: %+v", c)
	}
}

// TestUnplugReplugKeepsDownlink unplugs a board mid-frame, sends it
// commands while it is away, and plugs a new pty in under the same link
// (the tty name changes, as in another USB socket): the board gets the
// commands, the half frame is not a message, and the status follows.
func TestUnplugReplugKeepsDownlink(t *testing.T) {
	e := startBroker(t)
	sub := mqtttest.Subscribe(t, e.addr, "watcher", "devices/shed/#", nil)
	link := filepath.Join(t.TempDir(), "ttyKITCHEN")
	b := board.NewT(t, board.Options{ID: "first", Link: link})
	p := e.run(t, serialin.Options{Name: "shed", Path: link, TopicPrefix: "devices/shed/", Resend: 200 * time.Millisecond})
	ctx := ctxT(t)
	b.Hello(ctx)
	if _, err := b.Subscribe(ctx, "cmd/#", 1); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, 1, "temp", []byte("before")); err != nil {
		t.Fatal(err)
	}
	b.Write(line.Publish{ID: 500, QoS: 1, Topic: "temp", Payload: []byte("half")}.Append(nil, "PUB")[:15])
	b.Unplug()
	waitFor(t, "port absent", func() bool { return !p.Status().Present })
	cmd := mqtttest.Dial(t, e.addr, "commander", 5)
	for i := range 3 {
		cmd.Publish(uint16(i+1), 1, "devices/shed/cmd/led", []byte(fmt.Sprint("cmd", i)))
		cmd.Read(5 * time.Second)
	}
	b2 := board.NewT(t, board.Options{ID: "second", Link: link})
	var got []string
	for len(got) < 3 {
		select {
		case m := <-b2.Msgs():
			if m.Topic != "cmd/led" {
				t.Fatalf("unexpected MSG %+v", m)
			}
			got = append(got, string(m.Payload))
		case <-ctx.Done():
			t.Fatalf("after replug the board got %v", got)
		}
	}
	if strings.Join(got, ",") != "cmd0,cmd1,cmd2" {
		t.Fatalf("commands %v", got)
	}
	if err := b2.Hello(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b2.Publish(ctx, 1, "temp", []byte("after")); err != nil {
		t.Fatal(err)
	}
	sub.WaitAll(t, []string{"before", "after"}, 10*time.Second)
	if got := payloads(sub.Messages(), "devices/shed/temp"); strings.Join(got, ",") != "before,after" {
		t.Fatalf("temps %v", got)
	}
	states := func() string { return stateSequence(sub, "devices/shed/$status") }
	waitFor(t, "online, offline, online", func() bool {
		return strings.Contains(states(), `{"state":"online" {"state":"offline" {"state":"online"`)
	})
	if !strings.Contains(e.logs.String(), "serial device gone") || strings.Count(e.logs.String(), "serial device connected") != 2 {
		t.Fatalf("log does not say the device came, went and came back")
	}
}

// TestFloodIsBackPressured publishes far more than the broker takes at
// once, as fast as the pty allows: the gateway stops reading while the
// queue catches up, and every publish is acked and stored once, in order.
func TestFloodIsBackPressured(t *testing.T) {
	e := startBroker(t, func(o *localbroker.Options) { o.ReceiveMaximum = 4 })
	sub := mqtttest.Subscribe(t, e.addr, "watcher", "f/#", nil)
	b := board.NewT(t, board.Options{})
	p := e.run(t, serialin.Options{Name: "flood", Path: b.Path(), TopicPrefix: "f/"})
	ctx := ctxT(t)
	b.Hello(ctx)
	const n = 3000
	var want []string
	var results []<-chan error
	for i := range n {
		want = append(want, fmt.Sprint(i))
		_, res := b.PublishAsync(ctx, 1, "x", []byte(fmt.Sprint(i)))
		results = append(results, res)
	}
	for i, r := range results {
		if err := <-r; err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	sub.WaitAll(t, want, 20*time.Second)
	if got := payloads(sub.Messages(), "f/x"); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("%d messages, not the %d in order", len(got), n)
	}
	if c := p.Status().Counters; c.Published != n || c.Duplicates != 0 {
		t.Fatalf("counters %+v", c)
	}
}

func TestTwoBoardsAtOnce(t *testing.T) {
	e := startBroker(t)
	sub := mqtttest.Subscribe(t, e.addr, "watcher", "devices/#", nil)
	ctx := ctxT(t)
	var wg sync.WaitGroup
	for _, name := range []string{"left", "right"} {
		b := board.NewT(t, board.Options{ID: name})
		e.run(t, serialin.Options{Name: name, Path: b.Path(), TopicPrefix: "devices/" + name + "/"})
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.Hello(ctx)
			for i := range 50 {
				if err := b.Publish(ctx, 1, "n", []byte(fmt.Sprint(name, i))); err != nil {
					t.Errorf("%s: %v", name, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	waitFor(t, "100 messages", func() bool {
		return len(payloads(sub.Messages(), "devices/left/n"))+len(payloads(sub.Messages(), "devices/right/n")) >= 100
	})
	for _, name := range []string{"left", "right"} {
		got := payloads(sub.Messages(), "devices/"+name+"/n")
		for i, g := range got {
			if g != fmt.Sprint(name, i) {
				t.Fatalf("%s message %d is %q", name, i, g)
			}
		}
		if len(got) != 50 {
			t.Fatalf("%s: %d messages", name, len(got))
		}
	}
}

// TestSilenceAndBoardLog: a board that stops answering is marked offline
// after offline_after (it is pinged first), and online again at its next
// frame; its log lines go to the log topic, a burst beyond the rate limit
// is counted but not all logged.
func TestSilenceAndBoardLog(t *testing.T) {
	e := startBroker(t)
	sub := mqtttest.Subscribe(t, e.addr, "watcher", "s/#", nil)
	b := board.NewT(t, board.Options{ID: "quiet"})
	p := e.run(t, serialin.Options{Name: "quiet", Path: b.Path(), TopicPrefix: "s/", LogTopic: "s/log", OfflineAfter: 400 * time.Millisecond})
	ctx := ctxT(t)
	b.Hello(ctx)
	// A live board answers the gateway's PINGs and stays online.
	waitFor(t, "a PING answered", func() bool {
		for _, f := range b.Frames() {
			if bytes.HasPrefix(f, []byte("$RPING*")) {
				return true
			}
		}
		return false
	})
	if !p.Status().Online {
		t.Fatal("a board answering PINGs was marked offline")
	}
	b.Hang(true)
	waitFor(t, "offline", func() bool { return !p.Status().Online })
	b.Hang(false)
	for i := range 150 {
		b.Write([]byte(fmt.Sprintf("log line %d\r\n", i)))
	}
	waitFor(t, "online again", func() bool { return p.Status().Online })
	waitFor(t, "150 log lines counted", func() bool { return p.Status().Counters.LogLines == 150 })
	waitFor(t, "logged lines on the topic", func() bool { return len(payloads(sub.Messages(), "s/log")) >= 100 })
	if n := len(payloads(sub.Messages(), "s/log")); n > 110 {
		t.Fatalf("%d of 150 log lines in a burst published: the rate limit did not hold", n)
	}
	if got := payloads(sub.Messages(), "s/log"); got[0] != "log line 0" {
		t.Fatalf("first log line %q", got[0])
	}
	states := func() string { return stateSequence(sub, "s/$status") }
	waitFor(t, "three states", func() bool { return strings.Count(states(), "state") >= 3 })
	if s := states(); s != `{"state":"online" {"state":"offline" {"state":"online"` {
		t.Fatalf("status sequence %s", s)
	}
}

// stateSequence lists the states published on a status topic, e.g.
// `{"state":"online" {"state":"offline"`.
func stateSequence(c *mqtttest.Collector, topic string) string {
	var states []string
	for _, r := range c.Messages() {
		if r.Topic == topic {
			states = append(states, r.Payload[:strings.Index(r.Payload, ",")])
		}
	}
	return strings.Join(states, " ")
}

// TestMessageTooLongForTheBoard: a message whose MSG frame would exceed
// the line the board said it can take (HELLO) is dropped, counted and
// acknowledged to the broker, so that it does not hold up the next ones.
func TestMessageTooLongForTheBoard(t *testing.T) {
	e := startBroker(t)
	b := board.NewT(t, board.Options{MaxLine: 128})
	p := e.run(t, serialin.Options{Name: "small", Path: b.Path(), TopicPrefix: "sm/"})
	ctx := ctxT(t)
	b.Hello(ctx)
	if _, err := b.Subscribe(ctx, "cmd/#", 1); err != nil {
		t.Fatal(err)
	}
	pub := mqtttest.Dial(t, e.addr, "commander", 5)
	pub.Publish(1, 1, "sm/cmd/big", []byte(strings.Repeat("x", 200)))
	pub.Read(5 * time.Second)
	pub.Publish(2, 1, "sm/cmd/small", []byte("fits"))
	pub.Read(5 * time.Second)
	select {
	case m := <-b.Msgs():
		if m.Topic != "cmd/small" || string(m.Payload) != "fits" {
			t.Fatalf("board got %+v, want only cmd/small", m)
		}
	case <-ctx.Done():
		t.Fatal("the message after the oversize one did not arrive")
	}
	if c := p.Status().Counters; c.TooLong != 1 {
		t.Fatalf("counters %+v", c)
	}
	if !strings.Contains(e.logs.String(), "message too long for the board's line; dropped") {
		t.Fatal("the drop was not logged")
	}
}

// TestBoardThatStopsReading: a board that stops reading altogether (its
// firmware hung, on native USB the gateway's writes then block) does not
// stall the port: it is marked offline on time, frames that do not fit
// are dropped and counted, and once it reads again every message reaches
// it, in order.
func TestBoardThatStopsReading(t *testing.T) {
	e := startBroker(t)
	b := board.NewT(t, board.Options{})
	p := e.run(t, serialin.Options{Name: "stuck", Path: b.Path(), TopicPrefix: "st/", Window: 64,
		Resend: 100 * time.Millisecond, OfflineAfter: 1500 * time.Millisecond})
	ctx := ctxT(t)
	b.Hello(ctx)
	if _, err := b.Subscribe(ctx, "cmd/#", 1); err != nil {
		t.Fatal(err)
	}
	b.Stall(true)
	pub := mqtttest.Dial(t, e.addr, "commander", 5)
	const n = 300
	var want []string
	for i := range n {
		want = append(want, fmt.Sprintf("%03d", i))
	}
	big := strings.Repeat("x", 500)
	var payloads []string
	for _, w := range want {
		payloads = append(payloads, w+big)
	}
	if acked, err := pub.PublishAll("st/cmd/x", 1, payloads, 32); err != nil || len(acked) != n {
		t.Fatalf("publish: %d acked, %v", len(acked), err)
	}
	waitFor(t, "the silent board offline", func() bool { return !p.Status().Online })
	waitFor(t, "frames dropped", func() bool { return p.Status().Counters.Unwritten > 0 })
	b.Stall(false)
	var got []string
	seen := map[uint16]bool{}
	for len(got) < n {
		select {
		case m := <-b.Msgs():
			if m.Dup || seen[m.ID] {
				continue
			}
			seen[m.ID] = true
			got = append(got, string(m.Payload[:3]))
		case <-ctx.Done():
			t.Fatalf("the board got %d of %d messages", len(got), n)
		}
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("messages out of order: %v", got)
	}
}

// TestStopWithAWriteStuck: stopping a port whose board stopped reading,
// with writes to it blocked, returns (a gateway must be able to shut down
// or reload), and the device is closed once the board reads again.
func TestStopWithAWriteStuck(t *testing.T) {
	e := startBroker(t)
	b := board.NewT(t, board.Options{})
	p, err := serialin.New(serialin.Options{Name: "stuck", ClientID: "serial-stuck", Path: b.Path(), TopicPrefix: "st/", Window: 64,
		Resend: 50 * time.Millisecond, Dial: e.b.Dial, Logger: e.log, Poll: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	tctx := ctxT(t)
	b.Hello(tctx)
	if _, err := b.Subscribe(tctx, "cmd/#", 1); err != nil {
		t.Fatal(err)
	}
	b.Stall(true)
	pub := mqtttest.Dial(t, e.addr, "commander", 5)
	var payloads []string
	for i := range 100 {
		payloads = append(payloads, fmt.Sprint(i, strings.Repeat("x", 1000)))
	}
	if _, err := pub.PublishAll("st/cmd/x", 1, payloads, 32); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "writes backed up", func() bool { return p.Status().Counters.Unwritten > 0 })
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return with a write to the board stuck")
	}
	waitFor(t, "the stuck write reported", func() bool { return strings.Contains(e.logs.String(), "a write to the board is stuck") })
}

// TestQueueFullIsNAKed: with the queue at its budget and the reject
// policy, a board's publish is refused with NAK full, nothing is stored,
// and the next one goes through once there is room.
func TestQueueFullIsNAKed(t *testing.T) {
	e := startBrokerQueue(t, queue.Options{MaxBytes: 1 << 20, OnFull: queue.Reject})
	// A consumer that reads nothing keeps everything queued.
	c, err := e.q.Consumer("slow", queue.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b := board.NewT(t, board.Options{})
	p := e.run(t, serialin.Options{Name: "full", Path: b.Path(), TopicPrefix: "f/"})
	ctx := ctxT(t)
	b.Hello(ctx)
	big := []byte(strings.Repeat("y", 2000))
	var nak *board.NAKError
	stored := 0
	for ; stored < 2000; stored++ {
		if err := b.Publish(ctx, 1, "x", big); err != nil {
			if !errors.As(err, &nak) {
				t.Fatalf("publish %d: %v", stored, err)
			}
			break
		}
	}
	if nak == nil || nak.Reason != "full" {
		t.Fatalf("after %d publishes: %v, want NAK full", stored, nak)
	}
	if st := p.Status(); st.Counters.NAKs["full"] != 1 || st.Counters.Published != uint64(stored) {
		t.Fatalf("counters %+v after %d stored", st.Counters, stored)
	}
	c.Purge()
	if err := b.Publish(ctx, 1, "x", []byte("room again")); err != nil {
		t.Fatalf("after the purge: %v", err)
	}
}

// TestAnotherBoardOnThePort: a board with another id on a port is named
// in the log as taking over the port's session.
func TestAnotherBoardOnThePort(t *testing.T) {
	e := startBroker(t)
	link := filepath.Join(t.TempDir(), "ttyX")
	b := board.NewT(t, board.Options{ID: "first", Link: link})
	p := e.run(t, serialin.Options{Name: "x", Path: link, TopicPrefix: "x/"})
	ctx := ctxT(t)
	b.Hello(ctx)
	b.Unplug()
	waitFor(t, "the port absent", func() bool { return !p.Status().Present })
	b2 := board.NewT(t, board.Options{ID: "second", Link: link})
	if err := b2.Hello(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the warning", func() bool {
		return strings.Contains(e.logs.String(), "a different board on this port") && strings.Contains(e.logs.String(), "was=first")
	})
	if st := p.Status(); st.Board != "second" {
		t.Fatalf("status board %q", st.Board)
	}
}

// TestClientIDIsTheCallers: serialin makes up no client id; the caller
// (the gateway) gives it.
func TestClientIDIsTheCallers(t *testing.T) {
	e := startBroker(t)
	o := serialin.Options{Name: "k", Path: "/dev/null", Dial: e.b.Dial}
	if _, err := serialin.New(o); err == nil || !strings.Contains(err.Error(), "client id") {
		t.Fatalf("New without a ClientID: err %v, want one about the client id", err)
	}
	o.ClientID = "serial-k"
	p, err := serialin.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.ClientID(); got != "serial-k" {
		t.Fatalf("ClientID() = %q, want %q", got, "serial-k")
	}
}
