package main

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ralph-gateway/ralph/gateway"
)

// TestStorageWear: `ralph status` and /metrics report what Ralph wrote to
// its disk, and the figures agree with each other and grow with traffic.
func TestStorageWear(t *testing.T) {
	_, procIO := os.Stat("/proc/self/io")
	up := newMosquitto(t)
	up.stop()
	s := newSetup(t, up.addr(), "")
	p := startRalph(t, s.config, s.addr)
	publish(t, s.addr, "dev", 5, "sensors/a", payloads("a", 0, 10))
	first := waitStatus(t, s, "10 appended", func(st gateway.Status) bool { return st.Queue.Appended == 10 })
	publish(t, s.addr, "dev", 5, "sensors/a", payloads("b", 0, 50))
	st := waitStatus(t, s, "60 appended", func(st gateway.Status) bool { return st.Queue.Appended == 60 })

	w := st.Storage
	if w.Syncs == 0 || w.Syncs <= first.Storage.Syncs || w.WindowSeconds <= 0 || w.SyncsPerSecond <= 0 {
		t.Fatalf("storage = %+v; after 10 messages %+v", w, first.Storage)
	}
	if procIO != nil {
		if w.WrittenBytes != nil || w.BytesPerMessage != nil || w.ProjectedBytesPerDay != nil {
			t.Fatalf("bytes written reported without /proc/self/io: %+v", w)
		}
	} else {
		if w.WrittenBytes == nil || w.BytesPerMessage == nil || w.ProjectedBytesPerDay == nil || first.Storage.WrittenBytes == nil {
			t.Fatalf("storage lacks bytes written: %+v", w)
		}
		if *w.WrittenBytes <= *first.Storage.WrittenBytes || *first.Storage.WrittenBytes <= 0 {
			t.Fatalf("written bytes %d after 60 messages, %d after 10: want them positive and growing", *w.WrittenBytes, *first.Storage.WrittenBytes)
		}
		if got := *w.BytesPerMessage * 60; got < float64(*w.WrittenBytes)-1 || got > float64(*w.WrittenBytes)+1 {
			t.Fatalf("bytes per message %.1f × 60 messages ≠ %d bytes written", *w.BytesPerMessage, *w.WrittenBytes)
		}
		if *w.ProjectedBytesPerDay <= 0 {
			t.Fatalf("projected bytes per day %.0f after writing", *w.ProjectedBytesPerDay)
		}
	}

	out, code := ralphCmd(t, "status", "--addr", s.httpAddr)
	want := `storage: .*\d+ syncs; over the last \d+s: [\d.]+ syncs/s`
	if procIO == nil {
		want = `storage: wrote [\d.]+ (B|KiB|MiB|GiB) since start \([\d.]+ (B|KiB|MiB) per message\), \d+ syncs; over the last \d+s: [\d.]+ syncs/s, [\d.]+ (B|KiB|MiB|GiB) a day projected`
	}
	if code != 0 || !regexp.MustCompile(want).MatchString(out) {
		t.Fatalf("status (exit %d) lacks %s:\n%s", code, want, out)
	}

	_, body := httpGet(t, "http://"+s.httpAddr+"/metrics")
	metric := func(name string) (float64, bool) {
		m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindStringSubmatch(body)
		if m == nil {
			return 0, false
		}
		v, err := strconv.ParseFloat(m[1], 64)
		return v, err == nil
	}
	if v, ok := metric("ralph_queue_syncs_total"); !ok || v < float64(w.Syncs) {
		t.Fatalf("ralph_queue_syncs_total = %v (%v), status said %d", v, ok, w.Syncs)
	}
	syncs, _ := metric("ralph_queue_syncs_total")
	if v, ok := metric("ralph_queue_sync_rounds_total"); !ok || v < 1 || v > syncs {
		t.Fatalf("ralph_queue_sync_rounds_total = %v (%v), want between 1 and the %v sync calls", v, ok, syncs)
	}
	if v, ok := metric("ralph_queue_unreadable_total"); !ok || v != 0 {
		t.Fatalf("ralph_queue_unreadable_total = %v (%v), want 0", v, ok)
	}
	if strings.Contains(body, "ralph_queue_fsyncs_total") {
		t.Error("/metrics still has the old name ralph_queue_fsyncs_total")
	}
	for _, name := range []string{"ralph_storage_written_bytes_total", "ralph_storage_bytes_per_message", "ralph_storage_projected_bytes_per_day"} {
		v, ok := metric(name)
		switch {
		case procIO != nil && ok:
			t.Errorf("%s reported without /proc/self/io", name)
		case procIO == nil && (!ok || v <= 0):
			t.Errorf("%s = %v (present %v), want a positive value", name, v, ok)
		}
	}
	if v, _ := metric("ralph_storage_written_bytes_total"); procIO == nil && v < float64(*w.WrittenBytes) {
		t.Errorf("ralph_storage_written_bytes_total = %v, below the %d bytes status reported before", v, *w.WrittenBytes)
	}
	p.stop()
}
