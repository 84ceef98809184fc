// Package handlertest runs a handler.Handler on a synthetic task without NATS
// and decodes its reply the way the bridge does (events.DecodeReply), so a
// test checks exactly what goes over the wire.
//
// It imports handler, events, nats.go (for the message type only) and the
// standard library.
package handlertest

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/events"
	handler "github.com/pe-bridge/pe-bridge/handlers-sdk"
)

// Task describes a synthetic task event. Zero fields get defaults: ID
// "task-1", Topic "test", Time now.
type Task struct {
	ID                 string
	Topic              string
	ProcessInstanceID  string
	ProcessModelID     string
	CorrelationID      string
	FlowNodeInstanceID string
	TraceParent        string
	SingleTry          bool
	LockExpiresAt      time.Time
	Time               time.Time
	// Payload is the task payload: json.RawMessage and []byte are used as
	// they are (they must be JSON), anything else is JSON-encoded; nil means
	// no payload.
	Payload any
	// Structured encodes the event in structured content mode instead of
	// binary mode.
	Structured bool
	// Context is the handler's context (nil: context.Background()). Cancel it
	// to see how the handler reacts to a cancel event.
	Context context.Context
}

// Reply is a decoded handler reply.
type Reply struct {
	Kind       events.Kind
	Result     json.RawMessage // KindSuccess; nil = no result
	Code       string          // KindBPMNError
	Message    string          // KindBPMNError, KindFailure
	Details    json.RawMessage // KindBPMNError
	RetryAfter time.Duration   // KindFailure
	// Body and Outcome are the raw reply body and Pe-Outcome header.
	Body    []byte
	Outcome string
}

// DecodeResult unmarshals the result into v.
func (r Reply) DecodeResult(v any) error {
	if r.Kind != events.KindSuccess {
		return fmt.Errorf("handlertest: reply is %v, not success", r.Kind)
	}
	if len(r.Result) == 0 {
		return fmt.Errorf("handlertest: success without result")
	}
	return json.Unmarshal(r.Result, v)
}

// Run encodes t as the bridge would, decodes it with handler.ParseTask, runs h
// through handler.Invoke (panics recovered, outcome encoded) and decodes the
// reply with events.DecodeReply. It returns an error only when t cannot be
// encoded or the reply is malformed.
func Run(h handler.Handler, t Task) (Reply, error) {
	msg, err := NewMsg(t)
	if err != nil {
		return Reply{}, err
	}
	task, err := handler.ParseTask(msg)
	if err != nil {
		return Reply{}, fmt.Errorf("handlertest: parsing the task event: %w", err)
	}
	ctx := t.Context
	if ctx == nil {
		ctx = context.Background()
	}
	body, outcome := handler.Invoke(ctx, h, task)
	return DecodeReply(body, outcome)
}

// DecodeReply decodes a reply body and Pe-Outcome header into a Reply with
// events.DecodeReply.
func DecodeReply(body []byte, outcome string) (Reply, error) {
	o, err := events.DecodeReply(body, outcome, 0)
	if err != nil {
		return Reply{Body: body, Outcome: outcome}, fmt.Errorf("handlertest: %w", err)
	}
	return Reply{
		Kind: o.Kind, Result: o.Result, Code: o.Code, Message: o.Message, Details: o.Details,
		RetryAfter: o.RetryAfter, Body: body, Outcome: outcome,
	}, nil
}

// DecodeMsg decodes a handler's reply message: its body and its Pe-Outcome
// header (events.OutcomeHeader), looked up case-insensitively
// (events.HeaderGet), as the bridge reads them.
func DecodeMsg(msg *nats.Msg) (Reply, error) {
	return DecodeReply(msg.Data, events.HeaderGet(events.Header(msg.Header), events.OutcomeHeader))
}

// NewMsg returns the task event for t as the bridge publishes it: subject
// pe.task.<token>, binary content mode (ce-* headers, payload body) or, with
// t.Structured, structured mode. The reply subject is left empty.
func NewMsg(t Task) (*nats.Msg, error) {
	if t.ID == "" {
		t.ID = "task-1"
	}
	if t.Topic == "" {
		t.Topic = "test"
	}
	if t.Time.IsZero() {
		t.Time = time.Now()
	}
	subj, err := events.TaskSubject(t.Topic)
	if err != nil {
		return nil, fmt.Errorf("handlertest: %w", err)
	}
	var payload json.RawMessage
	switch p := t.Payload.(type) {
	case nil:
	case json.RawMessage:
		payload = p
	case []byte:
		payload = p
	default:
		if payload, err = json.Marshal(p); err != nil {
			return nil, fmt.Errorf("handlertest: encoding payload: %w", err)
		}
	}
	if len(payload) > 0 && !json.Valid(payload) {
		return nil, fmt.Errorf("handlertest: payload is not JSON")
	}
	ev := &events.Event{
		ID: t.ID, Type: events.TypeTask, Source: "handlertest", Subject: t.Topic, Time: t.Time,
		DataContentType: events.ContentTypeJSON,
	}
	if len(payload) > 0 {
		ev.Data = payload
	}
	ev.SetExt(events.ExtTopic, t.Topic)
	ev.SetExt(events.ExtProcessInstanceID, t.ProcessInstanceID)
	ev.SetExt(events.ExtProcessModelID, t.ProcessModelID)
	ev.SetExt(events.ExtCorrelationID, t.CorrelationID)
	ev.SetExt(events.ExtFlowNodeInstanceID, t.FlowNodeInstanceID)
	if !t.LockExpiresAt.IsZero() {
		ev.SetExt(events.ExtLockExpiresAt, t.LockExpiresAt.UTC().Format(time.RFC3339Nano))
	}
	if t.SingleTry {
		ev.SetExt(events.ExtSingleTry, "true")
	}
	ev.SetExt(events.ExtTraceParent, t.TraceParent)
	return encode(ev, subj, t.Structured)
}

// encode writes ev on subject with the bridge's codec (events.Encode).
func encode(ev *events.Event, subject string, structured bool) (*nats.Msg, error) {
	mode := events.Binary
	if structured {
		mode = events.Structured
	}
	msg := nats.NewMsg(subject)
	body, err := events.Encode(ev, mode, events.Header(msg.Header))
	if err != nil {
		return nil, fmt.Errorf("handlertest: encoding event: %w", err)
	}
	msg.Data = body
	return msg, nil
}

// NewCancelMsg returns the cancel event the bridge publishes on
// pe.cancel.<token> when the engine closed task id of topic (binary mode).
func NewCancelMsg(topic, id, reason string) (*nats.Msg, error) {
	subj, err := events.CancelSubject(topic)
	if err != nil {
		return nil, fmt.Errorf("handlertest: %w", err)
	}
	ev := &events.Event{ID: id, Type: events.TypeTaskCancelled, Source: "handlertest", Subject: topic, Time: time.Now()}
	ev.SetExt(events.ExtTopic, topic)
	ev.SetExt(events.ExtCancelReason, reason)
	return encode(ev, subj, false)
}
