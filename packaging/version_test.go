package main

import (
	"context"
	"os/exec"
	"testing"
)

func TestDebianVersion(t *testing.T) {
	for _, c := range []struct{ describe, want string }{
		{"v1.2.0", "1.2.0"},
		{"1.2.0", "1.2.0"},
		{"v1.2.0-rc1", "1.2.0~rc1"},
		{"v1.2.0-3-gabc1234", "1.2.0+git3.abc1234"},
		{"v1.2.0-rc1-3-gabc1234", "1.2.0~rc1+git3.abc1234"},
		{"v1.2.0-dirty", "1.2.0+dirty"},
		{"v1.2.0-3-gabc1234-dirty", "1.2.0+git3.abc1234.dirty"},
		{"abc1234", "0.0.0~gitabc1234"},
		{"abc1234-dirty", "0.0.0~gitabc1234+dirty"},
	} {
		got, err := debianVersion(c.describe)
		if err != nil || got != c.want {
			t.Errorf("debianVersion(%q) = %q, %v; want %q", c.describe, got, err, c.want)
		}
	}
	for _, bad := range []string{"release_2", "vNext", ""} {
		if v, err := debianVersion(bad); err == nil {
			t.Errorf("debianVersion(%q) = %q, want an error", bad, v)
		}
	}
}

// TestVersionOrder checks with dpkg itself that the mapping keeps git's
// order: a pre-release before its release, before later commits.
func TestVersionOrder(t *testing.T) {
	requireTool(t, "dpkg", "dpkg")
	order := []string{"0.0.0~gitabc1234", "1.2.0~rc1", "1.2.0", "1.2.0+dirty", "1.2.0+git3.abc1234", "1.2.0+git3.abc1234.dirty", "1.2.0+git12.def5678", "1.2.1"}
	for i := 1; i < len(order); i++ {
		if err := exec.Command("dpkg", "--compare-versions", order[i-1], "lt", order[i]).Run(); err != nil {
			t.Errorf("dpkg does not sort %s before %s", order[i-1], order[i])
		}
	}
}

func TestCheckVersion(t *testing.T) {
	for _, ok := range []string{"1.0.0", "1.0.0-1", "0.0.0~git1a2b", "2.0+dfsg-3~bpo12+1"} {
		if err := checkVersion(ok); err != nil {
			t.Errorf("checkVersion(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "v1.0", "1.0 beta", "1.0_1", "1.0-", "1:2.0"} {
		if checkVersion(bad) == nil {
			t.Errorf("checkVersion(%q) accepted it", bad)
		}
	}
}

// TestGitVersion derives the default version from this checkout.
func TestGitVersion(t *testing.T) {
	requireTool(t, "git", "git")
	v, err := gitVersion(context.Background(), repoRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := checkVersion(v); err != nil {
		t.Fatal(err)
	}
	t.Logf("this checkout builds version %s", v)
}
