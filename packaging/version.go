package main

import (
	"context"
	"fmt"
	"regexp"
	"strings"
)

// validVersion is a Debian version without epoch: an upstream part starting
// with a digit and an optional Debian revision after the last hyphen
// (deb-version(7)). Without a revision the upstream part may not contain
// a hyphen, which is why debianVersion never produces one.
var validVersion = regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*(-[A-Za-z0-9.+~]+)?$`)

// checkVersion reports whether v can be a package version.
func checkVersion(v string) error {
	if !validVersion.MatchString(v) {
		return fmt.Errorf("version %q is not a valid Debian version (digits first, then letters, digits and . + ~, optionally -revision)", v)
	}
	return nil
}

// gitVersion derives the package version from git describe in dir.
func gitVersion(ctx context.Context, dir string) (string, error) {
	out, err := gitOutput(ctx, dir, "describe", "--tags", "--always", "--dirty")
	if err != nil {
		return "", fmt.Errorf("git describe (pass -version to build without git): %w", err)
	}
	return debianVersion(out)
}

var (
	afterTag = regexp.MustCompile(`^(.+)-([0-9]+)-g([0-9a-f]+)$`)
	bareHash = regexp.MustCompile(`^[0-9a-f]{4,40}$`)
)

// debianVersion turns git describe output into a Debian version that sorts
// the way the commits do:
//
//	v1.2.0                 -> 1.2.0
//	v1.2.0-rc1             -> 1.2.0~rc1       (a pre-release sorts before 1.2.0)
//	v1.2.0-3-gabc1234      -> 1.2.0+git3.abc1234
//	abc1234 (no tag)       -> 0.0.0~gitabc1234
//	...-dirty              -> ...+dirty (or .dirty after a +)
func debianVersion(describe string) (string, error) {
	d, dirty := strings.CutSuffix(describe, "-dirty")
	var v string
	switch {
	case bareHash.MatchString(d):
		v = "0.0.0~git" + d
	case afterTag.MatchString(d):
		m := afterTag.FindStringSubmatch(d)
		v = tagVersion(m[1]) + "+git" + m[2] + "." + m[3]
	default:
		v = tagVersion(d)
	}
	if dirty {
		if strings.Contains(v, "+") {
			v += ".dirty"
		} else {
			v += "+dirty"
		}
	}
	if err := checkVersion(v); err != nil {
		return "", fmt.Errorf("from git describe %q: %w; pass -version", describe, err)
	}
	return v, nil
}

// tagVersion maps a tag name to an upstream version: no leading v, and "-"
// (which would start a Debian revision) becomes "~", since in tags it
// introduces a pre-release.
func tagVersion(tag string) string {
	tag = strings.TrimPrefix(tag, "v")
	return strings.ReplaceAll(tag, "-", "~")
}
