// Package handler is the Go SDK for pe-bridge handler authors.
//
// A handler serves one engine topic: it receives the task events the bridge
// publishes on pe.task.<token> (one CloudEvent per locked external task) and
// answers each with a result, a BPMN error or a technical failure. The SDK
// owns the NATS plumbing around that: the queue subscription (queue group
// events.DefaultQueueGroup by default, so replicas share the load), a
// concurrency limit, decoding both CloudEvents content modes, encoding the
// outcome envelope of wire contract v1, cancelling a handler's context when
// the bridge publishes a cancel event for its task, recovering panics, and a
// graceful drain.
//
//	err := handler.Serve(ctx, nc, "SampleExternalTask",
//		handler.PayloadFunc(func(ctx context.Context, in Order) (any, error) {
//			if in.Amount <= 0 {
//				return nil, handler.BPMNError("invalid_amount", "amount must be positive", nil)
//			}
//			return map[string]any{"some": "result"}, nil
//		}))
//
// Outcomes: a nil error means success and the returned value (JSON-encoded)
// becomes the task result; an error made with BPMNError raises that BPMN
// error in the process; any other error is a technical failure the bridge
// retries later (Failure with RetryAfter suggests when). A panic is a
// technical failure carrying the panic text.
//
// The package handler/handlertest runs a Handler on a synthetic task without
// NATS.
//
// This package imports only events, nats.go and the standard library; it
// must never import the bridge or the engine client. It is a Go module of its
// own (github.com/pe-bridge/pe-bridge/handlers-sdk, tags handlers-sdk/vX.Y.Z),
// so a handler's module graph holds the SDK, events and nats.go's.
package handler
