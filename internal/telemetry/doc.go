// Package telemetry implements the bridge's operational hooks: Prometheus
// metrics (Metrics: bridge.Observer, service.Observer, forwarder.Observer,
// engine.CallObserver, NATS connection collectors) and OpenTelemetry traces
// (Tracing: bridge.Tracer, service.Tracer), configured by the standard
// OTEL_* environment variables and off unless asked for.
//
// It imports the hub's packages only for their hook types (bridge,
// bridge/service, bridge/forwarder) and never the other way round; cmd/bridge
// wires it. The metric names and the tracing rules are documented in
// docs/operations.md.
package telemetry
