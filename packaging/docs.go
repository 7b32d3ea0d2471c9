package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"strings"
	"time"
)

// maintainer is the package's Maintainer field and changelog signature.
const maintainer = "Ralph developers <ralph@example.com>"

// changelog is a minimal valid debian/changelog entry (deb-changelog(5))
// for version, dated mtime.
func changelog(version, describe string, mtime time.Time) []byte {
	note := "Package built from the Ralph source tree."
	if describe != "" {
		note = "Package built from git " + describe + "."
	}
	return fmt.Appendf(nil, "ralph (%s) unstable; urgency=medium\n\n  * %s\n\n -- %s  %s\n",
		version, note, maintainer, mtime.UTC().Format(time.RFC1123Z))
}

// changelogPath is where the changelog goes (Debian policy 12.7): a package
// whose version has a Debian revision (1.2.0-1) has an upstream changelog
// and a Debian one, changelog.Debian.gz; a native package (1.2.0, what
// this project builds: it is its own upstream) has only changelog.gz.
func changelogPath(version string) string {
	if strings.Contains(version, "-") {
		return "/usr/share/doc/ralph/changelog.Debian.gz"
	}
	return "/usr/share/doc/ralph/changelog.gz"
}

// gzipN compresses like "gzip -9n": best compression (lintian checks the
// header's flag for it), and no file name or time stamp, so that the
// output depends on the input only.
func gzipN(data []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(data); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
