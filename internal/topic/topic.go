// Package topic validates MQTT topic names and filters and matches one
// against the other, as the MQTT 3.1.1 and 5 specifications define them.
package topic

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxLen is the longest topic the MQTT wire format can carry.
const MaxLen = 65535

// ValidateName reports why name cannot be published to, or nil.
func ValidateName(name string) error {
	if err := validateCommon(name); err != nil {
		return err
	}
	if strings.ContainsAny(name, "+#") {
		return fmt.Errorf("topic %q: wildcards + and # are not allowed in a topic name", name)
	}
	return nil
}

// ValidateFilter reports why filter is not a valid subscription filter, or nil.
func ValidateFilter(filter string) error {
	if err := validateCommon(filter); err != nil {
		return err
	}
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return fmt.Errorf("topic filter %q: # must be the last level", filter)
		case l == "#", l == "+":
		case strings.ContainsAny(l, "+#"):
			return fmt.Errorf("topic filter %q: a wildcard must occupy a whole level", filter)
		}
	}
	return nil
}

func validateCommon(s string) error {
	switch {
	case s == "":
		return errors.New("topic is empty")
	case len(s) > MaxLen:
		return fmt.Errorf("topic is %d bytes, longer than %d", len(s), MaxLen)
	case !utf8.ValidString(s):
		return fmt.Errorf("topic %q is not valid UTF-8", s)
	case strings.ContainsRune(s, 0):
		return fmt.Errorf("topic %q contains a NUL character", s)
	}
	return nil
}

// Match reports whether topic name matches filter. Topics starting with $
// match only filters that name their first level literally [MQTT-4.7.2-1].
func Match(filter, name string) bool {
	if strings.HasPrefix(name, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	for {
		f, frest, fmore := strings.Cut(filter, "/")
		if f == "#" {
			return true
		}
		n, nrest, nmore := strings.Cut(name, "/")
		if f != "+" && f != n {
			return false
		}
		if !fmore || !nmore {
			// "a/#" also matches "a": the parent level.
			return fmore == nmore || (!nmore && frest == "#")
		}
		filter, name = frest, nrest
	}
}

// Covers reports whether every topic that filter sub can match is also
// matched by filter pattern: whether a subscription to sub stays within
// what pattern allows. A topic name is a filter without wildcards.
func Covers(pattern, sub string) bool {
	if strings.HasPrefix(sub, "$") && (strings.HasPrefix(pattern, "+") || strings.HasPrefix(pattern, "#")) {
		return false
	}
	for {
		p, prest, pmore := strings.Cut(pattern, "/")
		if p == "#" {
			return true
		}
		s, srest, smore := strings.Cut(sub, "/")
		switch {
		case s == "#":
			return false // sub is wider than anything but #
		case p == "+":
		case p != s: // also "+" in sub against a literal level
			return false
		}
		if !pmore || !smore {
			return pmore == smore || (!smore && prest == "#")
		}
		pattern, sub = prest, srest
	}
}

// Overlap reports whether some topic name matches both filters.
func Overlap(a, b string) bool {
	as, bs := strings.Split(a, "/"), strings.Split(b, "/")
	for i := 0; i < len(as) && i < len(bs); i++ {
		switch {
		case as[i] == "#" || bs[i] == "#":
			return true
		case as[i] != "+" && bs[i] != "+" && as[i] != bs[i]:
			return false
		}
	}
	// One ran out of levels: they share topics if the other ends here
	// too, or goes on with "#" (which matches its parent level as well).
	long := as
	if len(bs) > len(as) {
		long = bs
	}
	n := min(len(as), len(bs))
	return len(as) == len(bs) || (len(long) == n+1 && long[n] == "#")
}

// Expand substitutes a client's username for %u and its client id for %c
// in an ACL filter, in one pass (a username containing "%c" stays as it
// is).
// It is on every publish's ACL check: a filter without a placeholder
// costs a scan and nothing else.
func Expand(filter, username, clientID string) string {
	i := strings.IndexByte(filter, '%')
	if i < 0 {
		return filter
	}
	var b strings.Builder
	b.Grow(len(filter) + len(username) + len(clientID))
	for ; i >= 0; i = strings.IndexByte(filter, '%') {
		b.WriteString(filter[:i])
		switch {
		case strings.HasPrefix(filter[i:], "%u"):
			b.WriteString(username)
			filter = filter[i+2:]
		case strings.HasPrefix(filter[i:], "%c"):
			b.WriteString(clientID)
			filter = filter[i+2:]
		default:
			b.WriteByte('%')
			filter = filter[i+1:]
		}
	}
	b.WriteString(filter)
	return b.String()
}
