package bridge

// This file holds the upstream's limits on a message (Limits: configured,
// such as AWS IoT Core's quotas, or announced, the Maximum Packet Size of
// an MQTT 5 CONNACK) and why a message is over them. Such a message is
// never sent: retrying it would stall the queue behind it forever. It goes
// to the dead-letter topic with the reason (forward.go).
import (
	"fmt"
	"strconv"
	"strings"

	"github.com/ralph-gateway/ralph/queue"
)

// Limits are what an upstream takes of a message, as configured; 0 is no
// limit.
type Limits struct {
	MaxPayload     int // bytes of payload
	MaxTopicLevels int // levels of the upstream topic (slashes + 1)
	MaxTopicLength int // bytes of the upstream topic
	// TopicBytes are bytes an upstream topic must not hold: nats-server's
	// MQTT gateway closes the connection on a topic with "." or " " (they
	// mean something in a NATS subject), so such a message, resent after
	// every reconnect, would stop the bridge for good.
	TopicBytes string
}

// BasicIngestPrefix starts AWS IoT Core's Basic Ingest topics,
// "$aws/rules/<rule name>/...". AWS does not count the prefix's three
// levels against its topic quotas, and neither do MaxTopicLevels and
// MaxTopicLength.
const BasicIngestPrefix = "$aws/rules/"

// unfit says why pub, as it goes upstream, is over the configured limits
// or the upstream's Maximum Packet Size (maxPacket, 0 for none); "" if it
// is not.
func (l Limits) unfit(pub *queue.Message, maxPacket uint32) string {
	if l.MaxPayload > 0 && len(pub.Payload) > l.MaxPayload {
		return fmt.Sprintf("payload of %d bytes is over max_payload (%s)", len(pub.Payload), formatBytes(l.MaxPayload))
	}
	if i := strings.IndexAny(pub.Topic, l.TopicBytes); l.TopicBytes != "" && i >= 0 {
		return fmt.Sprintf("topic %q holds %q, which the upstream cannot carry", pub.Topic, pub.Topic[i:i+1])
	}
	t := pub.Topic
	if rest, ok := strings.CutPrefix(t, BasicIngestPrefix); ok {
		if _, after, ok := strings.Cut(rest, "/"); ok {
			t = after
		}
	}
	if l.MaxTopicLength > 0 && len(t) > l.MaxTopicLength {
		return fmt.Sprintf("topic of %d bytes is over max_topic_length (%d)", len(t), l.MaxTopicLength)
	}
	if n := strings.Count(t, "/") + 1; l.MaxTopicLevels > 0 && n > l.MaxTopicLevels {
		return fmt.Sprintf("topic of %d levels is over max_topic_levels (%d)", n, l.MaxTopicLevels)
	}
	if tooLarge(pub, maxPacket) {
		return fmt.Sprintf("larger than the upstream's maximum packet size of %d bytes", maxPacket)
	}
	return ""
}

// formatBytes writes n as a configuration would: with the largest unit
// that divides it, decimal (MB, KB: a binary size such as 128KiB is not a
// multiple of 1000) before binary (MiB, KiB), else in bytes.
func formatBytes(n int) string {
	for _, u := range []struct {
		name string
		size int
	}{{"MB", 1e6}, {"KB", 1e3}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n%u.size == 0 {
			return strconv.Itoa(n/u.size) + u.name
		}
	}
	return strconv.Itoa(n) + "B"
}
