package configs

// The defaults the annotated ralph.toml and the README's key table state
// are checked against Default, DefaultBridge and DefaultSerial: the one
// source of truth.

import (
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// stated is a default that a document states: the value of key (TOML) in
// table, e.g. "bridge", "max_inflight", "32".
type stated struct {
	where, table, key, value string
}

// unchecked are stated defaults that are rules or prose rather than
// values, by table.key, with why.
var unchecked = map[string]string{
	"bridge.client_id":    "derived from the host name",
	"serial.status_topic": "follows topic_prefix: StatusTopic",
}

// TestDocumentedDefaults checks every default the example config and the
// README state.
func TestDocumentedDefaults(t *testing.T) {
	example, err := os.ReadFile("ralph.toml")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range []struct {
		name string
		all  []stated
		want int // at least this many checked: the parsers still find them
	}{
		{"ralph.toml", exampleDefaults(t, string(example)), 45},
		{"README.md", readmeDefaults(t, string(readme)), 40},
	} {
		checked := 0
		for _, s := range doc.all {
			if why, ok := unchecked[s.table+"."+s.key]; ok {
				t.Logf("%s: %s.%s = %s not checked: %s", s.where, s.table, s.key, s.value, why)
				continue
			}
			if err := checkDefault(s); err != nil {
				t.Errorf("%s: %v", s.where, err)
			}
			checked++
		}
		t.Logf("%s: %d stated defaults checked", doc.name, checked)
		if checked < doc.want {
			t.Errorf("%s: %d defaults checked, want at least %d (did its format change?)", doc.name, checked, doc.want)
		}
	}
}

// defaultOf returns the default value of a table's struct.
func defaultOf(table string) (any, bool) {
	def := Default()
	acl := defaultACL()
	v, ok := map[string]any{
		"":                 *def,
		"log":              def.Log,
		"broker":           def.Broker,
		"broker.anonymous": acl,
		"broker.users":     defaultUser(),
		"broker.tls":       TLSListener{},
		"broker.websocket": WebSocketListener{},
		"queue":            def.Queue,
		"http":             def.HTTP,
		"bridge":           DefaultBridge("<name>"),
		"bridge.forward":   defaultForward(),
		"bridge.subscribe": defaultSubscribe(),
		"serial":           DefaultSerial("<name>"),
	}[table]
	return v, ok
}

// checkDefault decodes s.value as key's value in a struct of its table's
// type and compares it with that field of the table's default.
func checkDefault(s stated) error {
	def, ok := defaultOf(s.table)
	if !ok {
		return fmt.Errorf("%s.%s: no table %q", s.table, s.key, s.table)
	}
	typ := reflect.TypeOf(def)
	f, ok := fieldByTag(typ, s.key)
	if !ok {
		return fmt.Errorf("%s.%s: no such key", s.table, s.key)
	}
	got := reflect.New(typ)
	if _, err := toml.Decode(s.key+" = "+s.value, got.Interface()); err != nil {
		return fmt.Errorf("%s.%s: stated default %s: %v", s.table, s.key, s.value, err)
	}
	g, w := got.Elem().FieldByIndex(f.Index).Interface(), reflect.ValueOf(def).FieldByIndex(f.Index).Interface()
	if !reflect.DeepEqual(g, w) {
		return fmt.Errorf("%s.%s: stated default %s, but it is %v", s.table, s.key, s.value, w)
	}
	return nil
}

var (
	headerRE   = regexp.MustCompile(`^\s*(?:#\s*)?\[\[?([a-z_.]+)\]\]?\s*$`)
	keyLineRE  = regexp.MustCompile(`^\s*(?:#\s*)?([a-z_]+)\s*=`)
	defaultRE  = regexp.MustCompile(`Defaults?: (.*)$`)
	backtickRE = regexp.MustCompile("`([^`]*)`")
)

// exampleDefaults finds each "Default: V" (or "Defaults: V1, V2") comment
// in ralph.toml and the keys it is about: the next key lines, set or
// commented out, one per value.
func exampleDefaults(t *testing.T, text string) []stated {
	var out []stated
	lines := strings.Split(text, "\n")
	table := ""
	for i, l := range lines {
		if m := headerRE.FindStringSubmatch(l); m != nil {
			table = m[1]
			continue
		}
		m := defaultRE.FindStringSubmatch(l)
		if m == nil || !strings.HasPrefix(strings.TrimSpace(l), "#") {
			continue
		}
		values := splitValues(m[1])
		var keys []string
		for _, next := range lines[i+1:] {
			if len(keys) == len(values) {
				break
			}
			if k := keyLineRE.FindStringSubmatch(next); k != nil {
				keys = append(keys, k[1])
			}
		}
		if len(keys) != len(values) {
			t.Errorf("ralph.toml:%d: %d values stated, %d keys follow", i+1, len(values), len(keys))
			continue
		}
		for j, k := range keys {
			out = append(out, stated{fmt.Sprintf("ralph.toml:%d", i+1), table, k, values[j]})
		}
	}
	return out
}

// splitValues splits "V1, V2 and V3 (comment)" into its TOML values. A
// value may be followed by a unit in words ("1024 bytes").
func splitValues(s string) []string {
	var out []string
	depth, inStr, start := 0, false, 0
	flush := func(end int) {
		v := strings.TrimSpace(s[start:end])
		if inParens := strings.Index(v, " ("); inParens >= 0 {
			v = v[:inParens]
		}
		switch v {
		case "":
		case "none": // no value: the key's zero value
			out = append(out, `""`)
		default:
			out = append(out, valuePrefix(v))
		}
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			inStr = !inStr
		case inStr:
		case c == '[':
			depth++
		case c == ']':
			depth--
		case c == '(' && depth == 0:
			flush(i)
			return out
		case depth == 0 && c == ',':
			flush(i)
			start = i + 1
		case depth == 0 && strings.HasPrefix(s[i:], " and "):
			flush(i)
			start = i + len(" and ")
		}
	}
	flush(len(s))
	return out
}

// valuePrefix is v without trailing words that are not part of a TOML
// value: "1024 bytes" is 1024.
func valuePrefix(v string) string {
	for w := v; w != ""; {
		var m map[string]any
		if _, err := toml.Decode("k = "+w, &m); err == nil {
			return w
		}
		i := strings.LastIndexByte(w, ' ')
		if i < 0 {
			break
		}
		w = w[:i]
	}
	return v
}

// readmeDefaults reads the README's key table (after its "| key |
// default | meaning |" header): rows whose first cell names keys
// (`table.key`, then `key` in the same table, or `[[table]] key`) and whose
// second cell gives as many values in backticks.
func readmeDefaults(t *testing.T, text string) []stated {
	var out []stated
	lines := strings.Split(text, "\n")
	start := slices.Index(lines, "| key | default | meaning |")
	if start < 0 {
		t.Fatal(`README.md: no table with the header "| key | default | meaning |"`)
	}
	for i := start + 2; i < len(lines) && strings.HasPrefix(lines[i], "|"); i++ {
		l := lines[i]
		cells := strings.Split(l, "|")
		if len(cells) < 4 {
			continue
		}
		var keys [][2]string
		for j, k := range backtickRE.FindAllStringSubmatch(cells[1], -1) {
			name := k[1]
			if h, rest, ok := strings.Cut(name, "] "); ok && strings.HasPrefix(name, "[") {
				keys = append(keys, [2]string{strings.Trim(h, "[]"), rest})
				continue
			}
			if dot := strings.LastIndexByte(name, '.'); dot >= 0 {
				keys = append(keys, [2]string{name[:dot], name[dot+1:]})
			} else if j > 0 {
				keys = append(keys, [2]string{keys[0][0], name})
			} else {
				keys = append(keys, [2]string{"", name})
			}
		}
		values := backtickRE.FindAllStringSubmatch(cells[2], -1)
		if len(values) == 0 {
			continue // "required", "none", "—": no value stated
		}
		where := fmt.Sprintf("README.md:%d", i+1)
		if len(values) != len(keys) {
			if _, ok := unchecked[keys[0][0]+"."+keys[0][1]]; !ok {
				t.Errorf("%s: %d keys but %d values in backticks", where, len(keys), len(values))
			}
			continue
		}
		for j, k := range keys {
			out = append(out, stated{where, k[0], k[1], values[j][1]})
		}
	}
	return out
}
