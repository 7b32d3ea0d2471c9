package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ralph-gateway/ralph/gateway"
	"github.com/ralph-gateway/ralph/internal/mqtttest"
)

// TestUpstreamTLSAndAuth bridges to a real Mosquitto over TLS, mutual TLS
// and with a username and password, and checks that a wrong CA, a missing
// client certificate and a wrong password are refused and reported.
func TestUpstreamTLSAndAuth(t *testing.T) {
	dir := t.TempDir()
	pki := mqtttest.NewPKI(t, dir, "good")
	other := mqtttest.NewPKI(t, dir, "other")
	pwFile := filepath.Join(dir, "passwd")
	if out, err := exec.Command("mosquitto_passwd", "-b", "-c", pwFile, "ralph", "s3cret").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v %s", err, out)
	}
	os.WriteFile(filepath.Join(dir, "right"), []byte("s3cret\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "wrong"), []byte("guess\n"), 0o600)

	tests := []struct {
		name    string
		broker  string // settings of the TLS listener
		bridge  string // extra bridge keys
		wantErr string // "" means messages must arrive
	}{
		{"tls", "require_certificate false\nallow_anonymous true",
			fmt.Sprintf("ca_file = %q", pki.CA), ""},
		{"mutual tls", "require_certificate true\nallow_anonymous true",
			fmt.Sprintf("ca_file = %q\ncert_file = %q\nkey_file = %q", pki.CA, pki.ClientCert, pki.ClientKey), ""},
		{"password over tls", fmt.Sprintf("require_certificate false\nallow_anonymous false\npassword_file %s", pwFile),
			fmt.Sprintf("ca_file = %q\nusername = \"ralph\"\npassword_file = %q", pki.CA, filepath.Join(dir, "right")), ""},
		{"server cert from an unknown CA", "require_certificate false\nallow_anonymous true",
			fmt.Sprintf("ca_file = %q", other.CA), "certificate signed by unknown authority"},
		{"client cert missing", "require_certificate true\nallow_anonymous true",
			// TLS 1.3 lets the client finish its handshake before the
			// server checks for a certificate: the refusal may surface as
			// the server's alert or as the connection being reset.
			fmt.Sprintf("ca_file = %q", pki.CA), "certificate required|connection reset|broken pipe|EOF"},
		{"wrong password", fmt.Sprintf("require_certificate false\nallow_anonymous false\npassword_file %s", pwFile),
			fmt.Sprintf("ca_file = %q\nusername = \"ralph\"\npassword_file = %q", pki.CA, filepath.Join(dir, "wrong")), "connect refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tlsPort, plainPort := mqtttest.FreePort(t), mqtttest.FreePort(t)
			mdir := t.TempDir()
			mqtttest.StartMosquittoConf(t, plainPort, mdir, fmt.Sprintf(`per_listener_settings true
persistence false
log_dest none
listener %d 127.0.0.1
cafile %s
certfile %s
keyfile %s
%s
listener %d 127.0.0.1
allow_anonymous true
`, tlsPort, pki.CA, pki.ServerCert, pki.ServerKey, tt.broker, plainPort))
			c := mqtttest.Subscribe(t, fmt.Sprintf("127.0.0.1:%d", plainPort), "collector", "edge/#", nil)

			s := newSetup(t, "unused:1", "")
			cfg, _ := os.ReadFile(s.config)
			conf := strings.Replace(string(cfg), `urls = ["mqtt://unused:1"]`,
				fmt.Sprintf("urls = [\"mqtts://127.0.0.1:%d\"]\n%s", tlsPort, tt.bridge), 1)
			os.WriteFile(s.config, []byte(conf), 0o644)
			p := startRalph(t, s.config, s.addr)
			want := publish(t, s.addr, "dev", 5, "sensors/a", payloads("a", 0, 5))
			if tt.wantErr == "" {
				verify(t, c.WaitAll(t, want, 15*time.Second), want, edgeTopic("a"))
				p.stop()
				return
			}
			st := waitStatus(t, s, "a connection error", func(st gateway.Status) bool {
				return st.Bridges[0].LastError != "" && st.Bridges[0].Reconnects == 0
			})
			matched := false
			for _, w := range strings.Split(tt.wantErr, "|") {
				matched = matched || strings.Contains(st.Bridges[0].LastError, w)
			}
			if st.Bridges[0].Connected || !matched {
				t.Fatalf("bridge %+v: want disconnected with an error containing %q", st.Bridges[0], tt.wantErr)
			}
			if got := c.Messages(); len(got) != 0 {
				t.Fatalf("%d messages arrived through a refused connection", len(got))
			}
			if st.Bridges[0].Queued != 5 {
				t.Fatalf("%d queued, want the 5 kept for later", st.Bridges[0].Queued)
			}
			p.stop()
		})
	}
}
