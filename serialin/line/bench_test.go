package line

import (
	"bytes"
	"strings"
	"testing"
)

// The hot path of a serial port: a 64-byte text publish, parsed and
// decoded, and a MSG built.
func BenchmarkParsePublish(b *testing.B) {
	frame := bytes.TrimSuffix(Publish{ID: 1234, QoS: 1, Topic: "temp", Payload: []byte(strings.Repeat("x", 64))}.Append(nil, "PUB"), []byte("\n"))
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		f, err := Parse(frame)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ParsePublish(f); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendMsg(b *testing.B) {
	p := Publish{ID: 1234, QoS: 1, Topic: "cmd/led", Payload: []byte(strings.Repeat("x", 64))}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = p.Append(buf[:0], "MSG")
	}
}
