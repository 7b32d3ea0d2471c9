// Command packaging builds Ralph's Debian packages: one
// ralph_<version>_<arch>.deb each for arm64 (64-bit Raspberry Pi OS, the
// recommended target), armhf (32-bit Raspberry Pi OS, ARMv7) and amd64.
//
// Run it from anywhere inside the repository:
//
//	go run ./packaging                       # all three into dist/
//	go run ./packaging -arch arm64 -out /tmp/debs -version 1.2.0
//
// Flags:
//
//	-version V   Debian version; default: from "git describe --tags --always
//	             --dirty", without a leading "v" and made Debian-valid
//	             (v1.2.0 -> 1.2.0, 3 commits after it -> 1.2.0+git3.<hash>,
//	             no tag -> 0.0.0~git<hash>, uncommitted changes -> +dirty)
//	-arch LIST   comma-separated Debian architectures (default arm64,armhf,amd64)
//	-out DIR     output directory (default dist/ in the repository root)
//
// Each binary is cross-compiled with CGO_ENABLED=0 go build -trimpath
// -ldflags "-s -w -X main.version=<version>"; nothing but Go modules is
// downloaded. The .deb is written with nfpm used as a library. It holds:
//
//	/usr/bin/ralph                          0755 root:root
//	/etc/ralph/ralph.toml                   conffile, 0640 root:ralph (group set by postinst)
//	/lib/systemd/system/ralph.service       packaging/ralph.service (Type=notify, hardened)
//	/usr/share/doc/ralph/copyright          DEP-5: Ralph, and every Go module linked in
//	/usr/share/doc/ralph/changelog.gz       changelog.Debian.gz if -version has a -revision
//	/usr/share/man/man1/ralph.1.gz
//	/usr/share/lintian/overrides/ralph      the tags that cannot be avoided, with reasons
//
// /etc/ralph/ralph.toml is configs/ralph.toml with its example [[bridge]]
// commented out (a package must start cleanly with no upstream) and a note
// that the broker listens on loopback only; the build fails if the example
// ever stops being safe to install that way (see config.go). The copyright
// file lists every Go module linked into the binary, with its license,
// from "go list -deps" (copyright.go); an unknown license fails the build.
//
// The maintainer scripts in packaging/debian create the system user ralph
// (in group dialout), give it /var/lib/ralph and read access to the
// config, enable ralph.service (also in a chroot, for image builds) and,
// when systemd runs, (re)start it; this is done with deb-systemd-helper and
// deb-systemd-invoke as dh_installsystemd would, so an admin's "systemctl
// disable" survives upgrades and policy-rc.d is obeyed. Purge deletes
// /etc/ralph and /var/lib/ralph and keeps the user.
//
// The tests (go test ./packaging) build all three packages and check them
// with dpkg-deb, debug/elf and lintian; run each binary (natively or under
// qemu-user) on the packaged config; install, upgrade over an edited
// config, remove and purge the amd64 package with dpkg in a chroot, where
// systemd-analyze verify checks the installed unit; and boot that chroot
// with systemd-nspawn to see the service start, serve, survive a reload,
// come back after a crash, restart on upgrade and stop on remove. The
// Debian root is made once per machine with debootstrap and cached in
// /var/cache/ralph-test-root. They need root and
//
//	apt-get install -y lintian debootstrap systemd systemd-container qemu-user
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
)

func main() {
	version := flag.String("version", "", "Debian version (default: from git describe)")
	arches := flag.String("arch", strings.Join(allArches, ","), "comma-separated Debian architectures")
	out := flag.String("out", "", "output directory (default: dist/ in the repository root)")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "packaging: unexpected argument %q\n", flag.Arg(0))
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	debs, err := Build(ctx, Options{
		Version: *version,
		Arches:  strings.Split(*arches, ","),
		Out:     *out,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "packaging:", err)
		os.Exit(1)
	}
	for _, d := range debs {
		fmt.Println(d)
	}
}
