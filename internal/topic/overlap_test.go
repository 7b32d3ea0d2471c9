package topic

import (
	"strings"
	"testing"
)

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
		if got := Overlap(tt.a, tt.b); got != tt.want {
			t.Errorf("Overlap(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
		if got := Overlap(tt.b, tt.a); got != tt.want {
			t.Errorf("Overlap(%q, %q) = %v, want %v", tt.b, tt.a, got, tt.want)
		}
	}
}

// FuzzOverlap checks Overlap against Match: a topic name overlaps a filter
// exactly when it matches it (leaving aside $ topics, which Match keeps
// from wildcards at the first level and Overlap does not), and Overlap is
// symmetric.
func FuzzOverlap(f *testing.F) {
	f.Add("devices/+/temp", "devices/kitchen/temp")
	f.Add("a/#", "a")
	f.Add("+/+", "x/y/z")
	f.Fuzz(func(t *testing.T, filter, name string) {
		if ValidateFilter(filter) != nil || ValidateName(name) != nil || strings.HasPrefix(name, "$") {
			return
		}
		if Overlap(filter, name) != Match(filter, name) {
			t.Fatalf("Overlap(%q, %q) = %v but Match = %v", filter, name, Overlap(filter, name), Match(filter, name))
		}
		if Overlap(filter, name) != Overlap(name, filter) {
			t.Fatalf("Overlap(%q, %q) is not symmetric", filter, name)
		}
	})
}
