package telemetry_test

import (
	"context"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/pe-bridge/pe-bridge/bridge"
	"github.com/pe-bridge/pe-bridge/internal/telemetry"
)

// BenchmarkTaskHooks is the cost the hooks add to one task that succeeds at
// the first attempt: the Observer calls the pump makes (fetched, window
// twice, published, replied, settled, one engine call per fetch batch
// and one per finish) and, with tracing, the spans (task, send, report) to
// a no-op exporter behind the SDK's batch processor.
func BenchmarkTaskHooks(b *testing.B) {
	run := func(b *testing.B, m *telemetry.Metrics, tr *telemetry.Tracing) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) { // as many goroutines as GOMAXPROCS, on the same topic
			for pb.Next() {
				now := time.Now()
				var ts bridge.TaskSpan
				if tr != nil {
					ts = tr.StartTask("bench", "task-id", now)
				}
				if m != nil {
					m.TaskFetched("bench")
					m.Window("bench", 1, 100)
					m.TaskPublished("bench")
				}
				if ts != nil {
					tp, end := ts.Publish()
					_ = tp
					end(nil)
				}
				if m != nil {
					m.HandlerReplied("bench", time.Millisecond)
					m.Window("bench", 0, 100)
					m.EngineCall("PUT /external_tasks/{id}/finish", 200, time.Millisecond)
					m.EngineCall("POST /external_tasks/fetch_and_lock", 200, time.Millisecond)
				}
				if ts != nil {
					ts.Report("finish")(nil)
				}
				if m != nil {
					m.TaskSettled("bench", bridge.SettledFinished, 2*time.Millisecond)
				}
				if ts != nil {
					ts.End(bridge.SettledFinished)
				}
			}
		})
	}
	b.Run("none", func(b *testing.B) { run(b, nil, nil) })
	b.Run("metrics", func(b *testing.B) { run(b, telemetry.NewMetrics("bench"), nil) })
	b.Run("metrics+tracing", func(b *testing.B) {
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
		defer func() { _ = tp.Shutdown(context.Background()) }()
		run(b, telemetry.NewMetrics("bench"), telemetry.NewTracing(tp))
	})
}
