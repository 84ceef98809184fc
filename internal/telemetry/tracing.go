package telemetry

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/pe-bridge/pe-bridge/bridge"
	"github.com/pe-bridge/pe-bridge/events"
)

// InstrumentationName names the bridge's tracer.
const InstrumentationName = "github.com/pe-bridge/pe-bridge"

// Tracing starts the bridge's OpenTelemetry spans. It implements
// bridge.Tracer and service.Tracer. A task's trace is one root span "task
// <topic>" from the fetch that locked it to its settlement, with a child
// "send pe.task.<topic>" (producer) per attempt, whose traceparent the task
// event carries as ce-traceparent (a handler continuing it makes its span a
// child of the attempt), and a child "engine finish" / "engine error"
// (client) per report call.
type Tracing struct {
	tracer   trace.Tracer
	shutdown func(context.Context) error
}

// NewTracing traces with tp (tests pass an SDK provider with an in-memory
// exporter). Shutdown then does nothing: tp is the caller's.
func NewTracing(tp trace.TracerProvider) *Tracing {
	return &Tracing{tracer: tp.Tracer(InstrumentationName), shutdown: func(context.Context) error { return nil }}
}

// TracingFromEnv builds the tracing the standard OTEL_* environment
// variables ask for, read with getenv (os.Getenv). It returns nil, nil when
// tracing is off, which is the default: it is on only with
// OTEL_TRACES_EXPORTER=otlp, or with OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT set and OTEL_TRACES_EXPORTER unset;
// OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none turn it off. The OTLP
// exporter is http/protobuf unless OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL is
// grpc; it reads its endpoint, headers, timeout and TLS settings from the
// OTEL_EXPORTER_OTLP_* variables itself. OTEL_TRACES_SAMPLER(_ARG),
// OTEL_SERVICE_NAME (default pe-bridge), OTEL_RESOURCE_ATTRIBUTES and
// OTEL_BSP_* apply. A value the bridge cannot use is an error naming the
// variable.
func TracingFromEnv(ctx context.Context, version string, getenv func(string) string) (*Tracing, error) {
	on, err := tracingOn(getenv)
	if err != nil || !on {
		return nil, err
	}
	sampler, err := samplerFromEnv(getenv)
	if err != nil {
		return nil, err
	}
	for _, k := range []string{"OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_EXPORT_TIMEOUT", "OTEL_BSP_MAX_QUEUE_SIZE",
		"OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"} {
		if v := strings.TrimSpace(getenv(k)); v != "" {
			if n, err := strconv.Atoi(v); err != nil || n < 0 {
				return nil, fmt.Errorf("telemetry: %s=%q: want a non-negative integer (milliseconds or a count)", k, v)
			}
		}
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
		if v := strings.TrimSpace(getenv(k)); v != "" {
			u, err := url.Parse(v)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return nil, fmt.Errorf("telemetry: %s=%q: want an http(s) URL such as http://collector:4318", k, redact(v))
			}
		}
	}
	if v := strings.TrimSpace(getenv("OTEL_RESOURCE_ATTRIBUTES")); v != "" {
		for kv := range strings.SplitSeq(v, ",") {
			k, val, ok := strings.Cut(kv, "=")
			_, uerr := url.PathUnescape(val)
			if !ok || strings.TrimSpace(k) == "" || uerr != nil {
				return nil, fmt.Errorf("telemetry: OTEL_RESOURCE_ATTRIBUTES: %q is not key=value (values percent-encoded)", kv)
			}
		}
	}
	proto := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
	protoVar := "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	if proto == "" {
		proto, protoVar = strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_PROTOCOL")), "OTEL_EXPORTER_OTLP_PROTOCOL"
	}
	var exp sdktrace.SpanExporter
	switch proto {
	case "", "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	default:
		return nil, fmt.Errorf("telemetry: %s=%q: want http/protobuf or grpc", protoVar, proto)
	}
	if err != nil {
		return nil, fmt.Errorf("telemetry: creating the OTLP trace exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", "pe-bridge"), attribute.String("service.version", version)),
		resource.WithFromEnv(), resource.WithTelemetrySDK())
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, fmt.Errorf("telemetry: OTEL_RESOURCE_ATTRIBUTES or OTEL_SERVICE_NAME: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res), sdktrace.WithSampler(sampler))
	return &Tracing{tracer: tp.Tracer(InstrumentationName, trace.WithInstrumentationVersion(version)), shutdown: tp.Shutdown}, nil
}

func tracingOn(getenv func(string) string) (bool, error) {
	switch v := strings.ToLower(strings.TrimSpace(getenv("OTEL_SDK_DISABLED"))); v {
	case "", "false":
	case "true":
		return false, nil
	default:
		return false, fmt.Errorf("telemetry: OTEL_SDK_DISABLED=%q: want true or false", v)
	}
	switch v := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); v {
	case "none":
		return false, nil
	case "otlp":
		return true, nil
	case "":
		return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "", nil
	default:
		return false, fmt.Errorf("telemetry: OTEL_TRACES_EXPORTER=%q: pe-bridge supports otlp or none", v)
	}
}

// samplerFromEnv reads OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG as
// the SDK does (default parentbased_always_on), but fails on a bad value
// instead of falling back.
func samplerFromEnv(getenv func(string) string) (sdktrace.Sampler, error) {
	name := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER")))
	arg := strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER_ARG"))
	ratio := func() (sdktrace.Sampler, error) {
		if arg == "" {
			return sdktrace.TraceIDRatioBased(1), nil
		}
		v, err := strconv.ParseFloat(arg, 64)
		if err != nil || v < 0 || v > 1 {
			return nil, fmt.Errorf("telemetry: OTEL_TRACES_SAMPLER_ARG=%q: want a ratio from 0 to 1", arg)
		}
		return sdktrace.TraceIDRatioBased(v), nil
	}
	switch name {
	case "", "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "traceidratio":
		return ratio()
	case "parentbased_traceidratio":
		s, err := ratio()
		if err != nil {
			return nil, err
		}
		return sdktrace.ParentBased(s), nil
	}
	return nil, fmt.Errorf("telemetry: OTEL_TRACES_SAMPLER=%q: want always_on, always_off, traceidratio or their parentbased_ forms", name)
}

// redact drops a URL's userinfo.
func redact(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.User != nil {
		u.User = url.User("REDACTED")
		return u.String()
	}
	return raw
}

// Shutdown flushes the spans still queued and stops the exporter.
func (t *Tracing) Shutdown(ctx context.Context) error { return t.shutdown(ctx) }

// TraceParent formats sc as a W3C traceparent header value.
func TraceParent(sc trace.SpanContext) string {
	return "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-" + sc.TraceFlags().String()
}

// ---- bridge.Tracer --------------------------------------------------------

// StartTask implements bridge.Tracer.
func (t *Tracing) StartTask(topic, taskID string, fetchedAt time.Time) bridge.TaskSpan {
	subject, err := events.TaskSubject(topic)
	if err != nil {
		subject = "pe.task." + topic
	}
	ctx, span := t.tracer.Start(context.Background(), "task "+topic,
		trace.WithTimestamp(fetchedAt), trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(attribute.String("pe.task.topic", topic), attribute.String("pe.task.id", taskID)))
	return &taskSpan{t: t, ctx: ctx, span: span, subject: subject, taskID: taskID}
}

type taskSpan struct {
	t       *Tracing
	ctx     context.Context
	span    trace.Span
	subject string
	taskID  string
}

func endWith(span trace.Span) func(error) {
	return func(err error) {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
}

// Publish implements bridge.TaskSpan.
func (s *taskSpan) Publish() (string, func(error)) {
	_, span := s.t.tracer.Start(s.ctx, "send "+s.subject, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("messaging.system", "nats"),
			attribute.String("messaging.operation.type", "send"),
			attribute.String("messaging.destination.name", s.subject),
			attribute.String("messaging.message.id", s.taskID)))
	return TraceParent(span.SpanContext()), endWith(span)
}

// Report implements bridge.TaskSpan.
func (s *taskSpan) Report(kind string) func(error) {
	_, span := s.t.tracer.Start(s.ctx, "engine "+kind, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("pe.task.id", s.taskID), attribute.String("pe.report.kind", kind)))
	return endWith(span)
}

// End implements bridge.TaskSpan.
func (s *taskSpan) End(st bridge.Settlement) {
	s.span.SetAttributes(attribute.String("pe.task.settlement", string(st)))
	switch st {
	case bridge.SettledFailure, bridge.SettledDropped:
		s.span.SetStatus(codes.Error, string(st))
	}
	s.span.End()
}

// ---- service.Tracer -------------------------------------------------------

var traceContext = propagation.TraceContext{}

// StartRequest implements service.Tracer: the request's span is a child of
// the traceparent in the request headers (traceparent, else ce-traceparent;
// any case), else a new trace's root.
func (t *Tracing) StartRequest(ctx context.Context, endpoint string, h nats.Header) (context.Context, func(code int)) {
	if h != nil {
		ctx = traceContext.Extract(ctx, headerCarrier(h))
	}
	ctx, span := t.tracer.Start(ctx, endpoint, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("messaging.system", "nats"),
			attribute.String("messaging.operation.type", "process"),
			attribute.String("pe.service.endpoint", endpoint)))
	return ctx, func(code int) {
		span.SetAttributes(attribute.Int("pe.service.code", code))
		if code >= 500 {
			span.SetStatus(codes.Error, strconv.Itoa(code))
		}
		span.End()
	}
}

// headerCarrier reads NATS headers case-insensitively (NATS keeps keys as
// sent), falling back from traceparent to the CloudEvents ce-traceparent.
type headerCarrier nats.Header

func (c headerCarrier) Get(key string) string {
	if v := c.get(key); v != "" {
		return v
	}
	return c.get(events.HeaderPrefix + key)
}

func (c headerCarrier) get(key string) string {
	for k, v := range c {
		if len(v) > 0 && strings.EqualFold(k, key) {
			return v[0]
		}
	}
	return ""
}

func (c headerCarrier) Set(key, value string) { nats.Header(c).Set(key, value) }

func (c headerCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
