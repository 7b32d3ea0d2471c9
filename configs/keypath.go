package configs

// Key paths such as bridge[1].forward[0].local, as error messages print
// them, and lookups of a path in the decoded tree.

import (
	"fmt"
	"strconv"
	"strings"
)

type pathElem struct {
	key   string
	index int // >= 0: an array index; key is unused
}

type keyPath []pathElem

func (p keyPath) key(keys ...string) keyPath {
	q := append(keyPath(nil), p...)
	for _, k := range keys {
		q = append(q, pathElem{key: k, index: -1})
	}
	return q
}

func (p keyPath) index(i int) keyPath {
	return append(append(keyPath(nil), p...), pathElem{index: i})
}

func (p keyPath) parent() keyPath { return p[:len(p)-1] }

func (p keyPath) String() string {
	var b strings.Builder
	for i, e := range p {
		if e.index >= 0 {
			fmt.Fprintf(&b, "[%d]", e.index)
			continue
		}
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(quoteKey(e.key))
	}
	return b.String()
}

// unindexed is the path as written in a table header: bridge.forward.
func (p keyPath) unindexed() string {
	var parts []string
	for _, e := range p {
		if e.index < 0 {
			parts = append(parts, quoteKey(e.key))
		}
	}
	return strings.Join(parts, ".")
}

func quoteKey(k string) string {
	if k == "" {
		return `""`
	}
	for _, r := range k {
		if !isNameChar(r) {
			return strconv.Quote(k)
		}
	}
	return k
}

// lookup finds the value at path in a decoded TOML tree.
func lookup(tree map[string]any, path keyPath) (any, bool) {
	var v any = tree
	for _, e := range path {
		if e.index >= 0 {
			s, ok := asSlice(v)
			if !ok || e.index >= len(s) {
				return nil, false
			}
			v = s[e.index]
			continue
		}
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[e.key]; !ok {
			return nil, false
		}
	}
	return v, true
}
