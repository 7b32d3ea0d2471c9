package configs

import (
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// Sizes and durations as the file writes them.

func TestConfigSize(t *testing.T) {
	tests := []struct {
		in   string
		want Size
		err  bool
	}{
		{"0", 0, false},
		{"512", 512, false},
		{"512B", 512, false},
		{"64KiB", 64 << 10, false},
		{"64kib", 64 << 10, false},
		{"64Ki", 64 << 10, false},
		{"10KB", 10_000, false},
		{"10 MB", 10_000_000, false},
		{"2GiB", 2 << 30, false},
		{"3GB", 3_000_000_000, false},
		{"1.5MiB", 0, true},
		{"-1", 0, true},
		{"", 0, true},
		{"KiB", 0, true},
		{"10TB", 0, true},
		{"99999999999999999999", 0, true},
		{"9999999999GiB", 0, true},
	}
	for _, tt := range tests {
		var s Size
		err := s.UnmarshalText([]byte(tt.in))
		if (err != nil) != tt.err || s != tt.want {
			t.Errorf("Size.UnmarshalText(%q) = %d, %v; want %d, error %v", tt.in, s, err, tt.want, tt.err)
		}
	}
	for _, s := range []Size{0, 1, 1000, 1024, 256 << 10, 3 << 20, 5 << 30, 1<<30 + 1} {
		text, _ := s.MarshalText()
		var back Size
		if err := back.UnmarshalText(text); err != nil || back != s {
			t.Errorf("Size %d marshals to %q, reads back %d, %v", s, text, back, err)
		}
	}
	if text, _ := Size(256 << 10).MarshalText(); string(text) != "256KiB" {
		t.Errorf("MarshalText(256KiB) = %q", text)
	}
	// Through the toml package: integers and strings.
	var v struct{ A, B Size }
	if _, err := toml.Decode("A = 4096\nB = \"4KiB\"\n", &v); err != nil || v.A != 4096 || v.B != 4096 {
		t.Errorf("toml.Decode = %+v, %v", v, err)
	}
	if _, err := toml.Decode("A = true\n", &v); err == nil {
		t.Errorf("toml.Decode accepted a boolean size")
	}
}

func TestConfigDuration(t *testing.T) {
	var d Duration
	if err := d.UnmarshalText([]byte("1h30m")); err != nil || d.Duration != 90*time.Minute {
		t.Errorf("UnmarshalText(1h30m) = %v, %v", d, err)
	}
	if err := d.UnmarshalText([]byte("30")); err == nil {
		t.Errorf("UnmarshalText(30) accepted a duration without unit")
	}
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{{time.Hour, "1h"}, {90 * time.Minute, "1h30m"}, {time.Minute, "1m"}, {100 * time.Millisecond, "100ms"}, {0, "0s"}, {time.Hour + time.Second, "1h0m1s"}} {
		text, _ := Duration{tt.d}.MarshalText()
		var back Duration
		if string(text) != tt.want || back.UnmarshalText(text) != nil || back.Duration != tt.d {
			t.Errorf("Duration(%v).MarshalText() = %q, want %q (reads back %v)", tt.d, text, tt.want, back)
		}
	}
	var v struct{ D Duration }
	if _, err := toml.Decode(`D = "2s"`, &v); err != nil || v.D.Duration != 2*time.Second {
		t.Errorf("toml.Decode = %+v, %v", v, err)
	}
}
