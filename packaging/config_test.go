package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// TestPackagedConfig makes the conffile from the real example.
func TestPackagedConfig(t *testing.T) {
	example, err := os.ReadFile(filepath.Join(repoRoot(t), "configs", "ralph.toml"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := packagedConfig(example)
	if err != nil {
		t.Fatal(err)
	}
	text := string(got)
	if !strings.HasPrefix(text, packagedHeader) {
		t.Error("the packaged config does not start with the loopback note")
	}
	var c map[string]any
	if _, err := toml.Decode(text, &c); err != nil {
		t.Fatal(err)
	}
	if _, ok := c["bridge"]; ok {
		t.Error("the packaged config has a bridge")
	}
	if c["data_dir"] != "/var/lib/ralph" {
		t.Errorf("data_dir = %v", c["data_dir"])
	}
	// Every documentation comment is kept, and the example bridge is
	// still there to uncomment.
	for line := range strings.Lines(string(example)) {
		if l := strings.TrimSpace(line); strings.HasPrefix(l, "#") && !strings.Contains(text, l) {
			t.Errorf("comment lost: %s", l)
		}
	}
	for _, want := range []string{"\n# [[bridge]]\n", "\n# name = \"cloud\"\n", "\n  # [[bridge.forward]]\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("packaged config lacks %q", want)
		}
	}
}

func TestPackagedConfigSections(t *testing.T) {
	in := `data_dir = "/var/lib/ralph"
[broker]
listen = ["127.0.0.1:1883", "[::1]:1883", "localhost:1884"]
[[bridge]] # the first
name = "a"
urls = [
  "mqtt://a:1883",
]
	[[bridge.forward]]
	local = "x/#"
[[serial]]
name = "k"
path = "/dev/ttyUSB0"
[[bridge]]
name = "b"
`
	got, err := packagedConfig([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := packagedHeader + `data_dir = "/var/lib/ralph"
[broker]
listen = ["127.0.0.1:1883", "[::1]:1883", "localhost:1884"]
# [[bridge]] # the first
# name = "a"
# urls = [
  # "mqtt://a:1883",
# ]
	# [[bridge.forward]]
	# local = "x/#"
[[serial]]
name = "k"
path = "/dev/ttyUSB0"
# [[bridge]]
# name = "b"
`
	if string(got) != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// TestPackagedConfigRefuses checks that an example that would make the
// installed package unsafe or broken fails the build.
func TestPackagedConfigRefuses(t *testing.T) {
	for _, bad := range []string{
		"data_dir = \"ralph-data\"\n",
		"data_dir = \"/var/lib/ralph\"\n[broker]\nlisten = [\"0.0.0.0:1883\"]\n",
		"data_dir = \"/var/lib/ralph\"\n[broker]\nlisten = [\":1883\"]\n",
		"data_dir = \"/var/lib/ralph\"\n[broker]\nallow_anonymous = true\n",
		"data_dir = \"/var/lib/ralph\"\n[http]\nlisten = \"192.168.1.2:9883\"\n",
		"data_dir = \"/var/lib/ralph\"\nbridge = [{name = \"inline\"}]\n",
		"data_dir = \"/var/lib/ralph\"\n[broker\n",
		"data_dir = \"/var/lib/ralph\"\n[broker]\nmax_clients = 0\n", // invalid
	} {
		if _, err := packagedConfig([]byte(bad)); err == nil {
			t.Errorf("accepted:\n%s", bad)
		}
	}
	// A valid config (with a user) whose WebSocket listener is open to
	// the network.
	ws := "data_dir = \"/var/lib/ralph\"\n[[broker.users]]\nname = \"a\"\npassword_hash = \"$2a$04$HBDh62h23DM6jL2Om.hFkubHtDYS37h9q1m.Kef0JbnlwXJDYokC6\"\n" +
		"[[broker.websocket]]\nlisten = \"0.0.0.0:8080\"\n"
	_, err := packagedConfig([]byte(ws))
	if want := `packaged config from the example: the broker listens on "0.0.0.0:8080", not a loopback address`; err == nil || err.Error() != want {
		t.Errorf("open WebSocket listener: %v, want %s", err, want)
	}
}
