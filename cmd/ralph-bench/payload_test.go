package main

import (
	"bytes"
	"math"
	"net"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/packets"
)

func TestHeaderRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		size int
		pub  uint32
		seq  uint32
		sent int64
	}{
		{"zero", 16, 0, 0, 0},
		{"typical", 64, 3, 19999, 1_750_000_000_123_456_789},
		{"max values", 16, math.MaxUint32, math.MaxUint32, math.MaxInt64},
		{"negative time", 32, 1, 2, -5},
		{"large payload", 1 << 16, 9, 7, 42},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := make([]byte, tt.size)
			encodeHeader(b, tt.pub, tt.seq, tt.sent)
			pub, seq, sent, ok := decodeHeader(b)
			if !ok || pub != tt.pub || seq != tt.seq || sent != tt.sent {
				t.Errorf("decodeHeader = %d, %d, %d, %v; want %d, %d, %d, true", pub, seq, sent, ok, tt.pub, tt.seq, tt.sent)
			}
			if !bytes.Equal(b[headerLen:], make([]byte, tt.size-headerLen)) {
				t.Error("encodeHeader wrote past the header")
			}
		})
	}
}

func TestDecodeHeaderShort(t *testing.T) {
	for _, n := range []int{0, 1, 8, 15} {
		if _, _, _, ok := decodeHeader(make([]byte, n)); ok {
			t.Errorf("decodeHeader(%d bytes) ok, want not ok", n)
		}
	}
}

func TestReadVBI(t *testing.T) {
	tests := []struct {
		in      []byte
		val, n  int
		comment string
	}{
		{[]byte{0x00}, 0, 1, "zero"},
		{[]byte{0x7f}, 127, 1, "largest 1-byte"},
		{[]byte{0x80, 0x01}, 128, 2, "smallest 2-byte"},
		{[]byte{0xff, 0xff, 0xff, 0x7f}, 268_435_455, 4, "largest"},
		{[]byte{0x80}, 0, 0, "truncated"},
		{nil, 0, 0, "empty"},
		{[]byte{0x80, 0x80, 0x80, 0x80, 0x01}, 0, -1, "too long"},
	}
	for _, tt := range tests {
		if val, n := readVBI(tt.in); val != tt.val || n != tt.n {
			t.Errorf("%s: readVBI(% x) = %d, %d; want %d, %d", tt.comment, tt.in, val, n, tt.val, tt.n)
		}
	}
}

// wire returns p as paho writes it.
func wire(t *testing.T, p *packets.Publish) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := p.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

var publishCases = []struct {
	name string
	pub  *packets.Publish
}{
	{"qos0", &packets.Publish{Topic: "bench/0", Payload: make([]byte, 16), Properties: &packets.Properties{}}},
	{"qos1", &packets.Publish{Topic: "bench/1", QoS: 1, PacketID: 7, Payload: make([]byte, 64), Properties: &packets.Properties{}}},
	{"qos2 with properties", &packets.Publish{Topic: "bench/2", QoS: 2, PacketID: 65535, Payload: make([]byte, 64),
		Properties: &packets.Properties{ContentType: "application/octet-stream", CorrelationData: []byte("abc")}}},
	{"long topic and payload", &packets.Publish{Topic: strings.Repeat("t", 300), QoS: 1, PacketID: 1,
		Payload: make([]byte, 70000), Properties: &packets.Properties{}}},
}

func TestPublishPayload(t *testing.T) {
	for _, tt := range publishCases {
		t.Run(tt.name, func(t *testing.T) {
			pkt := wire(t, tt.pub)
			if n := packetLen(pkt); n != len(pkt) {
				t.Fatalf("packetLen = %d, want %d", n, len(pkt))
			}
			for i := range 5 {
				if n := packetLen(pkt[:i]); i < 2 && n != 0 {
					t.Errorf("packetLen of %d bytes = %d, want 0", i, n)
				}
			}
			pl := publishPayload(pkt)
			if len(pl) != len(tt.pub.Payload) {
				t.Fatalf("payload length %d, want %d", len(pl), len(tt.pub.Payload))
			}
			if &pl[len(pl)-1] != &pkt[len(pkt)-1] {
				t.Error("payload is not a sub-slice at the end of the packet")
			}
			if publishPayload(pkt[:len(pkt)-1]) != nil {
				t.Error("truncated packet: want nil")
			}
		})
	}
	var b bytes.Buffer
	if _, err := packets.NewControlPacket(packets.PINGREQ).WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	if publishPayload(b.Bytes()) != nil {
		t.Error("PINGREQ: want nil payload")
	}
}

// recConn records what is written to it.
type recConn struct {
	net.Conn
	writes [][]byte
}

func (c *recConn) Write(p []byte) (int, error) {
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

// TestStampConn writes packets through stampConn the way paho does and
// checks that each goes out in one write, PUBLISHes stamped in order and
// everything else untouched.
func TestStampConn(t *testing.T) {
	rec := &recConn{}
	sc := newStampConn(rec, 5)
	var sent [][]byte
	for i, tt := range publishCases {
		if _, err := tt.pub.WriteTo(sc); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, wire(t, tt.pub))
		if i == 1 {
			if _, err := packets.NewControlPacket(packets.PINGREQ).WriteTo(sc); err != nil {
				t.Fatal(err)
			}
			sent = append(sent, []byte{0xc0, 0x00})
		}
	}
	if len(rec.writes) != len(sent) {
		t.Fatalf("%d writes, want one per packet (%d)", len(rec.writes), len(sent))
	}
	var wantSeq uint32
	for i, w := range rec.writes {
		if len(w) != len(sent[i]) {
			t.Fatalf("write %d: %d bytes, want %d", i, len(w), len(sent[i]))
		}
		cp, err := packets.ReadPacket(bytes.NewReader(w))
		if err != nil {
			t.Fatalf("write %d: not a valid packet: %v", i, err)
		}
		p, ok := cp.Content.(*packets.Publish)
		if !ok {
			if !bytes.Equal(w, sent[i]) {
				t.Errorf("write %d: non-PUBLISH packet modified", i)
			}
			continue
		}
		pub, seq, sentAt, ok := decodeHeader(p.Payload)
		if !ok || pub != 5 || seq != wantSeq || sentAt <= 0 {
			t.Errorf("write %d: header %d/%d/%d/%v, want publisher 5 seq %d and a send time", i, pub, seq, sentAt, ok, wantSeq)
		}
		if !bytes.Equal(w[:len(w)-len(p.Payload)], sent[i][:len(w)-len(p.Payload)]) {
			t.Errorf("write %d: bytes before the payload modified", i)
		}
		wantSeq++
	}
	if got := sc.published(); got != int64(wantSeq) {
		t.Errorf("published() = %d, want %d", got, wantSeq)
	}
}
