package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// qemuFor is the qemu-user emulator of each architecture.
var qemuFor = map[string]string{
	"arm64": "qemu-aarch64",
	"armhf": "qemu-arm",
	"amd64": "qemu-x86_64",
}

// hostArch is the Debian name of the architecture the tests run on.
func hostArch() string {
	if runtime.GOARCH == "arm" {
		return "armhf"
	}
	return runtime.GOARCH
}

// TestBinariesRun runs each packaged binary (the host's natively, the
// others under qemu-user): it prints the package version and accepts the
// packaged config.
func TestBinariesRun(t *testing.T) {
	requireTool(t, "dpkg-deb", "dpkg")
	for _, arch := range allArches {
		t.Run(arch, func(t *testing.T) {
			data := extract(t, debs(t)[arch])
			cmd := []string{filepath.Join(data, "usr", "bin", "ralph")}
			if arch != hostArch() {
				cmd = append([]string{requireQemu(t, qemuFor[arch])}, cmd...)
			}
			conf := filepath.Join(data, "etc", "ralph", "ralph.toml")

			if out := run(t, cmd[0], append(cmd[1:], "version")...); out != "ralph "+testVersion+"\n" {
				t.Errorf("ralph version printed %q", out)
			}
			out := run(t, cmd[0], append(cmd[1:], "check", "--config", conf)...)
			if !strings.HasPrefix(out, conf+": ok\n") {
				t.Errorf("ralph check --config printed %q", out)
			}
			t.Logf("ralph check on %s:\n%s", arch, out)
			// And check is not a rubber stamp: decoding is strict.
			text, err := os.ReadFile(conf)
			if err != nil {
				t.Fatal(err)
			}
			broken := filepath.Join(t.TempDir(), "broken.toml")
			os.WriteFile(broken, append([]byte("no_such_key = 1\n"), text...), 0o644)
			if out, err := exec.Command(cmd[0], append(cmd[1:], "check", "--config", broken)...).CombinedOutput(); err == nil {
				t.Errorf("ralph check accepted an unknown key:\n%s", out)
			}
		})
	}
}

// requireQemu returns the path of a qemu-user emulator. CI installs
// qemu-user; only where no such package exists is the test skipped.
func requireQemu(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if exec.Command("apt-cache", "show", "qemu-user").Run() == nil {
		t.Fatalf("%s not found: apt-get install -y qemu-user", name)
	}
	t.Skipf("%s not found and qemu-user is not installable here", name)
	return ""
}
