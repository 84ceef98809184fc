package handlertest_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/events"
	handler "github.com/pe-bridge/pe-bridge/handlers-sdk"
	"github.com/pe-bridge/pe-bridge/handlers-sdk/handlertest"
)

func TestRunMetadataBothModes(t *testing.T) {
	lock := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, structured := range []bool{false, true} {
		var got *handler.Task
		h := handler.HandlerFunc(func(ctx context.Context, task *handler.Task) (any, error) {
			got = task
			var p map[string]int
			if err := task.Decode(&p); err != nil {
				return nil, err
			}
			return p["n"] + 1, nil
		})
		r, err := handlertest.Run(h, handlertest.Task{
			ID: "et-9", Topic: "a.b", ProcessInstanceID: "pi", ProcessModelID: "pm", CorrelationID: "c",
			FlowNodeInstanceID: "fni", TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
			SingleTry: true, LockExpiresAt: lock, Payload: map[string]int{"n": 41}, Structured: structured,
		})
		if err != nil {
			t.Fatal(err)
		}
		if r.Kind != events.KindSuccess || string(r.Result) != "42" {
			t.Fatalf("structured=%v: reply %+v", structured, r)
		}
		want := events.Task{ID: "et-9", Topic: "a.b", ProcessInstanceID: "pi", ProcessModelID: "pm", CorrelationID: "c",
			FlowNodeInstanceID: "fni", TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
			SingleTry: true, LockExpiresAt: lock, Time: got.Time}
		if got.Task != want || got.Type != events.TypeTask || got.Time.IsZero() {
			t.Fatalf("structured=%v: task %+v", structured, got)
		}
	}
}

func TestRunOutcomes(t *testing.T) {
	cases := []struct {
		name string
		h    handler.HandlerFunc
		want handlertest.Reply
	}{
		{"nil", func(context.Context, *handler.Task) (any, error) { return nil, nil },
			handlertest.Reply{Kind: events.KindSuccess}},
		{"bpmn", func(context.Context, *handler.Task) (any, error) { return nil, handler.BPMNError("E1", "m", nil) },
			handlertest.Reply{Kind: events.KindBPMNError, Code: "E1", Message: "m"}},
		{"wrapped bpmn", func(context.Context, *handler.Task) (any, error) {
			return nil, errors.Join(errors.New("ctx"), handler.BPMNError("E2", "", nil))
		}, handlertest.Reply{Kind: events.KindBPMNError, Code: "E2"}},
		{"failure", func(context.Context, *handler.Task) (any, error) {
			return nil, handler.Failure(errors.New("x"), handler.RetryAfter(1500*time.Millisecond))
		}, handlertest.Reply{Kind: events.KindFailure, Message: "x", RetryAfter: 1500 * time.Millisecond}},
		{"bpmn without code", func(context.Context, *handler.Task) (any, error) { return nil, handler.BPMNError("", "m", nil) },
			handlertest.Reply{Kind: events.KindFailure, Message: "handler: bpmn error : m"}},
		{"unencodable", func(context.Context, *handler.Task) (any, error) { return func() {}, nil },
			handlertest.Reply{Kind: events.KindFailure}},
		{"panic", func(context.Context, *handler.Task) (any, error) { panic(errors.New("kaputt")) },
			handlertest.Reply{Kind: events.KindFailure, Message: "handler: panic: kaputt"}},
	}
	for _, c := range cases {
		r, err := handlertest.Run(c.h, handlertest.Task{})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if r.Kind != c.want.Kind || r.Code != c.want.Code || r.RetryAfter != c.want.RetryAfter ||
			(c.want.Message != "" && r.Message != c.want.Message) {
			t.Errorf("%s: reply %+v (body %s), want %+v", c.name, r, r.Body, c.want)
		}
	}
}

func TestRunCancelledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r, err := handlertest.Run(handler.HandlerFunc(func(ctx context.Context, _ *handler.Task) (any, error) {
		return nil, ctx.Err()
	}), handlertest.Task{Context: ctx})
	if err != nil || r.Kind != events.KindFailure || !strings.Contains(r.Message, "canceled") {
		t.Fatalf("reply %+v, %v", r, err)
	}
}

func TestNewMsgRejectsBadInput(t *testing.T) {
	if _, err := handlertest.NewMsg(handlertest.Task{Payload: []byte("not json")}); err == nil {
		t.Error("non-JSON payload accepted")
	}
	if _, err := handlertest.NewMsg(handlertest.Task{Topic: strings.Repeat("x", events.MaxTopicLen+1)}); err == nil {
		t.Error("overlong topic accepted")
	}
	r := handlertest.Reply{Kind: events.KindFailure}
	var v any
	if err := r.DecodeResult(&v); err == nil {
		t.Error("DecodeResult on a failure")
	}
}

// The Pe-Outcome header is read case-insensitively, as the bridge reads it.
func TestDecodeMsgOutcomeHeaderCase(t *testing.T) {
	for _, name := range []string{events.OutcomeHeader, "pe-outcome", "PE-OUTCOME"} {
		msg := nats.NewMsg("reply")
		msg.Header[name] = []string{events.MarkerFailure}
		r, err := handlertest.DecodeMsg(msg)
		if err != nil || r.Kind != events.KindFailure || r.Outcome != events.MarkerFailure {
			t.Errorf("header %q: %+v, %v", name, r, err)
		}
	}
}
