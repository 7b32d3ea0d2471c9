// Package listen holds the rule for which listen addresses only this
// machine can reach. The broker lets clients in without a username on such
// listeners only, the configuration requires users before it listens
// anywhere else, and the package's default config must pass it: one rule
// for all three.
package listen

import (
	"net"
	"net/netip"
	"strings"
)

// LoopbackHost reports whether host (of a host:port) is "localhost" (in
// any case) or a loopback IP address, IPv4-mapped ones included. An empty
// host, all interfaces, is not.
func LoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// Loopback reports whether the host:port address addr has a loopback host.
// An address that does not parse is not loopback.
func Loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && LoopbackHost(host)
}
