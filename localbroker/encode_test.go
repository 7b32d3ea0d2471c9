package localbroker

import (
	"bytes"
	"strings"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// mochiPublish is mochi's encoding of pk, as its client writer does it.
func mochiPublish(t testing.TB, pk packets.Packet) []byte {
	t.Helper()
	pk.Mods.AllowResponseInfo = true // as WritePacket sets it for a PUBLISH
	var buf bytes.Buffer
	if err := pk.PublishEncode(&buf); err != nil {
		t.Fatalf("mochi cannot encode %+v: %v", pk, err)
	}
	return buf.Bytes()
}

func TestAppendPublishIsMochis(t *testing.T) {
	all := packets.Properties{
		PayloadFormat: 1, PayloadFormatFlag: true,
		MessageExpiryInterval:  3600,
		ContentType:            "application/json",
		ResponseTopic:          "reply/here",
		CorrelationData:        []byte{0, 1, 2},
		SubscriptionIdentifier: []int{1, 200, 70000},
		TopicAlias:             7, TopicAliasFlag: true,
		User: []packets.UserProperty{{Key: "k", Val: "v"}, {Key: "", Val: "empty key"}},
	}
	tests := []struct {
		name string
		pk   packets.Packet
	}{
		{"3.1.1 QoS 0", packets.Packet{TopicName: "a/b", Payload: []byte("21.5")}},
		{"3.1 QoS 0", packets.Packet{ProtocolVersion: 3, TopicName: "a/b", Payload: []byte("x")}},
		{"3.1.1 QoS 1 retain dup", packets.Packet{FixedHeader: packets.FixedHeader{Qos: 1, Retain: true, Dup: true}, PacketID: 513, TopicName: "t", Payload: []byte("p")}},
		{"3.1.1 ignores properties", packets.Packet{ProtocolVersion: 4, TopicName: "t", Properties: all}},
		{"5 no properties", packets.Packet{ProtocolVersion: 5, TopicName: "sensors/kitchen/temp", Payload: []byte("21.5")}},
		{"5 empty payload", packets.Packet{ProtocolVersion: 5, TopicName: "t"}},
		{"5 every property", packets.Packet{ProtocolVersion: 5, FixedHeader: packets.FixedHeader{Qos: 2}, PacketID: 9, TopicName: "t", Payload: []byte("p"), Properties: all}},
		{"5 alias instead of topic", packets.Packet{ProtocolVersion: 5, Payload: []byte("p"), Properties: packets.Properties{TopicAlias: 3, TopicAliasFlag: true}}},
		{"5 alias without flag", packets.Packet{ProtocolVersion: 5, TopicName: "t", Properties: packets.Properties{TopicAlias: 3}}},
		{"5 payload format 0 with flag", packets.Packet{ProtocolVersion: 5, TopicName: "t", Properties: packets.Properties{PayloadFormatFlag: true}}},
		{"5 response topic with wildcard", packets.Packet{ProtocolVersion: 5, TopicName: "t", Properties: packets.Properties{ResponseTopic: "r/+"}}},
		{"5 zero subscription identifier", packets.Packet{ProtocolVersion: 5, TopicName: "t", Properties: packets.Properties{SubscriptionIdentifier: []int{0, 5}}}},
		{"5 long remaining length", packets.Packet{ProtocolVersion: 5, TopicName: strings.Repeat("t", 300), Payload: bytes.Repeat([]byte("p"), 20000)}},
		{"5 long properties", packets.Packet{ProtocolVersion: 5, TopicName: "t", Properties: packets.Properties{User: []packets.UserProperty{{Key: "k", Val: strings.Repeat("v", 200)}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pk := tt.pk
			pk.FixedHeader.Type = packets.Publish
			want := mochiPublish(t, pk)
			if got := appendPublish(nil, &pk); !bytes.Equal(got, want) {
				t.Fatalf("appendPublish\n got % x\nwant % x", got, want)
			}
			// Appending keeps what is there.
			if got := appendPublish([]byte{0xee}, &pk); !bytes.Equal(got[1:], want) || got[0] != 0xee {
				t.Fatalf("appendPublish after a byte\n got % x", got)
			}
		})
	}
}

// FuzzAppendPublish holds appendPublish to mochi's encoder for any
// PUBLISH mochi decodes.
func FuzzAppendPublish(f *testing.F) {
	for _, v := range []byte{4, 5} {
		pk := packets.Packet{ProtocolVersion: v, FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 1, TopicName: "a/b", Payload: []byte("x"),
			Properties: packets.Properties{ContentType: "c", User: []packets.UserProperty{{Key: "k", Val: "v"}}, SubscriptionIdentifier: []int{3}}}
		f.Add(v, mochiPublish(f, pk))
	}
	f.Fuzz(func(t *testing.T, version byte, raw []byte) {
		if version != 4 && version != 5 || len(raw) < 2 {
			return
		}
		var fh packets.FixedHeader
		if fh.Decode(raw[0]) != nil || fh.Type != packets.Publish {
			return
		}
		body := raw[1:]
		n, used, err := packets.DecodeLength(bytes.NewReader(body))
		if err != nil || len(body) != used+n {
			return
		}
		pk := packets.Packet{FixedHeader: fh, ProtocolVersion: version}
		pk.FixedHeader.Remaining = n
		if pk.PublishDecode(body[used:]) != nil || (fh.Qos > 0 && pk.PacketID == 0) {
			return
		}
		want := mochiPublish(t, pk)
		if got := appendPublish(nil, &pk); !bytes.Equal(got, want) {
			t.Fatalf("appendPublish of %+v\n got % x\nwant % x", pk, got, want)
		}
	})
}
