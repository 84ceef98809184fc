package handler

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/pe-bridge/pe-bridge/events"
)

// Handler handles the tasks of one topic.
//
// Handle returns the task result (any JSON-encodable value; nil for none) or an
// error: an error made with BPMNError raises a BPMN error, every other error is
// a technical failure (see Failure). ctx is cancelled when the bridge reports
// the task cancelled (context.Cause is ErrTaskCancelled) and when a drain runs
// out of time (ErrDrainTimeout) or the server is closed (ErrClosed); a
// handler should then return promptly.
type Handler interface {
	Handle(ctx context.Context, task *Task) (any, error)
}

// HandlerFunc adapts a function that gets the task (metadata and raw payload)
// to Handler.
type HandlerFunc func(ctx context.Context, task *Task) (any, error)

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, task *Task) (any, error) { return f(ctx, task) }

// PayloadFunc adapts a function that only needs the payload, decoded into T,
// to Handler. A payload that does not decode into T is a technical failure.
// An empty or null payload leaves T at its zero value.
func PayloadFunc[T any](f func(ctx context.Context, payload T) (any, error)) Handler {
	return HandlerFunc(func(ctx context.Context, task *Task) (any, error) {
		var p T
		if err := task.Decode(&p); err != nil {
			return nil, err
		}
		return f(ctx, p)
	})
}

// TaskFunc adapts a function that gets the decoded payload and the task
// metadata to Handler.
func TaskFunc[T any](f func(ctx context.Context, payload T, task *Task) (any, error)) Handler {
	return HandlerFunc(func(ctx context.Context, task *Task) (any, error) {
		var p T
		if err := task.Decode(&p); err != nil {
			return nil, err
		}
		return f(ctx, p, task)
	})
}

// Task is one task event as a handler sees it.
type Task struct {
	// Task holds the CloudEvent attributes: id (= external task id, the same
	// on every re-delivery: de-duplicate on it), topic, process instance,
	// correlation, lock expiry, single-try flag, trace parent, time.
	events.Task
	// Type and Source are the CloudEvent type and source.
	Type   string
	Source string
	// Payload is the task payload as JSON (nil when the task has none).
	Payload json.RawMessage
}

// Decode unmarshals the payload into v. An empty or null payload leaves v
// unchanged.
func (t *Task) Decode(v any) error {
	if len(t.Payload) == 0 || string(t.Payload) == "null" {
		return nil
	}
	if err := json.Unmarshal(t.Payload, v); err != nil {
		return fmt.Errorf("handler: decoding payload of task %s: %w", t.ID, err)
	}
	return nil
}
