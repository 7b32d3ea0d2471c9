package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// The packages under test are built once per test binary: cross-compiling
// three times is the slowest part of the tests.
const (
	testVersion    = "1.0.0"
	upgradeVersion = "1.0.1"
)

var (
	buildDir   string // removed by TestMain
	buildOnce  sync.Once
	builtDebs  map[string]string // Debian arch -> .deb of testVersion
	buildErr   error
	upOnce     sync.Once
	upgradeDeb string // amd64 .deb of upgradeVersion with a changed conffile
	upErr      error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// debs returns the .deb of testVersion for every architecture, built with
// the same code as "go run ./packaging".
func debs(t *testing.T) map[string]string {
	t.Helper()
	buildOnce.Do(func() {
		var out string
		if out, buildErr = sharedDir("debs"); buildErr != nil {
			return
		}
		var paths []string
		paths, buildErr = Build(context.Background(), Options{Version: testVersion, Out: out})
		builtDebs = map[string]string{}
		for _, p := range paths {
			arch := strings.TrimSuffix(p[strings.LastIndex(p, "_")+1:], ".deb")
			builtDebs[arch] = p
		}
	})
	if buildErr != nil {
		t.Fatalf("building the packages: %v", buildErr)
	}
	return builtDebs
}

// upgrade returns an amd64 .deb of upgradeVersion whose conffile differs
// from testVersion's, as it would after the example config changed: only
// then does dpkg have to choose between the admin's edits and the new
// file.
func upgrade(t *testing.T) string {
	t.Helper()
	upOnce.Do(func() {
		var dir string
		if dir, upErr = sharedDir("upgrade"); upErr != nil {
			return
		}
		example, err := os.ReadFile(filepath.Join(repoRoot(t), "configs", "ralph.toml"))
		if err != nil {
			upErr = err
			return
		}
		changed := filepath.Join(dir, "ralph.toml")
		example = append(example, "\n# New in "+upgradeVersion+".\n"...)
		if upErr = os.WriteFile(changed, example, 0o644); upErr != nil {
			return
		}
		var paths []string
		paths, upErr = Build(context.Background(), Options{
			Version: upgradeVersion, Arches: []string{"amd64"}, Out: dir, Config: changed,
		})
		if upErr == nil {
			upgradeDeb = paths[0]
		}
	})
	if upErr != nil {
		t.Fatalf("building the upgrade package: %v", upErr)
	}
	return upgradeDeb
}

// sharedDir makes a directory under buildDir, for files that outlive the
// test that made them.
func sharedDir(name string) (string, error) {
	if buildDir == "" {
		d, err := os.MkdirTemp("", "ralph-packaging-test-")
		if err != nil {
			return "", err
		}
		buildDir = d
	}
	dir := filepath.Join(buildDir, name)
	return dir, os.MkdirAll(dir, 0o755)
}

// repoRoot is the repository root (tests run in packaging/).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// requireTool fails the test, saying how to install it, if a command is
// missing. These tests exist to run the real tools; skipping would hide
// that they did not.
func requireTool(t *testing.T, name, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s not found: apt-get install -y %s", name, pkg)
	}
}

// requireRoot fails the test unless it runs as root.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test installs packages into a Debian root and must run as root")
	}
}

// run runs a command and returns its combined output, failing the test if
// it fails.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// extract unpacks the data of a .deb into a new directory.
func extract(t *testing.T, deb string) string {
	t.Helper()
	dir := t.TempDir()
	run(t, "dpkg-deb", "-x", deb, dir)
	return dir
}
