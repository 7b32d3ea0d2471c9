package line

import (
	"cmp"
	"fmt"
	"strconv"
)

// Publish is the content of a PUB (board to gateway) or MSG (gateway to
// board) frame.
type Publish struct {
	ID      uint16
	QoS     byte
	Retain  bool
	Topic   string
	Payload []byte
}

// Append appends p as a frame with the verb "PUB" or "MSG".
func (p Publish) Append(dst []byte, verb string) []byte {
	buf := make([]byte, 0, 16+len(p.Topic)+len(p.Payload)*2)
	buf = strconv.AppendUint(buf, uint64(p.ID), 10)
	buf = append(buf, ',', '0'+p.QoS, ',', '0')
	if p.Retain {
		buf[len(buf)-1] = '1'
	}
	buf = append(buf, ',')
	buf = AppendText(buf, []byte(p.Topic))
	buf = append(buf, ',')
	buf = AppendPayload(buf, p.Payload)
	return Append(dst, verb, string(buf))
}

// ParsePublish reads a PUB or MSG frame. When the error is about a field
// after the id, the returned Publish still carries the id, so that the
// sender can be told which message was refused.
func ParsePublish(f Frame) (Publish, error) {
	var p Publish
	if len(f.Fields) < 6 {
		return p, fmt.Errorf("%w: %s has %d fields, wants 6", ErrMalformed, f.Verb, len(f.Fields))
	}
	id, err := ParseID(f.Fields[0], true)
	if err != nil {
		return p, err
	}
	p.ID = id
	switch f.Fields[1] {
	case "0", "1", "2":
		p.QoS = f.Fields[1][0] - '0'
	default:
		return p, fmt.Errorf("%w: QoS %q", ErrMalformed, f.Fields[1])
	}
	switch f.Fields[2] {
	case "0":
	case "1":
		p.Retain = true
	default:
		return p, fmt.Errorf("%w: retain %q is neither 0 nor 1", ErrMalformed, f.Fields[2])
	}
	if p.Topic, err = DecodeTopic(f.Fields[3]); err != nil {
		return p, err
	}
	if p.Payload, err = DecodePayload(f.Fields[4], f.Fields[5]); err != nil {
		return p, err
	}
	return p, nil
}

// ParseID reads a message id field: 1–65535, or also 0 when zeroOK.
func ParseID(s string, zeroOK bool) (uint16, error) {
	if s == "" || s[0] == '+' || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("%w: id %q", ErrMalformed, s)
	}
	v, err := strconv.ParseUint(s, 10, 16)
	if err != nil || (v == 0 && !zeroOK) {
		return 0, fmt.Errorf("%w: id %q", ErrMalformed, s)
	}
	return uint16(v), nil
}

// Hello is the content of a HELLO frame: from a board, its id, firmware,
// receive buffer and boot; from the gateway, the port name and its max
// line.
type Hello struct {
	Version  int
	Name     string
	Firmware string
	MaxLine  int    // 0: not given
	Boot     string // board only: changes at every boot; "": not given
}

// Append appends h as a HELLO frame. The gateway's HELLO has no firmware
// field.
func (h Hello) Append(dst []byte, fromBoard bool) []byte {
	v := strconv.Itoa(cmp.Or(h.Version, Version))
	name := string(AppendText(nil, []byte(h.Name)))
	if !fromBoard {
		return Append(dst, "HELLO", v, name, strconv.Itoa(h.MaxLine))
	}
	fields := []string{v, name}
	if h.Firmware != "" || h.MaxLine > 0 {
		fields = append(fields, string(AppendText(nil, []byte(h.Firmware))))
	}
	if h.MaxLine > 0 || h.Boot != "" {
		fields = append(fields, strconv.Itoa(h.MaxLine))
	}
	if h.Boot != "" {
		fields = append(fields, string(AppendText(nil, []byte(h.Boot))))
	}
	return Append(dst, "HELLO", fields...)
}

// ParseHello reads a HELLO frame from a board (fromBoard) or the gateway.
func ParseHello(f Frame, fromBoard bool) (Hello, error) {
	var h Hello
	if len(f.Fields) < 2 {
		return h, fmt.Errorf("%w: HELLO has %d fields, wants at least 2", ErrMalformed, len(f.Fields))
	}
	v, err := strconv.Atoi(f.Fields[0])
	if err != nil || v < 1 {
		return h, fmt.Errorf("%w: HELLO version %q", ErrMalformed, f.Fields[0])
	}
	h.Version = v
	name, err := DecodeText(f.Fields[1])
	if err != nil {
		return h, err
	}
	h.Name = string(name)
	maxField := 2
	if fromBoard {
		if len(f.Fields) > 2 {
			fw, err := DecodeText(f.Fields[2])
			if err != nil {
				return h, err
			}
			h.Firmware = string(fw)
		}
		maxField = 3
	}
	if len(f.Fields) > maxField {
		n, err := strconv.Atoi(f.Fields[maxField])
		if err != nil || (n < 64 && n != 0) {
			return h, fmt.Errorf("%w: HELLO max line %q", ErrMalformed, f.Fields[maxField])
		}
		h.MaxLine = n
	}
	if fromBoard && len(f.Fields) > 4 {
		boot, err := DecodeText(f.Fields[4])
		if err != nil {
			return h, err
		}
		h.Boot = string(boot)
	}
	return h, nil
}

// Subscribe is the content of a SUB frame, or of an UNSUB frame (without
// QoS).
type Subscribe struct {
	ID     uint16
	QoS    byte
	Filter string
}

// ParseSubscribe reads a SUB frame, or an UNSUB frame when unsub is set.
func ParseSubscribe(f Frame, unsub bool) (Subscribe, error) {
	var s Subscribe
	want := 3
	if unsub {
		want = 2
	}
	if len(f.Fields) < want {
		return s, fmt.Errorf("%w: %s has %d fields, wants %d", ErrMalformed, f.Verb, len(f.Fields), want)
	}
	id, err := ParseID(f.Fields[0], false)
	if err != nil {
		return s, err
	}
	s.ID = id
	filter := f.Fields[1]
	if !unsub {
		switch f.Fields[1] {
		case "0", "1", "2":
			s.QoS = f.Fields[1][0] - '0'
		default:
			return s, fmt.Errorf("%w: QoS %q", ErrMalformed, f.Fields[1])
		}
		filter = f.Fields[2]
	}
	if s.Filter, err = DecodeTopic(filter); err != nil {
		return s, err
	}
	return s, nil
}

// Append appends s as a SUB frame, or an UNSUB frame when unsub is set.
func (s Subscribe) Append(dst []byte, unsub bool) []byte {
	id := strconv.Itoa(int(s.ID))
	filter := string(AppendText(nil, []byte(s.Filter)))
	if unsub {
		return Append(dst, "UNSUB", id, filter)
	}
	return Append(dst, "SUB", id, strconv.Itoa(int(s.QoS)), filter)
}
