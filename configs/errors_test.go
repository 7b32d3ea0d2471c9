package configs

import (
	"errors"
	"os"
	"testing"
)

// Every error message, byte for byte, with its file, line and key path.

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name, toml, want string
	}{
		// Syntax.
		{"syntax error", doc(`data_dir = "x"`, `[broker`, `listen = []`),
			`ralph.toml:2: syntax error: expected '.' or ']' to end table name, but got '\n' instead`},
		{"missing value", doc(`[log]`, `level =`, `format = "text"`),
			`ralph.toml:2: syntax error: expected value but found '\n' instead`},
		{"bad escape in multi-line string", doc(`data_dir = """`, `a`, `b\q`, `"""`),
			`ralph.toml:3: syntax error: invalid escape in string '\q'`},
		{"unterminated array", doc(`[broker]`, `listen = ["127.0.0.1:1883"`),
			`ralph.toml:2: syntax error: expected a comma (',') or array terminator (']'), but got end of file`},
		{"key defined twice", doc(`data_dir = "a"`, `data_dir = "b"`),
			`ralph.toml:2: syntax error: Key 'data_dir' has already been defined.`},

		// Unknown keys.
		{"unknown top-level key", doc(`data_dir = "/tmp/x"`, ``, `frobnicate = true`),
			`ralph.toml:3: frobnicate: unknown key`},
		{"unknown top-level key, suggestion", doc(`datadir = "x"`),
			`ralph.toml:1: datadir: unknown key (did you mean "data_dir"?)`},
		{"key in wrong case", doc(`Data_Dir = "x"`),
			`ralph.toml:1: Data_Dir: unknown key (did you mean "data_dir"?)`},
		{"unknown table", doc(`[log]`, `level = "info"`, `[brokers]`, `listen = []`),
			`ralph.toml:3: brokers: unknown key (did you mean "broker"?)`},
		{"unknown key in table", doc(`[broker]`, `listen = ["127.0.0.1:1883"]`, `frobnicate = 1`),
			`ralph.toml:3: broker.frobnicate: unknown key`},
		{"unknown dotted key", doc(`log.level = "info"`, `broker.frobnicate = 1`),
			`ralph.toml:2: broker.frobnicate: unknown key`},
		{"unknown quoted key", doc(`[broker]`, `"listen address" = 1`),
			`ralph.toml:2: broker."listen address": unknown key`},
		{"first unknown key in file order", doc(`[log]`, `zzz = 1`, `aaa = 1`, `[broker]`, `bbb = 1`),
			`ralph.toml:2: log.zzz: unknown key`},
		{"unknown key in [[bridge.forward]]", doc(
			`[[bridge]]`,
			`name = "a"`,
			`urls = ["mqtt://a"]`,
			`[[bridge.forward]]`,
			`local = "x/#"`,
			`[[bridge]]`,
			`name = "b"`,
			`urls = ["mqtt://b"]`,
			`[[bridge.forward]]`,
			`local = "y/#"`,
			`[[bridge.forward]]`,
			`local = "z/#"`,
			`remote_prefx = "up/"`),
			`ralph.toml:13: bridge[1].forward[1].remote_prefx: unknown key (did you mean "remote_prefix"?)`},
		{"unknown key in inline forward", afterOKBridge(`[[bridge]]`, `name = "b"`, `urls = ["mqtt://b"]`, `forward = [{local = "a"}, {local = "b", topic = "c"}]`),
			`ralph.toml:8: bridge[1].forward[1].topic: unknown key`},

		// Types.
		{"listen given an integer", doc(`[broker]`, `listen = 1883`),
			`ralph.toml:2: broker.listen: expected an array of strings, got integer 1883`},
		{"listen given a string", doc(`[broker]`, `listen = "127.0.0.1:1883"`),
			`ralph.toml:2: broker.listen: expected an array of strings, got string "127.0.0.1:1883"`},
		{"listen element given an integer", doc(`[broker]`, `listen = [`, `  "127.0.0.1:1883",`, `  1884,`, `]`),
			`ralph.toml:4: broker.listen[1]: expected a string, got integer 1884`},
		{"qos given a string", afterOKBridge(`[[bridge]]`, `name = "b"`, `urls = ["mqtt://b"]`, `[[bridge.forward]]`, `local = "a"`, `qos = "1"`),
			`ralph.toml:10: bridge[1].forward[0].qos: expected an integer, got string "1"`},
		{"boolean given a string", doc(`[broker]`, `allow_anonymous = "yes"`),
			`ralph.toml:2: broker.allow_anonymous: expected a boolean (true or false), got string "yes"`},
		{"duration given an integer", bridgeWith(`keepalive = 30`),
			`ralph.toml:4: bridge[0].keepalive: expected a duration string such as "30s", got integer 30`},
		{"size given a float", doc(`[broker]`, `max_packet_size = 1.5`),
			`ralph.toml:2: broker.max_packet_size: expected a size such as "256KiB" or an integer byte count, got float 1.5`},
		{"table given a value", doc(`log = "debug"`),
			`ralph.toml:1: log: expected a table ([log]), got string "debug"`},
		{"[bridge] instead of [[bridge]]", doc(`[bridge]`, `name = "x"`),
			`ralph.toml:1: bridge: expected an array of tables ([[bridge]]), got a table`},
		{"[bridge.forward] instead of [[bridge.forward]]", doc(`[[bridge]]`, `name = "x"`, `[bridge.forward]`, `local = "a"`),
			`ralph.toml:3: bridge[0].forward: expected an array of tables ([[bridge.forward]]), got a table`},
		{"data_dir given a date", doc(`data_dir = 2024-01-01`),
			`ralph.toml:1: data_dir: expected a string, got a date/time`},

		// Values: top level, log, broker, queue.
		{"empty data_dir", doc(`data_dir = ""`),
			`ralph.toml:1: data_dir: must not be empty`},
		{"bad log level", doc(`[log]`, `level = "verbose"`),
			`ralph.toml:2: log.level: "verbose" is not one of debug, info, warn, error`},
		{"bad log format", doc(`[log]`, `format = "xml"`),
			`ralph.toml:2: log.format: "xml" is not one of text, json`},
		{"non-loopback listen without allow_anonymous", doc(`[broker]`, `listen = ["127.0.0.1:1883", "0.0.0.0:1883"]`),
			`ralph.toml:2: broker.listen[1]: "0.0.0.0:1883" is not a loopback address and there are no [[broker.users]]: ` +
				`nobody could connect from other machines (add users, or set allow_anonymous = true explicitly)`},
		{"all interfaces without allow_anonymous", doc(`[broker]`, `listen = [":1883"]`, `allow_anonymous = false`),
			`ralph.toml:2: broker.listen[0]: ":1883" is not a loopback address and there are no [[broker.users]]: ` +
				`nobody could connect from other machines (add users, or set allow_anonymous = true explicitly)`},
		{"bad password hash", doc(`[broker]`, `[[broker.users]]`, `name = "esp32"`, `password_hash = "secret"`),
			`ralph.toml:4: broker.users[0].password_hash: not a bcrypt hash (crypto/bcrypt: hashedSecret too short to be a bcrypted password): make one with "ralph passwd"`},
		{"duplicate user", doc(`[[broker.users]]`, `name = "a"`, `password_hash = "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"`, `[[broker.users]]`, `name = "a"`, `password_hash = "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"`),
			`ralph.toml:5: broker.users[1].name: duplicate user "a"`},
		{"bad ACL filter", doc(`[broker.anonymous]`, `subscribe = ["cmd/#/x"]`),
			`ralph.toml:2: broker.anonymous.subscribe[0]: topic filter "cmd/#/x": # must be the last level`},
		{"listen without port", doc(`[broker]`, `listen = ["1883"]`),
			`ralph.toml:2: broker.listen[0]: invalid address "1883": missing port in address (use host:port, e.g. "127.0.0.1:1883", or ":1883" for all interfaces)`},
		{"listen port out of range", doc(`[broker]`, `listen = ["127.0.0.1:65536"]`),
			`ralph.toml:2: broker.listen[0]: invalid port "65536" in "127.0.0.1:65536" (use a number 0-65535)`},
		{"listen host name", doc(`[broker]`, `listen = ["example.com:1883"]`),
			`ralph.toml:2: broker.listen[0]: host "example.com" in "example.com:1883" is not an IP address or localhost (use host:port, e.g. "127.0.0.1:1883", or ":1883" for all interfaces)`},
		{"listen empty", doc(`[broker]`, `listen = []`),
			`ralph.toml:2: broker.listen: at least one address is required (e.g. "127.0.0.1:1883")`},
		{"listen duplicate", doc(`[broker]`, `listen = ["127.0.0.1:1883", "127.0.0.1:1883"]`),
			`ralph.toml:2: broker.listen[1]: duplicate address "127.0.0.1:1883"`},
		{"bad size", doc(`[broker]`, `max_packet_size = "64 kilobytes"`),
			`ralph.toml:2: broker.max_packet_size: invalid size "64 kilobytes" (use a byte count or a whole number with a unit: B, KB, MB, GB, KiB, MiB or GiB, e.g. "256KiB")`},
		{"size too small", doc(`[broker]`, `max_packet_size = 512`),
			`ralph.toml:2: broker.max_packet_size: 512B is out of range (allowed 1KiB .. 256MiB)`},
		{"size too large", doc(`[broker]`, `max_packet_size = "1GiB"`),
			`ralph.toml:2: broker.max_packet_size: 1GiB is out of range (allowed 1KiB .. 256MiB)`},
		{"negative size", doc(`[broker]`, `max_packet_size = -1`),
			`ralph.toml:2: broker.max_packet_size: size -1 is negative`},
		{"receive_maximum zero", doc(`[broker]`, `receive_maximum = 0`),
			`ralph.toml:2: broker.receive_maximum: 0 is out of range (allowed 1 .. 65535)`},
		{"bad durability", doc(`data_dir = "d"`, ``, `[queue]`, `durability = "fast"`),
			`ralph.toml:4: queue.durability: "fast" is not one of sync, interval`},
		{"password without username", doc(`[[bridge]]`, `name = "a"`, `urls = ["mqtt://x"]`, `password = "p"`, `[[bridge.forward]]`, `local = "#"`),
			`ralph.toml:1: bridge[0].username: required with a password`},
		{"password and password_file", doc(`[[bridge]]`, `name = "a"`, `urls = ["mqtt://x"]`, `username = "u"`, `password = "p"`, `password_file = "/nonexistent"`, `[[bridge.forward]]`, `local = "#"`),
			`ralph.toml:6: bridge[0].password_file: set password or password_file, not both`},
		{"missing password_file", doc(`[[bridge]]`, `name = "a"`, `urls = ["mqtt://x"]`, `username = "u"`, `password_file = "/nonexistent/pw"`, `[[bridge.forward]]`, `local = "#"`),
			`ralph.toml:5: bridge[0].password_file: open /nonexistent/pw: no such file or directory`},
		{"ca_file without TLS", doc(`[[bridge]]`, `name = "a"`, `urls = ["mqtt://x"]`, `ca_file = "/etc/ssl/x.pem"`, `[[bridge.forward]]`, `local = "#"`),
			`ralph.toml:4: bridge[0].ca_file: applies to TLS only, and no URL of this bridge is mqtts://, ssl://, tls:// or wss://`},
		{"missing ca_file", doc(`[[bridge]]`, `name = "a"`, `urls = ["mqtts://x"]`, `ca_file = "/nonexistent/ca.pem"`, `[[bridge.forward]]`, `local = "#"`),
			`ralph.toml:4: bridge[0].ca_file: open /nonexistent/ca.pem: no such file or directory`},
		{"cert without key", doc(`[[bridge]]`, `name = "a"`, `urls = ["mqtts://x"]`, `cert_file = "/x.pem"`, `[[bridge.forward]]`, `local = "#"`),
			`ralph.toml:1: bridge[0].key_file: required with cert_file`},
		{"bad subscribe filter", doc(`[[bridge]]`, `name = "a"`, `urls = ["mqtt://x"]`, `[[bridge.subscribe]]`, `remote = "cmd/#/x"`),
			`ralph.toml:5: bridge[0].subscribe[0].remote: topic filter "cmd/#/x": # must be the last level`},
		{"subscribe without remote", doc(`[[bridge]]`, `name = "a"`, `urls = ["mqtt://x"]`, `[[bridge.subscribe]]`, `qos = 1`),
			`ralph.toml:4: bridge[0].subscribe[0].remote: required key is missing (an MQTT topic filter, e.g. "site/shed/cmd/#")`},
		{"bad on_full", doc(`[queue]`, `on_full = "drop-newest"`),
			`ralph.toml:2: queue.on_full: "drop-newest" is not one of drop-oldest, reject`},
		{"tiny max_bytes", doc(`[queue]`, `max_bytes = "1KiB"`),
			`ralph.toml:2: queue.max_bytes: 1KiB is too small (allowed: 0 for no budget, or at least 1MiB)`},
		{"negative max_age", doc(`[queue]`, `max_age = "-1h"`),
			`ralph.toml:2: queue.max_age: -1h is negative (use "0s" for off)`},
		{"negative max_rate", doc(`[[bridge]]`, `name = "a"`, `urls = ["mqtt://x"]`, `max_rate = -5`, `[[bridge.forward]]`, `local = "#"`),
			`ralph.toml:4: bridge[0].max_rate: -5 must be 0 (no cap) or a positive number of messages per second`},
		{"sync_interval zero", doc(`[queue]`, `sync_interval = "0s"`),
			`ralph.toml:2: queue.sync_interval: 0s is out of range (allowed: more than 0s, at most 10s)`},
		{"sync_interval too long", doc(`[queue]`, `sync_interval = "1m"`),
			`ralph.toml:2: queue.sync_interval: 1m is out of range (allowed: more than 0s, at most 10s)`},
		{"max_syncs_per_second negative", doc(`[queue]`, `max_syncs_per_second = -1`),
			`ralph.toml:2: queue.max_syncs_per_second: -1 is out of range (allowed 0 .. 1000; 0 for no pacing)`},
		{"max_syncs_per_second too high", doc(`data_dir = "d"`, `[queue]`, `durability = "sync"`, `max_syncs_per_second = 1001`),
			`ralph.toml:4: queue.max_syncs_per_second: 1001 is out of range (allowed 0 .. 1000; 0 for no pacing)`},
		{"max_syncs_per_second a string", doc(`[queue]`, `max_syncs_per_second = "10"`),
			`ralph.toml:2: queue.max_syncs_per_second: expected an integer, got string "10"`},
		{"max_syncs_per_second a fraction", doc(`[queue]`, `max_syncs_per_second = 2.5`),
			`ralph.toml:2: queue.max_syncs_per_second: expected an integer, got float 2.5`},

		// Values: bridges.
		{"bad URL scheme", doc(
			`[[bridge]]`,
			`name = "up"`,
			`urls = [`,
			`  "mqtt://a:1883",`,
			`  "http://x:1883",`,
			`]`,
			`[[bridge.forward]]`,
			`local = "a"`),
			`ralph.toml:5: bridge[0].urls[1]: unsupported scheme "http" in "http://x:1883" (use mqtt://, tcp://, mqtts://, ssl://, ws:// or wss://)`},
		{"URL without host", afterOKBridge(`[[bridge]]`, `name = "b"`, `urls = ["mqtt://:1883"]`),
			`ralph.toml:7: bridge[1].urls[0]: missing host in "mqtt://:1883" (e.g. "mqtts://mqtt.example.com:8883")`},
		{"URL without scheme", doc(`[[bridge]]`, `name = "b"`, `urls = ["mqtt.example.com:8883"]`),
			`ralph.toml:3: bridge[0].urls[0]: "mqtt.example.com:8883" has no scheme (use mqtt://, tcp://, mqtts://, ssl://, ws:// or wss://, e.g. "mqtts://mqtt.example.com:8883")`},
		{"URL with path", doc(`[[bridge]]`, `name = "b"`, `urls = ["mqtt://h/topic"]`),
			`ralph.toml:3: bridge[0].urls[0]: unexpected path "/topic" in "mqtt://h/topic" (a broker URL has none)`},
		{"URL with query", doc(`[[bridge]]`, `name = "b"`, `urls = ["mqtt://h?x=1"]`),
			`ralph.toml:3: bridge[0].urls[0]: unexpected query in "mqtt://h?x=1" (a broker URL has none)`},
		{"URL with user", doc(`[[bridge]]`, `name = "b"`, `urls = ["mqtt://u:p@h"]`),
			`ralph.toml:3: bridge[0].urls[0]: user information is not supported in "mqtt://u:p@h"`},
		{"URL with port 0", doc(`[[bridge]]`, `name = "b"`, `urls = ["mqtt://h:0"]`),
			`ralph.toml:3: bridge[0].urls[0]: invalid port "0" in "mqtt://h:0" (use 1-65535)`},
		{"URL with bad port", doc(`[[bridge]]`, `name = "b"`, `urls = ["mqtt://h:x"]`),
			`ralph.toml:3: bridge[0].urls[0]: invalid URL "mqtt://h:x": invalid port ":x" after host`},
		{"no URLs", doc(`[[bridge]]`, `name = "b"`, `urls = []`),
			`ralph.toml:3: bridge[0].urls: at least one URL is required (e.g. "mqtts://mqtt.example.com:8883")`},
		{"missing urls", doc(`[[bridge]]`, `name = "b"`),
			`ralph.toml:1: bridge[0].urls: required key is missing (at least one broker URL, e.g. ["mqtts://mqtt.example.com:8883"])`},
		{"missing bridge name", afterOKBridge(``, `[[bridge]]`, `urls = ["mqtt://a"]`, `[[bridge.forward]]`, `local = "a"`),
			`ralph.toml:6: bridge[1].name: required key is missing (1 to 64 letters, digits, _ or -, unique among bridges)`},
		{"bad bridge name", doc(`[[bridge]]`, `name = "up stream"`),
			`ralph.toml:2: bridge[0].name: "up stream" is not a valid name (use 1 to 64 letters, digits, _ or -)`},
		{"duplicate bridge names", doc(
			`data_dir = "d"`,
			`[broker]`,
			`listen = ["127.0.0.1:1883"]`,
			`[[bridge]]`,
			`name = "up"`,
			`urls = ["mqtt://a"]`,
			`[[bridge.forward]]`,
			`local = "a/#"`,
			`# second bridge`,
			``,
			`[[bridge]]`,
			`name = "up"`,
			`urls = ["mqtt://b"]`,
			`[[bridge.forward]]`,
			`local = "b/#"`),
			`ralph.toml:12: bridge[1].name: duplicate bridge name "up" (first defined on line 5)`},
		{"no forward rules", doc(`[[bridge]]`, `name = "up"`, `urls = ["mqtt://a"]`),
			`ralph.toml:1: bridge[0].forward: at least one [[bridge.forward]] or [[bridge.subscribe]] rule is required`},
		{"empty forward array", doc(`[[bridge]]`, `name = "up"`, `urls = ["mqtt://a"]`, `forward = []`),
			`ralph.toml:4: bridge[0].forward: at least one [[bridge.forward]] or [[bridge.subscribe]] rule is required`},
		{"missing local", doc(`[[bridge]]`, `name = "up"`, `urls = ["mqtt://a"]`, `[[bridge.forward]]`, `local = "a"`, `[[bridge.forward]]`, `qos = 0`),
			`ralph.toml:6: bridge[0].forward[1].local: required key is missing (an MQTT topic filter, e.g. "sensors/#")`},
		{"bad topic filter", doc(`[[bridge]]`, `name = "up"`, `urls = ["mqtt://a"]`, `[[bridge.forward]]`, `local = "sensors/#/x"`),
			`ralph.toml:5: bridge[0].forward[0].local: topic filter "sensors/#/x": # must be the last level`},
		{"wildcard in remote_prefix", bridgeWith(`[[bridge.forward]]`, `local = "a"`, `remote_prefix = "edge/+/"`),
			`ralph.toml:6: bridge[0].forward[0].remote_prefix: topic "edge/+/": wildcards + and # are not allowed in a topic name`},
		{"qos 3", doc(`[[bridge]]`, `name = "up"`, `urls = ["mqtt://a"]`, `[[bridge.forward]]`, `local = "a"`, `[[bridge.forward]]`, `local = "b"`, `qos = 3`),
			`ralph.toml:8: bridge[0].forward[1].qos: 3 is not one of 0, 1, 2`},
		{"bad duration", bridgeWith(`keepalive = "5 parsecs"`),
			`ralph.toml:4: bridge[0].keepalive: invalid duration "5 parsecs" (use a number with a unit: ns, us, ms, s, m or h, e.g. "30s" or "1h30m")`},
		{"keepalive too short", bridgeWith(`keepalive = "0s"`),
			`ralph.toml:4: bridge[0].keepalive: 0s is out of range (allowed 1s .. 18h)`},
		{"keepalive fraction", bridgeWith(`keepalive = "1.5s"`),
			`ralph.toml:4: bridge[0].keepalive: 1.5s is not a whole number of seconds`},
		{"connect_timeout zero", bridgeWith(`connect_timeout = "0s"`),
			`ralph.toml:4: bridge[0].connect_timeout: 0s is out of range (allowed: more than 0s)`},
		{"reconnect_max below reconnect_min", bridgeWith(`reconnect_min = "1m"`, `reconnect_max = "30s"`),
			`ralph.toml:5: bridge[0].reconnect_max: 30s is less than reconnect_min (1m)`},
		{"reconnect_min above default reconnect_max", bridgeWith(`reconnect_min = "2m"`),
			`ralph.toml:4: bridge[0].reconnect_min: 2m is more than reconnect_max (default 1m)`},
		{"negative session_expiry", bridgeWith(`session_expiry = "-1s"`),
			`ralph.toml:4: bridge[0].session_expiry: -1s is out of range (allowed 0s .. 1193046h28m15s)`},
		{"max_inflight too large", bridgeWith(`max_inflight = 70000`),
			`ralph.toml:4: bridge[0].max_inflight: 70000 is out of range (allowed 1 .. 65535)`},
		{"empty client_id", bridgeWith(`client_id = ""`),
			`ralph.toml:4: bridge[0].client_id: must not be empty (leave the key out for the default "ralph-<hostname>-<name>")`},

		// Inline tables and dotted keys are located too.
		{"inline bridge", doc(`# comment`, `bridge = [{name = "a", urls = ["ftp://x"], forward = [{local = "a"}]}]`),
			`ralph.toml:2: bridge[0].urls[0]: unsupported scheme "ftp" in "ftp://x" (use mqtt://, tcp://, mqtts://, ssl://, ws:// or wss://)`},
		{"inline table over lines", doc(`bridge = [`, `  {name = "a", urls = ["mqtt://x"], forward = [{local = "a"}]},`, `  {name = "b", urls = ["mqtt://x"], forward = [{local = "a"}, {local = "#/a"}]},`, `]`),
			`ralph.toml:3: bridge[1].forward[1].local: topic filter "#/a": # must be the last level`},
		{"dotted key in table", doc(`[[bridge]]`, `name = "a"`, `urls = ["mqtt://x"]`, `forward = [{local = "a"}]`, `queue.durability = "x"`),
			`ralph.toml:5: bridge[0].queue: unknown key`},
		{"dotted key value", doc(`queue.durability = "fast"`),
			`ralph.toml:1: queue.durability: "fast" is not one of sync, interval`},
		{"CRLF line endings", "[log]\r\nlevel = \"info\"\r\nformat = \"xml\"\r\n",
			`ralph.toml:3: log.format: "xml" is not one of text, json`},
		{"byte order mark", "\xef\xbb\xbf[log]\nformat = \"xml\"\n",
			`ralph.toml:2: log.format: "xml" is not one of text, json`},
		{"URL scheme in capitals", doc(`[[bridge]]`, `name = "b"`, `urls = ["HTTP://h"]`),
			`ralph.toml:3: bridge[0].urls[0]: unsupported scheme "http" in "HTTP://h" (use mqtt://, tcp://, mqtts://, ssl://, ws:// or wss://)`},

		// Serial ports.
		{"user without a password", doc(`[[broker.users]]`, `name = "a"`),
			`ralph.toml:1: broker.users[0].password_hash: required: a bcrypt hash from "ralph passwd" (or a [[broker.tls]] listener with cert_username, for certificate login only)`},
		{"cert_username without a client CA", doc(`[[broker.tls]]`, `listen = "127.0.0.1:8883"`, `cert_file = "/x.pem"`, `key_file = "/x.key"`, `cert_username = true`),
			`ralph.toml:5: broker.tls[0].cert_username: needs client_ca_file: only a verified certificate can name a user`},
		{"serial without a device", doc(`[[serial]]`, `name = "k"`),
			`ralph.toml:1: serial[0].path: required key is missing (a device such as "/dev/ttyUSB0", or match = { vid = "10c4", pid = "ea60" })`},
		{"serial path and match", doc(`[[serial]]`, `name = "k"`, `path = "/dev/ttyUSB0"`, `match = { vid = "10c4" }`),
			`ralph.toml:4: serial[0].match: set path or match, not both`},
		{"serial relative path", doc(`[[serial]]`, `name = "k"`, `path = "ttyUSB0"`),
			`ralph.toml:3: serial[0].path: "ttyUSB0" is not an absolute path`},
		{"serial bad vid", doc(`[[serial]]`, `name = "k"`, `match = { vid = "10c4", pid = "ea6" }`),
			`ralph.toml:3: serial[0].match.pid: "ea6" is not 4 hex digits (as lsusb shows it, e.g. "10c4")`},
		{"serial empty match", doc(`[[serial]]`, `name = "k"`, `[serial.match]`),
			`ralph.toml:3: serial[0].match: matches every USB serial device: give vid, pid or serial`},
		{"serial unknown match key", doc(`[[serial]]`, `name = "k"`, `match = { vendor = "10c4" }`),
			`ralph.toml:3: serial[0].match.vendor: unknown key`},
		{"serial duplicate name", doc(`[[serial]]`, `name = "k"`, `path = "/dev/a"`, `[[serial]]`, `name = "k"`, `path = "/dev/b"`),
			`ralph.toml:5: serial[1].name: duplicate serial port name "k" (first defined on line 2)`},
		{"serial same path", doc(`[[serial]]`, `name = "a"`, `path = "/dev/ttyUSB0"`, `[[serial]]`, `name = "b"`, `path = "/dev/ttyUSB0"`),
			`ralph.toml:6: serial[1].path: "/dev/ttyUSB0" is also the path of serial[0]`},
		{"serial matches overlap", doc(`[[serial]]`, `name = "a"`, `match = { vid = "10c4", pid = "ea60" }`, `[[serial]]`, `name = "b"`, `match = { vid = "10C4", serial = "7" }`),
			"ralph.toml:6: serial[1].match: matches the same devices as serial[0] (tell them apart with serial = \"...\"; `ralph serial` lists them)"},
		{"serial prefix without slash", doc(`[[serial]]`, `name = "k"`, `path = "/dev/a"`, `topic_prefix = "devices/k"`),
			`ralph.toml:4: serial[0].topic_prefix: "devices/k" must end with "/" (the board's topics are appended to it)`},
		{"serial prefix with wildcard", doc(`[[serial]]`, `name = "k"`, `path = "/dev/a"`, `topic_prefix = "devices/+/"`),
			`ralph.toml:4: serial[0].topic_prefix: topic "devices/+/": wildcards + and # are not allowed in a topic name`},
		{"serial unknown user", doc(`[[serial]]`, `name = "k"`, `path = "/dev/a"`, `user = "nobody"`),
			`ralph.toml:4: serial[0].user: "nobody" is not one of the [[broker.users]]`},
		{"serial window", doc(`[[serial]]`, `name = "k"`, `path = "/dev/a"`, `window = 0`),
			`ralph.toml:4: serial[0].window: 0 is out of range (allowed 1 .. 256)`},
		{"serial max_line", doc(`[[serial]]`, `name = "k"`, `path = "/dev/a"`, `max_line = 100`),
			`ralph.toml:4: serial[0].max_line: 100 is out of range (allowed 256 .. 65536)`},
		{"serial baud type", doc(`[[serial]]`, `name = "k"`, `path = "/dev/a"`, `baud = "fast"`),
			`ralph.toml:4: serial[0].baud: expected an integer, got string "fast"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("ralph.toml", []byte(tt.toml))
			if err == nil {
				t.Fatalf("no error, config %+v\nwant %s", cfg, tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("wrong error\n got: %s\nwant: %s", err, tt.want)
			}
		})
	}
}

// Errors carry the file name given to LoadConfig.
func TestLoadConfigErrorName(t *testing.T) {
	path := t.TempDir() + "/bad.toml"
	if err := os.WriteFile(path, []byte(doc(`[queue]`, `durability = "fast"`)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	want := path + `:2: queue.durability: "fast" is not one of sync, interval`
	if err == nil || err.Error() != want {
		t.Errorf("LoadConfig = %v, want %s", err, want)
	}
}

// A line that cannot be determined is left out rather than guessed.
func TestConfigErrorWithoutLine(t *testing.T) {
	p := &configParser{name: "x.toml", tree: map[string]any{"broker": map[string]any{"listen": []any{}}}, lines: map[string]int{}}
	got := p.errorf(keyPath{}.key("broker", "listen"), "bad").Error()
	if want := "x.toml: broker.listen: bad"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	// Absent key: the line of its table.
	p.lines["broker"] = 7
	got = p.errorf(keyPath{}.key("broker", "receive_maximum"), "bad").Error()
	if want := "x.toml:7: broker.receive_maximum: bad"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	// The library's own error formats are rewritten with the line once.
	p.lines["broker.listen"] = 3
	got = p.decodeError(errors.New(`toml: line 9 (last key "broker.listen"): incompatible types: TOML value has type int64; destination has type slice`), false).Error()
	if want := "x.toml:3: broker.listen: incompatible types: TOML value has type int64; destination has type slice"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	got = p.decodeError(errors.New(`toml: line 9 (last key "bridge.forward.qos"): incompatible types`), false).Error()
	if want := "x.toml: bridge.forward.qos: incompatible types"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
