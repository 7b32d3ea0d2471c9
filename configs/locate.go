package configs

// The key locator. toml does not export key positions, so this scans the
// raw (already successfully parsed) file and records the line of every
// table header, key and array element under its full path, e.g.
// "bridge[1].forward[0].local". It understands table headers, arrays of
// tables, dotted and quoted keys, inline tables, (multi-line) arrays and all
// string forms. It stops at anything it does not understand; keys it did
// not reach simply have no line.

import (
	"strconv"
	"strings"
)

func locateKeys(data []byte) map[string]int {
	l := &locator{s: stripBOM(string(data)), line: 1, lines: map[string]int{}, arrays: map[string]int{}}
	l.document()
	return l.lines
}

type locator struct {
	s      string
	i      int
	line   int
	lines  map[string]int
	arrays map[string]int // [[array]] path → number of tables so far
}

func (l *locator) eof() bool { return l.i >= len(l.s) }

func (l *locator) at(c byte) bool { return l.i < len(l.s) && l.s[l.i] == c }

// set records the line of path, overwriting; record only when unknown.
func (l *locator) set(p keyPath, line int) { l.lines[p.String()] = line }

func (l *locator) record(p keyPath, line int) {
	if _, ok := l.lines[p.String()]; !ok {
		l.set(p, line)
	}
}

func (l *locator) document() {
	var table keyPath
	for {
		l.skipTrivia()
		if l.eof() {
			return
		}
		if l.at('[') {
			line := l.line
			array := strings.HasPrefix(l.s[l.i:], "[[")
			l.i++
			if array {
				l.i++
			}
			parts, ok := l.key()
			if !ok {
				return
			}
			l.skipSpaces()
			if array {
				if !strings.HasPrefix(l.s[l.i:], "]]") {
					return
				}
				l.i += 2
			} else {
				if !l.at(']') {
					return
				}
				l.i++
			}
			table = l.header(parts, array, line)
		} else if !l.keyValue(table) {
			return
		}
		l.skipSpaces()
		if l.at('#') {
			l.skipComment()
		}
		if !l.eof() && !l.at('\n') && !l.at('\r') {
			return
		}
	}
}

// header resolves a [table] or [[array]] header to its full path, taking
// the latest table of each enclosing array of tables.
func (l *locator) header(parts []string, array bool, line int) keyPath {
	var p keyPath
	for k, part := range parts {
		p = p.key(part)
		last := k == len(parts)-1
		if !last {
			l.record(p, line)
			if n := l.arrays[p.String()]; n > 0 {
				p = p.index(n - 1)
			}
			continue
		}
		if array {
			n := l.arrays[p.String()]
			l.arrays[p.String()] = n + 1
			l.record(p, line)
			p = p.index(n)
		}
		l.set(p, line)
	}
	return p
}

// keyValue reads key = value in table.
func (l *locator) keyValue(table keyPath) bool {
	line := l.line
	parts, ok := l.key()
	if !ok {
		return false
	}
	l.skipSpaces()
	if !l.at('=') {
		return false
	}
	l.i++
	l.skipSpaces()
	p := table
	for k, part := range parts {
		p = p.key(part)
		if k < len(parts)-1 {
			l.record(p, line)
		}
	}
	l.set(p, line)
	return l.value(p)
}

// key reads a possibly dotted key of bare and quoted parts.
func (l *locator) key() ([]string, bool) {
	var parts []string
	for {
		l.skipSpaces()
		if l.eof() {
			return nil, false
		}
		start := l.i
		switch c := l.s[l.i]; {
		case c == '"' || c == '\'':
			if strings.HasPrefix(l.s[l.i:], string([]byte{c, c, c})) || !l.str() {
				return nil, false
			}
			raw := l.s[start:l.i]
			k := raw[1 : len(raw)-1]
			if c == '"' {
				if u, err := strconv.Unquote(raw); err == nil {
					k = u
				}
			}
			parts = append(parts, k)
		case isNameChar(rune(c)):
			for !l.eof() && isNameChar(rune(l.s[l.i])) {
				l.i++
			}
			parts = append(parts, l.s[start:l.i])
		default:
			return nil, false
		}
		l.skipSpaces()
		if !l.at('.') {
			return parts, true
		}
		l.i++
	}
}

// value reads one value, recording array elements and inline table keys.
func (l *locator) value(p keyPath) bool {
	if l.eof() {
		return false
	}
	switch c := l.s[l.i]; c {
	case '"', '\'':
		return l.str()
	case '[':
		l.i++
		for n := 0; ; n++ {
			l.skipTrivia()
			if l.eof() {
				return false
			}
			if l.at(']') {
				l.i++
				return true
			}
			ep := p.index(n)
			l.set(ep, l.line)
			if !l.value(ep) {
				return false
			}
			l.skipTrivia()
			switch {
			case l.at(','):
				l.i++
			case l.at(']'):
				l.i++
				return true
			default:
				return false
			}
		}
	case '{':
		l.i++
		for {
			l.skipTrivia()
			if l.eof() {
				return false
			}
			if l.at('}') {
				l.i++
				return true
			}
			if !l.keyValue(p) {
				return false
			}
			l.skipTrivia()
			switch {
			case l.at(','):
				l.i++
			case l.at('}'):
				l.i++
				return true
			default:
				return false
			}
		}
	default: // number, boolean, date/time
		start := l.i
		for !l.eof() && !strings.ContainsRune(",]}#\r\n", rune(l.s[l.i])) {
			l.i++
		}
		return l.i > start
	}
}

// str skips a basic, literal or multi-line string, counting lines.
func (l *locator) str() bool {
	q := l.s[l.i]
	triple := string([]byte{q, q, q})
	if strings.HasPrefix(l.s[l.i:], triple) {
		l.i += 3
		for !l.eof() {
			c := l.s[l.i]
			switch {
			case c == '\\' && q == '"':
				l.i++
				if l.at('\n') {
					l.line++
				}
				l.i++
			case c == q && strings.HasPrefix(l.s[l.i:], triple):
				l.i += 3
				// Up to two more quotes are part of the content: """a""""".
				for k := 0; k < 2 && l.at(q); k++ {
					l.i++
				}
				return true
			default:
				if c == '\n' {
					l.line++
				}
				l.i++
			}
		}
		return false
	}
	l.i++
	for !l.eof() {
		switch c := l.s[l.i]; {
		case c == '\\' && q == '"':
			l.i += 2
		case c == q:
			l.i++
			return true
		case c == '\n':
			return false
		default:
			l.i++
		}
	}
	return false
}

func (l *locator) skipSpaces() {
	for l.at(' ') || l.at('\t') {
		l.i++
	}
}

// skipTrivia skips whitespace, newlines and comments.
func (l *locator) skipTrivia() {
	for !l.eof() {
		switch l.s[l.i] {
		case ' ', '\t', '\r':
			l.i++
		case '\n':
			l.line++
			l.i++
		case '#':
			l.skipComment()
		default:
			return
		}
	}
}

func (l *locator) skipComment() {
	for !l.eof() && !l.at('\n') {
		l.i++
	}
}
