package service

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
)

// Observer receives one call per answered request; cmd/bridge implements it
// with Prometheus metrics. code is the HTTP-style status of the answer (200
// for success, else the Nats-Service-Error-Code sent). Calls must be cheap
// and must not block. Config.Observer nil means none.
type Observer interface {
	Request(endpoint string, code int, d time.Duration)
}

// Tracer starts the span of one request; cmd/bridge implements it with
// OpenTelemetry, continuing a W3C traceparent found in the request headers.
// The returned context carries the span into the engine calls; end is called
// once with the answer's code. Config.Tracer nil means no spans.
type Tracer interface {
	StartRequest(ctx context.Context, endpoint string, h nats.Header) (context.Context, func(code int))
}
