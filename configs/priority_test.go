package configs

// The keys of the day after an outage: a forward rule's priority and the
// timestamp property, on a bridge or a rule.

import "testing"

func TestPriorityAndTimestamp(t *testing.T) {
	cfg, err := Parse("ralph.toml", []byte(doc(`[[bridge]]`, `name = "b"`, `urls = ["mqtt://h"]`, `timestamp_property = "ralph-received"`,
		`[[bridge.forward]]`, `local = "alarms/#"`, `priority = 0`, `timestamp_property = "stored"`,
		`[[bridge.forward]]`, `local = "sensors/#"`)))
	if err != nil {
		t.Fatal(err)
	}
	b := cfg.Bridges[0]
	if b.TimestampProperty != "ralph-received" || b.Forward[0].Priority != 0 || b.Forward[0].TimestampProperty != "stored" ||
		b.Forward[1].Priority != 4 || b.Forward[1].TimestampProperty != "" {
		t.Errorf("timestamp_property %q, rules %+v", b.TimestampProperty, b.Forward)
	}
	for _, tt := range []struct{ toml, want string }{
		{doc(`[[bridge]]`, `name = "b"`, `urls = ["mqtt://h"]`, `[[bridge.forward]]`, `local = "a/#"`, `priority = 10`),
			`ralph.toml:6: bridge[0].forward[0].priority: must be 0 (the most urgent) to 9, got 10`},
		{doc(`[[bridge]]`, `name = "b"`, `urls = ["mqtt://h"]`, `[[bridge.forward]]`, `local = "a/#"`, `priority = -1`),
			`ralph.toml:6: bridge[0].forward[0].priority: must be 0 (the most urgent) to 9, got -1`},
		{doc(`[[bridge]]`, `name = "b"`, `urls = ["mqtt://h"]`, `protocol = "3.1.1"`, `timestamp_property = "t"`, `[[bridge.forward]]`, `local = "a/#"`),
			`ralph.toml:5: bridge[0].timestamp_property: needs an MQTT 5 upstream (protocol = "5"): MQTT 3.1.1 has no user properties to carry it`},
		{doc(`[[bridge]]`, `name = "b"`, `urls = ["mqtt://h"]`, `protocol = "3.1.1"`, `[[bridge.forward]]`, `local = "a/#"`, `timestamp_property = "t"`),
			`ralph.toml:7: bridge[0].forward[0].timestamp_property: needs an MQTT 5 upstream (protocol = "5"): MQTT 3.1.1 has no user properties to carry it`},
		{doc(`[[bridge]]`, `name = "b"`, `urls = ["mqtt://h"]`, `timestamp_property = "a\u0000b"`, `[[bridge.forward]]`, `local = "a/#"`),
			`ralph.toml:4: bridge[0].timestamp_property: "a\x00b" is not a valid user property name (UTF-8, no NUL, at most 65535 bytes)`},
	} {
		_, err := Parse("ralph.toml", []byte(tt.toml))
		if err == nil || err.Error() != tt.want {
			t.Errorf("%s:\ngot  %v\nwant %s", tt.toml, err, tt.want)
		}
	}
}
