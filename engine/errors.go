package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

// Sentinels an *Error matches with errors.Is, keyed on its HTTP status.
var (
	ErrBadRequest   = errors.New("engine: bad request")              // 400
	ErrUnauthorized = errors.New("engine: unauthorized")             // 401
	ErrForbidden    = errors.New("engine: forbidden")                // 403
	ErrNotFound     = errors.New("engine: not found")                // 404
	ErrGone         = errors.New("engine: task no longer active")    // 409 (legacy 410): finished, cancelled or expired
	ErrLockLost     = errors.New("engine: locked by another worker") // 423
)

// BaseError is the engine's error body (BaseError.serialize(), API.md §1.4).
type BaseError struct {
	ErrorClassName        string          `json:"errorClassName"`
	Code                  int             `json:"code"`
	Message               string          `json:"message"`
	CallStack             string          `json:"callStack"`
	AdditionalInformation json.RawMessage `json:"additionalInformation,omitempty"`
	ErrorType             string          `json:"errorType"`
	Fatal                 bool            `json:"fatal"`
	IsEngineError         bool            `json:"isEngineError"`
	Name                  string          `json:"name"`
}

// errorClasses is the engine SDK's status → error class table
// (@5minds/processcube_engine_sdk Errors/ErrorCodes; "Unavaliable" is its spelling).
var errorClasses = map[int]string{
	400: "BadRequestError", 401: "UnauthorizedError", 402: "PaymentRequiredError", 403: "ForbiddenError",
	404: "NotFoundError", 405: "MethodNotAllowedError", 406: "NotAcceptableError", 408: "RequestTimeoutError",
	409: "ConflictError", 410: "GoneError", 411: "LengthRequiredError", 412: "PreconditionFailedError",
	413: "RequestTooLargeError", 414: "URLTooLongError", 415: "UnsupportedMediaTypeError",
	422: "UnprocessableEntityError", 423: "LockedError", 424: "FailedDependencyError", 428: "PreconditionRequiredError",
	429: "TooManyRequestsError", 500: "InternalServerError", 501: "NotImplementedError", 502: "BadGatewayError",
	503: "ServiceUnavaliableError", 504: "GatewayTimeoutError",
}

// ClassForStatus is the engine's error class name for an HTTP status.
func ClassForStatus(status int) string {
	if c, ok := errorClasses[status]; ok {
		return c
	}
	if status >= 500 {
		return "InternalServerError"
	}
	return "BadRequestError"
}

// NewBaseError builds the body the engine sends for status with message.
func NewBaseError(status int, message string, info any) BaseError {
	cls := ClassForStatus(status)
	e := BaseError{
		ErrorClassName: cls,
		Code:           status,
		Message:        message,
		CallStack:      cls + ": " + message,
		ErrorType:      "Error",
		IsEngineError:  true,
		Name:           cls,
	}
	if info != nil {
		if b, err := json.Marshal(info); err == nil {
			e.AdditionalInformation = b
		}
	}
	return e
}

// Error is a non-2xx answer of the engine.
type Error struct {
	Status int       // HTTP status
	Op     string    // what the client was doing, e.g. "PUT /external_tasks/{id}/finish"
	Body   BaseError // decoded body; Message holds the raw body when it was not a BaseError
}

func (e *Error) Error() string {
	msg := e.Body.Message
	if msg == "" {
		msg = "no message"
	}
	return fmt.Sprintf("engine: %s: %d %s: %s", e.Op, e.Status, e.Body.ErrorClassName, msg)
}

// Is matches the sentinel of e's status.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrBadRequest:
		return e.Status == 400
	case ErrUnauthorized:
		return e.Status == 401
	case ErrForbidden:
		return e.Status == 403
	case ErrNotFound:
		return e.Status == 404
	case ErrGone:
		return e.Status == 409 || e.Status == 410
	case ErrLockLost:
		return e.Status == 423
	}
	return false
}

// Temporary reports whether a retry may succeed: 5xx and 429.
func (e *Error) Temporary() bool { return e.Status >= 500 || e.Status == 429 }

// IsTemporary reports whether err is worth retrying: an engine 5xx/429, a
// transport error or a timeout. Context cancellation is not temporary.
func IsTemporary(err error) bool {
	if err == nil {
		return false
	}
	var te *TransportError
	if errors.As(err, &te) {
		return true
	}
	// context.DeadlineExceeded claims Temporary(); the caller's own deadline
	// is not worth a retry.
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var t interface{ Temporary() bool }
	if errors.As(err, &t) {
		return t.Temporary()
	}
	return false
}

// TransportError wraps a failure to get any HTTP answer (connection refused,
// reset, timeout). It is always temporary.
type TransportError struct {
	Op  string
	Err error
}

func (e *TransportError) Error() string   { return fmt.Sprintf("engine: %s: %v", e.Op, e.Err) }
func (e *TransportError) Unwrap() error   { return e.Err }
func (e *TransportError) Temporary() bool { return true }
