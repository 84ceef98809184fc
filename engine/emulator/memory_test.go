package emulator

import (
	"context"
	"runtime"
	"testing"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/examples/models"
)

// pendingHeapMB starts n hello_world instances (each holds one pending
// external task) and returns the live heap they cost, in MB.
func pendingHeapMB(tb testing.TB, n int) float64 {
	e, err := New(Config{})
	if err != nil {
		tb.Fatal(err)
	}
	defer e.Close()
	if _, err := e.LoadFS(models.FS); err != nil {
		tb.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	ctx := context.Background()
	tok := []byte(`{"orderId":"A-10001","amount":1250.5,"customer":"c-42"}`)
	for i := 0; i < n; i++ {
		if _, err := e.Start(ctx, engine.ProcessStartRequest{ProcessModelID: "hello_world", InitialToken: tok}); err != nil {
			tb.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if got := e.Stats().PendingTasks; got != n {
		tb.Fatalf("pending tasks %d, want %d", got, n)
	}
	runtime.KeepAlive(e)
	return float64(after.HeapAlloc-before.HeapAlloc) / (1 << 20)
}

// TestMemoryPendingTasks holds 100,000 pending tasks (with their instances,
// flow node instances and tokens) and checks they fit in 200 MB of heap.
func TestMemoryPendingTasks(t *testing.T) {
	n := 100_000
	if raceEnabled {
		n = 20_000 // the race detector is ~10x slower; scale the bound instead
	}
	mb := pendingHeapMB(t, n)
	perTask := mb * (1 << 20) / float64(n)
	t.Logf("%d pending tasks: %.1f MB live heap (%.0f bytes per task incl. instance)", n, mb, perTask)
	if limit := 200.0 * float64(n) / 100_000; mb > limit {
		t.Fatalf("%d pending tasks use %.1f MB, want < %.1f MB", n, mb, limit)
	}
}

// BenchmarkMemoryPendingTasks100k reports the heap of 100k pending tasks.
// The metric is a size, not a time: it is measured once per call whatever
// b.N is (so -benchtime Nx does not multiply the work).
func BenchmarkMemoryPendingTasks100k(b *testing.B) {
	b.ReportMetric(pendingHeapMB(b, 100_000), "MB/100k-tasks")
	for range b.N {
	}
}
