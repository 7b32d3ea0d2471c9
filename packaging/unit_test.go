package main

import (
	"os"
	"strings"
	"testing"
)

// TestUnitFile pins the directives the package promises, so that an edit
// of packaging/ralph.service cannot silently drop one. That systemd
// accepts them is checked by systemd-analyze verify (TestInstallChroot)
// and by starting the service (TestServiceBooted).
func TestUnitFile(t *testing.T) {
	text, err := os.ReadFile("ralph.service")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	section := ""
	for line := range strings.Lines(string(text)) {
		line = strings.TrimSpace(line)
		switch {
		case line == "", strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = line
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Errorf("not a directive: %q", line)
			}
			if _, dup := got[section+k]; dup {
				t.Errorf("%s set twice", k)
			}
			got[section+k] = v
		}
	}
	for k, v := range map[string]string{
		"Type":                    "notify",
		"ExecStart":               "/usr/bin/ralph run --config /etc/ralph/ralph.toml",
		"ExecReload":              "/bin/kill -HUP $MAINPID",
		"User":                    "ralph",
		"Group":                   "ralph",
		"SupplementaryGroups":     "dialout",
		"StateDirectory":          "ralph",
		"StateDirectoryMode":      "0750",
		"WorkingDirectory":        "/var/lib/ralph",
		"ProtectSystem":           "strict",
		"ProtectHome":             "true",
		"PrivateTmp":              "true",
		"NoNewPrivileges":         "true",
		"PrivateDevices":          "false",
		"ProtectKernelTunables":   "true",
		"ProtectKernelModules":    "true",
		"ProtectControlGroups":    "true",
		"RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
		"LockPersonality":         "true",
		"RestrictRealtime":        "true",
		"SystemCallArchitectures": "native",
		"Restart":                 "on-failure",
		"RestartSec":              "2s",
		"LimitNOFILE":             "65536",
		"TimeoutStopSec":          "30s",
		"CapabilityBoundingSet":   "",
		"UMask":                   "0027",
		"ProtectKernelLogs":       "true",
		"ProtectClock":            "true",
		"ProtectHostname":         "true",
		"ProtectProc":             "invisible",
		"RestrictNamespaces":      "true",
		"RestrictSUIDSGID":        "true",
		"MemoryDenyWriteExecute":  "true",
		"RemoveIPC":               "true",
	} {
		if got["[Service]"+k] != v {
			t.Errorf("[Service] %s=%q, want %q", k, got["[Service]"+k], v)
		}
	}
	if got["[Install]WantedBy"] != "multi-user.target" {
		t.Errorf("[Install] WantedBy=%q", got["[Install]WantedBy"])
	}
}
