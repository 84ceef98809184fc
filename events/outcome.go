package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Outcome encoding (wire contract v1).
//
// A handler answers a task event on the message's reply subject with a plain
// NATS respond(). The body decides the outcome:
//
//   - any JSON value (or an empty body) that is not an outcome envelope:
//     success; the value becomes the task result (empty body = no result);
//   - a JSON object whose member "$pe" is "bpmn_error":
//     {"$pe":"bpmn_error","code":"X","message":"...","details":{...}}
//     raises the BPMN error X on the task (code required);
//   - a JSON object whose member "$pe" is "failure":
//     {"$pe":"failure","message":"...","retryAfterMs":5000}
//     a technical failure: the bridge retries the task later (retryAfterMs
//     optional) and gives up after its retry budget with a BPMN error carrying
//     the reserved code;
//   - a JSON object whose member "$pe" is "result":
//     {"$pe":"result","result":<any JSON>} success with an explicit result (for
//     results that would themselves contain a "$pe" member).
//
// Anything else (not JSON, an unknown "$pe" value, a wrong member type, more
// than the size limit) is a malformed reply, handled as a technical failure.
// The header OutcomeHeader may carry the same marker ("bpmn_error",
// "failure", "result"/"success") for clients that prefer headers; the body
// member wins when both are present.
const (
	OutcomeMember = "$pe"
	OutcomeHeader = "Pe-Outcome"

	MarkerResult    = "result"
	MarkerBPMNError = "bpmn_error"
	MarkerFailure   = "failure"

	// DefaultMaxReplyBytes bounds a reply body.
	DefaultMaxReplyBytes = 1 << 20
)

// Kind is what a reply asks the bridge to do.
type Kind int

const (
	KindSuccess Kind = iota
	KindBPMNError
	KindFailure
)

func (k Kind) String() string {
	switch k {
	case KindSuccess:
		return "success"
	case KindBPMNError:
		return "bpmn_error"
	case KindFailure:
		return "failure"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Outcome is a decoded handler reply.
type Outcome struct {
	Kind Kind
	// Result is the task result (KindSuccess); nil means none.
	Result json.RawMessage
	// Code, Message and Details describe a BPMN error (KindBPMNError) or, for
	// Message, a technical failure.
	Code    string
	Message string
	Details json.RawMessage
	// RetryAfter is the handler's wish for the next attempt (KindFailure); 0 = bridge default.
	RetryAfter time.Duration
}

// ErrMalformedReply is matched by every decoding error of DecodeReply.
var ErrMalformedReply = errors.New("events: malformed reply")

type envelope struct {
	Marker       *string         `json:"$pe"`
	Result       json.RawMessage `json:"result"`
	Code         *string         `json:"code"`
	Message      *string         `json:"message"`
	Details      json.RawMessage `json:"details"`
	RetryAfterMs *float64        `json:"retryAfterMs"`
}

// DecodeReply decodes a handler reply body; header is the OutcomeHeader value
// ("" when absent; read it with HeaderGet, header names differ in case
// between clients). maxBytes <= 0 means DefaultMaxReplyBytes.
//
// A body that is not a JSON object with a "$pe" member is a success whose
// result is the body verbatim, whatever members it has, unless the header
// names another outcome.
func DecodeReply(body []byte, header string, maxBytes int) (Outcome, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxReplyBytes
	}
	if len(body) > maxBytes {
		return Outcome{}, fmt.Errorf("%w: %d bytes, limit %d", ErrMalformedReply, len(body), maxBytes)
	}
	header = strings.ToLower(strings.TrimSpace(header))
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		switch header {
		case "", MarkerResult, "success":
			return Outcome{Kind: KindSuccess}, nil
		case MarkerFailure:
			return Outcome{Kind: KindFailure, Message: "handler reported a failure"}, nil
		case MarkerBPMNError:
			return Outcome{}, fmt.Errorf("%w: bpmn_error without a body naming the code", ErrMalformedReply)
		default:
			return Outcome{}, fmt.Errorf("%w: unknown %s header %q", ErrMalformedReply, OutcomeHeader, header)
		}
	}
	if !json.Valid(trimmed) {
		return Outcome{}, fmt.Errorf("%w: not JSON", ErrMalformedReply)
	}
	// Only the marker decides whether the body is an envelope; the other
	// members of a plain result are never looked at.
	marker, inBody := header, false
	if m, ok, err := bodyMarker(trimmed); err != nil {
		return Outcome{}, err
	} else if ok {
		marker, inBody = m, true
	}
	switch marker {
	case "", "success":
		if !inBody {
			return Outcome{Kind: KindSuccess, Result: json.RawMessage(trimmed)}, nil
		}
	case MarkerResult:
		if !inBody { // header only: the whole body is the result
			return Outcome{Kind: KindSuccess, Result: json.RawMessage(trimmed)}, nil
		}
	case MarkerBPMNError, MarkerFailure:
	default:
		return Outcome{}, fmt.Errorf("%w: unknown outcome marker %q (want %q, %q or %q)",
			ErrMalformedReply, marker, MarkerResult, MarkerBPMNError, MarkerFailure)
	}
	if trimmed[0] != '{' {
		return Outcome{}, fmt.Errorf("%w: a %s outcome needs a JSON object body", ErrMalformedReply, marker)
	}
	var env envelope
	if err := json.Unmarshal(trimmed, &env); err != nil {
		return Outcome{}, fmt.Errorf("%w: %v", ErrMalformedReply, typeErr(err))
	}
	switch marker {
	case MarkerBPMNError:
		if env.Code == nil || *env.Code == "" {
			return Outcome{}, fmt.Errorf("%w: bpmn_error needs a non-empty string member \"code\"", ErrMalformedReply)
		}
		o := Outcome{Kind: KindBPMNError, Code: *env.Code}
		if env.Message != nil {
			o.Message = *env.Message
		}
		if len(env.Details) > 0 && string(env.Details) != "null" {
			o.Details = env.Details
		}
		return o, nil
	case MarkerFailure:
		o := Outcome{Kind: KindFailure}
		if env.Message != nil {
			o.Message = *env.Message
		}
		if env.RetryAfterMs != nil {
			ms := *env.RetryAfterMs
			if ms < 0 || ms > float64(24*time.Hour/time.Millisecond) {
				return Outcome{}, fmt.Errorf("%w: retryAfterMs %v out of range [0, 86400000]", ErrMalformedReply, ms)
			}
			o.RetryAfter = time.Duration(ms * float64(time.Millisecond))
		}
		return o, nil
	default: // "$pe":"result" or "$pe":"success" in the body
		if len(env.Result) == 0 || string(env.Result) == "null" {
			return Outcome{Kind: KindSuccess}, nil
		}
		return Outcome{Kind: KindSuccess, Result: env.Result}, nil
	}
}

// bodyMarker returns the "$pe" member of a JSON object body (matched
// exactly: {"$PE":...} is a plain result). A null member counts as absent.
func bodyMarker(body []byte) (string, bool, error) {
	if body[0] != '{' || !bytes.Contains(body, []byte(OutcomeMember)) && !bytes.Contains(body, []byte(`\u`)) {
		return "", false, nil
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(body, &members); err != nil {
		return "", false, fmt.Errorf("%w: %v", ErrMalformedReply, err)
	}
	raw, ok := members[OutcomeMember]
	if !ok || string(raw) == "null" {
		return "", false, nil
	}
	var m string
	if err := json.Unmarshal(raw, &m); err != nil {
		return "", false, fmt.Errorf("%w: member %q must be a string", ErrMalformedReply, OutcomeMember)
	}
	return m, true, nil
}

func typeErr(err error) error {
	var ute *json.UnmarshalTypeError
	if errors.As(err, &ute) {
		return fmt.Errorf("member %q must be %s, not %s", ute.Field, ute.Type, ute.Value)
	}
	return err
}

// BPMNErrorReply encodes a BPMN error outcome body.
func BPMNErrorReply(code, message string, details any) ([]byte, error) {
	if code == "" {
		return nil, errors.New("events: bpmn error code is empty")
	}
	m := map[string]any{OutcomeMember: MarkerBPMNError, "code": code}
	if message != "" {
		m["message"] = message
	}
	if details != nil {
		m["details"] = details
	}
	return json.Marshal(m)
}

// FailureReply encodes a technical failure body.
func FailureReply(message string, retryAfter time.Duration) ([]byte, error) {
	m := map[string]any{OutcomeMember: MarkerFailure, "message": message}
	if retryAfter > 0 {
		m["retryAfterMs"] = retryAfter.Milliseconds()
	}
	return json.Marshal(m)
}

// ResultReply encodes a success body. A result that is a JSON object with a
// "$pe" member is wrapped so it cannot be mistaken for an outcome envelope.
func ResultReply(result any) ([]byte, error) {
	b, err := json.Marshal(result)
	if err != nil {
		return nil, err
	}
	if len(b) > 0 && b[0] == '{' {
		var probe struct {
			Marker *json.RawMessage `json:"$pe"`
		}
		if json.Unmarshal(b, &probe) == nil && probe.Marker != nil {
			return json.Marshal(map[string]any{OutcomeMember: MarkerResult, "result": json.RawMessage(b)})
		}
	}
	return b, nil
}
