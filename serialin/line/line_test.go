package line

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestCRC16CheckValue(t *testing.T) {
	if got := CRC16([]byte("123456789")); got != 0x29B1 {
		t.Fatalf("CRC16(123456789) = %04X, want 29B1", got)
	}
}

func TestAppendMatchesSpecExample(t *testing.T) {
	// The example frame of the recommended protocol.
	got := string(Append(nil, "PUB", "17", "1", "0", "kitchen/temp", "t", "21.5"))
	if want := "$RPUB,17,1,0,kitchen/temp,t,21.5*57BA\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		line   string
		verb   string
		fields []string
		err    error
	}{
		{"$RPUB,17,1,0,kitchen/temp,t,21.5*57BA", "PUB", []string{"17", "1", "0", "kitchen/temp", "t", "21.5"}, nil},
		{"$RPUB,17,1,0,kitchen/temp,t,21.5*57ba", "PUB", []string{"17", "1", "0", "kitchen/temp", "t", "21.5"}, nil},
		{"$RPUB,17,1,0,kitchen/temp,t,21.6*57BA", "", nil, ErrChecksum},
		{"$RPUB,17,1,0,kitchen/temp,t,21.5", "", nil, ErrMalformed},
		{"$RPUB,17,1,0,kitchen/temp,t,21.5*57B", "", nil, ErrMalformed},
		{"$RPUB,17,1,0,kitchen/temp,t,21.5*57BX", "", nil, ErrMalformed},
		{"I (312) boot: ESP-IDF v5.1", "", nil, ErrNotFrame},
		{"", "", nil, ErrNotFrame},
		{"$GPGGA,123519,4807.038,N*47", "", nil, ErrNotFrame},
		{string(Append(nil, "PING"))[:len(Append(nil, "PING"))-1], "PING", nil, nil},
		{string(Append(nil, "ACK", "5"))[:len(Append(nil, "ACK", "5"))-1], "ACK", []string{"5"}, nil},
		{strings.TrimSuffix(string(Append(nil, "", "5")), "\n"), "", nil, ErrMalformed},
		{strings.TrimSuffix(string(Append(nil, "PUB", "1", "0", "0", "t\xff", "t", "")), "\n"), "", nil, ErrMalformed},
	}
	for _, tt := range tests {
		f, err := Parse([]byte(tt.line))
		if tt.err != nil {
			if !errors.Is(err, tt.err) {
				t.Errorf("Parse(%q) error = %v, want %v", tt.line, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.line, err)
			continue
		}
		if f.Verb != tt.verb || strings.Join(f.Fields, "|") != strings.Join(tt.fields, "|") || len(f.Fields) != len(tt.fields) {
			t.Errorf("Parse(%q) = %q %q, want %q %q", tt.line, f.Verb, f.Fields, tt.verb, tt.fields)
		}
	}
}

func TestPublishRoundTrip(t *testing.T) {
	bin := make([]byte, 256)
	for i := range bin {
		bin[i] = byte(i)
	}
	tests := []Publish{
		{ID: 1, QoS: 1, Topic: "temp", Payload: []byte("21.5")},
		{ID: 65535, QoS: 1, Retain: true, Topic: "a,b*c%d/é", Payload: []byte("x,y*z%\r\n")},
		{ID: 0, QoS: 0, Topic: "empty", Payload: nil},
		{ID: 9, QoS: 1, Topic: "bin", Payload: bin},
	}
	for _, p := range tests {
		frame := p.Append(nil, "MSG")
		if bytes.Count(frame, []byte("\n")) != 1 || frame[len(frame)-1] != '\n' {
			t.Fatalf("frame %q is not one line", frame)
		}
		f, err := Parse(frame[:len(frame)-1])
		if err != nil {
			t.Fatalf("Parse(%q): %v", frame, err)
		}
		got, err := ParsePublish(f)
		if err != nil {
			t.Fatalf("ParsePublish(%q): %v", frame, err)
		}
		if got.ID != p.ID || got.QoS != p.QoS || got.Retain != p.Retain || got.Topic != p.Topic || !bytes.Equal(got.Payload, p.Payload) {
			t.Errorf("round trip of %+v gave %+v (frame %q)", p, got, frame)
		}
	}
	if f := (Publish{ID: 9, QoS: 1, Topic: "bin", Payload: bin}).Append(nil, "MSG"); !bytes.Contains(f, []byte(",b,")) {
		t.Errorf("binary payload not sent as base64: %q", f)
	}
}

func TestParsePublishErrorsKeepID(t *testing.T) {
	tests := []struct {
		fields []string
		id     uint16
	}{
		{[]string{"7", "3", "0", "t", "t", "x"}, 7},
		{[]string{"7", "1", "2", "t", "t", "x"}, 7},
		{[]string{"7", "1", "0", "%zz", "t", "x"}, 7},
		{[]string{"7", "1", "0", "t", "q", "x"}, 7},
		{[]string{"7", "1", "0", "t", "b", "!!"}, 7},
		{[]string{"07", "1", "0", "t", "t", "x"}, 0},
		{[]string{"65536", "1", "0", "t", "t", "x"}, 0},
		{[]string{"7", "1", "0", "t", "t"}, 0},
	}
	for _, tt := range tests {
		p, err := ParsePublish(Frame{Verb: "PUB", Fields: tt.fields})
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("ParsePublish(%q) error = %v, want malformed", tt.fields, err)
		}
		if p.ID != tt.id {
			t.Errorf("ParsePublish(%q) id = %d, want %d", tt.fields, p.ID, tt.id)
		}
	}
}

func TestHelloAndSubscribe(t *testing.T) {
	h := Hello{Name: "esp32-8c1f64", Firmware: "1.4,0", MaxLine: 1024, Boot: "5f3a"}
	f, err := Parse(bytes.TrimSuffix(h.Append(nil, true), []byte("\n")))
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseHello(f, true)
	if err != nil || got != (Hello{Version: 1, Name: "esp32-8c1f64", Firmware: "1.4,0", MaxLine: 1024, Boot: "5f3a"}) {
		t.Fatalf("board hello: %+v, %v", got, err)
	}
	gw := Hello{Name: "kitchen", MaxLine: 4096}
	if s := string(gw.Append(nil, false)); !strings.HasPrefix(s, "$RHELLO,1,kitchen,4096*") {
		t.Fatalf("gateway hello %q", s)
	}
	s := Subscribe{ID: 3, QoS: 1, Filter: "cmd/#"}
	f, _ = Parse(bytes.TrimSuffix(s.Append(nil, false), []byte("\n")))
	if gs, err := ParseSubscribe(f, false); err != nil || gs != s {
		t.Fatalf("SUB round trip: %+v, %v", gs, err)
	}
	f, _ = Parse(bytes.TrimSuffix(s.Append(nil, true), []byte("\n")))
	if gs, err := ParseSubscribe(f, true); err != nil || gs.ID != 3 || gs.Filter != "cmd/#" {
		t.Fatalf("UNSUB round trip: %+v, %v", gs, err)
	}
}

func TestReader(t *testing.T) {
	in := "boot noise\r\n" + strings.Repeat("x", 20) + "\n" + "$RPING*1234\n" + "tail without newline"
	r := NewReader(strings.NewReader(in), 16)
	want := []struct {
		line string
		err  error
	}{
		{"boot noise", nil},
		{"", ErrTooLong},
		{"$RPING*1234", nil},
	}
	for i, w := range want {
		l, err := r.ReadLine()
		if !errors.Is(err, w.err) || (err == nil && string(l) != w.line) {
			t.Fatalf("line %d: %q, %v; want %q, %v", i, l, err, w.line, w.err)
		}
	}
	if _, err := r.ReadLine(); err == nil {
		t.Fatal("a partial line at EOF was returned")
	}
}

func TestReaderLongLineAcrossBuffers(t *testing.T) {
	// A line longer than bufio's buffer must be skipped, not grown into.
	long := strings.Repeat("y", 200000)
	r := NewReader(strings.NewReader(long+"\nok\n"), 4096)
	if _, err := r.ReadLine(); !errors.Is(err, ErrTooLong) {
		t.Fatalf("long line: %v", err)
	}
	if l, err := r.ReadLine(); err != nil || string(l) != "ok" {
		t.Fatalf("after long line: %q, %v", l, err)
	}
	if cap(r.buf) > 4096+2+64<<10 {
		t.Fatalf("buffer grew to %d", cap(r.buf))
	}
}
