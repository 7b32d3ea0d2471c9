package line

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary lines to the parser and to every verb's
// decoder: none may panic, and whatever parses must rebuild into a frame
// that parses the same.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"$RPUB,17,1,0,kitchen/temp,t,21.5*57BA",
		string(Publish{ID: 2, QoS: 1, Topic: "a%2Cb", Payload: []byte{0, 1, 2}}.Append(nil, "MSG")),
		string(Hello{Name: "esp32", Firmware: "1.0", MaxLine: 512}.Append(nil, true)),
		string(Subscribe{ID: 1, QoS: 1, Filter: "cmd/#"}.Append(nil, false)),
		"$RPING*0000", "$R*FFFF", "$R,,,*1D0F", "I (31) boot: noise", "$RPUB,1*",
	} {
		f.Add([]byte(strings.TrimSuffix(s, "\n")))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrNotFrame) && !errors.Is(err, ErrChecksum) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse(%q): unexpected error kind %v", b, err)
			}
			return
		}
		again, err := Parse(bytes.TrimSuffix(Append(nil, fr.Verb, fr.Fields...), []byte("\n")))
		if err != nil || again.Verb != fr.Verb || len(again.Fields) != len(fr.Fields) {
			t.Fatalf("rebuilt frame of %q does not parse the same: %+v, %v", b, again, err)
		}
		if p, err := ParsePublish(fr); err == nil {
			q, err := ParsePublish(mustParse(t, p.Append(nil, "PUB")))
			if err != nil || q.ID != p.ID || q.Topic != p.Topic || !bytes.Equal(q.Payload, p.Payload) {
				t.Fatalf("publish %+v does not round-trip: %+v, %v", p, q, err)
			}
		}
		ParseHello(fr, true)
		ParseHello(fr, false)
		ParseSubscribe(fr, false)
		ParseSubscribe(fr, true)
	})
}

func mustParse(t *testing.T, frame []byte) Frame {
	t.Helper()
	f, err := Parse(bytes.TrimSuffix(frame, []byte("\n")))
	if err != nil {
		t.Fatalf("Parse(%q): %v", frame, err)
	}
	return f
}

// FuzzDecoders checks the percent and base64 decoders against their
// encoders: any bytes survive a round trip, and garbage gives an error,
// never a panic.
func FuzzDecoders(f *testing.F) {
	for _, s := range []string{"", "21.5", "%2C%2a%25", "%", "%4", "%zz", "\xff\x00", "aGVsbG8=", "a,b*c"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		DecodeText(string(b))
		DecodeTopic(string(b))
		DecodePayload("b", string(b))
		enc := AppendPayload(nil, b)
		kind, field, _ := strings.Cut(string(enc), ",")
		got, err := DecodePayload(kind, field)
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("payload %q encoded as %q decodes to %q, %v", b, enc, got, err)
		}
		if bytes.ContainsAny(enc[2:], ",*\n\r") {
			t.Fatalf("encoded payload %q contains a delimiter", enc)
		}
	})
}

// FuzzReader checks that the line reader never returns a line over its
// limit or containing a newline.
func FuzzReader(f *testing.F) {
	f.Add([]byte("a\nbb\r\nccc"), 2)
	f.Add([]byte(strings.Repeat("z", 100)+"\n$RPING*0000\n"), 16)
	f.Fuzz(func(t *testing.T, b []byte, max int) {
		if max < 1 || max > 1<<16 {
			return
		}
		r := NewReader(bytes.NewReader(b), max)
		for {
			l, err := r.ReadLine()
			if errors.Is(err, ErrTooLong) {
				continue
			}
			if err != nil {
				return
			}
			if len(l) > max || bytes.IndexByte(l, '\n') >= 0 {
				t.Fatalf("line %q over %d or with a newline", l, max)
			}
		}
	})
}
