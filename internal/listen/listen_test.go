package listen

import "testing"

func TestLoopback(t *testing.T) {
	for _, tt := range []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:1883", true},
		{"127.1.2.3:1883", true},
		{"localhost:1883", true},
		{"LocalHost:1883", true},
		{"[::1]:1883", true},
		{"[::ffff:127.0.0.1]:1883", true},
		{":1883", false},
		{"0.0.0.0:1883", false},
		{"[::]:1883", false},
		{"192.168.1.2:1883", false},
		{"localhost.example.com:1883", false},
		{"127.0.0.1", false}, // no port: not an address
		{"", false},
	} {
		if got := Loopback(tt.addr); got != tt.want {
			t.Errorf("Loopback(%q) = %v, want %v", tt.addr, got, tt.want)
		}
	}
}
