package main

import (
	"encoding/binary"
)

// Payload layout (big-endian). Every message ralph-bench publishes starts
// with a 16-byte header and is padded with zeros up to -size:
//
//	[0:4)   publisher index
//	[4:8)   sequence number within that publisher, assigned in wire order
//	[8:16)  send time, Unix nanoseconds, taken just before the PUBLISH is written
const headerLen = 16

// encodeHeader writes the header into b, which must be at least headerLen long.
func encodeHeader(b []byte, pub, seq uint32, sentUnixNano int64) {
	_ = b[headerLen-1]
	binary.BigEndian.PutUint32(b[0:4], pub)
	binary.BigEndian.PutUint32(b[4:8], seq)
	binary.BigEndian.PutUint64(b[8:16], uint64(sentUnixNano))
}

// decodeHeader reads the header from b. ok is false if b is too short to hold one.
func decodeHeader(b []byte) (pub, seq uint32, sentUnixNano int64, ok bool) {
	if len(b) < headerLen {
		return 0, 0, 0, false
	}
	pub = binary.BigEndian.Uint32(b[0:4])
	seq = binary.BigEndian.Uint32(b[4:8])
	sentUnixNano = int64(binary.BigEndian.Uint64(b[8:16]))
	return pub, seq, sentUnixNano, true
}

// readVBI decodes an MQTT variable byte integer from the start of b. It
// returns the value and the number of bytes used; n is 0 if b ends before the
// integer does and -1 if the integer is longer than the 4 bytes MQTT allows.
func readVBI(b []byte) (val, n int) {
	mult := 1
	for i := 0; i < 4; i++ {
		if i >= len(b) {
			return 0, 0
		}
		val += int(b[i]&0x7f) * mult
		if b[i]&0x80 == 0 {
			return val, i + 1
		}
		mult *= 128
	}
	return 0, -1
}

// packetLen returns the total length (fixed header included) of the MQTT
// control packet that starts at b[0]. It returns 0 if b does not yet hold the
// whole fixed header, and -1 if the fixed header is malformed.
func packetLen(b []byte) int {
	if len(b) < 2 {
		return 0
	}
	rem, n := readVBI(b[1:])
	if n <= 0 {
		return n
	}
	return 1 + n + rem
}

// publishPayload returns the payload of pkt, a complete MQTT v5 PUBLISH
// packet (fixed header included), as a sub-slice of pkt so it can be edited in
// place. It returns nil if pkt is not a well-formed PUBLISH.
func publishPayload(pkt []byte) []byte {
	if len(pkt) < 2 || pkt[0]>>4 != 3 {
		return nil
	}
	qos := (pkt[0] >> 1) & 3
	rem, n := readVBI(pkt[1:])
	if n <= 0 || 1+n+rem != len(pkt) {
		return nil
	}
	pos := 1 + n
	if pos+2 > len(pkt) {
		return nil
	}
	pos += 2 + int(binary.BigEndian.Uint16(pkt[pos:])) // topic name
	if qos > 0 {
		pos += 2 // packet identifier
	}
	if pos > len(pkt) {
		return nil
	}
	propLen, n := readVBI(pkt[pos:])
	if n <= 0 {
		return nil
	}
	pos += n + propLen
	if pos > len(pkt) {
		return nil
	}
	return pkt[pos:]
}
