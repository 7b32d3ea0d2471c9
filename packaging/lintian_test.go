package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestLintian runs lintian on every package: errors fail, warnings are
// logged. Tags that cannot be avoided are overridden, with the reason, in
// packaging/debian/lintian-overrides.
func TestLintian(t *testing.T) {
	requireTool(t, "lintian", "lintian")
	args := []string{"--display-level", ">=pedantic", "--display-experimental", "--show-overrides"}
	for _, arch := range allArches {
		args = append(args, debs(t)[arch])
	}
	// lintian's exit status is 1 for errors too: judge by the tags.
	out, err := exec.Command("lintian", args...).CombinedOutput()
	var errs []string
	for line := range strings.Lines(string(out)) {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "E: "):
			errs = append(errs, line)
		case len(line) > 3 && line[1:3] == ": " && line[0] >= 'A' && line[0] <= 'Z':
			t.Log(line) // W: warning, I: info, O: overridden, N: its reason, ...
		case line == "", strings.Contains(line, "running with root privileges"):
		default:
			t.Errorf("lintian: %s", line) // it failed to run
		}
	}
	if len(errs) > 0 {
		t.Errorf("lintian errors:\n%s", strings.Join(slices.Compact(errs), "\n"))
	}
	if err != nil && len(errs) == 0 {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatal(err)
		}
	}
}
