package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const (
	confPath   = "/etc/ralph/ralph.toml"
	wantsLink  = "/etc/systemd/system/multi-user.target.wants/ralph.service"
	serviceBin = "/usr/bin/ralph"
)

// inChroot runs a command inside root with chroot(8), failing the test if
// it fails.
func inChroot(t *testing.T, root string, args ...string) string {
	t.Helper()
	cmd := exec.Command("chroot", append([]string{root}, args...)...)
	cmd.Env = rootEnv
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("chroot %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestInstallChroot installs, upgrades, removes and purges the amd64
// package with dpkg in a chroot where systemd does not run, as when an SD
// card image is built: the package must install cleanly, and be enabled to
// start on first boot.
func TestInstallChroot(t *testing.T) {
	requireTool(t, "chroot", "coreutils")
	requireTool(t, "systemd-analyze", "systemd")
	deb, up := debs(t)["amd64"], upgrade(t)
	root := testRoot(t)

	out := inChroot(t, root, "dpkg", "-i", copyDeb(t, root, deb))
	t.Logf("dpkg -i:\n%s", out)

	// The service user and its files.
	a := lookup(t, root, "ralph")
	if !a.found || a.home != "/var/lib/ralph" || a.shell != "/usr/sbin/nologin" {
		t.Errorf("user ralph: %+v", a)
	}
	if a.gid != a.groupByName["ralph"] || a.uid >= 1000 {
		t.Errorf("ralph is not a system user with its own group: uid %d gid %d", a.uid, a.gid)
	}
	if !slices.Contains(a.groups, "dialout") {
		t.Errorf("ralph is not in dialout, only in %v", a.groups)
	}
	checkOwner(t, root, confPath, 0o640, 0, a.gid)
	checkOwner(t, root, "/var/lib/ralph", os.ModeDir|0o750, a.uid, a.gid)
	checkOwner(t, root, serviceBin, 0o755, 0, 0)
	if target, err := os.Readlink(filepath.Join(root, wantsLink)); err != nil || target != "/lib/systemd/system/ralph.service" {
		t.Errorf("ralph.service not enabled: %q %v", target, err)
	}

	// The config is valid, also for the user the service runs as.
	inChroot(t, root, serviceBin, "check", "--config", confPath)
	inChroot(t, root, "runuser", "-u", "ralph", "--", serviceBin, "check", "--config", confPath)

	// systemd accepts the unit, as installed, with its binary in place.
	// verify reports problems on stderr but exits 0 for most of them.
	verify := exec.Command("systemd-analyze", "verify", "--man=no", "--root="+root, "ralph.service")
	if out, err := verify.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	// The admin edits the config; the upgrade brings a different one.
	conf := filepath.Join(root, confPath)
	text, _ := os.ReadFile(conf)
	edited := strings.Replace(string(text), "\nlevel = \"info\"\n", "\nlevel = \"debug\"\n", 1)
	if edited == string(text) {
		t.Fatal("no level = \"info\" line to edit in the packaged config")
	}
	if err := os.WriteFile(conf, []byte(edited), 0o640); err != nil {
		t.Fatal(err)
	}
	inChroot(t, root, "dpkg", "-i", "--force-confold", copyDeb(t, root, up))
	if got, _ := os.ReadFile(conf); string(got) != edited {
		t.Error("the upgrade replaced the edited config")
	}
	if dist, _ := os.ReadFile(conf + ".dpkg-dist"); !strings.Contains(string(dist), "# New in "+upgradeVersion) {
		t.Error("the new config is not beside it as ralph.toml.dpkg-dist")
	}
	checkOwner(t, root, confPath, 0o640, 0, a.gid)
	if v := inChroot(t, root, serviceBin, "version"); v != "ralph "+upgradeVersion+"\n" {
		t.Errorf("after the upgrade: %s", v)
	}
	if a2 := lookup(t, root, "ralph"); a2.uid != a.uid {
		t.Errorf("the upgrade changed ralph's uid from %d to %d", a.uid, a2.uid)
	}

	// Remove keeps the configuration (and the enable symlink, so a
	// reinstall is as enabled as before); purge deletes config and data
	// but keeps the user.
	os.WriteFile(filepath.Join(root, "var/lib/ralph/queued"), []byte("x"), 0o640)
	inChroot(t, root, "dpkg", "--remove", "ralph")
	if exists(root, serviceBin) || !exists(root, confPath) || !exists(root, "/var/lib/ralph/queued") || !exists(root, wantsLink) {
		t.Error("remove: the binary must go, config, data and enable link stay")
	}
	inChroot(t, root, "dpkg", "--purge", "ralph")
	for _, p := range []string{"/etc/ralph", "/var/lib/ralph", wantsLink} {
		if exists(root, p) {
			t.Errorf("purge left %s", p)
		}
	}
	if !lookup(t, root, "ralph").found {
		t.Error("purge deleted the user ralph (Debian policy: keep it)")
	}
}
