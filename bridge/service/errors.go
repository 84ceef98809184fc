package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/pe-bridge/pe-bridge/engine"
)

// Error codes of service replies. They reuse HTTP status numbers.
const (
	CodeBadRequest      = 400 // malformed request: not JSON, missing/mistyped/unknown field
	CodeUnauthorized    = 401 // no, a malformed or a rejected end-user token
	CodeForbidden       = 403 // the token lacks a claim (scope, lane)
	CodeNotFound        = 404 // unknown process model, instance or user task
	CodeConflict        = 409 // the user task / instance is no longer in a state that allows this
	CodeTooLarge        = 413 // request body larger than Config.MaxRequestBytes
	CodeProcessError    = 422 // a blocking start whose instance ended in an error (bpmnError attached)
	CodeInternal        = 500 // anything else (including a panic while handling the request)
	CodeUnavailable     = 503 // engine temporarily unavailable (5xx, 429, transport), bridge busy or stopping
	CodeGatewayTimeout  = 504 // the request's timeout ran out (blocking start not finished in time)
	headerServiceError  = "Nats-Service-Error"
	headerServiceCode   = "Nats-Service-Error-Code"
	contentTypeHeader   = "Content-Type"
	contentTypeJSON     = "application/json"
	maxErrorMessageSize = 1024
)

// Error is the "error" member of every error reply:
//
//	{"error":{"code":404,"message":"...","field":"processModelId"}}
//
// The same code and message travel in the Nats-Service-Error-Code and
// Nats-Service-Error headers.
type Error struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	// Field names the offending request member of a 400 (JSON path with dots).
	Field string `json:"field,omitempty"`
	// ProcessInstanceID and CorrelationID identify the instance of a failed or
	// timed-out blocking start when they are known.
	ProcessInstanceID string `json:"processInstanceId,omitempty"`
	CorrelationID     string `json:"correlationId,omitempty"`
	// BPMNError is set when a blocking start's instance ended in a BPMN error.
	BPMNError json.RawMessage `json:"bpmnError,omitempty"`
	// RetryAfterMs is set on a 503 of a busy bridge: try again after this
	// many milliseconds (also as header Retry-After, in whole seconds).
	RetryAfterMs int64 `json:"retryAfterMs,omitempty"`
}

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("service: %d %s (field %s)", e.Code, e.Message, e.Field)
	}
	return fmt.Sprintf("service: %d %s", e.Code, e.Message)
}

// ErrorReply is the body of an error reply.
type ErrorReply struct {
	Error *Error `json:"error"`
}

func badRequest(field, format string, args ...any) *Error {
	return &Error{Code: CodeBadRequest, Field: field, Message: fmt.Sprintf(format, args...)}
}

// mapError classifies err (from the engine client or the request context)
// into the service error sent to the requester. It is the only place that
// decides a reply code.
func mapError(err error) *Error {
	var se *Error
	if errors.As(err, &se) {
		return se
	}
	var ee *engine.Error
	if errors.As(err, &ee) {
		out := &Error{Code: engineCode(ee), Message: engineMessage(ee)}
		if b := bpmnError(ee.Body.AdditionalInformation); b != nil {
			out.BPMNError = b
			out.Code = CodeProcessError
		}
		return out
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Code: CodeGatewayTimeout, Message: "timed out waiting for the engine"}
	case errors.Is(err, context.Canceled):
		return &Error{Code: CodeUnavailable, Message: "request cancelled: the bridge is stopping"}
	case engine.IsTemporary(err):
		return &Error{Code: CodeUnavailable, Message: "engine unavailable"}
	}
	return &Error{Code: CodeInternal, Message: "internal error"}
}

func engineCode(ee *engine.Error) int {
	switch {
	case ee.Status == 400, ee.Status == 401, ee.Status == 403, ee.Status == 404, ee.Status == 409:
		return ee.Status
	case ee.Status == 410, ee.Status == 423:
		return CodeConflict
	case ee.Status == 413:
		return CodeTooLarge
	case ee.Status == 422:
		return CodeBadRequest
	case ee.Status == 504:
		return CodeGatewayTimeout
	case ee.Temporary():
		return CodeUnavailable
	case ee.Status >= 400 && ee.Status < 500:
		return CodeBadRequest
	}
	return CodeInternal
}

func engineMessage(ee *engine.Error) string {
	msg := ee.Body.Message
	if msg == "" {
		msg = "engine answered " + strconv.Itoa(ee.Status)
	} else {
		msg = "engine: " + msg
	}
	if len(msg) > maxErrorMessageSize {
		msg = msg[:maxErrorMessageSize] + "..."
	}
	return msg
}

// bpmnError extracts additionalInformation.bpmnError ([V] API.md §1.4).
func bpmnError(info json.RawMessage) json.RawMessage {
	if len(info) == 0 {
		return nil
	}
	var ai struct {
		BPMNError json.RawMessage `json:"bpmnError"`
	}
	if json.Unmarshal(info, &ai) != nil || len(ai.BPMNError) == 0 || string(ai.BPMNError) == "null" {
		return nil
	}
	return ai.BPMNError
}
