package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ralph-gateway/ralph/internal/board"
)

// runSerial drives a Ralph serial port with a simulated board on a
// pseudo-terminal linked at link (Ralph's [[serial]] path): -messages QoS 1
// publishes of -size bytes to -topic, -inflight awaiting their ACK at once,
// paced as a UART at baud would carry them (0: as fast as the pty takes
// them). It reports frames/s, ACK latency (frame written to ACK read) and,
// with -pid, Ralph's CPU time and memory.
func runSerial(ctx context.Context, o *options, link string, baud int, out io.Writer) error {
	b, err := board.New(board.Options{ID: "bench", Link: link, Baud: baud, Window: o.Inflight, Resend: 10 * time.Second})
	if err != nil {
		return err
	}
	defer b.Unplug()
	fmt.Fprintf(out, "waiting for Ralph to open %s...\n", link)
	if err := b.Hello(ctx); err != nil {
		return fmt.Errorf("no HELLO from Ralph: %w", err)
	}
	payload := []byte(strings.Repeat("x", o.Size))
	var (
		mu        sync.Mutex
		latencies []time.Duration
		failed    int
		wg        sync.WaitGroup
	)
	var cpu0 float64
	var rss *rssSampler
	if o.PID != 0 {
		if cpu0, err = cpuSeconds(o.PID); err != nil {
			return err
		}
		if rss, err = startRSSSampler(o.PID, 100*time.Millisecond); err != nil {
			return err
		}
	}
	start := time.Now()
	for range o.Messages {
		_, res := b.PublishAsync(ctx, 1, o.Topic, payload)
		sent := time.Now() // PublishAsync returns once the frame is written
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := <-res
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				return
			}
			latencies = append(latencies, time.Since(sent))
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	pace := "unpaced"
	if baud > 0 {
		pace = fmt.Sprintf("%d baud", baud)
	}
	fmt.Fprintf(out, "serial: %d frames of %d B payload, %s, window %d: %d acked, %d failed in %s = %.0f frames/s\n",
		o.Messages, o.Size, pace, o.Inflight, len(latencies), failed, elapsed.Round(time.Millisecond), rate(int64(len(latencies)), elapsed))
	fmt.Fprintf(out, "ack latency: %s\n", summarize(latencies))
	if o.PID != 0 {
		cpu1, err := cpuSeconds(o.PID)
		if err != nil {
			return err
		}
		used := (cpu1 - cpu0) / elapsed.Seconds()
		fps := rate(int64(len(latencies)), elapsed)
		m := rss.finish()
		fmt.Fprintf(out, "ralph: %.1f%% of a core, %.1f%% per 1,000 frames/s; peak RSS %.1f MiB\n",
			100*used, 100*used*1000/fps, m.MaxSampledMiB)
	}
	if failed > 0 || len(latencies) != o.Messages {
		return fmt.Errorf("%d of %d publishes not acknowledged", o.Messages-len(latencies), o.Messages)
	}
	return nil
}

// cpuSeconds is a process's user plus system CPU time, from
// /proc/<pid>/stat (in clock ticks of 1/100 s, Linux's USER_HZ).
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces; fields count from after its ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("pid %d: short stat line", pid)
	}
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("pid %d: bad stat line", pid)
	}
	return (utime + stime) / 100, nil
}
