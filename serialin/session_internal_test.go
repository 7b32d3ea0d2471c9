package serialin

import (
	"fmt"
	"testing"

	"github.com/eclipse/paho.golang/packets"
	"go.bug.st/serial/enumerator"
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

func TestMatch(t *testing.T) {
	d := &enumerator.PortDetails{Name: "/dev/ttyUSB0", IsUSB: true, VID: "10C4", PID: "EA60", SerialNumber: "0001"}
	tests := []struct {
		m    Match
		d    *enumerator.PortDetails
		want bool
	}{
		{Match{VID: "10c4", PID: "ea60"}, d, true},
		{Match{VID: "10c4", PID: "ea60", Serial: "0001"}, d, true},
		{Match{VID: "10c4", PID: "ea60", Serial: "0002"}, d, false},
		{Match{Serial: "0001"}, d, true},
		{Match{VID: "303a"}, d, false},
		{Match{VID: "10c4"}, &enumerator.PortDetails{Name: "/dev/ttyS0"}, false},
	}
	for _, tt := range tests {
		if got := tt.m.matches(tt.d); got != tt.want {
			t.Errorf("%s matches %+v = %v, want %v", &tt.m, tt.d, got, tt.want)
		}
	}
}
