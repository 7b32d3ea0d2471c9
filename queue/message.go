package queue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Message is one stored publish: what a device sent, who sent it and when.
type Message struct {
	Seq     uint64 // assigned by Append; increases in append order
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	Origin  string    // client id, or serial port, that published it
	Arrived time.Time // when the gateway received it

	// MQTT 5 properties worth carrying upstream.
	ContentType     string
	ResponseTopic   string
	CorrelationData []byte
	PayloadFormat   byte   // 1 if the payload is declared UTF-8
	ExpiryInterval  uint32 // message expiry in seconds from Arrived; 0 means none
	UserProperties  []UserProperty
}

// UserProperty is an MQTT 5 user property.
type UserProperty struct {
	Key, Value string
}

// Expired reports whether the message's MQTT 5 expiry interval has passed at now.
func (m *Message) Expired(now time.Time) bool {
	return m.ExpiryInterval > 0 && now.Sub(m.Arrived) >= time.Duration(m.ExpiryInterval)*time.Second
}

// size estimates the encoded size, for batching limits.
func (m *Message) size() int {
	n := 32 + len(m.Topic) + len(m.Payload) + len(m.Origin) + len(m.ContentType) +
		len(m.ResponseTopic) + len(m.CorrelationData)
	for _, p := range m.UserProperties {
		n += 4 + len(p.Key) + len(p.Value)
	}
	return n
}

// Record format, version 1. Everything but the payload is length-prefixed so
// that the payload, the bulk of the record, needs no length and no copy:
//
//	version(1) flags(1) arrived-unix-nanos(uvarint)
//	topic origin content-type response-topic correlation-data (uvarint length + bytes each)
//	payload-format(1) expiry(uvarint) user-property-count(uvarint) {key value}...
//	payload (the rest)
//
// flags: bits 0-1 QoS, bit 2 retain.
const recordVersion = 1

var errCorrupt = errors.New("corrupt message record")

func encodeMessage(dst []byte, m *Message) []byte {
	flags := m.QoS & 3
	if m.Retain {
		flags |= 4
	}
	dst = append(dst, recordVersion, flags)
	dst = binary.AppendUvarint(dst, uint64(m.Arrived.UnixNano()))
	dst = appendBytes(dst, m.Topic)
	dst = appendBytes(dst, m.Origin)
	dst = appendBytes(dst, m.ContentType)
	dst = appendBytes(dst, m.ResponseTopic)
	dst = appendBytes(dst, m.CorrelationData)
	dst = append(dst, m.PayloadFormat)
	dst = binary.AppendUvarint(dst, uint64(m.ExpiryInterval))
	dst = binary.AppendUvarint(dst, uint64(len(m.UserProperties)))
	for _, p := range m.UserProperties {
		dst = appendBytes(dst, p.Key)
		dst = appendBytes(dst, p.Value)
	}
	return append(dst, m.Payload...)
}

func appendBytes[T string | []byte](dst []byte, s T) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// decodeMessage parses a record. The message does not alias b.
func decodeMessage(seq uint64, b []byte) (*Message, error) {
	d := decoder{b: b}
	if v := d.byte(); v != recordVersion {
		return nil, fmt.Errorf("%w: seq %d: version %d", errCorrupt, seq, v)
	}
	flags := d.byte()
	m := &Message{Seq: seq, QoS: flags & 3, Retain: flags&4 != 0}
	m.Arrived = time.Unix(0, int64(d.uvarint()))
	m.Topic = string(d.bytes())
	m.Origin = string(d.bytes())
	m.ContentType = string(d.bytes())
	m.ResponseTopic = string(d.bytes())
	if cd := d.bytes(); len(cd) > 0 {
		m.CorrelationData = append([]byte(nil), cd...)
	}
	m.PayloadFormat = d.byte()
	exp := d.uvarint()
	if exp > 1<<32-1 {
		d.err = true
	}
	m.ExpiryInterval = uint32(exp)
	n := d.uvarint()
	if n > uint64(len(d.b)) { // each property takes at least two bytes
		d.err = true
	}
	for i := uint64(0); i < n && !d.err; i++ {
		k, v := d.bytes(), d.bytes()
		m.UserProperties = append(m.UserProperties, UserProperty{string(k), string(v)})
	}
	if d.err || m.QoS > 2 {
		return nil, fmt.Errorf("%w: seq %d", errCorrupt, seq)
	}
	m.Payload = append([]byte(nil), d.b...)
	return m, nil
}

type decoder struct {
	b   []byte
	err bool
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.err = true
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = true
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.err = true
		return nil
	}
	s := d.b[:n]
	d.b = d.b[n:]
	return s
}
