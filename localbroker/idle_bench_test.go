package localbroker

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/ralph-gateway/ralph/internal/mqtttest"
)

// BenchmarkIdleConnections reports what an idle MQTT 3.1.1 connection
// costs the broker's Go runtime, per connection, with 1,000 of them:
// goroutines, goroutine stack, and heap in use (mochi's queue of pending
// writes, 64 KiB a client, is counted whole though an idle client never
// touches most of it; the clients' side, in the same process, holds no
// goroutine and a 4 KiB read buffer each). One measurement, whatever b.N:
//
//	go test ./localbroker -run XXX -bench IdleConnections -benchtime 1x
func BenchmarkIdleConnections(b *testing.B) {
	const n = 1000
	e := start(b)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	g := runtime.NumGoroutine()
	for i := range n {
		mqtttest.Dial(b, e.addr, fmt.Sprintf("idle%d", i), 4)
	}
	for range 4 { // stacks shrink at collections
		runtime.GC()
	}
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(runtime.NumGoroutine()-g)/n, "goroutines/conn")
	b.ReportMetric(float64(after.StackInuse-before.StackInuse)/n, "stack-B/conn")
	b.ReportMetric(float64(int64(after.HeapInuse)-int64(before.HeapInuse))/n, "heap-B/conn")
}
