package localbroker

import (
	"slices"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// acksHook keeps acknowledgements bare. mochi builds the PUBACK and PUBREC
// of a publish from the publish's properties (its PUBREL and PUBCOMP from
// the PUBREC's and PUBREL's, its SUBACK and UNSUBACK from the request's
// user properties), so every ack echoed the publisher's user properties:
// bytes on a metered link for nothing, and acks the Eclipse reference
// client rejects as malformed. An ack carries properties only when it has
// a reason to give: its reason string (with a failure code, which is in
// the packet's fixed part and stays).
//
// A subscription refused as not authorized gets 0x80 (unspecified) rather
// than 0x87 on MQTT 5, as on 3.1.1 and as the Eclipse interoperability
// suite expects; in-process clients (serial ports) still get 0x87, which
// they tell their board as "denied".
type acksHook struct{ mqtt.HookBase }

func (h *acksHook) ID() string { return "ralph-acks" }

func (h *acksHook) Provides(b byte) bool { return b == mqtt.OnPacketEncode }

func (h *acksHook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	switch pk.FixedHeader.Type {
	case packets.Puback, packets.Pubrec, packets.Pubrel, packets.Pubcomp, packets.Suback, packets.Unsuback:
		pk.Properties = packets.Properties{ReasonString: pk.Properties.ReasonString}
	}
	if pk.FixedHeader.Type == packets.Suback && cl.Net.Listener != internalListener && slices.Contains(pk.ReasonCodes, packets.ErrNotAuthorized.Code) {
		codes := slices.Clone(pk.ReasonCodes)
		for i, c := range codes {
			if c == packets.ErrNotAuthorized.Code {
				codes[i] = packets.ErrUnspecifiedError.Code
			}
		}
		pk.ReasonCodes = codes
	}
	return pk
}
