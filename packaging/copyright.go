package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// apacheParagraph is the stand-alone License paragraph for every Apache-2.0
// Files paragraph: Debian ships the text, and lintian wants it referred to
// rather than copied.
const apacheParagraph = `License: Apache-2.0
 Licensed under the Apache License, Version 2.0 (the "License"); you may not
 use this file except in compliance with the License. You may obtain a copy
 of the License at http://www.apache.org/licenses/LICENSE-2.0
 .
 Unless required by applicable law or agreed to in writing, software
 distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
 WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
 License for the specific language governing permissions and limitations
 under the License.
 .
 On Debian systems, the complete text of the Apache License, Version 2.0
 can be found in "/usr/share/common-licenses/Apache-2.0".
`

// module is a Go module linked into the binary.
type module struct {
	Path, Version, Dir string
}

// copyrightFile returns /usr/share/doc/ralph/copyright: Ralph's own
// paragraphs (packaging/debian/copyright) followed by one for the Go
// standard library and one for every module linked into ./cmd/ralph for
// env's target. The binary is static, so their notices must travel with it
// (MIT and BSD require that). A license this code does not recognise
// fails the build instead of shipping a wrong paragraph.
func copyrightFile(ctx context.Context, root string, env []string) ([]byte, error) {
	head, err := os.ReadFile(filepath.Join(root, "packaging", "debian", "copyright"))
	if err != nil {
		return nil, err
	}
	mods, err := linkedModules(ctx, root, env)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.Write(bytes.TrimRight(head, "\n"))
	b.WriteString("\n")
	for _, m := range mods {
		p, err := moduleParagraph(m)
		if err != nil {
			return nil, err
		}
		b.WriteString("\n")
		b.WriteString(p)
	}
	b.WriteString("\n")
	b.WriteString(apacheParagraph)
	return b.Bytes(), nil
}

// linkedModules lists the Go standard library and the modules whose
// packages ./cmd/ralph imports, for env's GOOS/GOARCH.
func linkedModules(ctx context.Context, root string, env []string) ([]module, error) {
	cmd := exec.CommandContext(ctx, "go", "list", "-deps",
		"-f", "{{with .Module}}{{if not .Main}}{{.Path}}\t{{.Version}}\t{{.Dir}}{{end}}{{end}}",
		"./cmd/ralph")
	cmd.Dir, cmd.Env, cmd.Stderr = root, env, os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list -deps ./cmd/ralph: %w", err)
	}
	goroot, err := exec.CommandContext(ctx, "go", "env", "GOROOT").Output()
	if err != nil {
		return nil, fmt.Errorf("go env GOROOT: %w", err)
	}
	mods := []module{{Path: "Go standard library", Dir: strings.TrimSpace(string(goroot))}}
	seen := map[string]bool{}
	for line := range strings.Lines(string(out)) {
		f := strings.Split(strings.TrimSpace(line), "\t")
		if len(f) != 3 || seen[f[0]] {
			continue
		}
		seen[f[0]] = true
		mods = append(mods, module{Path: f[0], Version: f[1], Dir: f[2]})
	}
	slices.SortStableFunc(mods[1:], func(a, b module) int { return strings.Compare(a.Path, b.Path) })
	return mods, nil
}

var licenseFile = regexp.MustCompile(`(?i)^(licen[cs]e|copying)(\.(md|txt))?$`)

// moduleParagraph is the DEP-5 Files paragraph for m.
func moduleParagraph(m module) (string, error) {
	text, err := readFirst(m.Dir, licenseFile)
	if err != nil {
		return "", fmt.Errorf("license of %s: %w", m.Path, err)
	}
	name, err := classify(text)
	if err != nil {
		return "", fmt.Errorf("license of %s: %w", m.Path, err)
	}
	notice, _ := os.ReadFile(filepath.Join(m.Dir, "NOTICE"))
	holders := copyrightHolders(text + "\n" + string(notice))
	if len(holders) == 0 {
		holders = []string{"the authors of " + m.Path}
	}

	files, comment := "vendor/"+m.Path+"/*", "Module "+m.Path+" "+m.Version+"."
	if m.Version == "" { // the standard library
		files, comment = "go/src/*", "The Go standard library (runtime included)."
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Files: %s\nCopyright: %s\n", files, strings.Join(holders, "\n "))
	if name == "Apache-2.0" {
		// Its text is in the stand-alone paragraph at the end.
		fmt.Fprintf(&b, "License: %s\n", name)
	} else {
		if strings.Contains(name, "Apache-2.0") {
			text = stripApache(text)
		}
		if strings.Contains(name, "BSD-3-clause") && strings.Contains(name, "EPL") {
			// Eclipse dual licensing: the other half is the Eclipse
			// Distribution License, a BSD-3-clause text kept in edl-v10.
			if edl, err := os.ReadFile(filepath.Join(m.Dir, "edl-v10")); err == nil {
				text += "\n\n" + string(edl)
				comment += " BSD-3-clause here is the Eclipse Distribution License 1.0."
			}
		}
		fmt.Fprintf(&b, "License: %s\n%s", name, indent(text))
	}
	if len(bytes.TrimSpace(notice)) > 0 {
		comment += " Its NOTICE file says:\n" + string(notice)
	}
	fmt.Fprintf(&b, "Comment: %s", indent(comment)[1:])
	return b.String(), nil
}

// stripApache replaces the Apache License 2.0 text within a file of
// several licenses by a reference to the stand-alone paragraph (lintian
// rejects a copy of it in a copyright file).
func stripApache(text string) string {
	start := strings.Index(text, "Apache License")
	if start < 0 || !strings.Contains(text[start:min(len(text), start+200)], "Version 2.0, January 2004") {
		return text
	}
	start = strings.LastIndex(text[:start], "\n") + 1
	end := strings.Index(text[start:], "END OF TERMS AND CONDITIONS")
	if end < 0 {
		return text
	}
	end += start + len("END OF TERMS AND CONDITIONS")
	// The appendix with its boilerplate notice belongs to the license too.
	if rest := text[end:]; strings.HasPrefix(strings.TrimSpace(rest), "APPENDIX: How to apply the Apache License") {
		if i := strings.Index(rest, "limitations under the License."); i >= 0 {
			end += i + len("limitations under the License.")
		}
	}
	return text[:start] + "[The Apache License, Version 2.0: see the License: Apache-2.0 paragraph at the end.]" + text[end:]
}

// readFirst returns the contents of the first file in dir whose name
// matches re.
func readFirst(dir string, re *regexp.Regexp) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		if e.Type().IsRegular() && re.MatchString(e.Name()) {
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			return string(b), err
		}
	}
	return "", fmt.Errorf("no license file in %s", dir)
}

// classify names a license text with its DEP-5 short name, from phrases
// that only that license's text contains. A file holding several licenses
// (for different parts of the module) gets them all, joined by "and".
func classify(text string) (string, error) {
	has := func(s string) bool { return strings.Contains(text, s) }
	if has("Eclipse Public License") && has("Eclipse Distribution License") {
		return "EPL-2.0 or BSD-3-clause", nil // Eclipse dual licensing
	}
	var names []string
	for _, l := range []struct {
		name  string
		found bool
	}{
		{"Apache-2.0", has("Apache License") && has("Version 2.0")},
		{"EPL-2.0", has("Eclipse Public License - v 2.0")},
		{"MPL-2.0", has("Mozilla Public License") && has("2.0")},
		{"Expat", has("Permission is hereby granted, free of charge")},
		{"ISC", has("Permission to use, copy, modify, and/or distribute this software for any")},
		{"BSD-3-clause", has("Redistribution and use in source and binary forms") &&
			(has("Neither the name") || has("names of its contributors") || has("name of the copyright holder"))},
		{"BSD-2-clause", has("Redistribution and use in source and binary forms") &&
			!(has("Neither the name") || has("names of its contributors") || has("name of the copyright holder"))},
	} {
		if l.found {
			names = append(names, l.name)
		}
	}
	if len(names) == 0 {
		return "", fmt.Errorf("unrecognised license text (add it to classify in packaging/copyright.go)")
	}
	return strings.Join(names, " and "), nil
}

// holderLine is a real copyright statement, not the license's template
// ("Copyright [yyyy] [name of copyright owner]") or prose.
var holderLine = regexp.MustCompile(`^Copyright\s+(\(c\)|\(C\)|©|[0-9])`)

// copyrightHolders collects the distinct copyright statements of a text.
func copyrightHolders(text string) []string {
	var hs []string
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if !holderLine.MatchString(line) {
			continue
		}
		h := strings.TrimSpace(strings.TrimPrefix(line, "Copyright"))
		for _, p := range []string{"(c)", "(C)", "©"} {
			h = strings.TrimSpace(strings.TrimPrefix(h, p))
		}
		if !slices.Contains(hs, h) {
			hs = append(hs, h)
		}
	}
	return hs
}

// indent formats text as a DEP-5 continuation: every line indented by one
// space, empty lines as " .".
func indent(text string) string {
	var b strings.Builder
	for line := range strings.Lines(strings.TrimSpace(text)) {
		line = strings.TrimRight(line, " \t\r\n")
		if line == "" {
			line = "."
		}
		b.WriteString(" " + line + "\n")
	}
	return b.String()
}
