package service

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
)

// Observer receives one call per answered request, after its reply was
// sent; cmd/bridge implements it with Prometheus metrics. endpoint is the
// micro endpoint name (process_start, usertask_list, ...: the names of
// $SRV.INFO); code is the HTTP-style status of the answer (200 for success,
// else the Nats-Service-Error-Code sent, also for requests refused before
// they ran: 401, 413, 503); d runs from the request's arrival to its reply.
// Calls come from many goroutines, must be cheap and must not block.
// Config.Observer nil means none.
type Observer interface {
	Request(endpoint string, code int, d time.Duration)
}

// Tracer starts the span of one request when it arrives; cmd/bridge
// implements it with OpenTelemetry, continuing a W3C traceparent found in
// the request headers h (which may hold an end user's token: never record
// header values wholesale). endpoint is as for Observer. The returned
// context carries the span into the engine calls; end is called exactly
// once, after the reply was sent, with the answer's code. Config.Tracer nil
// means no spans.
type Tracer interface {
	StartRequest(ctx context.Context, endpoint string, h nats.Header) (context.Context, func(code int))
}
