package configs

// auth = "azure-sas" on a bridge, and remote_topic on a forward rule.

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestAzureSAS(t *testing.T) {
	dir := t.TempDir()
	keyFile, badKey := filepath.Join(dir, "device.key"), filepath.Join(dir, "bad.key")
	os.WriteFile(keyFile, []byte("MDEyMzQ1Njc4OWFiY2RlZg==\n"), 0o600)
	os.WriteFile(badKey, []byte("not base64!\n"), 0o600)
	azure := func(lines ...string) string {
		return doc(append([]string{`[[bridge]]`, `name = "hub"`, `urls = ["mqtts://hub.azure-devices.net:8883"]`, `protocol = "3.1.1"`},
			append(lines, `[[bridge.forward]]`, `local = "a/#"`, `remote_topic = "devices/dev1/messages/events/"`)...)...)
	}
	cfg, err := Parse("ralph.toml", []byte(azure(`auth = "azure-sas"`, `client_id = "dev1"`, `sas_key_file = "`+keyFile+`"`)))
	if err != nil {
		t.Fatal(err)
	}
	b := cfg.Bridges[0]
	if b.Auth != "azure-sas" || b.SASTTL.Duration != time.Hour || b.Forward[0].RemoteTopic != "devices/dev1/messages/events/" {
		t.Errorf("auth %q, sas_ttl %v, remote_topic %q", b.Auth, b.SASTTL, b.Forward[0].RemoteTopic)
	}
	if key, err := ReadSASKey(keyFile); err != nil || string(key) != "0123456789abcdef" {
		t.Errorf("ReadSASKey = %q, %v", key, err)
	}
	if d := DefaultBridge("x"); d.Auth != "password" {
		t.Errorf("default auth %q", d.Auth)
	}
	for _, tt := range []struct{ toml, want string }{
		{azure(`auth = "sas"`), `ralph.toml:5: bridge[0].auth: "sas" is not one of password, azure-sas`},
		{azure(`auth = "azure-sas"`, `client_id = "dev1"`), `ralph.toml:1: bridge[0].sas_key_file: required with auth = "azure-sas": a file holding the device's key (base64, as the portal shows it)`},
		{azure(`auth = "azure-sas"`, `sas_key_file = "`+keyFile+`"`), `ralph.toml:1: bridge[0].client_id: required with auth = "azure-sas": the IoT Hub device id`},
		{azure(`auth = "azure-sas"`, `client_id = "dev1"`, `sas_key_file = "`+badKey+`"`), `ralph.toml:7: bridge[0].sas_key_file: ` + badKey + ` does not hold a base64 key on its first line`},
		{azure(`auth = "azure-sas"`, `client_id = "dev1"`, `sas_key_file = "/nonexistent/key"`), `ralph.toml:7: bridge[0].sas_key_file: open /nonexistent/key: no such file or directory`},
		{azure(`auth = "azure-sas"`, `client_id = "dev1"`, `sas_key_file = "`+keyFile+`"`, `password = "x"`),
			`ralph.toml:8: bridge[0].password: not with auth = "azure-sas": the username is <hub>/<device>/?api-version=…, the password a SAS token Ralph makes`},
		{azure(`auth = "azure-sas"`, `client_id = "dev1"`, `sas_key_file = "`+keyFile+`"`, `sas_ttl = "0s"`), `ralph.toml:8: bridge[0].sas_ttl: 0s is out of range (allowed 1s .. 8760h)`},
		{azure(`sas_ttl = "1h"`), `ralph.toml:5: bridge[0].sas_ttl: applies to auth = "azure-sas" only`},
		{doc(`[[bridge]]`, `name = "hub"`, `urls = ["mqtt://hub:1883"]`, `auth = "azure-sas"`, `client_id = "dev1"`, `sas_key_file = "`+keyFile+`"`, `[[bridge.forward]]`, `local = "a/#"`),
			`ralph.toml:3: bridge[0].urls: auth = "azure-sas" needs TLS, and "mqtt://hub:1883" is not mqtts://, ssl:// or tls:// (IoT Hub listens on mqtts://<hub>.azure-devices.net:8883)`},
		{doc(`[[bridge]]`, `name = "b"`, `urls = ["mqtt://h"]`, `[[bridge.forward]]`, `local = "a/#"`, `remote_topic = "x/y"`, `remote_prefix = "p/"`),
			`ralph.toml:7: bridge[0].forward[0].remote_prefix: set remote_topic or remote_prefix, not both`},
		{doc(`[[bridge]]`, `name = "b"`, `urls = ["mqtt://h"]`, `[[bridge.forward]]`, `local = "a/#"`, `remote_topic = "x/#"`),
			`ralph.toml:6: bridge[0].forward[0].remote_topic: topic "x/#": wildcards + and # are not allowed in a topic name`},
	} {
		_, err := Parse("ralph.toml", []byte(tt.toml))
		if err == nil || err.Error() != tt.want {
			t.Errorf("%s:\ngot  %v\nwant %s", tt.toml, err, tt.want)
		}
	}
}
