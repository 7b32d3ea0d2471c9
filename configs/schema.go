package configs

// Key and type checking of the decoded tree against the Config structure,
// with the full key path (toml's own errors leave out array indexes) and a
// suggestion for a misspelt key.

import (
	"fmt"
	"math"
	"reflect"
	"sort"
	"strings"
	"time"
)

var (
	durationType = reflect.TypeOf(Duration{})
	sizeType     = reflect.TypeOf(Size(0))
)

const wantSize = `a size such as "256KiB" or an integer byte count`

// checkTable reports the first key of m (in file order) that is not a field
// of struct type t or whose value has the wrong type.
func (p *configParser) checkTable(m map[string]any, t reflect.Type, path keyPath) error {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	line := func(k string) int {
		if l, ok := p.lines[path.key(k).String()]; ok {
			return l
		}
		return math.MaxInt
	}
	sort.Slice(keys, func(i, j int) bool {
		li, lj := line(keys[i]), line(keys[j])
		if li != lj {
			return li < lj
		}
		return keys[i] < keys[j]
	})
	for _, k := range keys {
		f, ok := fieldByTag(t, k)
		if !ok {
			return p.errorf(path.key(k), "unknown key%s", suggest(t, k))
		}
		if err := p.checkValue(m[k], f.Type, path.key(k)); err != nil {
			return err
		}
	}
	return nil
}

func (p *configParser) checkValue(v any, t reflect.Type, path keyPath) error {
	mismatch := func() error {
		return p.errorf(path, "expected %s, got %s", want(t, path), describe(v))
	}
	switch t {
	case durationType:
		s, ok := v.(string)
		if !ok {
			return mismatch()
		}
		var d Duration
		if err := d.UnmarshalText([]byte(s)); err != nil {
			return p.errorf(path, "%v", err)
		}
		return nil
	case sizeType:
		switch v.(type) {
		case string, int64:
		default:
			return mismatch()
		}
		var s Size
		if err := s.UnmarshalTOML(v); err != nil {
			return p.errorf(path, "%v", err)
		}
		return nil
	}
	switch t.Kind() {
	case reflect.String:
		if _, ok := v.(string); !ok {
			return mismatch()
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			return mismatch()
		}
	case reflect.Int:
		n, ok := v.(int64)
		if !ok {
			return mismatch()
		}
		if n < math.MinInt || n > math.MaxInt {
			return p.errorf(path, "%d is out of range", n)
		}
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return mismatch()
		}
		return p.checkTable(m, t, path)
	case reflect.Slice:
		elems, ok := asSlice(v)
		if !ok {
			return mismatch()
		}
		for i, e := range elems {
			if err := p.checkValue(e, t.Elem(), path.index(i)); err != nil {
				return err
			}
		}
	default:
		return p.errorf(path, "unsupported type %s", t) // not reached with Config
	}
	return nil
}

// asSlice returns the elements of a TOML array or array of tables.
func asSlice(v any) ([]any, bool) {
	switch v := v.(type) {
	case []any:
		return v, true
	case []map[string]any:
		s := make([]any, len(v))
		for i := range v {
			s[i] = v[i]
		}
		return s, true
	}
	return nil, false
}

func fieldByTag(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if name, _, _ := strings.Cut(f.Tag.Get("toml"), ","); name == key && f.IsExported() {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// suggest returns ` (did you mean "x"?)` when key is a likely misspelling
// of a known key of t.
func suggest(t reflect.Type, key string) string {
	best, bestDist := "", 3
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ",")
		d := editDistance(strings.ToLower(key), name)
		if d < bestDist && (d == 0 || len(name) > 3) {
			best, bestDist = name, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// want describes the TOML value expected for a field of type t.
func want(t reflect.Type, path keyPath) string {
	switch t {
	case durationType:
		return `a duration string such as "30s"`
	case sizeType:
		return wantSize
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean (true or false)"
	case reflect.Int:
		return "an integer"
	case reflect.Struct:
		return fmt.Sprintf("a table ([%s])", path.unindexed())
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Struct {
			return fmt.Sprintf("an array of tables ([[%s]])", path.unindexed())
		}
		return "an array of strings"
	}
	return t.String()
}

// describe names the type (and, for scalars, the value) of a decoded TOML value.
func describe(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("string %q", truncate(v))
	case int64:
		return fmt.Sprintf("integer %d", v)
	case float64:
		return fmt.Sprintf("float %v", v)
	case bool:
		return fmt.Sprintf("boolean %t", v)
	case time.Time:
		return "a date/time"
	case []any:
		return "an array"
	case []map[string]any:
		return "an array of tables"
	case map[string]any:
		return "a table"
	}
	return fmt.Sprintf("%T", v)
}

func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
