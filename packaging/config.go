package main

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	"github.com/ralph-gateway/ralph/configs"
	"github.com/ralph-gateway/ralph/internal/listen"
)

// packagedHeader opens /etc/ralph/ralph.toml. It says why the installed
// defaults are what they are, since the file outlives any README.
const packagedHeader = `# /etc/ralph/ralph.toml, installed by the ralph package and read by
# ralph.service.
#
# As installed, the MQTT broker listens on the loopback address only
# (127.0.0.1:1883), so only programs on this machine can connect. To open it
# to devices on the network, add [[broker.users]] (hashes from
# "ralph passwd") and listen on "0.0.0.0:1883": see the [broker] section.
#
# The example [[bridge]] is commented out, so Ralph starts with no upstream:
# uncomment and edit it to forward messages. After editing, check the file
# and apply it with
#   ralph check --config /etc/ralph/ralph.toml && systemctl reload ralph
# (reload applies bridges, serial ports, users, ACLs and log.level;
# anything else needs a restart).
# Package upgrades never overwrite your edits to this file.
#
`

// packagedDataDir is where the queue must live: the unit's StateDirectory,
// created by postinst and deleted on purge.
const packagedDataDir = "/var/lib/ralph"

// packagedConfig turns the annotated example (configs/ralph.toml) into the
// installed default. A package must start cleanly with no upstream, so
// every [[bridge]] and [[bridge.*]] table is commented out line by line;
// comments, and the tables after them, stay as they are. The result is
// then checked: no bridge, data_dir is packagedDataDir and every listen
// address (MQTT and HTTP) is loopback, so that the header above stays true
// whatever the example becomes.
func packagedConfig(example []byte) ([]byte, error) {
	var out bytes.Buffer
	out.WriteString(packagedHeader)
	inBridge := false
	for _, line := range strings.SplitAfter(string(example), "\n") {
		trimmed := strings.TrimSpace(line)
		if name, ok := tableName(trimmed); ok {
			inBridge = name == "bridge" || strings.HasPrefix(name, "bridge.")
		}
		if inBridge && trimmed != "" && !strings.HasPrefix(trimmed, "#") {
			indent := line[:len(line)-len(strings.TrimLeft(line, " \t"))]
			line = indent + "# " + strings.TrimLeft(line, " \t")
		}
		out.WriteString(line)
	}
	if err := checkPackaged(out.Bytes()); err != nil {
		return nil, fmt.Errorf("packaged config from the example: %w", err)
	}
	return out.Bytes(), nil
}

// tableName returns the name of a TOML table header line ("[a.b]" or
// "[[a.b]]", possibly followed by a comment).
func tableName(line string) (string, bool) {
	if !strings.HasPrefix(line, "[") {
		return "", false
	}
	name := strings.TrimLeft(line, "[")
	end := strings.Index(name, "]")
	if end < 0 {
		return "", false
	}
	return strings.TrimSpace(name[:end]), true
}

// checkPackaged verifies that cfg is a valid configuration and keeps the
// promises made by packagedHeader.
func checkPackaged(data []byte) error {
	cfg, err := configs.Parse("/etc/ralph/ralph.toml", data)
	if err != nil {
		return err
	}
	if len(cfg.Bridges) > 0 {
		return fmt.Errorf("%d bridges left uncommented", len(cfg.Bridges))
	}
	if cfg.DataDir != packagedDataDir {
		return fmt.Errorf("data_dir is %q, the package needs %q", cfg.DataDir, packagedDataDir)
	}
	b := cfg.Broker
	if b.AllowAnonymous {
		return fmt.Errorf("broker.allow_anonymous is true")
	}
	addrs := slices.Clone(b.Listen)
	for _, l := range b.TLS {
		addrs = append(addrs, l.Listen)
	}
	for _, l := range b.WebSocket {
		addrs = append(addrs, l.Listen)
	}
	for _, addr := range addrs {
		if !listen.Loopback(addr) {
			return fmt.Errorf("the broker listens on %q, not a loopback address", addr)
		}
	}
	// The HTTP endpoint (status, metrics) has no authentication either.
	if addr := cfg.HTTP.Listen; addr != "" && !listen.Loopback(addr) {
		return fmt.Errorf("http.listen is %q, not a loopback address", addr)
	}
	return nil
}
