package configs

// Loading and parsing: the two decoding passes, and the wording of every
// error with its file and line.

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// Load reads, decodes and validates the configuration file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// Parse decodes data, fills in defaults and validates the result.
// Unknown keys, wrong types and invalid values are errors. Every error
// message starts with "name:line: " (the line is left out when it cannot
// be determined) followed by the key path, e.g. bridge[0].urls[1].
func Parse(name string, data []byte) (*Config, error) {
	p := &configParser{name: name, data: data}

	// First pass: the generic tree. It holds syntax errors only, and lets
	// us check keys and types with the full key path (including the index
	// into arrays of tables, which toml's own errors leave out).
	if _, err := toml.Decode(string(data), &p.tree); err != nil {
		return nil, p.decodeError(err, true)
	}
	p.lines = locateKeys(data)
	if err := p.checkTable(p.tree, reflect.TypeOf(Config{}), nil); err != nil {
		return nil, err
	}

	// Second pass: decode into a Config that already holds the defaults, so
	// keys that are absent keep their default value.
	cfg := Default()
	md, err := toml.Decode(string(data), cfg)
	if err != nil {
		return nil, p.decodeError(err, false)
	}
	if und := md.Undecoded(); len(und) > 0 {
		// checkTable already reported every key that does not fit; this is
		// a safety net. toml's keys have no array index: print the line
		// only if the key is not inside an array of tables.
		k := und[0].String()
		return nil, p.lineError(p.lines[k], k+": unknown key")
	}
	p.fillDefaults(cfg)
	if err := p.validate(cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// configParser carries what error messages need: the file name, the decoded
// tree (to tell absent keys from present ones) and the line of every key.
type configParser struct {
	name  string
	data  []byte
	tree  map[string]any
	lines map[string]int
}

// errorf returns "name:line: path: message". The line is that of the key at
// path; for an absent key, that of the nearest enclosing table present in
// the file. When no line is known it is left out.
func (p *configParser) errorf(path keyPath, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if len(path) > 0 {
		msg = path.String() + ": " + msg
	}
	return p.lineError(p.lineFor(path), msg)
}

func (p *configParser) lineError(line int, msg string) error {
	if line > 0 {
		return fmt.Errorf("%s:%d: %s", p.name, line, msg)
	}
	return fmt.Errorf("%s: %s", p.name, msg)
}

func (p *configParser) lineFor(path keyPath) int {
	for q := path; len(q) > 0; q = q[:len(q)-1] {
		if line, ok := p.lines[q.String()]; ok {
			return line
		}
		if _, present := lookup(p.tree, q); present {
			return 0 // present but not located: print no line rather than a wrong one
		}
	}
	return 0
}

// libErrRE matches the errors toml builds with fmt.Errorf for type
// mismatches: `toml: line 3 (last key "broker.listen"): incompatible ...`.
var libErrRE = regexp.MustCompile(`^toml: (?:line (\d+) )?\(last key "((?:[^"\\]|\\.)*)"\): (.*)$`)

// decodeError turns an error from toml.Decode into "name:line: ...", with
// the line printed once. In the first pass (into a generic tree) only
// syntax errors occur; their position is exact. Errors of the second pass
// (into Config) are caught by checkTable first and should not occur; should
// one do, toml names the key without array indexes and gives the line of
// its last occurrence, so the line is printed only when the key is outside
// arrays of tables (found by the locator under the same name).
func (p *configParser) decodeError(err error, syntax bool) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		if syntax {
			return p.lineError(syntaxLine(p.data, pe.Position), "syntax error: "+pe.Message)
		}
		return p.lineError(p.lines[pe.LastKey], pe.LastKey+": "+pe.Message)
	}
	msg := err.Error()
	if m := libErrRE.FindStringSubmatch(msg); m != nil {
		key, uerr := strconv.Unquote(`"` + m[2] + `"`)
		if uerr != nil {
			key = m[2]
		}
		return p.lineError(p.lines[key], key+": "+m[3])
	}
	return p.lineError(0, strings.TrimPrefix(msg, "toml: "))
}

// syntaxLine corrects toml's line for errors about an unexpected newline
// ("got '\n' instead"): toml counts it as part of the next line, where the
// user sees nothing wrong. When the error starts on an earlier line than
// reported and only whitespace separates the two, the earlier line is used.
func syntaxLine(data []byte, pos toml.Position) int {
	s := stripBOM(string(data))
	line := pos.Line
	if line < 2 || pos.Start < 0 || pos.Start >= len(s) {
		return line
	}
	off := 0 // where line begins
	for n := 1; n < line; n++ {
		i := strings.IndexByte(s[off:], '\n')
		if i < 0 {
			return line
		}
		off += i + 1
	}
	if pos.Start < off && strings.TrimSpace(s[pos.Start:off]) == "" {
		return 1 + strings.Count(s[:pos.Start], "\n")
	}
	return line
}

// stripBOM removes a byte order mark the way toml does, so that offsets in
// its errors match.
func stripBOM(s string) string {
	for _, bom := range []string{"\xef\xbb\xbf", "\xff\xfe", "\xfe\xff"} {
		if strings.HasPrefix(s, bom) {
			return s[len(bom):]
		}
	}
	return s
}
