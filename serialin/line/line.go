// Package line implements the framing of Ralph's serial line protocol
// (see ../PROTOCOL.md): the CRC, frame building and parsing, the
// percent and base64 field encodings, and a line reader with a bounded
// buffer. It knows nothing about ports or the broker.
package line

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Version is the protocol version this package speaks.
const Version = 1

// Errors from Parse. A line that is not a frame at all is the board's log
// output, not an error of the protocol.
var (
	ErrNotFrame  = errors.New("not a frame")
	ErrChecksum  = errors.New("bad checksum")
	ErrMalformed = errors.New("malformed frame")
)

// ErrTooLong is returned by Reader.ReadLine for a line over the limit; the
// line has been skipped.
var ErrTooLong = errors.New("line too long")

// CRC16 is CRC-16/CCITT-FALSE: polynomial 0x1021, initial value 0xFFFF,
// no reflection, no final XOR.
func CRC16(b []byte) uint16 {
	crc := uint16(0xFFFF)
	for _, c := range b {
		crc ^= uint16(c) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// Frame is a parsed frame: its verb and its fields, still encoded.
type Frame struct {
	Verb   string
	Fields []string
}

// Append appends the frame for verb and fields, which must already be
// encoded (see AppendText), with its CRC and "\n".
func Append(dst []byte, verb string, fields ...string) []byte {
	start := len(dst)
	dst = append(dst, "$R"...)
	dst = append(dst, verb...)
	for _, f := range fields {
		dst = append(dst, ',')
		dst = append(dst, f...)
	}
	crc := CRC16(dst[start+1:])
	return append(dst, '*', hexDigits[crc>>12], hexDigits[crc>>8&15], hexDigits[crc>>4&15], hexDigits[crc&15], '\n')
}

const hexDigits = "0123456789ABCDEF"

// Parse parses one line, without its line ending. It returns ErrNotFrame
// for a line that does not start with "$R" (log output), and errors
// wrapping ErrChecksum or ErrMalformed for a damaged frame.
func Parse(line []byte) (Frame, error) {
	if len(line) < 2 || line[0] != '$' || line[1] != 'R' {
		return Frame{}, ErrNotFrame
	}
	star := bytes.LastIndexByte(line, '*')
	if star < 0 || len(line)-star != 5 {
		return Frame{}, fmt.Errorf("%w: no *CRC at the end", ErrMalformed)
	}
	want, err := strconv.ParseUint(string(line[star+1:]), 16, 16)
	if err != nil {
		return Frame{}, fmt.Errorf("%w: CRC %q is not 4 hex digits", ErrMalformed, line[star+1:])
	}
	body := line[1:star]
	if got := CRC16(body); got != uint16(want) {
		return Frame{}, fmt.Errorf("%w: CRC is %04X, frame says %04X", ErrChecksum, got, want)
	}
	for _, c := range body {
		if c < 0x20 || c > 0x7E {
			return Frame{}, fmt.Errorf("%w: byte 0x%02X inside a frame", ErrMalformed, c)
		}
	}
	fields := strings.Split(string(body[1:]), ",")
	if fields[0] == "" {
		return Frame{}, fmt.Errorf("%w: no verb", ErrMalformed)
	}
	return Frame{Verb: fields[0], Fields: fields[1:]}, nil
}

// needsEscape reports whether c must be percent-encoded in a field.
func needsEscape(c byte) bool {
	return c < 0x20 || c > 0x7E || c == '%' || c == ',' || c == '*'
}

// AppendText appends p percent-encoded for a topic or text field.
func AppendText(dst, p []byte) []byte {
	for _, c := range p {
		if needsEscape(c) {
			dst = append(dst, '%', hexDigits[c>>4], hexDigits[c&15])
		} else {
			dst = append(dst, c)
		}
	}
	return dst
}

// DecodeText decodes a percent-encoded field.
func DecodeText(s string) ([]byte, error) {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			out = append(out, c)
			continue
		}
		if i+2 >= len(s) {
			return nil, fmt.Errorf("%w: truncated %%-escape", ErrMalformed)
		}
		v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return nil, fmt.Errorf("%w: bad %%-escape %q", ErrMalformed, s[i:i+3])
		}
		out = append(out, byte(v))
		i += 2
	}
	return out, nil
}

// DecodeTopic decodes a percent-encoded topic or filter, which must be
// valid UTF-8.
func DecodeTopic(s string) (string, error) {
	b, err := DecodeText(s)
	if err != nil {
		return "", err
	}
	if !utf8.Valid(b) {
		return "", fmt.Errorf("%w: topic is not UTF-8", ErrMalformed)
	}
	return string(b), nil
}

// AppendPayload appends a payload's encoding field and the payload field:
// text when it is mostly printable, base64 otherwise, whichever is
// shorter.
func AppendPayload(dst, p []byte) []byte {
	escaped := 0
	for _, c := range p {
		if needsEscape(c) {
			escaped++
		}
	}
	if len(p)+2*escaped <= base64.StdEncoding.EncodedLen(len(p)) {
		return AppendText(append(dst, "t,"...), p)
	}
	return base64.StdEncoding.AppendEncode(append(dst, "b,"...), p)
}

// DecodePayload decodes a payload given its encoding field.
func DecodePayload(enc, s string) ([]byte, error) {
	switch enc {
	case "t":
		return DecodeText(s)
	case "b":
		p, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("%w: bad base64: %v", ErrMalformed, err)
		}
		return p, nil
	}
	return nil, fmt.Errorf("%w: payload encoding %q is neither t nor b", ErrMalformed, enc)
}

// Reader reads lines with a bounded buffer.
type Reader struct {
	r   *bufio.Reader
	max int
	buf []byte
}

// NewReader returns a Reader that accepts lines of up to max bytes without
// their line ending.
func NewReader(r io.Reader, max int) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, min(max+2, 64<<10)), max: max}
}

// ReadLine returns the next line without "\n" or "\r\n". The slice is
// valid until the next call. A line longer than the limit is skipped up to
// its newline and reported as ErrTooLong; a read error ends a partial line,
// which is dropped (a board unplugged mid-frame).
func (r *Reader) ReadLine() ([]byte, error) {
	r.buf = r.buf[:0]
	over := false
	for {
		chunk, err := r.r.ReadSlice('\n')
		if !over {
			if len(r.buf)+len(chunk) > r.max+2 {
				over = true
			} else {
				r.buf = append(r.buf, chunk...)
			}
		}
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err != nil:
			return nil, err
		}
		break
	}
	if over {
		return nil, ErrTooLong
	}
	l := r.buf[:len(r.buf)-1]
	if n := len(l); n > 0 && l[n-1] == '\r' {
		l = l[:n-1]
	}
	if len(l) > r.max {
		return nil, ErrTooLong
	}
	return l, nil
}
