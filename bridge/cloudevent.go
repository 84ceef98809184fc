package bridge

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/binding/format"
	"github.com/cloudevents/sdk-go/v2/binding/spec"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/events"
)

// taskEvent builds the CloudEvent of one publication of task et.
func taskEvent(et *engine.ExternalTask, source, traceParent string, lockExpiry, now time.Time) (*event.Event, error) {
	ev := event.New()
	ev.SetID(et.ID)
	ev.SetType(events.TypeTask)
	ev.SetSource(source)
	ev.SetSubject(et.Topic)
	ev.SetTime(now)
	ev.SetDataContentType(events.ContentTypeJSON)
	if len(et.Payload) > 0 {
		// The payload was checked to be JSON; the SDK keeps it as it is.
		ev.DataEncoded = et.Payload
		ev.DataBase64 = false
	}
	setExt(&ev, events.ExtTopic, et.Topic)
	setExt(&ev, events.ExtProcessInstanceID, et.ProcessInstanceID)
	setExt(&ev, events.ExtProcessModelID, et.ProcessModelID)
	setExt(&ev, events.ExtCorrelationID, et.CorrelationID)
	setExt(&ev, events.ExtFlowNodeInstanceID, et.FlowNodeInstanceID)
	setExt(&ev, events.ExtLockExpiresAt, lockExpiry.UTC().Format(time.RFC3339Nano))
	setExt(&ev, events.ExtSingleTry, strconv.FormatBool(et.IsSingleTry))
	setExt(&ev, events.ExtTraceParent, traceParent)
	if err := ev.Validate(); err != nil {
		return nil, fmt.Errorf("bridge: building task event %s: %w", et.ID, err)
	}
	return &ev, nil
}

// cancelEvent builds the TypeTaskCancelled event of task et.
func cancelEvent(et *engine.ExternalTask, source, reason, traceParent string, now time.Time) (*event.Event, error) {
	ev := event.New()
	ev.SetID(et.ID)
	ev.SetType(events.TypeTaskCancelled)
	ev.SetSource(source)
	ev.SetSubject(et.Topic)
	ev.SetTime(now)
	setExt(&ev, events.ExtTopic, et.Topic)
	setExt(&ev, events.ExtProcessInstanceID, et.ProcessInstanceID)
	setExt(&ev, events.ExtProcessModelID, et.ProcessModelID)
	setExt(&ev, events.ExtCorrelationID, et.CorrelationID)
	setExt(&ev, events.ExtFlowNodeInstanceID, et.FlowNodeInstanceID)
	setExt(&ev, events.ExtCancelReason, reason)
	setExt(&ev, events.ExtTraceParent, traceParent)
	if err := ev.Validate(); err != nil {
		return nil, fmt.Errorf("bridge: building cancel event %s: %w", et.ID, err)
	}
	return &ev, nil
}

func setExt(ev *event.Event, name, value string) {
	if value != "" {
		ev.SetExtension(name, value)
	}
}

// encodeEvent writes ev into a NATS message on subject with the SDK's binding
// rules: binary mode maps attributes to "ce-<name>" headers (datacontenttype
// to Content-Type) and data to the body; structured mode marshals the event
// with the SDK's JSON format.
func encodeEvent(ev *event.Event, subject string, mode ContentMode) (*nats.Msg, error) {
	w := &natsWriter{msg: &nats.Msg{Subject: subject, Header: make(nats.Header, 16)}, vals: make([]string, 0, 16)}
	ctx := context.Background()
	if mode == Structured {
		ctx = binding.WithForceStructured(ctx)
	} else {
		ctx = binding.WithForceBinary(ctx)
	}
	if _, err := binding.Write(ctx, binding.ToMessage(ev), w, w); err != nil {
		return nil, fmt.Errorf("bridge: encoding event %s: %w", ev.ID(), err)
	}
	return w.msg, nil
}

// natsWriter is a binding.BinaryWriter and binding.StructuredWriter that
// fills a nats.Msg (CloudEvents NATS protocol binding).
type natsWriter struct {
	msg  *nats.Msg
	vals []string // one backing array for all header values
}

func (w *natsWriter) set(key, value string) {
	if len(w.vals) == cap(w.vals) {
		w.msg.Header[key] = []string{value}
		return
	}
	w.vals = append(w.vals, value)
	n := len(w.vals)
	w.msg.Header[key] = w.vals[n-1 : n : n]
}

func (w *natsWriter) Start(context.Context) error { return nil }
func (w *natsWriter) End(context.Context) error   { return nil }

func (w *natsWriter) SetAttribute(a spec.Attribute, value any) error {
	s, err := types.Format(value)
	if err != nil {
		return err
	}
	if a.Kind() == spec.DataContentType {
		w.set(events.HeaderDataContent, s)
		return nil
	}
	w.set(headerName(a.Name()), s)
	return nil
}

func (w *natsWriter) SetExtension(name string, value any) error {
	s, err := types.Format(value)
	if err != nil {
		return err
	}
	w.set(headerName(name), s)
	return nil
}

// headerNames caches "ce-<name>" for the attributes of every task event.
var headerNames = func() map[string]string {
	m := make(map[string]string)
	for _, n := range []string{"id", "type", "source", "subject", "time", "specversion", "dataschema",
		events.ExtTopic, events.ExtProcessInstanceID, events.ExtProcessModelID, events.ExtCorrelationID,
		events.ExtFlowNodeInstanceID, events.ExtLockExpiresAt, events.ExtSingleTry, events.ExtTraceParent,
		events.ExtCancelReason} {
		m[n] = events.HeaderPrefix + n
	}
	return m
}()

func headerName(attr string) string {
	if h, ok := headerNames[attr]; ok {
		return h
	}
	return events.HeaderPrefix + attr
}

func (w *natsWriter) SetData(r io.Reader) error {
	if b, ok := r.(*bytes.Buffer); ok {
		w.msg.Data = b.Bytes()
		return nil
	}
	b, err := io.ReadAll(r)
	w.msg.Data = b
	return err
}

func (w *natsWriter) SetStructuredEvent(_ context.Context, f format.Format, r io.Reader) error {
	w.set(events.HeaderDataContent, f.MediaType())
	return w.SetData(r)
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
