package gateway

// Storage wear: how much Ralph writes to its disk, for sizing an SD card.
// The figures are the kernel's (write_bytes in /proc/self/io: bytes this
// process caused to be written to storage, at the time it dirtied them)
// and the queue's (its sync calls), sampled every wearEvery so that the
// projection per day follows the recent rate, not the average since start.

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"strconv"
	"sync"
	"time"
)

const (
	// wearWindow is the span the projected writes per day and the syncs a
	// second are computed over (since start during the first wearWindow).
	wearWindow = 5 * time.Minute
	wearEvery  = 10 * time.Second
)

// StorageStatus is what Ralph wrote to its disk. The written figures are
// absent where the kernel does not report them (no /proc/self/io).
type StorageStatus struct {
	WrittenBytes         *int64   `json:"written_bytes,omitempty"`           // since start
	BytesPerMessage      *float64 `json:"bytes_per_message,omitempty"`       // written_bytes / messages appended since start
	ProjectedBytesPerDay *float64 `json:"projected_bytes_per_day,omitempty"` // at the rate of the last window
	Syncs                uint64   `json:"syncs"`                             // the queue's sync calls since start
	SyncsPerSecond       float64  `json:"syncs_per_second"`                  // over the last window
	WindowSeconds        float64  `json:"window_seconds"`                    // the span the rates are over
}

// wearSample is one reading of the counters.
type wearSample struct {
	at      time.Time
	written int64 // -1 when unknown
	syncs   uint64
}

// wear keeps the samples of the last wearWindow, oldest first.
type wear struct {
	read func() (int64, bool) // the process's write_bytes
	mu   sync.Mutex
	s    []wearSample
}

func newWear() *wear { return &wear{read: writeBytes} }

func (w *wear) now(syncs uint64) wearSample {
	s := wearSample{at: time.Now(), written: -1, syncs: syncs}
	if n, ok := w.read(); ok {
		s.written = n
	}
	return s
}

// sample records the counters, dropping samples older than the window
// but for the one that starts it.
func (w *wear) sample(syncs uint64) {
	s := w.now(syncs)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.s = append(w.s, s)
	for len(w.s) > 2 && s.at.Sub(w.s[1].at) >= wearWindow {
		w.s = w.s[1:]
	}
}

// sampleWear records the storage counters every wearEvery, for the rates
// over the last wearWindow.
func (g *Gateway) sampleWear(ctx context.Context) {
	t := time.NewTicker(wearEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.wear.sample(g.q.Stats().Syncs)
		}
	}
}

// status reports the counters now, with rates since the oldest sample.
func (w *wear) status(syncs, appended uint64) StorageStatus {
	cur := w.now(syncs)
	st := StorageStatus{Syncs: syncs}
	w.mu.Lock()
	var first wearSample
	if len(w.s) > 0 {
		first = w.s[0]
	}
	w.mu.Unlock()
	if cur.written >= 0 {
		n := cur.written
		st.WrittenBytes = &n
		if appended > 0 {
			per := float64(n) / float64(appended)
			st.BytesPerMessage = &per
		}
	}
	if first.at.IsZero() {
		return st
	}
	span := cur.at.Sub(first.at).Seconds()
	if span <= 0 {
		return st
	}
	st.WindowSeconds = span
	st.SyncsPerSecond = float64(cur.syncs-first.syncs) / span
	if cur.written >= 0 && first.written >= 0 {
		day := float64(cur.written-first.written) / span * (24 * 60 * 60)
		st.ProjectedBytesPerDay = &day
	}
	return st
}

// writeBytes reads write_bytes from /proc/self/io.
func writeBytes() (int64, bool) {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0, false
	}
	return parseWriteBytes(b)
}

func parseWriteBytes(b []byte) (int64, bool) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		v, ok := bytes.CutPrefix(sc.Bytes(), []byte("write_bytes:"))
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
		return n, err == nil
	}
	return 0, false
}
