package gateway

import "testing"

func TestOverlap(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"devices/kitchen/#", "devices/kitchen/#", true},
		{"#", "devices/kitchen/#", true},
		{"devices/+/temp", "devices/kitchen/#", true},
		{"devices/kitchen/temp", "devices/kitchen/#", true},
		{"devices/kitchen", "devices/kitchen/#", true},
		{"devices/other/#", "devices/kitchen/#", false},
		{"sensors/#", "devices/kitchen/#", false},
		{"devices", "devices/kitchen/#", false},
		{"a/b", "a/+", true},
		{"a/b/c", "a/+", false},
	}
	for _, tt := range tests {
		if got := overlap(tt.a, tt.b); got != tt.want {
			t.Errorf("overlap(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
		if got := overlap(tt.b, tt.a); got != tt.want {
			t.Errorf("overlap(%q, %q) = %v, want %v", tt.b, tt.a, got, tt.want)
		}
	}
}
