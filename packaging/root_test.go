package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The install tests need a Debian system with a dpkg database. debootstrap
// makes one (a minbase bookworm, as on Raspberry Pi OS 12, plus systemd to
// boot it and to verify the unit, and procps for the unit's /bin/kill) once
// per machine; each test installs into a fresh copy of it. Cold, on this
// project's 2-core development VM, debootstrap took 25-35 s; a copy takes
// under a second.
const (
	rootCache  = "/var/cache/ralph-test-root"
	rootName   = "bookworm-minbase-systemd-1" // change when the recipe below changes
	rootMirror = "http://deb.debian.org/debian"
)

// testRoot returns a fresh copy of the cached Debian root, removed when
// the test ends.
func testRoot(t *testing.T) string {
	t.Helper()
	requireRoot(t)
	cached := cachedRoot(t)
	dir := t.TempDir()
	if out, err := exec.Command("cp", "-a", cached+"/.", dir).CombinedOutput(); err != nil {
		t.Fatalf("copying the test root: %v\n%s", err, out)
	}
	return dir
}

// cachedRoot returns the cached root, making it first if needed. A lock
// keeps concurrent test runs from bootstrapping twice, and the tree is
// built aside and renamed, so an interrupted run leaves no half tree.
func cachedRoot(t *testing.T) string {
	t.Helper()
	requireTool(t, "debootstrap", "debootstrap")
	dir := filepath.Join(rootCache, rootName)
	if err := os.MkdirAll(rootCache, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(rootCache, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err == nil {
		return dir
	}
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	start := time.Now()
	out, err := exec.Command("debootstrap", "--variant=minbase", "--include=systemd,procps",
		"bookworm", tmp, rootMirror).CombinedOutput()
	if err != nil {
		os.RemoveAll(tmp)
		t.Fatalf("debootstrap: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, dir); err != nil {
		t.Fatal(err)
	}
	t.Logf("debootstrap made %s in %v", dir, time.Since(start).Round(time.Second))
	return dir
}

// rootEnv is the environment of commands run inside a test root.
var rootEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"LC_ALL=C", "DEBIAN_FRONTEND=noninteractive", "HOME=/root",
}

// copyDeb puts a package where commands inside root find it, and returns
// that path. Not /tmp: a booted container mounts its own there.
func copyDeb(t *testing.T, root, deb string) string {
	t.Helper()
	data, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	inside := "/root/" + filepath.Base(deb)
	if err := os.WriteFile(filepath.Join(root, inside), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return inside
}

// account is a user's passwd entry in a test root.
type account struct {
	uid, gid    int
	home, shell string
	groups      []string // names of the groups listing the user
	groupByName map[string]int
	found       bool
}

// lookup reads user's entries from root's /etc/passwd and /etc/group.
func lookup(t *testing.T, root, user string) account {
	t.Helper()
	a := account{groupByName: map[string]int{}}
	passwd, _ := os.ReadFile(filepath.Join(root, "etc", "passwd"))
	for line := range strings.Lines(string(passwd)) {
		f := strings.Split(strings.TrimSpace(line), ":")
		if len(f) == 7 && f[0] == user {
			a.uid, _ = strconv.Atoi(f[2])
			a.gid, _ = strconv.Atoi(f[3])
			a.home, a.shell, a.found = f[5], f[6], true
		}
	}
	group, _ := os.ReadFile(filepath.Join(root, "etc", "group"))
	for line := range strings.Lines(string(group)) {
		f := strings.Split(strings.TrimSpace(line), ":")
		if len(f) != 4 {
			continue
		}
		a.groupByName[f[0]], _ = strconv.Atoi(f[2])
		for _, m := range strings.Split(f[3], ",") {
			if m == user {
				a.groups = append(a.groups, f[0])
			}
		}
	}
	return a
}

// checkOwner checks a path's type, mode and owner inside root.
func checkOwner(t *testing.T, root, path string, mode os.FileMode, uid, gid int) {
	t.Helper()
	fi, err := os.Lstat(filepath.Join(root, path))
	if err != nil {
		t.Error(err)
		return
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode() != mode || int(st.Uid) != uid || int(st.Gid) != gid {
		t.Errorf("%s is %v %d:%d, want %v %d:%d", path, fi.Mode(), st.Uid, st.Gid, mode, uid, gid)
	}
}

// exists reports whether path exists inside root.
func exists(root, path string) bool {
	_, err := os.Lstat(filepath.Join(root, path))
	return err == nil
}
