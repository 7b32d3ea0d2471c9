package localbroker

import "github.com/mochi-mqtt/server/v2/packets"

// appendPublish appends pk, a PUBLISH as it is to be sent, to b: the same
// bytes as mochi's PublishEncode for pk.ProtocolVersion (3, 4 or 5), for
// Ralph's own deliveries (deliver.go). mochi's encoder takes three
// pooled buffers and a few allocations for a packet, and checks every
// property against a map of maps; encoding was the largest cost of a
// delivery after the subscriber lookup. TestAppendPublishIsMochis holds
// the two to the same bytes.
//
// One difference, on purpose: mochi leaves a PUBLISH's user properties
// out for a client that asked for no problem information, which the
// standard allows only for other packets [MQTT-3.1.2-29]; this keeps them.
func appendPublish(b []byte, pk *packets.Packet) []byte {
	fh := pk.FixedHeader
	v5 := pk.ProtocolVersion == 5
	n := 2 + len(pk.TopicName) + len(pk.Payload)
	if fh.Qos > 0 {
		n += 2
	}
	props := 0
	if v5 {
		props = publishPropsLen(&pk.Properties)
		n += varintLen(props) + props
	}
	b = append(b, packets.Publish<<4|bit(fh.Dup)<<3|fh.Qos<<1|bit(fh.Retain))
	b = appendVarint(b, n)
	b = appendString(b, pk.TopicName)
	if fh.Qos > 0 {
		b = append(b, byte(pk.PacketID>>8), byte(pk.PacketID))
	}
	if v5 {
		b = appendVarint(b, props)
		b = appendPublishProps(b, &pk.Properties)
	}
	return append(b, pk.Payload...)
}

// The properties a PUBLISH carries, in mochi's order. publishPropsLen
// and appendPublishProps go property by property alike.
func publishPropsLen(p *packets.Properties) int {
	n := 0
	if p.PayloadFormatFlag {
		n += 2
	}
	if p.MessageExpiryInterval > 0 {
		n += 5
	}
	if p.ContentType != "" {
		n += 3 + len(p.ContentType)
	}
	if responseTopic(p) {
		n += 3 + len(p.ResponseTopic)
	}
	if len(p.CorrelationData) > 0 {
		n += 3 + len(p.CorrelationData)
	}
	for _, id := range p.SubscriptionIdentifier {
		if id > 0 {
			n += 1 + varintLen(id)
		}
	}
	if p.TopicAliasFlag && p.TopicAlias > 0 {
		n += 3
	}
	for _, u := range p.User {
		n += 5 + len(u.Key) + len(u.Val)
	}
	return n
}

func appendPublishProps(b []byte, p *packets.Properties) []byte {
	if p.PayloadFormatFlag {
		b = append(b, packets.PropPayloadFormat, p.PayloadFormat)
	}
	if v := p.MessageExpiryInterval; v > 0 {
		b = append(b, packets.PropMessageExpiryInterval, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
	if p.ContentType != "" {
		b = appendString(append(b, packets.PropContentType), p.ContentType)
	}
	if responseTopic(p) {
		b = appendString(append(b, packets.PropResponseTopic), p.ResponseTopic)
	}
	if len(p.CorrelationData) > 0 {
		b = appendString(append(b, packets.PropCorrelationData), string(p.CorrelationData))
	}
	for _, id := range p.SubscriptionIdentifier {
		if id > 0 {
			b = appendVarint(append(b, packets.PropSubscriptionIdentifier), id)
		}
	}
	if p.TopicAliasFlag && p.TopicAlias > 0 {
		b = append(b, packets.PropTopicAlias, byte(p.TopicAlias>>8), byte(p.TopicAlias))
	}
	for _, u := range p.User {
		b = appendString(appendString(append(b, packets.PropUser), u.Key), u.Val)
	}
	return b
}

// responseTopic reports whether p's response topic is sent: mochi drops
// one with wildcards [MQTT-3.3.2-14].
func responseTopic(p *packets.Properties) bool {
	if p.ResponseTopic == "" {
		return false
	}
	for i := 0; i < len(p.ResponseTopic); i++ {
		if c := p.ResponseTopic[i]; c == '+' || c == '#' {
			return false
		}
	}
	return true
}

func appendString(b []byte, s string) []byte {
	return append(append(b, byte(len(s)>>8), byte(len(s))), s...)
}

// appendVarint appends v as an MQTT variable byte integer [MQTT-1.5.5].
func appendVarint(b []byte, v int) []byte {
	for {
		c := byte(v % 128)
		v /= 128
		if v > 0 {
			c |= 0x80
		}
		b = append(b, c)
		if v == 0 {
			return b
		}
	}
}

func varintLen(v int) int {
	n := 1
	for v >= 128 {
		v /= 128
		n++
	}
	return n
}

func bit(v bool) byte {
	if v {
		return 1
	}
	return 0
}
