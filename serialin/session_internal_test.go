package serialin

import (
	"fmt"
	"testing"

	"github.com/eclipse/paho.golang/packets"
)

func TestInIDOrder(t *testing.T) {
	tests := []struct{ in, want []uint16 }{
		{[]uint16{3, 1, 2}, []uint16{1, 2, 3}},
		{[]uint16{2, 65535, 1, 65534}, []uint16{65534, 65535, 1, 2}},
		{[]uint16{7}, []uint16{7}},
		{[]uint16{100, 20000}, []uint16{100, 20000}},
	}
	for _, tt := range tests {
		var pks []*packets.Publish
		for _, id := range tt.in {
			pks = append(pks, &packets.Publish{PacketID: id})
		}
		var got []uint16
		for _, pk := range inIDOrder(pks) {
			got = append(got, pk.PacketID)
		}
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("inIDOrder(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
