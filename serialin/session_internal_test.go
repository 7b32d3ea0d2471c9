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

func TestAckMemory(t *testing.T) {
	s := &session{acked: make(map[uint16]ackEntry)}
	s.remember(7, 1)
	for id := uint16(100); id < 100+ackMemory-1; id++ {
		s.remember(id, 0)
	}
	// Id 7 again, with other content: its first entry now leaves the
	// ring, and must not take the new one with it.
	s.remember(7, 2)
	if e, ok := s.acked[7]; !ok || e.hash != 2 {
		t.Fatalf("id 7 after re-acknowledgement: %+v, %v", e, ok)
	}
	if _, ok := s.acked[100]; !ok {
		t.Fatal("id 100 forgotten too early")
	}
	s.remember(8, 0)
	if _, ok := s.acked[100]; ok {
		t.Fatalf("id 100 still remembered after %d later acknowledgements", ackMemory)
	}
	if len(s.acked) != ackMemory {
		t.Fatalf("%d ids remembered, want %d", len(s.acked), ackMemory)
	}
}
