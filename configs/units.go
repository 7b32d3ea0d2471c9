package configs

// Durations and sizes as the file writes them ("30s", "256KiB"), and the
// way error messages print them.

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// String formats s like the config does, e.g. "1GiB".
func (s Size) String() string { return formatSize(s) }

// Duration is a time.Duration written as a string such as "30s" or "1h30m".
type Duration struct{ time.Duration }

// UnmarshalText parses a duration such as "30s" or "1h30m".
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(string(text))
	if err != nil {
		return fmt.Errorf(`invalid duration %q (use a number with a unit: ns, us, ms, s, m or h, e.g. "30s" or "1h30m")`, truncate(string(text)))
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration the way UnmarshalText reads it, e.g. "1h30m".
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(formatDuration(d.Duration)), nil
}

// Size is a byte count written as a string: "512", "64KiB", "2GiB", "10MB"
// (KB, MB, GB are decimal, KiB, MiB, GiB binary; the B is optional and units
// are case-insensitive), or as a bare TOML integer.
type Size int64

const (
	kiB Size = 1 << 10
	miB Size = 1 << 20
	giB Size = 1 << 30
)

var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9,
	"ki": 1 << 10, "kib": 1 << 10, "mi": 1 << 20, "mib": 1 << 20, "gi": 1 << 30, "gib": 1 << 30,
}

// UnmarshalText parses a size such as "256KiB", "10MB" or "4096".
func (s *Size) UnmarshalText(text []byte) error {
	str := strings.TrimSpace(string(text))
	i := 0
	for i < len(str) && str[i] >= '0' && str[i] <= '9' {
		i++
	}
	mult, ok := sizeUnits[strings.ToLower(strings.TrimSpace(str[i:]))]
	if i == 0 || !ok {
		return fmt.Errorf(`invalid size %q (use a byte count or a whole number with a unit: B, KB, MB, GB, KiB, MiB or GiB, e.g. "256KiB")`, truncate(string(text)))
	}
	n, err := strconv.ParseInt(str[:i], 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return fmt.Errorf("size %q is too large", truncate(string(text)))
	}
	*s = Size(n * mult)
	return nil
}

// UnmarshalTOML accepts a TOML string (see UnmarshalText) or integer.
func (s *Size) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case int64:
		if v < 0 {
			return fmt.Errorf("size %d is negative", v)
		}
		*s = Size(v)
		return nil
	case string:
		return s.UnmarshalText([]byte(v))
	}
	return fmt.Errorf("expected %s, got %s", wantSize, describe(v))
}

// MarshalText writes the size with the largest exact binary unit, e.g. "256KiB".
func (s Size) MarshalText() ([]byte, error) {
	return []byte(formatSize(s)), nil
}

func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

func formatSize(s Size) string {
	switch {
	case s != 0 && s%giB == 0:
		return strconv.FormatInt(int64(s/giB), 10) + "GiB"
	case s != 0 && s%miB == 0:
		return strconv.FormatInt(int64(s/miB), 10) + "MiB"
	case s != 0 && s%kiB == 0:
		return strconv.FormatInt(int64(s/kiB), 10) + "KiB"
	}
	return strconv.FormatInt(int64(s), 10) + "B"
}
