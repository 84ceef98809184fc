package handler

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/events"
)

// ErrMalformedTask is matched by every error of ParseTask and ParseCancel.
// Errors that come from the CloudEvents codec also match
// events.ErrMalformedEvent.
var ErrMalformedTask = errors.New("handler: malformed task event")

// ParseTask decodes a task event with the bridge's own CloudEvents codec
// (events.Decode), in either content mode: binary (ce-* headers, body = the
// payload) or structured (Content-Type application/cloudevents+json, body =
// the whole event). Header names match case-insensitively. The payload must
// be JSON; an empty body means no payload.
func ParseTask(msg *nats.Msg) (*Task, error) {
	ev, err := events.Decode(events.Header(msg.Header), msg.Data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformedTask, err)
	}
	meta, err := events.TaskOf(ev)
	if err != nil {
		return nil, fmt.Errorf("%w: task %s: %w", ErrMalformedTask, ev.ID, err)
	}
	t := &Task{Task: meta, Type: ev.Type, Source: ev.Source}
	if len(bytes.TrimSpace(ev.Data)) > 0 {
		if !json.Valid(ev.Data) {
			return nil, fmt.Errorf("%w: task %s: payload is not JSON", ErrMalformedTask, t.ID)
		}
		t.Payload = json.RawMessage(ev.Data)
	}
	return t, nil
}

// ParseCancel returns the task id of a cancel event (type
// events.TypeTaskCancelled) in either content mode, decoded with
// events.Decode.
func ParseCancel(msg *nats.Msg) (string, error) {
	ev, err := events.Decode(events.Header(msg.Header), msg.Data)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrMalformedTask, err)
	}
	if ev.Type != events.TypeTaskCancelled {
		return "", fmt.Errorf("%w: cancel subject carries type %q", ErrMalformedTask, ev.Type)
	}
	return ev.ID, nil
}
