package main

import (
	"bytes"
	"compress/gzip"
	"debug/buildinfo"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// wantFiles is every non-directory entry of the package, with the mode and
// owner dpkg-deb --contents shows. The config is 0640 root:root in the
// archive; postinst gives it group ralph (TestInstallChroot checks that).
var wantFiles = map[string]string{
	"./usr/bin/ralph":                     "-rwxr-xr-x root/root",
	"./etc/ralph/ralph.toml":              "-rw-r----- root/root",
	"./lib/systemd/system/ralph.service":  "-rw-r--r-- root/root",
	"./usr/share/doc/ralph/copyright":     "-rw-r--r-- root/root",
	"./usr/share/doc/ralph/changelog.gz":  "-rw-r--r-- root/root",
	"./usr/share/man/man1/ralph.1.gz":     "-rw-r--r-- root/root",
	"./usr/share/lintian/overrides/ralph": "-rw-r--r-- root/root",
}

// wantMachine is the ELF machine of each architecture's binary.
var wantMachine = map[string]elf.Machine{
	"arm64": elf.EM_AARCH64,
	"armhf": elf.EM_ARM,
	"amd64": elf.EM_X86_64,
}

func TestDebs(t *testing.T) {
	requireTool(t, "dpkg-deb", "dpkg")
	built := debs(t)
	if len(built) != len(allArches) {
		t.Fatalf("built %v, want %v", built, allArches)
	}
	for _, arch := range allArches {
		t.Run(arch, func(t *testing.T) {
			deb := built[arch]
			if filepath.Base(deb) != "ralph_"+testVersion+"_"+arch+".deb" {
				t.Errorf("file name %s", deb)
			}
			checkControl(t, deb, arch)
			checkContents(t, deb)
			checkControlFiles(t, deb)
			data := extract(t, deb)
			checkBinary(t, filepath.Join(data, "usr", "bin", "ralph"), arch)
			checkDocs(t, data)
		})
	}
}

func checkControl(t *testing.T, deb, arch string) {
	fields := map[string]string{}
	for line := range strings.Lines(run(t, "dpkg-deb", "--field", deb)) {
		if k, v, ok := strings.Cut(line, ": "); ok && !strings.HasPrefix(line, " ") {
			fields[k] = strings.TrimSpace(v)
		}
	}
	for k, want := range map[string]string{
		"Package":      "ralph",
		"Version":      testVersion,
		"Architecture": arch,
		"Maintainer":   maintainer,
		"Section":      "net",
		"Priority":     "optional",
		"Depends":      "adduser",
		"Recommends":   "systemd",
		"Description":  "edge MQTT gateway with a durable store-and-forward queue",
	} {
		if fields[k] != want {
			t.Errorf("%s: %q, want %q", k, fields[k], want)
		}
	}
	if fields["Installed-Size"] == "" {
		t.Error("no Installed-Size")
	}
}

func checkContents(t *testing.T, deb string) {
	got := map[string]string{}
	for line := range strings.Lines(run(t, "dpkg-deb", "--contents", deb)) {
		// drwxr-xr-x root/root 0 2026-11-25 20:21 ./etc/
		f := strings.Fields(line)
		if len(f) < 6 {
			t.Fatalf("unexpected line %q", line)
		}
		path, modeOwner := f[5], f[0]+" "+f[1]
		if strings.HasPrefix(f[0], "d") {
			if modeOwner != "drwxr-xr-x root/root" {
				t.Errorf("directory %s is %s", path, modeOwner)
			}
			continue
		}
		got[path] = modeOwner
	}
	for path, want := range wantFiles {
		if got[path] != want {
			t.Errorf("%s: %q, want %q", path, got[path], want)
		}
	}
	for path := range got {
		if _, ok := wantFiles[path]; !ok {
			t.Errorf("unexpected file %s", path)
		}
	}
}

func checkControlFiles(t *testing.T, deb string) {
	dir := t.TempDir()
	run(t, "dpkg-deb", "--control", deb, dir)
	conffiles, err := os.ReadFile(filepath.Join(dir, "conffiles"))
	if err != nil {
		t.Fatal(err)
	}
	if string(conffiles) != "/etc/ralph/ralph.toml\n" {
		t.Errorf("conffiles = %q", conffiles)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		fi, err := os.Stat(filepath.Join(dir, s))
		if err != nil {
			t.Error(err)
			continue
		}
		if fi.Mode().Perm() != 0o755 {
			t.Errorf("%s has mode %v", s, fi.Mode())
		}
		body, _ := os.ReadFile(filepath.Join(dir, s))
		if !bytes.HasPrefix(body, []byte("#!/bin/sh\n")) || !bytes.Contains(body, []byte("\nset -e\n")) {
			t.Errorf("%s is not a set -e POSIX shell script", s)
		}
		if out, err := exec.Command("sh", "-n", filepath.Join(dir, s)).CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", s, err, out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "md5sums")); err != nil {
		t.Error(err)
	}
}

// checkBinary checks the ELF machine and that the binary was built the way
// the package promises: static, stripped, trimmed, ARMv7 for armhf.
func checkBinary(t *testing.T, path, arch string) {
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != wantMachine[arch] {
		t.Errorf("ELF machine %v, want %v", f.Machine, wantMachine[arch])
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("dynamically linked (has an interpreter)")
		}
	}
	// -ldflags "-s -w" (-trimpath keeps ldflags out of the build info, and
	// TestBinariesRun checks the -X version).
	for _, s := range []string{".symtab", ".debug_info", ".zdebug_info"} {
		if f.Section(s) != nil {
			t.Errorf("not stripped (has %s)", s)
		}
	}
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	want := map[string]string{
		"CGO_ENABLED": "0",
		"-trimpath":   "true",
	}
	if arch == "armhf" {
		want["GOARM"] = "7"
	}
	for k, v := range want {
		if settings[k] != v {
			t.Errorf("build setting %s = %q, want %q", k, settings[k], v)
		}
	}
}

// checkDocs checks the files that are made at build time.
func checkDocs(t *testing.T, data string) {
	unit, err := os.ReadFile(filepath.Join(data, "lib", "systemd", "system", "ralph.service"))
	if err != nil {
		t.Fatal(err)
	}
	if src, _ := os.ReadFile("ralph.service"); !bytes.Equal(unit, src) {
		t.Error("the installed unit differs from packaging/ralph.service")
	}
	for _, gz := range []string{"usr/share/doc/ralph/changelog.gz", "usr/share/man/man1/ralph.1.gz"} {
		raw, err := os.ReadFile(filepath.Join(data, gz))
		if err != nil {
			t.Fatal(err)
		}
		// gzip -9n: maximum compression flag, no name, no time stamp.
		if raw[8] != 2 || raw[3]&0x08 != 0 || !bytes.Equal(raw[4:8], []byte{0, 0, 0, 0}) {
			t.Errorf("%s is not compressed like gzip -9n (header % x)", gz, raw[:10])
		}
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		text, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(gz, "changelog.gz") && !bytes.HasPrefix(text, []byte("ralph ("+testVersion+") unstable; urgency=medium\n")) {
			t.Errorf("changelog:\n%s", text)
		}
	}
	// The conffile is the packaged form of the example (TestPackagedConfig
	// checks that form in detail; the example may be edited meanwhile).
	conf, err := os.ReadFile(filepath.Join(data, "etc", "ralph", "ralph.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(conf, []byte(packagedHeader)) || !bytes.Contains(conf, []byte("\n# [[bridge]]\n")) {
		t.Error("the installed config is not the packaged form of configs/ralph.toml")
	}
	if err := checkPackaged(conf); err != nil {
		t.Error(err)
	}
}
