package bridge

import (
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/events"
)

// taskEvent builds the CloudEvent of one publication of task et.
func taskEvent(et *engine.ExternalTask, source, traceParent string, lockExpiry, now time.Time) (*events.Event, error) {
	ev := &events.Event{
		ID:              et.ID,
		Type:            events.TypeTask,
		Source:          source,
		Subject:         et.Topic,
		Time:            now,
		DataContentType: events.ContentTypeJSON,
		Extensions:      make([]events.Extension, 0, 8),
	}
	if len(et.Payload) > 0 {
		ev.Data = et.Payload // checked to be JSON (task.validate)
	}
	ev.SetExt(events.ExtTopic, et.Topic)
	ev.SetExt(events.ExtProcessInstanceID, et.ProcessInstanceID)
	ev.SetExt(events.ExtProcessModelID, et.ProcessModelID)
	ev.SetExt(events.ExtCorrelationID, et.CorrelationID)
	ev.SetExt(events.ExtFlowNodeInstanceID, et.FlowNodeInstanceID)
	ev.SetExt(events.ExtLockExpiresAt, lockExpiry.UTC().Format(time.RFC3339Nano))
	ev.SetExt(events.ExtSingleTry, strconv.FormatBool(et.IsSingleTry))
	ev.SetExt(events.ExtTraceParent, traceParent)
	if err := ev.Validate(); err != nil {
		return nil, fmt.Errorf("bridge: building task event %s: %w", et.ID, err)
	}
	return ev, nil
}

// cancelEvent builds the TypeTaskCancelled event of task et.
func cancelEvent(et *engine.ExternalTask, source, reason, traceParent string, now time.Time) (*events.Event, error) {
	ev := &events.Event{
		ID:         et.ID,
		Type:       events.TypeTaskCancelled,
		Source:     source,
		Subject:    et.Topic,
		Time:       now,
		Extensions: make([]events.Extension, 0, 7),
	}
	ev.SetExt(events.ExtTopic, et.Topic)
	ev.SetExt(events.ExtProcessInstanceID, et.ProcessInstanceID)
	ev.SetExt(events.ExtProcessModelID, et.ProcessModelID)
	ev.SetExt(events.ExtCorrelationID, et.CorrelationID)
	ev.SetExt(events.ExtFlowNodeInstanceID, et.FlowNodeInstanceID)
	ev.SetExt(events.ExtCancelReason, reason)
	ev.SetExt(events.ExtTraceParent, traceParent)
	if err := ev.Validate(); err != nil {
		return nil, fmt.Errorf("bridge: building cancel event %s: %w", et.ID, err)
	}
	return ev, nil
}

// encodeEvent writes ev into a NATS message on subject with the one
// CloudEvents codec (events.Encode): binary mode maps attributes to
// "ce-<name>" headers (datacontenttype to Content-Type) and data to the body;
// structured mode sends the event in the JSON format.
func encodeEvent(ev *events.Event, subject string, mode ContentMode) (*nats.Msg, error) {
	h := make(nats.Header, 16)
	body, err := events.Encode(ev, mode, events.Header(h))
	if err != nil {
		return nil, fmt.Errorf("bridge: encoding event %s: %w", ev.ID, err)
	}
	return &nats.Msg{Subject: subject, Header: h, Data: body}, nil
}

// newTraceID returns 16 random bytes in hex (never all zero).
func newTraceID() string {
	var b [16]byte
	for {
		putUint64(b[:8], rand.Uint64())
		putUint64(b[8:], rand.Uint64())
		if b != [16]byte{} {
			return hex.EncodeToString(b[:])
		}
	}
}

// traceParent returns a W3C traceparent with traceID and a new span id.
func traceParent(traceID string) string {
	var b [8]byte
	for b == [8]byte{} {
		putUint64(b[:], rand.Uint64())
	}
	return "00-" + traceID + "-" + hex.EncodeToString(b[:]) + "-01"
}

func putUint64(b []byte, v uint64) {
	for i := range 8 {
		b[i] = byte(v >> (8 * i))
	}
}
