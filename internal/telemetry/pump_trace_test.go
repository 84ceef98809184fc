package telemetry_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/pe-bridge/pe-bridge/bridge"
	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/engine/emulator"
	"github.com/pe-bridge/pe-bridge/examples/models"
	"github.com/pe-bridge/pe-bridge/internal/telemetry"
)

// The real pump with the Tracer and the Observer: one hello_world instance
// through the engine emulator, an embedded nats-server and a Go SDK handler
// that continues the task event's traceparent. The trace has the task span,
// the attempt's send span, the handler's span as its child across the NATS
// hop, and the finish report; the metrics count the task.
func TestPumpTraceEndToEnd(t *testing.T) {
	tp, exp := recorder(t)
	emu, err := emulator.New(emulator.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := emu.LoadFS(models.FS); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(emu)
	defer srv.Close()
	defer emu.Close()
	nc := testConn(t)
	const topic = "SampleExternalTask"
	tracedHandler(t, tp, nc, topic)

	m := telemetry.NewMetrics("test")
	eng, err := engine.NewClient(srv.URL, engine.ClientConfig{Observer: m})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	p, err := bridge.NewPump(eng, nc, bridge.Config{Topics: []string{topic}, Observer: m, Tracer: telemetry.NewTracing(tp)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	defer scancel()
	if _, err := emu.Start(sctx, engine.ProcessStartRequest{ProcessModelID: "hello_world", ReturnOn: engine.ReturnOnFinished}); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	spans := exp.GetSpans()
	root := byName(t, spans, "task "+topic)
	send := byName(t, spans, "send pe.task."+topic)
	handle := byName(t, spans, "handle "+topic)
	report := byName(t, spans, "engine finish")
	for _, c := range []struct{ child, parent tracetest.SpanStub }{{send, root}, {handle, send}, {report, root}} {
		if c.child.SpanContext.TraceID() != root.SpanContext.TraceID() || c.child.Parent.SpanID() != c.parent.SpanContext.SpanID() {
			t.Errorf("%s: trace %s parent %s, want trace %s parent %s (%s)", c.child.Name, c.child.SpanContext.TraceID(),
				c.child.Parent.SpanID(), root.SpanContext.TraceID(), c.parent.SpanContext.SpanID(), c.parent.Name)
		}
	}
	if !handle.Parent.IsRemote() {
		t.Error("the handler's parent did not come over NATS")
	}
	var settled string
	for _, a := range root.Attributes {
		if a.Key == "pe.task.settlement" {
			settled = a.Value.AsString()
		}
	}
	if settled != string(bridge.SettledFinished) {
		t.Errorf("task span settlement %q", settled)
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{
		`pe_bridge_tasks_fetched_total{topic="SampleExternalTask"} 1`,
		`pe_bridge_tasks_published_total{topic="SampleExternalTask"} 1`,
		`pe_bridge_tasks_settled_total{outcome="finished",topic="SampleExternalTask"} 1`,
		`pe_bridge_handler_duration_seconds_count{topic="SampleExternalTask"} 1`,
		`pe_bridge_tasks_in_flight{topic="SampleExternalTask"} 0`,
		`pe_bridge_task_window_size{topic="SampleExternalTask"} 100`,
	} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
