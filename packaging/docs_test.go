package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestChangelog(t *testing.T) {
	got := string(changelog("1.2.0", "v1.2.0", time.Date(2025, 11, 25, 19, 43, 0, 0, time.UTC)))
	want := "ralph (1.2.0) unstable; urgency=medium\n\n  * Package built from git v1.2.0.\n\n -- Ralph developers <ralph@example.com>  Tue, 25 Nov 2025 19:43:00 +0000\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if p := changelogPath("1.2.0"); p != "/usr/share/doc/ralph/changelog.gz" {
		t.Errorf("native package: %s", p)
	}
	if p := changelogPath("1.2.0-1"); p != "/usr/share/doc/ralph/changelog.Debian.gz" {
		t.Errorf("package with a Debian revision: %s", p)
	}
	// dpkg-parsechangelog is the reference parser, when installed.
	if _, err := exec.LookPath("dpkg-parsechangelog"); err == nil {
		f := filepath.Join(t.TempDir(), "changelog")
		os.WriteFile(f, []byte(got), 0o644)
		out := run(t, "dpkg-parsechangelog", "-l", f, "-S", "Version")
		if strings.TrimSpace(out) != "1.2.0" {
			t.Errorf("dpkg-parsechangelog: %s", out)
		}
	}
}

// TestCopyright checks the generated copyright file against the modules
// the binary really links.
func TestCopyright(t *testing.T) {
	root := repoRoot(t)
	env := append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64")
	text, err := copyrightFile(context.Background(), root, env)
	if err != nil {
		t.Fatal(err)
	}
	c := string(text)
	if !strings.HasPrefix(c, "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n") {
		t.Error("not DEP-5")
	}
	if !strings.Contains(c, "\nFiles: *\nCopyright: Ralph developers\nLicense: Apache-2.0\n") {
		t.Error("no paragraph for Ralph itself")
	}
	if !strings.HasSuffix(c, apacheParagraph) || strings.Count(c, "TERMS AND CONDITIONS") > 0 {
		t.Error("the Apache license must be referred to, not copied")
	}
	out := run(t, "go", "list", "-deps", "-f", "{{with .Module}}{{if not .Main}}{{.Path}}{{end}}{{end}}", filepath.Join(root, "cmd", "ralph"))
	for mod := range strings.Lines(out) {
		if mod = strings.TrimSpace(mod); mod != "" && !strings.Contains(c, "\nFiles: vendor/"+mod+"/*\n") {
			t.Errorf("no paragraph for %s", mod)
		}
	}
	// Every paragraph has its fields; no line breaks the format.
	for _, p := range strings.Split(c, "\n\n") {
		if strings.HasPrefix(p, "Files:") && (!strings.Contains(p, "\nCopyright: ") || !strings.Contains(p, "\nLicense: ")) {
			t.Errorf("incomplete paragraph:\n%s", p)
		}
		for line := range strings.Lines(p) {
			if !regexp.MustCompile(`^([A-Z][A-Za-z-]*: | +\S)`).MatchString(line) {
				t.Errorf("not a DEP-5 line: %q", line)
			}
		}
	}
}

func TestClassify(t *testing.T) {
	for text, want := range map[string]string{
		"Apache License\nVersion 2.0, January 2004":                                 "Apache-2.0",
		"Permission is hereby granted, free of charge, to any person":               "Expat",
		"Redistribution and use in source and binary forms ... Neither the name of": "BSD-3-clause",
		"Redistribution and use in source and binary forms, with or without":        "BSD-2-clause",
		"Eclipse Public License v2.0\nand Eclipse Distribution License v1.0":        "EPL-2.0 or BSD-3-clause",
		"Mozilla Public License Version 2.0":                                        "MPL-2.0",
	} {
		if got, err := classify(text); got != want {
			t.Errorf("classify(%q) = %q, %v; want %q", text, got, err, want)
		}
	}
	if _, err := classify("GNU GENERAL PUBLIC LICENSE"); err == nil {
		t.Error("an unknown license was classified")
	}
}

func TestStripApache(t *testing.T) {
	text := "BSD part\n---\n                    Apache License\n              Version 2.0, January 2004\n terms\n   END OF TERMS AND CONDITIONS\n\n   APPENDIX: How to apply the Apache License to your work.\n   limitations under the License.\n---\nMIT part\n"
	want := "BSD part\n---\n[The Apache License, Version 2.0: see the License: Apache-2.0 paragraph at the end.]\n---\nMIT part\n"
	if got := stripApache(text); got != want {
		t.Errorf("got %q", got)
	}
}

func TestCopyrightHolders(t *testing.T) {
	text := "Copyright (c) 2013 TOML authors\n   Copyright [yyyy] [name of copyright owner]\nThe above copyright notice\nCopyright 2009 The Go Authors.\nCopyright (c) 2013 TOML authors\n"
	got := strings.Join(copyrightHolders(text), "|")
	if got != "2013 TOML authors|2009 The Go Authors." {
		t.Errorf("got %q", got)
	}
}
