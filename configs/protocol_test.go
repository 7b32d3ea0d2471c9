package configs

// The bridge's protocol key: its default, its allowed values, and the
// warning a 3.1.1 bridge that forwards gets.

import (
	"reflect"
	"testing"
)

func TestBridgeProtocol(t *testing.T) {
	bridge := func(lines ...string) string {
		return doc(append([]string{`[[bridge]]`, `name = "up"`, `urls = ["mqtt://h"]`}, append(lines, `[[bridge.forward]]`, `local = "a/#"`)...)...)
	}
	for _, tt := range []struct{ toml, want string }{
		{bridge(), "5"},
		{bridge(`protocol = "5"`), "5"},
		{bridge(`protocol = "3.1.1"`), "3.1.1"},
	} {
		cfg, err := Parse("ralph.toml", []byte(tt.toml))
		if err != nil {
			t.Fatalf("%s: %v", tt.toml, err)
		}
		if got := cfg.Bridges[0].Protocol; got != tt.want {
			t.Errorf("%s: protocol %q, want %q", tt.toml, got, tt.want)
		}
	}
	for _, tt := range []struct{ toml, want string }{
		{bridge(`protocol = "4"`), `ralph.toml:4: bridge[0].protocol: "4" is not one of 5, 3.1.1`},
		{bridge(`protocol = "3.1"`), `ralph.toml:4: bridge[0].protocol: "3.1" is not one of 5, 3.1.1`},
		{bridge(`protocol = ""`), `ralph.toml:4: bridge[0].protocol: "" is not one of 5, 3.1.1`},
		{bridge(`protocol = 5`), `ralph.toml:4: bridge[0].protocol: expected a string, got integer 5`},
	} {
		_, err := Parse("ralph.toml", []byte(tt.toml))
		if err == nil || err.Error() != tt.want {
			t.Errorf("%s:\ngot  %v\nwant %s", tt.toml, err, tt.want)
		}
	}
}

func TestWarningMQTT311Forwarding(t *testing.T) {
	cfg, err := Parse("ralph.toml", []byte(doc(
		`[[bridge]]`, `name = "old"`, `urls = ["mqtt://h"]`, `protocol = "3.1.1"`,
		`[[bridge.forward]]`, `local = "a/#"`,
		`[[bridge]]`, `name = "down"`, `urls = ["mqtt://h"]`, `protocol = "3.1.1"`,
		`[[bridge.subscribe]]`, `remote = "cmd/#"`,
		`[[bridge]]`, `name = "new"`, `urls = ["mqtt://h"]`,
		`[[bridge.forward]]`, `local = "a/#"`,
	)))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"bridge old speaks MQTT 3.1.1: user properties, message expiry and content type of forwarded messages are dropped (counted as properties_dropped)"}
	if got := cfg.Warnings(); !reflect.DeepEqual(got, want) {
		t.Errorf("warnings %q,\nwant %q", got, want)
	}
}
