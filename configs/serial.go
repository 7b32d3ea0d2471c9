package configs

// Validation of [[serial]]: the device, its topics and its limits.

import (
	"regexp"
	"strings"
	"time"

	"github.com/ralph-gateway/ralph/internal/topic"
)

// overlaps reports whether a device could match both m and o.
func (m USBMatch) overlaps(o USBMatch) bool {
	same := func(a, b string) bool { return a == "" || b == "" || strings.EqualFold(a, b) }
	return same(m.VID, o.VID) && same(m.PID, o.PID) && same(m.Serial, o.Serial)
}

var hex4 = regexp.MustCompile(`^[0-9A-Fa-f]{4}$`)

func (p *configParser) validateSerial(s *Serial, sp keyPath, firstName map[string]int, users map[string]bool) error {
	has := func(k string) bool { _, ok := lookup(p.tree, sp.key(k)); return ok }
	if err := p.validateName(sp, s.Name, "serial port", firstName); err != nil {
		return err
	}
	switch {
	case has("path") && has("match"):
		return p.errorf(sp.key("match"), "set path or match, not both")
	case !has("path") && !has("match"):
		return p.errorf(sp.key("path"), `required key is missing (a device such as "/dev/ttyUSB0", or match = { vid = "10c4", pid = "ea60" })`)
	case has("path") && !strings.HasPrefix(s.Path, "/"):
		return p.errorf(sp.key("path"), "%q is not an absolute path", truncate(s.Path))
	case has("match"):
		m := s.Match
		if m.VID == "" && m.PID == "" && m.Serial == "" {
			return p.errorf(sp.key("match"), "matches every USB serial device: give vid, pid or serial")
		}
		for _, k := range [][2]string{{"vid", m.VID}, {"pid", m.PID}} {
			if k[1] != "" && !hex4.MatchString(k[1]) {
				return p.errorf(sp.key("match", k[0]), "%q is not 4 hex digits (as lsusb shows it, e.g. \"10c4\")", truncate(k[1]))
			}
		}
	}
	if s.Baud <= 0 || s.Baud > 12_000_000 {
		return p.errorf(sp.key("baud"), "%d is out of range (allowed 1 .. 12000000)", s.Baud)
	}
	if s.TopicPrefix != "" {
		if err := topic.ValidateName(s.TopicPrefix); err != nil {
			return p.errorf(sp.key("topic_prefix"), "%v", err)
		}
		if !strings.HasSuffix(s.TopicPrefix, "/") {
			return p.errorf(sp.key("topic_prefix"), "%q must end with \"/\" (the board's topics are appended to it)", truncate(s.TopicPrefix))
		}
	}
	if s.User != "" && !users[s.User] {
		return p.errorf(sp.key("user"), "%q is not one of the [[broker.users]]", truncate(s.User))
	}
	for _, k := range [][2]string{{"status_topic", s.StatusTopic}, {"log_topic", s.LogTopic}} {
		if k[1] == "" && k[0] == "log_topic" {
			continue
		}
		if err := topic.ValidateName(k[1]); err != nil {
			return p.errorf(sp.key(k[0]), "%v", err)
		}
	}
	if s.MaxLine < 256 || s.MaxLine > 65536 {
		return p.errorf(sp.key("max_line"), "%d is out of range (allowed 256 .. 65536)", s.MaxLine)
	}
	for _, k := range []struct {
		key string
		d   time.Duration
	}{{"offline_after", s.OfflineAfter.Duration}, {"resend", s.Resend.Duration}} {
		if k.d < 100*time.Millisecond {
			return p.errorf(sp.key(k.key), "%s is too short (allowed: at least 100ms)", formatDuration(k.d))
		}
	}
	if s.Window < 1 || s.Window > 256 {
		return p.errorf(sp.key("window"), "%d is out of range (allowed 1 .. 256)", s.Window)
	}
	return nil
}
