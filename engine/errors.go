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

// ClassForStatus is the engine's error class name for an HTTP status.
func ClassForStatus(status int) string {
	switch status {
	case 400:
		return "BadRequestError"
	case 401:
		return "UnauthorizedError"
	case 403:
		return "ForbiddenError"
	case 404:
		return "NotFoundError"
	case 405:
		return "MethodNotAllowedError"
	case 409:
		return "ConflictError"
	case 410:
		return "GoneError"
	case 413:
		return "PayloadTooLargeError"
	case 422:
		return "UnprocessableEntityError"
	case 423:
		return "LockedError"
	case 429:
		return "TooManyRequestsError"
	case 503:
		return "ServiceUnavaliableError" // sic: the engine SDK's spelling (Errors/ErrorCodes)
	case 504:
		return "GatewayTimeoutError"
	default:
		if status >= 500 {
			return "InternalServerError"
		}
		return "BadRequestError"
	}
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
