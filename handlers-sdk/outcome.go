package handler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pe-bridge/pe-bridge/events"
)

// Sentinel causes of a handler context's cancellation (see context.Cause).
var (
	// ErrTaskCancelled: the bridge published a cancel event for the task (the
	// engine closed it: boundary event, terminate, lost lock). Any reply is
	// dropped by the bridge.
	ErrTaskCancelled = errors.New("handler: task cancelled by the engine")
	// ErrDrainTimeout: the server drained and the handler did not finish
	// within the drain timeout.
	ErrDrainTimeout = errors.New("handler: drain timed out")
)

// BusinessError is a BPMN error returned by a handler: the engine raises error
// Code in the process (an error boundary event with that errorCode catches it).
// Create it with BPMNError.
type BusinessError struct {
	Code    string
	Message string
	Details any // JSON-encodable; nil for none
}

// BPMNError returns an error that makes the task raise BPMN error code with
// message and details (any JSON-encodable value, or nil).
func BPMNError(code, message string, details any) error {
	return &BusinessError{Code: code, Message: message, Details: details}
}

func (e *BusinessError) Error() string {
	if e.Message == "" {
		return "handler: bpmn error " + e.Code
	}
	return "handler: bpmn error " + e.Code + ": " + e.Message
}

// FailureError is a technical failure: the bridge retries the task later,
// after RetryAfter when that is positive, and gives up after its retry budget.
// Any error that is not a BusinessError is a technical failure; FailureError
// only adds the retry hint. Create it with Failure.
type FailureError struct {
	Err        error
	RetryAfter time.Duration
}

// FailureOption tunes a Failure.
type FailureOption func(*FailureError)

// RetryAfter asks the bridge to try the task again after d (at most 24 h).
func RetryAfter(d time.Duration) FailureOption {
	return func(f *FailureError) {
		f.RetryAfter = min(max(d, 0), 24*time.Hour)
	}
}

// Failure wraps err as a technical failure. Its message travels to the bridge
// and may end up in the engine: keep secrets out of it.
func Failure(err error, opts ...FailureOption) error {
	if err == nil {
		err = errors.New("technical failure")
	}
	f := &FailureError{Err: err}
	for _, o := range opts {
		o(f)
	}
	return f
}

// Error returns the message of the wrapped error (the failure message sent to
// the bridge).
func (e *FailureError) Error() string { return e.Err.Error() }

func (e *FailureError) Unwrap() error { return e.Err }

// Invoke runs h on task, recovering a panic, and encodes the outcome as the
// reply body and Pe-Outcome header value of wire contract v1 (what Serve sends
// for each task). It is exported for handlertest and for custom loops.
func Invoke(ctx context.Context, h Handler, task *Task) (body []byte, outcome string) {
	result, err := call(ctx, h, task)
	return Encode(result, err)
}

func call(ctx context.Context, h Handler, task *Task) (result any, err error) {
	defer func() {
		if r := recover(); r != nil {
			result, err = nil, fmt.Errorf("handler: panic: %v", r)
		}
	}()
	return h.Handle(ctx, task)
}

// Encode maps a handler's return values onto a reply body and Pe-Outcome
// header value: nil error → success (result JSON, no body for a nil result);
// *BusinessError → BPMN error; any other error → technical failure. A result
// that cannot be encoded, or an encoded reply over events.DefaultMaxReplyBytes,
// becomes a technical failure.
func Encode(result any, err error) (body []byte, outcome string) {
	if err == nil {
		if result == nil {
			return nil, events.MarkerResult
		}
		b, encErr := events.ResultReply(result)
		if encErr != nil {
			return encodeFailure(fmt.Errorf("handler: encoding result: %w", encErr), 0)
		}
		if len(b) > events.DefaultMaxReplyBytes {
			return encodeFailure(fmt.Errorf("handler: result of %d bytes exceeds the reply limit of %d", len(b), events.DefaultMaxReplyBytes), 0)
		}
		return b, events.MarkerResult
	}
	var be *BusinessError
	if errors.As(err, &be) && be.Code != "" {
		b, encErr := events.BPMNErrorReply(be.Code, be.Message, be.Details)
		if encErr != nil {
			return encodeFailure(fmt.Errorf("handler: encoding bpmn error %s: %w", be.Code, encErr), 0)
		}
		if len(b) > events.DefaultMaxReplyBytes {
			return encodeFailure(fmt.Errorf("handler: bpmn error %s of %d bytes exceeds the reply limit", be.Code, len(b)), 0)
		}
		return b, events.MarkerBPMNError
	}
	var retry time.Duration
	var fe *FailureError
	if errors.As(err, &fe) {
		retry = fe.RetryAfter
	}
	return encodeFailure(err, retry)
}

func encodeFailure(err error, retry time.Duration) ([]byte, string) {
	msg := err.Error()
	const maxMsg = 8 << 10
	if len(msg) > maxMsg {
		msg = msg[:maxMsg]
	}
	b, encErr := events.FailureReply(msg, retry)
	if encErr != nil { // cannot happen for a string and a duration
		b = []byte(`{"$pe":"failure","message":"handler: encoding failure"}`)
	}
	return b, events.MarkerFailure
}
