package topic

import (
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	tests := []struct {
		filter, name string
		want         bool
	}{
		{"sensors/#", "sensors/kitchen/temp", true},
		{"sensors/#", "sensors", true},
		{"sensors/#", "sensorsx/a", false},
		{"sensors/+/temp", "sensors/kitchen/temp", true},
		{"sensors/+/temp", "sensors/kitchen/hum", false},
		{"sensors/+/temp", "sensors/temp", false},
		{"sensors/+", "sensors/a/b", false},
		{"+", "a", true},
		{"+", "a/b", false},
		{"+/+", "/a", true},
		{"#", "anything/at/all", true},
		{"#", "$SYS/broker/uptime", false},
		{"+/broker/uptime", "$SYS/broker/uptime", false},
		{"$SYS/#", "$SYS/broker/uptime", true},
		{"a/b", "a/b", true},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
		{"a//b", "a//b", true},
		{"a/+/b", "a//b", true},
	}
	for _, tt := range tests {
		if got := Match(tt.filter, tt.name); got != tt.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tt.filter, tt.name, got, tt.want)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		s         string
		nameErr   string
		filterErr string
	}{
		{"a/b", "", ""},
		{"a/+/b", "wildcards", ""},
		{"a/#", "wildcards", ""},
		{"a/#/b", "wildcards", "must be the last level"},
		{"a/b#", "wildcards", "whole level"},
		{"a+/b", "wildcards", "whole level"},
		{"", "empty", "empty"},
		{"a\x00b", "NUL", "NUL"},
		{"a\xffb", "UTF-8", "UTF-8"},
		{strings.Repeat("x", MaxLen+1), "longer than", "longer than"},
	}
	for _, tt := range tests {
		check := func(kind string, err error, want string) {
			t.Helper()
			switch {
			case want == "" && err != nil:
				t.Errorf("%s(%.20q) = %v, want nil", kind, tt.s, err)
			case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
				t.Errorf("%s(%.20q) = %v, want error containing %q", kind, tt.s, err, want)
			}
		}
		check("ValidateName", ValidateName(tt.s), tt.nameErr)
		check("ValidateFilter", ValidateFilter(tt.s), tt.filterErr)
	}
}

func TestCovers(t *testing.T) {
	tests := []struct {
		pattern, sub string
		want         bool
	}{
		{"#", "a/b", true},
		{"#", "#", true},
		{"cmd/esp32/#", "cmd/esp32/#", true},
		{"cmd/esp32/#", "cmd/esp32/led", true},
		{"cmd/esp32/#", "cmd/#", false},
		{"cmd/+", "cmd/a", true},
		{"cmd/+", "cmd/+", true},
		{"cmd/+", "cmd/#", false},
		{"cmd/a", "cmd/+", false},
		{"cmd/+/x", "cmd/+/x", true},
		{"a/b", "a/b", true},
		{"a/b", "a/b/c", false},
		{"a/#", "a", true},
		{"+/x", "$SYS/x", false},
		{"$SYS/#", "$SYS/broker/uptime", true},
	}
	for _, tt := range tests {
		if got := Covers(tt.pattern, tt.sub); got != tt.want {
			t.Errorf("Covers(%q, %q) = %v, want %v", tt.pattern, tt.sub, got, tt.want)
		}
	}
}

func FuzzCovers(f *testing.F) {
	f.Add("cmd/+/#", "cmd/a/b")
	f.Add("#", "$SYS/x")
	f.Fuzz(func(t *testing.T, pattern, name string) {
		// For topic names, Covers and Match agree.
		if ValidateFilter(pattern) != nil || ValidateName(name) != nil {
			return
		}
		if Covers(pattern, name) != Match(pattern, name) {
			t.Fatalf("Covers(%q, %q) = %v but Match = %v", pattern, name, Covers(pattern, name), Match(pattern, name))
		}
	})
}

func TestExpand(t *testing.T) {
	for _, tt := range []struct{ filter, user, client, want string }{
		{"users/%u/#", "ann", "c1", "users/ann/#"},
		{"clients/%c/+/%u", "ann", "c1", "clients/c1/+/ann"},
		{"#", "ann", "c1", "#"},
		{"users/%u", "%c", "c1", "users/%c"}, // one pass: the username is not expanded again
		{"users/%u", "", "c1", "users/"},
		{"100%/%x/%%u%", "ann", "c1", "100%/%x/%ann%"}, // a % not before u or c stays
		{"%c%u", "ann", "c1", "c1ann"},
	} {
		if got := Expand(tt.filter, tt.user, tt.client); got != tt.want {
			t.Errorf("Expand(%q, %q, %q) = %q, want %q", tt.filter, tt.user, tt.client, got, tt.want)
		}
	}
}
