package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// container is a test root booted with systemd as its init, under
// systemd-nspawn: the only way to see the unit really run in a test
// environment that has no systemd of its own.
type container struct {
	t       *testing.T
	nspawn  *exec.Cmd
	pid1    int           // systemd inside, as seen from the host
	console *bytes.Buffer // what the container printed, for failures
}

// boot starts systemd in root, in its own network namespace (so that the
// service's loopback ports cannot clash with the host's), and waits until
// it has finished booting.
func boot(t *testing.T, root string) *container {
	t.Helper()
	requireTool(t, "systemd-nspawn", "systemd-container")
	requireTool(t, "nsenter", "util-linux")
	c := &container{t: t, console: &bytes.Buffer{}}
	// --keep-unit and --register=no: the host has no systemd or
	// machined to register with.
	c.nspawn = exec.Command("systemd-nspawn", "--quiet", "--keep-unit", "--register=no",
		"--private-network", "--machine=ralph-test-"+filepath.Base(root), "--directory="+root, "--boot")
	c.nspawn.Stdout, c.nspawn.Stderr = c.console, c.console
	if err := c.nspawn.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stop)

	// systemd is the child of systemd-nspawn.
	deadline := time.Now().Add(30 * time.Second)
	for c.pid1 == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("systemd-nspawn started no init:\n%s", c.console)
		}
		children, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", c.nspawn.Process.Pid, c.nspawn.Process.Pid))
		fmt.Sscan(string(children), &c.pid1)
		time.Sleep(50 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var state string
	for ctx.Err() == nil {
		// Fails with "Host is down" until systemd's bus is up.
		state, _ = c.try(ctx, "systemctl", "is-system-running", "--wait")
		if state = strings.TrimSpace(state); state == "running" || state == "degraded" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if state == "degraded" {
		failed, _ := c.try(ctx, "systemctl", "--failed", "--no-legend")
		t.Logf("the container booted degraded (not ralph's doing):\n%s", failed)
	} else if state != "running" {
		t.Fatalf("the container did not boot (%q):\n%s", state, c.console)
	}
	return c
}

// try runs a command inside the container and returns its output.
func (c *container) try(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--target", fmt.Sprint(c.pid1), "--all"}, args...)...)
	cmd.Env = rootEnv
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// run runs a command inside the container, failing the test if it fails.
func (c *container) run(args ...string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := c.try(ctx, args...)
	if err != nil {
		journal, _ := c.try(context.Background(), "journalctl", "--no-pager", "-n", "30", "-u", "ralph.service")
		c.t.Fatalf("in the container: %s: %v\n%s\njournal of ralph.service:\n%s", strings.Join(args, " "), err, out, journal)
	}
	return out
}

// show returns a property of ralph.service.
func (c *container) show(prop string) string {
	c.t.Helper()
	return strings.TrimSpace(c.run("systemctl", "show", "--value", "--property="+prop, "ralph.service"))
}

// waitActive waits until ralph.service is active with a main process
// other than notPID, and returns that process.
func (c *container) waitActive(notPID string) string {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		state, pid := c.show("ActiveState"), c.show("MainPID")
		if state == "active" && pid != "0" && pid != notPID {
			return pid
		}
		if time.Now().After(deadline) {
			journal, _ := c.try(context.Background(), "journalctl", "--no-pager", "-u", "ralph.service")
			c.t.Fatalf("ralph.service is %s with MainPID %s, want active and not %s\n%s", state, pid, notPID, journal)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitHealthy waits until "ralph status" (which asks the service's HTTP
// endpoint) reports the version running and healthy. Right after start,
// on a loaded machine, a health probe may still time out.
func (c *container) waitHealthy(version string) {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := c.try(context.Background(), "ralph", "status")
		if err == nil && strings.HasPrefix(out, "ralph "+version+",") {
			return
		}
		if time.Now().After(deadline) {
			journal, _ := c.try(context.Background(), "journalctl", "--no-pager", "-u", "ralph.service")
			c.t.Fatalf("ralph status: %v\n%s\nwant version %s, healthy\n%s", err, out, version, journal)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// stop shuts the container down: SIGTERM asks systemd-nspawn for a clean
// poweroff.
func (c *container) stop() {
	c.nspawn.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { c.nspawn.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		c.nspawn.Process.Kill()
		<-done
	}
}

// TestServiceBooted installs the package into a booted system and checks
// what only a running systemd shows: the unit starts as ralph with its
// hardening (Type=notify: dpkg returns once ralph is ready), serves, shrugs
// off a reload, is restarted after a crash, restarts on upgrade, and
// stops on remove.
func TestServiceBooted(t *testing.T) {
	deb, up := debs(t)["amd64"], upgrade(t)
	root := testRoot(t)
	c := boot(t, root)

	start := time.Now()
	c.run("dpkg", "-i", copyDeb(t, root, deb))
	t.Logf("dpkg -i, including the service's start, took %v", time.Since(start).Round(time.Millisecond))
	pid := c.waitActive("")
	if got := c.show("UnitFileState"); got != "enabled" {
		t.Errorf("UnitFileState=%s", got)
	}

	// It runs as ralph, with dialout, and serves: "ralph status" asks its
	// HTTP endpoint on the container's loopback.
	a := lookup(t, root, "ralph")
	status := c.run("cat", "/proc/"+pid+"/status")
	for _, want := range []string{
		fmt.Sprintf("Uid:\t%d\t%d\t%d\t%d\n", a.uid, a.uid, a.uid, a.uid),
		fmt.Sprintf("Gid:\t%d\t%d\t%d\t%d\n", a.gid, a.gid, a.gid, a.gid),
		"NoNewPrivs:\t1\n",
	} {
		if !strings.Contains(status, want) {
			t.Errorf("ralph's process status lacks %q:\n%s", want, status)
		}
	}
	if groups := c.run("ps", "-o", "supgrp=", "-p", pid); !strings.Contains(groups, "dialout") {
		t.Errorf("ralph's process is not in dialout: %s", groups)
	}
	c.waitHealthy(testVersion)
	if !exists(root, "/var/lib/ralph/db") {
		t.Error("no queue in /var/lib/ralph/db")
	}

	// systemctl reload sends SIGHUP: ralph logs that it needs a restart
	// and keeps running.
	c.run("systemctl", "reload", "ralph.service")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if strings.Contains(c.run("journalctl", "--no-pager", "-u", "ralph.service"), "SIGHUP") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("ralph logged nothing about the SIGHUP of systemctl reload")
		}
	}
	if got := c.waitActive(""); got != pid {
		t.Errorf("reload replaced the process %s by %s", pid, got)
	}

	// A crash: systemd starts it again after RestartSec.
	c.run("systemctl", "kill", "--signal=KILL", "ralph.service")
	pid = c.waitActive(pid)
	if n := c.show("NRestarts"); n != "1" {
		t.Errorf("NRestarts=%s after one crash", n)
	}

	// Upgrade: the new binary runs.
	c.run("dpkg", "-i", "--force-confold", copyDeb(t, root, up))
	c.waitActive(pid)
	c.waitHealthy(upgradeVersion)

	// An admin's disable outlives an upgrade (here a reinstall).
	c.run("systemctl", "disable", "--now", "ralph.service")
	c.run("dpkg", "-i", "--force-confold", copyDeb(t, root, up))
	if got := c.show("ActiveState") + " " + c.show("UnitFileState"); got != "inactive disabled" {
		t.Errorf("after disable and reinstall: %s, want inactive disabled", got)
	}
	c.run("systemctl", "enable", "--now", "ralph.service")
	pid = c.waitActive("")

	// How exposed the service is, by systemd's own measure (for the log).
	if out, err := c.try(context.Background(), "systemd-analyze", "security", "--no-pager", "ralph.service"); err == nil {
		lines := strings.Split(strings.TrimSpace(out), "\n")
		t.Logf("systemd-analyze security: %s", lines[len(lines)-1])
	}

	// Remove stops it.
	c.run("dpkg", "--remove", "ralph")
	if state := c.show("ActiveState"); state != "inactive" {
		t.Errorf("after remove, ralph.service is %s", state)
	}
	if _, err := c.try(context.Background(), "kill", "-0", pid); err == nil {
		t.Errorf("after remove, process %s still runs", pid)
	}
	c.run("dpkg", "--purge", "ralph")
}
