package configs

import (
	"testing"

	"github.com/BurntSushi/toml"
)

// The key locator: the line of every key, table and array element.

func TestConfigLocateKeys(t *testing.T) {
	data := doc(
		`# [not] a = "table"`, // 1
		`data_dir = 'C:\dir' # comment [x]`,
		`[ log ]`,
		`level = """`,
		`multi "" [line]`, // 5
		`"""`,
		`format = '''`,
		`x'''`,
		`[broker]`,
		`listen = [ # comment`, // 10
		`  "a", 'b',`,
		`  # [c]`,
		`  "d\"]",`,
		`]`,
		`"quoted key" = { a = 1, b.c = [1, 2] }`, // 15
		`[[bridge]]`,
		`name = "a"`,
		`[[bridge.forward]]`,
		`local = "x"`,
		`  [[bridge.forward]]`, // 20
		`  local = "y"`,
		`[[ bridge ]]`,
		`name = "b"`,
		`  [[ bridge . forward ]]`,
		`  local = "z"`, // 25
		`[bridge.tls]`,
		`ca = "f"`,
		`[queue]`,
		`sync_interval = 1979-05-27 07:32:00`,
		`durability = "sync"`, // 30
	)
	want := map[string]int{
		"data_dir":                   2,
		"log":                        3,
		"log.level":                  4,
		"log.format":                 7,
		"broker":                     9,
		"broker.listen":              10,
		"broker.listen[0]":           11,
		"broker.listen[1]":           11,
		"broker.listen[2]":           13,
		`broker."quoted key"`:        15,
		`broker."quoted key".a`:      15,
		`broker."quoted key".b.c`:    15,
		`broker."quoted key".b.c[1]`: 15,
		"bridge":                     16,
		"bridge[0]":                  16,
		"bridge[0].name":             17,
		"bridge[0].forward":          18,
		"bridge[0].forward[0]":       18,
		"bridge[0].forward[0].local": 19,
		"bridge[0].forward[1]":       20,
		"bridge[0].forward[1].local": 21,
		"bridge[1]":                  22,
		"bridge[1].name":             23,
		"bridge[1].forward[0]":       24,
		"bridge[1].forward[0].local": 25,
		"bridge[1].tls":              26,
		"bridge[1].tls.ca":           27,
		"queue.sync_interval":        29,
		"queue.durability":           30,
	}
	if _, err := toml.Decode(data, new(any)); err != nil {
		t.Fatalf("test document is not valid TOML: %v", err)
	}
	got := locateKeys([]byte(data))
	for k, line := range want {
		if got[k] != line {
			t.Errorf("line of %s = %d, want %d", k, got[k], line)
		}
	}
	if _, ok := got["a"]; ok {
		t.Errorf("key in a comment was located")
	}
}
