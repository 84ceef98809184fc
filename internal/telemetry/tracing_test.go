package telemetry_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/pe-bridge/pe-bridge/bridge"
	"github.com/pe-bridge/pe-bridge/events"
	handler "github.com/pe-bridge/pe-bridge/handlers-sdk"
	"github.com/pe-bridge/pe-bridge/internal/natsserver"
	"github.com/pe-bridge/pe-bridge/internal/telemetry"
)

func recorder(t *testing.T) (*sdktrace.TracerProvider, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, exp
}

func byName(t *testing.T, spans tracetest.SpanStubs, name string) tracetest.SpanStub {
	t.Helper()
	for _, s := range spans {
		if s.Name == name {
			return s
		}
	}
	var names []string
	for _, s := range spans {
		names = append(names, s.Name)
	}
	t.Fatalf("no span %q among %v", name, names)
	return tracetest.SpanStub{}
}

// A task's trace across the NATS hop: the root span from the fetch, a send
// span per attempt whose traceparent the event carries, the handler's span
// (a Go SDK handler continuing Task.TraceParent with otel's
// propagation.TraceContext) as the send span's child, and the report.
// testConn connects to a fresh embedded nats-server (no JetStream); both
// close with the test.
func testConn(t *testing.T) *nats.Conn {
	t.Helper()
	ns, err := natsserver.Start(natsserver.Config{Listen: "127.0.0.1:0", NoJetStream: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ns.Close() })
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// tracedHandler serves topic with a Go SDK handler that continues the task
// event's traceparent the way any handler can (no SDK support needed) and
// records its span on tp; it answers {"traced":true}.
func tracedHandler(t *testing.T, tp trace.TracerProvider, nc *nats.Conn, topic string) {
	t.Helper()
	srv, err := handler.NewServer(nc, topic, handler.HandlerFunc(func(ctx context.Context, task *handler.Task) (any, error) {
		ctx = propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{"traceparent": task.TraceParent})
		_, span := tp.Tracer("handler").Start(ctx, "handle "+task.Topic, trace.WithSpanKind(trace.SpanKindConsumer))
		span.End()
		return map[string]any{"traced": true}, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
}

func TestTaskTraceAcrossNATS(t *testing.T) {
	tp, exp := recorder(t)
	tr := telemetry.NewTracing(tp)
	nc := testConn(t)
	const topic = "SampleExternalTask"
	tracedHandler(t, tp, nc, topic)

	fetched := time.Now().Add(-time.Millisecond)
	ts := tr.StartTask(topic, "task-1", fetched)
	traceparent, endPublish := ts.Publish()
	ev := &events.Event{ID: "task-1", Source: "pe-bridge://test", Type: events.TypeTask, Subject: topic,
		Time: time.Now(), Data: []byte(`{"n":1}`)}
	ev.SetExt(events.ExtTopic, topic)
	ev.SetExt(events.ExtTraceParent, traceparent)
	ev.SetExt(events.ExtLockExpiresAt, time.Now().Add(time.Minute).UTC().Format(time.RFC3339Nano))
	msg := nats.NewMsg("pe.task." + topic)
	body, err := events.Encode(ev, events.Binary, msg.Header)
	if err != nil {
		t.Fatal(err)
	}
	msg.Data = body
	reply, err := nc.RequestMsg(msg, 10*time.Second)
	endPublish(err)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(reply.Data), `"traced"`) {
		t.Fatalf("reply %s", reply.Data)
	}
	endReport := ts.Report("finish")
	endReport(nil)
	ts.End(bridge.SettledFinished)

	spans := exp.GetSpans()
	root := byName(t, spans, "task "+topic)
	send := byName(t, spans, "send pe.task."+topic)
	handle := byName(t, spans, "handle "+topic)
	report := byName(t, spans, "engine finish")
	if root.Parent.IsValid() {
		t.Errorf("task span has a parent: %v", root.Parent)
	}
	if !root.StartTime.Equal(fetched) {
		t.Errorf("task span starts %v, want the fetch time %v", root.StartTime, fetched)
	}
	for _, c := range []struct {
		child, parent tracetest.SpanStub
	}{{send, root}, {handle, send}, {report, root}} {
		if c.child.SpanContext.TraceID() != root.SpanContext.TraceID() {
			t.Errorf("%s: trace %s, want %s", c.child.Name, c.child.SpanContext.TraceID(), root.SpanContext.TraceID())
		}
		if c.child.Parent.SpanID() != c.parent.SpanContext.SpanID() {
			t.Errorf("%s: parent %s, want %s (%s)", c.child.Name, c.child.Parent.SpanID(), c.parent.SpanContext.SpanID(), c.parent.Name)
		}
	}
	if !handle.Parent.IsRemote() {
		t.Errorf("handler span's parent is not remote: it did not come over NATS")
	}
	if send.SpanKind != trace.SpanKindProducer || report.SpanKind != trace.SpanKindClient {
		t.Errorf("kinds: send %v, report %v", send.SpanKind, report.SpanKind)
	}
	if want := telemetry.TraceParent(send.SpanContext); traceparent != want {
		t.Errorf("traceparent %s, want the send span's %s", traceparent, want)
	}
}

func TestTaskSpanSettlementStatus(t *testing.T) {
	tp, exp := recorder(t)
	tr := telemetry.NewTracing(tp)
	ts := tr.StartTask("t", "id", time.Now())
	_, end := ts.Publish()
	end(errors.New("no reply within the handler timeout"))
	ts.End(bridge.SettledFailure)
	spans := exp.GetSpans()
	if s := byName(t, spans, "task t"); s.Status.Code.String() != "Error" {
		t.Errorf("failure settlement: status %v", s.Status)
	}
	if s := byName(t, spans, "send pe.task.t"); s.Status.Code.String() != "Error" || len(s.Events) == 0 {
		t.Errorf("failed attempt: status %v, events %v", s.Status, s.Events)
	}
}

// A service request continues the caller's traceparent (any header case, or
// ce-traceparent) and starts a new trace without one.
func TestServiceRequestSpan(t *testing.T) {
	tp, exp := recorder(t)
	tr := telemetry.NewTracing(tp)
	const parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	for _, h := range []nats.Header{{"traceparent": {parent}}, {"Traceparent": {parent}}, {"ce-traceparent": {parent}}} {
		exp.Reset()
		ctx, end := tr.StartRequest(context.Background(), "pe.process.start", h)
		if !trace.SpanFromContext(ctx).SpanContext().IsValid() {
			t.Fatal("no span in the returned context")
		}
		end(200)
		s := byName(t, exp.GetSpans(), "pe.process.start")
		if s.Parent.TraceID().String() != "0af7651916cd43dd8448eb211c80319c" || s.Parent.SpanID().String() != "b7ad6b7169203331" {
			t.Errorf("headers %v: parent %v", h, s.Parent)
		}
	}
	exp.Reset()
	_, end := tr.StartRequest(context.Background(), "pe.usertask.list", nil)
	end(503)
	s := byName(t, exp.GetSpans(), "pe.usertask.list")
	if s.Parent.IsValid() || s.Status.Code.String() != "Error" {
		t.Errorf("no traceparent, 503: parent %v, status %v", s.Parent, s.Status)
	}
}

func TestTracingFromEnv(t *testing.T) {
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	ctx := context.Background()
	for _, off := range []func(string) string{
		env(),
		env("OTEL_TRACES_EXPORTER", "none", "OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
		env("OTEL_SDK_DISABLED", "true", "OTEL_TRACES_EXPORTER", "otlp"),
	} {
		if tr, err := telemetry.TracingFromEnv(ctx, "1.0.0", off); tr != nil || err != nil {
			t.Errorf("tracing on (%v) or error %v", tr, err)
		}
	}
	for _, on := range []func(string) string{
		env("OTEL_TRACES_EXPORTER", "otlp"),
		env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1"),
		env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:1/v1/traces", "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
		env("OTEL_TRACES_EXPORTER", "otlp", "OTEL_TRACES_SAMPLER", "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG", "0.25"),
	} {
		tr, err := telemetry.TracingFromEnv(ctx, "1.0.0", on)
		if err != nil || tr == nil {
			t.Errorf("tracing off (%v) or error %v", tr, err)
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		_ = tr.Shutdown(sctx)
		cancel()
	}
	for bad, getenv := range map[string]func(string) string{
		"OTEL_TRACES_EXPORTER":        env("OTEL_TRACES_EXPORTER", "jaeger"),
		"OTEL_SDK_DISABLED":           env("OTEL_SDK_DISABLED", "yes"),
		"OTEL_TRACES_SAMPLER":         env("OTEL_TRACES_EXPORTER", "otlp", "OTEL_TRACES_SAMPLER", "often"),
		"OTEL_TRACES_SAMPLER_ARG":     env("OTEL_TRACES_EXPORTER", "otlp", "OTEL_TRACES_SAMPLER", "traceidratio", "OTEL_TRACES_SAMPLER_ARG", "2"),
		"OTEL_EXPORTER_OTLP_ENDPOINT": env("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
		"OTEL_EXPORTER_OTLP_PROTOCOL": env("OTEL_TRACES_EXPORTER", "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
		"OTEL_BSP_SCHEDULE_DELAY":     env("OTEL_TRACES_EXPORTER", "otlp", "OTEL_BSP_SCHEDULE_DELAY", "5s"),
		"OTEL_RESOURCE_ATTRIBUTES":    env("OTEL_TRACES_EXPORTER", "otlp", "OTEL_RESOURCE_ATTRIBUTES", "=%%%"),
	} {
		tr, err := telemetry.TracingFromEnv(ctx, "1.0.0", getenv)
		if err == nil || tr != nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("%s: tracing %v, error %v; want an error naming it", bad, tr, err)
		}
	}
}
