package gateway

import (
	"testing"
	"time"
)

func TestParseWriteBytes(t *testing.T) {
	io := "rchar: 6976\nwchar: 10\nsyscr: 10\nsyscw: 1\nread_bytes: 4096\nwrite_bytes: 123456\ncancelled_write_bytes: 4096\n"
	if n, ok := parseWriteBytes([]byte(io)); !ok || n != 123456 {
		t.Errorf("parseWriteBytes = %d, %v; want 123456", n, ok)
	}
	for _, bad := range []string{"", "rchar: 1\n", "write_bytes: many\n"} {
		if n, ok := parseWriteBytes([]byte(bad)); ok {
			t.Errorf("parseWriteBytes(%q) = %d, ok", bad, n)
		}
	}
}

// The rates are over the samples of the last window; without write_bytes
// only the syncs are reported.
func TestWearStatus(t *testing.T) {
	written, known := int64(1000), true
	w := &wear{read: func() (int64, bool) { return written, known }}
	if st := w.status(0, 0); st.WrittenBytes == nil || *st.WrittenBytes != 1000 || st.BytesPerMessage != nil || st.WindowSeconds != 0 {
		t.Errorf("before any sample: %+v", st)
	}
	now := time.Now()
	w.s = []wearSample{{at: now.Add(-20 * time.Second), written: 500, syncs: 2}}
	written = 1500
	st := w.status(12, 4)
	if *st.WrittenBytes != 1500 || *st.BytesPerMessage != 375 || st.Syncs != 12 {
		t.Errorf("status = %+v", st)
	}
	if st.WindowSeconds < 20 || st.WindowSeconds > 21 {
		t.Errorf("window %.1fs, want about 20s", st.WindowSeconds)
	}
	// 1000 bytes and 10 syncs in about 20 s.
	if d := *st.ProjectedBytesPerDay; d < 1000*86400/21 || d > 1000*86400/20 {
		t.Errorf("projected %.0f bytes a day, want about %d", d, 1000*86400/20)
	}
	if st.SyncsPerSecond < 10.0/21 || st.SyncsPerSecond > 10.0/20 {
		t.Errorf("%.2f syncs/s, want about 0.5", st.SyncsPerSecond)
	}

	known = false
	st = w.status(12, 4)
	if st.WrittenBytes != nil || st.BytesPerMessage != nil || st.ProjectedBytesPerDay != nil || st.SyncsPerSecond <= 0 {
		t.Errorf("without write_bytes: %+v", st)
	}
}

// Samples older than the window go, but for the one that starts it.
func TestWearWindow(t *testing.T) {
	w := &wear{read: func() (int64, bool) { return 0, true }}
	now := time.Now()
	for _, ago := range []time.Duration{8 * time.Minute, 6 * time.Minute, 4 * time.Minute, time.Minute} {
		w.s = append(w.s, wearSample{at: now.Add(-ago)})
	}
	w.sample(0)
	if len(w.s) != 4 || now.Sub(w.s[0].at) < 6*time.Minute-time.Second || now.Sub(w.s[0].at) > 6*time.Minute+time.Second {
		t.Errorf("after sampling, %d samples, the oldest %s old; want 4, 6m", len(w.s), now.Sub(w.s[0].at))
	}
}
