package configs

// Warnings: what is valid but probably not meant.

import (
	"fmt"

	"github.com/ralph-gateway/ralph/internal/topic"
)

// Warnings lists what in cfg is valid but probably not meant: a serial
// port whose ACL lets its board publish nothing under its topic prefix
// (every publish would be refused, easy to miss until data is missing
// upstream), a bridge speaking MQTT 3.1.1 that forwards messages, whose
// MQTT 5 properties it drops, and a bridge whose limits preset has a rate
// quota that its max_rate does not keep under.
func (cfg *Config) Warnings() []string {
	var out []string
	for _, sc := range cfg.Serial {
		acl, deny, who := cfg.Broker.Anonymous.Publish, cfg.Broker.Anonymous.PublishDeny, "the anonymous ACL"
		for _, u := range cfg.Broker.Users {
			if sc.User != "" && u.Name == sc.User {
				acl, deny, who = u.Publish, u.PublishDeny, "user "+u.Name+"'s ACL"
			}
		}
		allowed := false
		for _, f := range acl {
			f = topic.Expand(f, sc.User, sc.ClientID())
			allowed = allowed || topic.Overlap(f, sc.TopicPrefix+"#")
		}
		for _, f := range deny { // one that denies the whole prefix
			allowed = allowed && !topic.Covers(topic.Expand(f, sc.User, sc.ClientID()), sc.TopicPrefix+"#")
		}
		if !allowed {
			out = append(out, fmt.Sprintf("serial port %s: %s allows no publish under %q: the board's publishes will be refused", sc.Name, who, sc.TopicPrefix))
		}
	}
	for _, b := range cfg.Bridges {
		if b.Protocol == "3.1.1" && len(b.Forward) > 0 {
			out = append(out, fmt.Sprintf("bridge %s speaks MQTT 3.1.1: user properties, message expiry and content type of forwarded messages are dropped (counted as properties_dropped)", b.Name))
		}
		if preset, ok := limitPresets[b.Limits]; ok && preset.MaxRate > 0 && (b.MaxRate == 0 || b.MaxRate > preset.MaxRate) {
			rate := "no cap"
			if b.MaxRate > 0 {
				rate = fmt.Sprintf("%d a second", b.MaxRate)
			}
			out = append(out, fmt.Sprintf("bridge %s: limits = %q allows %d publishes a second on a connection, and max_rate is %s: a backlog would be throttled upstream (set max_rate below it, e.g. %d)", b.Name, b.Limits, preset.MaxRate, rate, preset.MaxRate*9/10))
		}
	}
	return out
}
