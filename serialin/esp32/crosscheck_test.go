package esp32_test

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ralph-gateway/ralph/serialin/line"
)

// TestCrossCheck compiles host/crosscheck.cpp, which drives RalphSerial.h
// from a script on stdin, and checks what the board library writes and
// delivers against the gateway's implementation, serialin/line.
func TestCrossCheck(t *testing.T) {
	b := board{compile(t, "host/crosscheck.cpp")}
	t.Run("CRC", b.testCRC)
	t.Run("PUB", b.testPub)
	t.Run("PUBLimits", b.testPubLimits)
	t.Run("IDs", b.testIDs)
	t.Run("MSG", b.testMsg)
	t.Run("MSGResend", b.testMsgResend)
	t.Run("BadFrames", b.testBadFrames)
	t.Run("Lines", b.testLines)
	t.Run("Ping", b.testPing)
	t.Run("Hello", b.testHello)
	t.Run("Slots", b.testSlots)
	t.Run("Timers", b.testTimers)
	t.Run("ShortWrite", b.testShortWrite)
	t.Run("Log", b.testLog)
}

// compile builds a host program from src with the machine's g++ and
// returns its path.
func compile(t *testing.T, src string) string {
	t.Helper()
	gxx, err := exec.LookPath("g++")
	if err != nil {
		t.Fatal("g++ is not on PATH: install it (apt-get install -y g++) to check RalphSerial.h against Ralph")
	}
	bin := filepath.Join(t.TempDir(), strings.TrimSuffix(filepath.Base(src), ".cpp"))
	if out, err := exec.Command(gxx, "-std=c++11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O1",
		"-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("compiling %s: %v\n%s", src, err, out)
	}
	return bin
}

type board struct{ bin string }

// run runs the commands in one process and returns, per command, what
// happened: "> <line>" for each line the library wrote, "partial <bytes>"
// for a write that did not end a line, and the program's own lines
// (callbacks, "ok", ...).
func (b board) run(t *testing.T, cmds ...string) [][]string {
	t.Helper()
	cmd := exec.Command(b.bin)
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("crosscheck: %v\n%s", err, stderr.Bytes())
	}
	var steps [][]string
	var cur []string
	var written []byte
	flush := func() {
		for len(written) > 0 {
			i := bytes.IndexByte(written, '\n')
			if i < 0 {
				cur = append(cur, "partial "+string(written))
				written = nil
				break
			}
			cur = append(cur, "> "+string(written[:i]))
			written = written[i+1:]
		}
	}
	for _, l := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
		switch {
		case strings.HasPrefix(l, "w "):
			p, err := hex.DecodeString(l[2:])
			if err != nil {
				t.Fatalf("crosscheck wrote %q", l)
			}
			written = append(written, p...)
		case l == ".":
			flush()
			steps = append(steps, cur)
			cur = nil
		default:
			flush()
			cur = append(cur, l)
		}
	}
	if len(steps) != len(cmds) {
		t.Fatalf("crosscheck answered %d of %d commands:\n%s", len(steps), len(cmds), out)
	}
	return steps
}

func hx(b []byte) string {
	if len(b) == 0 {
		return "-"
	}
	return hex.EncodeToString(b)
}

func feed(b []byte) string { return "feed " + hx(b) }

func pub(p line.Publish) string {
	return fmt.Sprintf("pub %d %d %s %s", p.QoS, b2i(p.Retain), hx([]byte(p.Topic)), hx(p.Payload))
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// fr is how run shows a frame the library wrote.
func fr(frame []byte) string { return "> " + strings.TrimSuffix(string(frame), "\n") }

func msgEvent(p line.Publish) string {
	return fmt.Sprintf("msg %s %s %d", hx([]byte(p.Topic)), hx(p.Payload), b2i(p.Retain))
}

func ack(id uint16) string { return fr(line.Append(nil, "ACK", fmt.Sprint(id))) }

func expect(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n got  %q\n want %q", what, got, want)
	}
}

// parse parses an event "> <frame>" with line.Parse.
func parse(t *testing.T, ev string) line.Frame {
	t.Helper()
	l, ok := strings.CutPrefix(ev, "> ")
	if !ok {
		t.Fatalf("%q is not a frame the library wrote", ev)
	}
	f, err := line.Parse([]byte(l))
	if err != nil {
		t.Fatalf("line.Parse(%q): %v", l, err)
	}
	return f
}

func (b board) testCRC(t *testing.T) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	inputs := [][]byte{
		[]byte("123456789"), nil, []byte("R"), []byte("RPING"), all,
		[]byte("RPUB,17,1,0,kitchen/temp,t,21.5"), bytes.Repeat([]byte{0xFF}, 1000),
	}
	var cmds []string
	for _, in := range inputs {
		cmds = append(cmds, "crc "+hx(in))
	}
	steps := b.run(t, cmds...)
	expect(t, "crc 123456789", steps[0], "crc 29B1")
	for i, in := range inputs {
		expect(t, fmt.Sprintf("crc %q", in), steps[i], fmt.Sprintf("crc %04X", line.CRC16(in)))
	}
}

func (b board) testPub(t *testing.T) {
	bin := make([]byte, 256)
	for i := range bin {
		bin[i] = byte(255 - i)
	}
	tests := []line.Publish{
		{ID: 1, QoS: 1, Topic: "temp", Payload: []byte("21.5")},
		{ID: 65535, QoS: 1, Retain: true, Topic: "a,b*c%d/\r\n/température", Payload: []byte("x,y*z%\r\n\x7f\xff é")},
		{ID: 0, QoS: 0, Retain: true, Topic: "status", Payload: nil},
		{ID: 40000, QoS: 1, Topic: "bin", Payload: bin},
		{ID: 7, QoS: 0, Topic: "q0", Payload: []byte{0, 1, 2}},
		// Where the gateway switches from t to b: a tie is text.
		{ID: 2, QoS: 1, Topic: "tie", Payload: []byte("abcde,")},
		{ID: 3, QoS: 1, Topic: "over", Payload: []byte("abcd,,")},
		{ID: 4, QoS: 1, Topic: "long", Payload: bytes.Repeat([]byte("0123456789"), 95)},
	}
	for _, p := range tests {
		next := max(p.ID, 1)
		steps := b.run(t, "log 0", fmt.Sprintf("nextid %d", next), pub(p))
		want := p
		if p.QoS == 0 {
			want.ID = 0 // the id is not sent for QoS 0
		}
		frame := want.Append(nil, "PUB")
		expect(t, fmt.Sprintf("publish %q", p.Topic), steps[2], fr(frame), fmt.Sprintf("ok %d", want.ID))
		if len(steps[2]) != 2 {
			continue
		}
		got, err := line.ParsePublish(parse(t, steps[2][0]))
		if err != nil {
			t.Errorf("ParsePublish(%q): %v", steps[2][0], err)
			continue
		}
		if got.ID != want.ID || got.QoS != want.QoS || got.Retain != want.Retain || got.Topic != want.Topic || !bytes.Equal(got.Payload, want.Payload) {
			t.Errorf("PUB %q decodes to %+v, want %+v", steps[2][0], got, want)
		}
	}

	// The text variant sends what publish sends.
	steps := b.run(t, "log 0", "pubtext 1 1 "+hx([]byte("t/x"))+" "+hx([]byte("on, off")))
	p := line.Publish{ID: 1, QoS: 1, Retain: true, Topic: "t/x", Payload: []byte("on, off")}
	expect(t, "publishText", steps[1], fr(p.Append(nil, "PUB")), "ok 1")
}

func (b board) testPubLimits(t *testing.T) {
	// 1024 bytes without "\n" fit; one more does not, and nothing is sent.
	// "$RPUB,1,1,0,x,t," is 16 bytes and "*XXXX" 5.
	fits := line.Publish{ID: 1, QoS: 1, Topic: "x", Payload: bytes.Repeat([]byte("a"), 1024-21)}
	over := fits
	over.Payload = bytes.Repeat([]byte("a"), 1024-20)
	gw := line.Hello{Name: "p", MaxLine: 100}.Append(nil, false)
	steps := b.run(t, "log 0", pub(fits), pub(over), "pending",
		// The gateway's max line, once known, limits what is sent too.
		feed(gw), pub(line.Publish{QoS: 0, Topic: "x", Payload: bytes.Repeat([]byte("a"), 80)}),
		pub(line.Publish{QoS: 0, Topic: "x", Payload: bytes.Repeat([]byte("a"), 79)}))
	frame := fits.Append(nil, "PUB")
	if len(frame) != 1025 {
		t.Fatalf("test frame is %d bytes", len(frame))
	}
	expect(t, "publish of a 1024-byte frame", steps[1], fr(frame), "ok 1")
	expect(t, "publish of a 1025-byte frame", steps[2], "fail")
	expect(t, "pending", steps[3], "pending 1")
	expect(t, "publish over the gateway's max line", steps[5], "fail")
	want := line.Publish{QoS: 0, Topic: "x", Payload: bytes.Repeat([]byte("a"), 79)}.Append(nil, "PUB")
	if len(want) != 101 {
		t.Fatalf("test frame is %d bytes", len(want))
	}
	expect(t, "publish at the gateway's max line", steps[6], fr(want), "ok 0")
}

func (b board) testIDs(t *testing.T) {
	q1 := line.Publish{QoS: 1, Topic: "t", Payload: []byte("v")}
	steps := b.run(t, "log 0", "nextid 65535", pub(q1), pub(q1), "nextid 65535", pub(q1))
	// Ids wrap to 1, skipping 0 and the ids still waiting for an ACK.
	for i, id := range map[int]uint16{2: 65535, 3: 1, 5: 2} {
		want := q1
		want.ID = id
		expect(t, fmt.Sprintf("publish %d", i-1), steps[i], fr(want.Append(nil, "PUB")), fmt.Sprintf("ok %d", id))
	}
}

func (b board) testMsg(t *testing.T) {
	bin := []byte{0, 1, 2, 0xFE, 0xFF, 0, '\n', 0x80, 0x7F}
	tests := []line.Publish{
		{ID: 7, QoS: 1, Topic: "cmd/led", Payload: []byte("on")},
		{ID: 8, QoS: 1, Topic: "bin", Payload: bin},
		{ID: 9, QoS: 1, Retain: true, Topic: "a,b*c%d/é/\x7f", Payload: []byte("x,y*z%\r\n")},
		{ID: 0, QoS: 0, Topic: "q0", Payload: []byte("zero")},
		{ID: 0, QoS: 0, Retain: true, Topic: "/absolute/empty", Payload: nil},
		{ID: 65535, QoS: 1, Topic: "max", Payload: bytes.Repeat([]byte("0123456789,"), 50)},
		{ID: 1, QoS: 1, Topic: "empty", Payload: []byte{}},
	}
	base64Frames := 0
	for _, p := range tests {
		frame := p.Append(nil, "MSG")
		if bytes.Contains(frame, []byte(",b,")) {
			base64Frames++
		}
		steps := b.run(t, "log 0", feed(frame))
		want := []string{msgEvent(p)}
		if p.QoS == 1 {
			want = append(want, ack(p.ID))
		}
		expect(t, fmt.Sprintf("MSG %q", frame), steps[1], want...)
		if p.QoS == 1 && len(steps[1]) == 2 {
			f := parse(t, steps[1][1])
			if id, err := line.ParseID(f.Fields[0], false); f.Verb != "ACK" || len(f.Fields) != 1 || err != nil || id != p.ID {
				t.Errorf("ACK %q: verb %q fields %q, want ACK,%d", steps[1][1], f.Verb, f.Fields, p.ID)
			}
		}
	}
	if base64Frames != 2 {
		t.Errorf("%d MSG frames were base64-encoded, want 2: the test no longer covers what it meant to", base64Frames)
	}
}

func (b board) testMsgResend(t *testing.T) {
	msg := func(id uint16) line.Publish {
		return line.Publish{ID: id, QoS: 1, Topic: "cmd/led", Payload: []byte(fmt.Sprint("on ", id))}
	}
	cmds := []string{"log 0", feed(msg(7).Append(nil, "MSG")), feed(msg(7).Append(nil, "MSG"))}
	// 31 more ids: with 7, the 32 the library remembers.
	for id := uint16(100); id <= 130; id++ {
		cmds = append(cmds, feed(msg(id).Append(nil, "MSG")))
	}
	cmds = append(cmds, feed(msg(7).Append(nil, "MSG")), feed(msg(131).Append(nil, "MSG")), feed(msg(7).Append(nil, "MSG")))
	steps := b.run(t, cmds...)
	expect(t, "first MSG 7", steps[1], msgEvent(msg(7)), ack(7))
	expect(t, "resent MSG 7", steps[2], ack(7))
	for i, id := 3, uint16(100); id <= 130; i, id = i+1, id+1 {
		expect(t, fmt.Sprint("MSG ", id), steps[i], msgEvent(msg(id)), ack(id))
	}
	n := len(steps)
	expect(t, "MSG 7 after 31 others", steps[n-3], ack(7))
	expect(t, "MSG 131", steps[n-2], msgEvent(msg(131)), ack(131))
	expect(t, "MSG 7 after 32 others", steps[n-1], msgEvent(msg(7)), ack(7))

	// A gateway HELLO may mean a restarted gateway whose ids begin again:
	// the library forgets the ids it acknowledged.
	hello := line.Hello{Name: "p", MaxLine: 4096}.Append(nil, false)
	steps = b.run(t, "log 0", feed(msg(7).Append(nil, "MSG")), feed(hello), feed(msg(7).Append(nil, "MSG")))
	expect(t, "MSG 7 after a gateway HELLO", steps[3], msgEvent(msg(7)), ack(7))
}

func (b board) testBadFrames(t *testing.T) {
	p := line.Publish{ID: 5, QoS: 1, Topic: "cmd/led", Payload: []byte("on")}
	good := p.Append(nil, "MSG")
	flipped := bytes.Clone(good)
	flipped[bytes.LastIndexByte(flipped, 'o')] = 'O'
	lower := bytes.ToLower(good[len(good)-5:])
	lowerCase := append(bytes.Clone(good[:len(good)-5]), lower...)
	if bytes.Equal(lowerCase, good) {
		t.Fatalf("frame %q has no letters in its CRC; pick another", good)
	}
	steps := b.run(t, "log 0",
		feed(badCRC(good)), feed(flipped),
		feed(line.Append(nil, "MSG", "6", "3", "0", "t", "t", "x")),          // QoS 3
		feed(line.Append(nil, "MSG", "6", "1", "0", "t\x01", "t", "x")),      // control byte
		feed(line.Append(nil, "MSG", "6", "1", "0", "t", "t", "x\x7f")),      // DEL
		feed(line.Append(nil, "MSG", "6", "1", "0", "t", "b", "eA=")),        // bad base64
		feed(line.Append(nil, "MSG", "6", "1", "0", "t%4", "t", "x")),        // truncated escape
		feed(line.Append(nil, "MSG", "06", "1", "0", "t", "t", "x")),         // leading zero
		feed(line.Append(nil, "MSG", "0", "1", "0", "t", "t", "x")),          // id 0 with QoS 1
		feed(line.Append(nil, "MSG", "65536", "1", "0", "t", "t", "x")),      // id too big
		feed(line.Append(nil, "MSG", "6", "1", "0", "t", "t")),               // a field short
		feed(line.Append(nil, "PUB", "6", "1", "0", "t", "t", "x")),          // not for boards
		feed(line.Append(nil, "MSG", "6", "1", "0", "t", "t", "x", "later")), // later fields ignored
		feed(lowerCase), "stats")
	for i := 1; i <= 12; i++ {
		expect(t, fmt.Sprintf("damaged frame %d", i), steps[i])
	}
	expect(t, "MSG with an extra field", steps[13], msgEvent(line.Publish{Topic: "t", Payload: []byte("x")}), ack(6))
	expect(t, "lower-case CRC", steps[14], msgEvent(p), ack(5))
	expect(t, "stats", steps[15], "stats crc=2 malformed=10 oversize=0 resent=0")
}

func (b board) testLines(t *testing.T) {
	ping := line.Append(nil, "PING")
	pong := fr(line.Append(nil, "PONG"))
	oversize := append([]byte("$R"), bytes.Repeat([]byte("A"), 1100)...)
	// A MSG exactly 1024 bytes long without its line ending, and one longer.
	at := line.Publish{ID: 3, QoS: 1, Topic: "x", Payload: bytes.Repeat([]byte("b"), 1024-21)}
	atFrame := at.Append(nil, "MSG")
	overFrame := line.Publish{ID: 4, QoS: 1, Topic: "x", Payload: bytes.Repeat([]byte("b"), 1024-20)}.Append(nil, "MSG")
	if len(atFrame) != 1025 || len(overFrame) != 1026 {
		t.Fatalf("test frames are %d and %d bytes", len(atFrame), len(overFrame))
	}
	crlf := withCRLF(atFrame)
	steps := b.run(t, "log 0",
		feed([]byte("I (312) boot: ESP-IDF v5.1 2nd stage bootloader\n")),
		feed(append([]byte("log: "), ping...)),
		feed(append(append(oversize, '\n'), ping...)),
		feed(ping[:3]), feed(ping[3:7]), feed(ping[7:]),
		feed(withCRLF(ping)),
		feed(atFrame), feed(overFrame), feed(crlf), "stats")
	expect(t, "log line", steps[1])
	expect(t, "frame after other text", steps[2])
	expect(t, "oversize line, then PING", steps[3], pong)
	expect(t, "PING, first bytes", steps[4])
	expect(t, "PING, more bytes", steps[5])
	expect(t, "PING, last bytes", steps[6], pong)
	expect(t, "PING with CRLF", steps[7], pong)
	expect(t, "1024-byte MSG", steps[8], msgEvent(at), ack(3))
	expect(t, "1025-byte MSG", steps[9])
	expect(t, "1024-byte MSG with CRLF", steps[10], ack(3)) // a resend now
	expect(t, "stats", steps[11], "stats crc=0 malformed=0 oversize=2 resent=0")
}

func withCRLF(frame []byte) []byte {
	return append(bytes.Clone(frame[:len(frame)-1]), '\r', '\n')
}

// badCRC returns frame with the last CRC digit changed to another hex digit.
func badCRC(frame []byte) []byte {
	bad := bytes.Clone(frame)
	if i := len(bad) - 2; bad[i] == '0' {
		bad[i] = '1'
	} else {
		bad[i] = '0'
	}
	return bad
}

func (b board) testPing(t *testing.T) {
	steps := b.run(t, "log 0", feed(line.Append(nil, "PING")), feed(line.Append(nil, "PONG")), feed(line.Append(nil, "PING", "later")))
	expect(t, "PING", steps[1], fr(line.Append(nil, "PONG")))
	expect(t, "PONG", steps[2])
	expect(t, "PING with a later field", steps[3], fr(line.Append(nil, "PONG")))
}

func (b board) testHello(t *testing.T) {
	gw := line.Hello{Name: "kitchen", MaxLine: 4096}.Append(nil, false)
	me := line.Hello{Version: 1, Name: "esp32-8c1f64", Firmware: "1.4,0", MaxLine: 1024}
	meFrame := fr(me.Append(nil, true))
	cmdLED, ab, nope := line.Subscribe{QoS: 1, Filter: "cmd/#"}, line.Subscribe{QoS: 0, Filter: "a,b/é"}, line.Subscribe{QoS: 1, Filter: "nope"}
	sub := func(s line.Subscribe) string { return fmt.Sprintf("sub %d %s", s.QoS, hx([]byte(s.Filter))) }
	unsubCmd := "unsub " + hx([]byte(cmdLED.Filter))
	script := []string{"log 0", sub(cmdLED), sub(ab), "begin esp32-8c1f64 1.4,0",
		feed(gw),  // 4: the answer: SUBs follow
		"session", // 5
		feed(gw),  // 6: not asked for: HELLO again, nothing else
		feed(gw),  // 7: the answer: SUBs again
		sub(nope), // 8: in a session: sent at once
		unsubCmd}  // 9
	steps := b.run(t, script...)
	expect(t, "subscribe", steps[1], "ok")
	expect(t, "subscribe", steps[2], "ok")
	expect(t, "begin", steps[3], meFrame)
	if len(steps[3]) == 1 {
		h, err := line.ParseHello(parse(t, steps[3][0]), true)
		if err != nil || h != me {
			t.Errorf("board HELLO %q parses to %+v, %v; want %+v", steps[3][0], h, err, me)
		}
	}
	// subs checks SUB or UNSUB frames against want, ids aside, and returns
	// their ids, which must be new.
	var seen []uint16
	subs := func(what string, evs []string, unsub bool, want ...line.Subscribe) []uint16 {
		t.Helper()
		if len(evs) != len(want) {
			t.Fatalf("%s: got %q, want %d frames", what, evs, len(want))
		}
		var ids []uint16
		for i, ev := range evs {
			w := want[i]
			f := parse(t, ev)
			s, err := line.ParseSubscribe(f, unsub)
			w.ID = s.ID
			if verb := map[bool]string{false: "SUB", true: "UNSUB"}[unsub]; err != nil || f.Verb != verb || s != w || s.ID == 0 || slices.Contains(seen, s.ID) {
				t.Errorf("%s: %q parses to %s %+v, %v; want %s %+v with a new id", what, ev, f.Verb, s, err, verb, w)
			}
			if ev != fr(w.Append(nil, unsub)) {
				t.Errorf("%s: wrote %q, Go writes %q", what, ev, fr(w.Append(nil, unsub)))
			}
			ids = append(ids, s.ID)
			seen = append(seen, s.ID)
		}
		return ids
	}
	subs("SUBs after the HELLO exchange", steps[4], false, cmdLED, ab)
	expect(t, "session", steps[5], "session 1 kitchen")
	expect(t, "unsolicited gateway HELLO", steps[6], meFrame)
	ids := subs("SUBs after the second HELLO exchange", steps[7], false, cmdLED, ab)
	if len(steps[8]) != 2 || steps[8][1] != "ok" {
		t.Fatalf("subscribe in a session: %q, want a SUB and ok", steps[8])
	}
	nopeID := subs("SUB in a session", steps[8][:1], false, nope)[0]
	if len(steps[9]) != 2 || steps[9][1] != "ok" {
		t.Fatalf("unsubscribe in a session: %q, want an UNSUB and ok", steps[9])
	}
	unsubID := subs("UNSUB", steps[9][:1], true, line.Subscribe{Filter: cmdLED.Filter})[0]

	// The ids are the same in a second run of the same script: answer
	// them. "nope" is refused and forgotten, the UNSUB is done, and after
	// the next exchange only "a,b/é" is subscribed again.
	steps = b.run(t, append(script,
		feed(line.Append(nil, "SUBACK", fmt.Sprint(ids[1]), "0")),
		feed(line.Append(nil, "NAK", fmt.Sprint(nopeID), "denied")),
		feed(line.Append(nil, "UNSUBACK", fmt.Sprint(unsubID))),
		feed(gw), feed(gw))...)
	n := len(script)
	expect(t, "SUBACK", steps[n])
	expect(t, "NAK of a SUB", steps[n+1], fmt.Sprintf("nak %d denied", nopeID))
	expect(t, "UNSUBACK", steps[n+2])
	expect(t, "unsolicited gateway HELLO", steps[n+3], meFrame)
	seen = nil
	subs("SUBs after UNSUB and NAK", steps[n+4], false, ab)
}

func (b board) testSlots(t *testing.T) {
	q1 := func(i int) line.Publish {
		return line.Publish{ID: uint16(i), QoS: 1, Topic: "t", Payload: []byte(fmt.Sprint(i))}
	}
	cmds := []string{"log 0"}
	for i := 1; i <= 9; i++ {
		cmds = append(cmds, pub(q1(i)))
	}
	cmds = append(cmds, "pending",
		feed(line.Append(nil, "NAK", "3", "full")), "pending", pub(q1(10)),
		feed(line.Append(nil, "ACK", "5")), feed(line.Append(nil, "ACK", "5")),
		feed(line.Append(nil, "NAK", "77", "denied")), "pending")
	steps := b.run(t, cmds...)
	for i := 1; i <= 8; i++ {
		expect(t, fmt.Sprint("publish ", i), steps[i], fr(q1(i).Append(nil, "PUB")), fmt.Sprint("ok ", i))
	}
	expect(t, "publish with all slots taken", steps[9], "fail")
	expect(t, "pending", steps[10], "pending 8")
	expect(t, "NAK", steps[11], "nak 3 full")
	expect(t, "pending after NAK", steps[12], "pending 7")
	want := q1(9) // id 9 was never used: the failed publish took no id
	want.Payload = []byte("10")
	expect(t, "publish after NAK", steps[13], fr(want.Append(nil, "PUB")), "ok 9")
	expect(t, "ACK", steps[14], "ack 5")
	expect(t, "second ACK", steps[15])
	expect(t, "NAK of an unknown id", steps[16])
	expect(t, "pending at the end", steps[17], "pending 7")
}

func (b board) testTimers(t *testing.T) {
	gw := line.Hello{Name: "kitchen", MaxLine: 4096}.Append(nil, false)
	p := line.Publish{ID: 1, QoS: 1, Topic: "temp", Payload: []byte("21.5")}
	frame := fr(p.Append(nil, "PUB"))
	ping := fr(line.Append(nil, "PING"))
	steps := b.run(t, "log 0", "begin b -", feed(gw), pub(p),
		"loop 1000",                                        // 4: the publish's clock starts
		"loop 2999", "loop 3000", "loop 4999", "loop 5000", // 5-8
		feed(line.Append(nil, "ACK", "1")),                                  // 9
		"loop 7000", "loop 14999", "loop 15000", "loop 24999", "loop 25000", // 10-14
		"stats")
	expect(t, "publish", steps[3], frame, "ok 1")
	want := map[int][]string{6: {frame}, 8: {frame}, 9: {"ack 1"}, 12: {ping}, 14: {ping}}
	for i := 4; i <= 14; i++ {
		expect(t, fmt.Sprintf("step %d", i), steps[i], want[i]...)
	}
	expect(t, "stats", steps[15], "stats crc=0 malformed=0 oversize=0 resent=2")

	// A boot value, when given, follows the max line.
	steps = b.run(t, "log 0", "begin b - 305419896")
	if h, err := line.ParseHello(parse(t, steps[1][0]), true); err != nil || h.Boot != "305419896" || h.MaxLine != 1024 {
		t.Errorf("HELLO with a boot: %+v, %v", h, err)
	}

	// Without an answer, HELLO is sent again every keepalive interval.
	hello := fr(line.Hello{Name: "b", MaxLine: 1024}.Append(nil, true))
	steps = b.run(t, "log 0", "begin b -", "loop 5000", "loop 14999", "loop 15000", feed(gw), "loop 24999", "loop 25000")
	expect(t, "begin", steps[1], hello)
	expect(t, "loop 14999", steps[3])
	expect(t, "loop 15000", steps[4], hello)
	expect(t, "answer", steps[5])
	expect(t, "loop 24999", steps[6])
	expect(t, "loop 25000", steps[7], ping)

	// A SUB is resent, with the same id, until SUBACK.
	sub := line.Subscribe{ID: 1, QoS: 1, Filter: "cmd/#"}
	steps = b.run(t, "log 0", "sub 1 "+hx([]byte(sub.Filter)), "nextid 1", "begin b -", feed(gw),
		"loop 100", "loop 2099", "loop 2100", feed(line.Append(nil, "SUBACK", "1", "1")), "loop 4100", "loop 6100")
	expect(t, "SUB", steps[4], fr(sub.Append(nil, false)))
	expect(t, "loop 2099", steps[6])
	expect(t, "loop 2100", steps[7], fr(sub.Append(nil, false)))
	expect(t, "SUBACK", steps[8])
	expect(t, "loop 4100", steps[9])
	expect(t, "loop 6100", steps[10])
}

func (b board) testShortWrite(t *testing.T) {
	p := line.Publish{ID: 1, QoS: 1, Topic: "temp", Payload: []byte("21.5")}
	steps := b.run(t, "log 0", "limit 5", pub(p), "limit -1", "loop 0", "loop 2000")
	// The half frame is ended by a "\n" before the resend, so that it cannot
	// swallow the next frame.
	expect(t, "short write", steps[2], "partial $RPUB", "ok 1")
	expect(t, "resend", steps[5], "> ", fr(p.Append(nil, "PUB")))
}

func (b board) testLog(t *testing.T) {
	bad := badCRC(line.Append(nil, "PING"))
	// The port name is decoded; the log line shows it printable.
	gw := line.Hello{Name: "kit\nchen", MaxLine: 4096}.Append(nil, false)
	steps := b.run(t, feed(bad), feed(line.Append(nil, "NAK", "1", "denied")), "pub 1 0 74 -",
		feed(line.Append(nil, "NAK", "1", "denied")), "begin b -", feed(gw), "log 0", feed(bad))
	expect(t, "bad CRC", steps[0], "> ralph: dropped a frame with a bad CRC")
	expect(t, "NAK of an unknown id", steps[1])
	expect(t, "NAK", steps[3], "> ralph: gateway refused id 1: denied", "nak 1 denied")
	expect(t, "session", steps[5], "> ralph: session up on port kit?chen")
	expect(t, "log off", steps[7])
}
