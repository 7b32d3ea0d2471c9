package main

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"
)

// percentile returns the p-th percentile (0 < p <= 100) of sorted using the
// nearest-rank method: the smallest value such that at least p% of the
// values are less than or equal to it. It returns 0 for an empty slice.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	// The epsilon keeps float error (99.9/100*1000 = 999.0000000000001)
	// from bumping the rank.
	rank := int(math.Ceil(p/100*float64(n) - 1e-9))
	if rank < 1 {
		rank = 1
	}
	if rank > n {
		rank = n
	}
	return sorted[rank-1]
}

// latencySummary is the distribution of a set of latencies.
type latencySummary struct {
	Count int
	P50   time.Duration
	P90   time.Duration
	P99   time.Duration
	Max   time.Duration
}

// summarize sorts d in place and summarizes it.
func summarize(d []time.Duration) latencySummary {
	slices.Sort(d)
	s := latencySummary{Count: len(d)}
	if len(d) == 0 {
		return s
	}
	s.P50 = percentile(d, 50)
	s.P90 = percentile(d, 90)
	s.P99 = percentile(d, 99)
	s.Max = d[len(d)-1]
	return s
}

// latencyJSON is latencySummary as it appears in -json output: microseconds.
type latencyJSON struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50_us"`
	P90   float64 `json:"p90_us"`
	P99   float64 `json:"p99_us"`
	Max   float64 `json:"max_us"`
}

func (s latencySummary) json() *latencyJSON {
	if s.Count == 0 {
		return nil
	}
	us := func(d time.Duration) float64 { return math.Round(float64(d)/1e2) / 10 }
	return &latencyJSON{Count: s.Count, P50: us(s.P50), P90: us(s.P90), P99: us(s.P99), Max: us(s.Max)}
}

// String formats the summary for the text report.
func (s latencySummary) String() string {
	if s.Count == 0 {
		return "n/a"
	}
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  max %s  (n=%d)",
		fmtDur(s.P50), fmtDur(s.P90), fmtDur(s.P99), fmtDur(s.Max), s.Count)
}

// fmtDur formats d with a precision that suits its magnitude.
func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.1fµs", float64(d)/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.3fs", d.Seconds())
	}
}

// rate returns n per second over d, or 0 if d is not positive.
func rate(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// readMemStatus returns VmHWM and VmRSS, in KiB, from /proc/<pid>/status.
func readMemStatus(pid int) (hwmKiB, rssKiB int64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, err
	}
	var haveHWM, haveRSS bool
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Bytes()
		var dst *int64
		switch {
		case bytes.HasPrefix(line, []byte("VmHWM:")):
			dst, haveHWM = &hwmKiB, true
		case bytes.HasPrefix(line, []byte("VmRSS:")):
			dst, haveRSS = &rssKiB, true
		default:
			continue
		}
		// "VmRSS:	   12345 kB"
		f := bytes.Fields(line[6:])
		if len(f) < 1 {
			return 0, 0, fmt.Errorf("pid %d: malformed line %q", pid, line)
		}
		if *dst, err = strconv.ParseInt(string(f[0]), 10, 64); err != nil {
			return 0, 0, fmt.Errorf("pid %d: malformed line %q", pid, line)
		}
	}
	if !haveHWM || !haveRSS {
		return 0, 0, fmt.Errorf("pid %d: no VmHWM/VmRSS in status (kernel thread or zombie?)", pid)
	}
	return hwmKiB, rssKiB, nil
}

// rssSampler samples the VmRSS of a process at a fixed interval.
type rssSampler struct {
	pid  int
	stop chan struct{}
	wg   sync.WaitGroup

	// Written by the sampling goroutine; read after stop.
	maxRSSKiB int64
	samples   int
	err       error
}

// startRSSSampler takes a first sample right away (so a bad pid is reported
// before the run starts) and then one every interval until stop is called.
func startRSSSampler(pid int, interval time.Duration) (*rssSampler, error) {
	_, rss, err := readMemStatus(pid)
	if err != nil {
		return nil, err
	}
	s := &rssSampler{pid: pid, stop: make(chan struct{}), maxRSSKiB: rss, samples: 1}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				_, rss, err := readMemStatus(pid)
				if err != nil {
					s.err = err
					return
				}
				s.samples++
				s.maxRSSKiB = max(s.maxRSSKiB, rss)
			}
		}
	}()
	return s, nil
}

// rssResult is what the report shows about the watched process.
type rssResult struct {
	PID           int     `json:"pid"`
	PeakHWMMiB    float64 `json:"vmhwm_mib"`
	MaxSampledMiB float64 `json:"max_sampled_vmrss_mib"`
	FinalRSSMiB   float64 `json:"final_vmrss_mib"`
	Samples       int     `json:"samples"`
	Error         string  `json:"error,omitempty"`
}

// finish stops sampling, reads VmHWM and VmRSS a last time and returns the result.
func (s *rssSampler) finish() *rssResult {
	close(s.stop)
	s.wg.Wait()
	mib := func(kib int64) float64 { return math.Round(float64(kib)/1024*10) / 10 }
	r := &rssResult{PID: s.pid, MaxSampledMiB: mib(s.maxRSSKiB), Samples: s.samples}
	hwm, rss, err := readMemStatus(s.pid)
	if err == nil {
		r.PeakHWMMiB, r.FinalRSSMiB = mib(hwm), mib(rss)
		r.MaxSampledMiB = mib(max(s.maxRSSKiB, rss))
	}
	if err = cmp.Or(s.err, err); err != nil {
		r.Error = err.Error()
	}
	return r
}
