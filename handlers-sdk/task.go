package handler

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/events"
)

// ErrMalformedTask is matched by every error of ParseTask and ParseCancel.
var ErrMalformedTask = errors.New("handler: malformed task event")

// ParseTask decodes a task event in either CloudEvents content mode: binary
// (ce-* headers, body = payload) or structured (Content-Type
// application/cloudevents+json, body = the whole event).
func ParseTask(msg *nats.Msg) (*Task, error) {
	if isStructured(msg.Header) {
		return parseStructured(msg.Data)
	}
	h := header(msg.Header)
	t := &Task{Type: h.Get(events.HeaderType), Source: h.Get(events.HeaderSource)}
	t.ID = h.Get(events.HeaderID)
	if t.ID == "" {
		return nil, fmt.Errorf("%w: no %s header", ErrMalformedTask, events.HeaderID)
	}
	t.Topic = h.Get(events.HeaderPrefix + events.ExtTopic)
	if t.Topic == "" {
		t.Topic = h.Get(events.HeaderSubject)
	}
	t.ProcessInstanceID = h.Get(events.HeaderPrefix + events.ExtProcessInstanceID)
	t.ProcessModelID = h.Get(events.HeaderPrefix + events.ExtProcessModelID)
	t.CorrelationID = h.Get(events.HeaderPrefix + events.ExtCorrelationID)
	t.FlowNodeInstanceID = h.Get(events.HeaderPrefix + events.ExtFlowNodeInstanceID)
	t.TraceParent = h.Get(events.HeaderPrefix + events.ExtTraceParent)
	t.SingleTry = strings.EqualFold(h.Get(events.HeaderPrefix+events.ExtSingleTry), "true")
	var err error
	if t.LockExpiresAt, err = parseTime(h.Get(events.HeaderPrefix + events.ExtLockExpiresAt)); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrMalformedTask, events.ExtLockExpiresAt, err)
	}
	if t.Time, err = parseTime(h.Get(events.HeaderTime)); err != nil {
		return nil, fmt.Errorf("%w: time: %v", ErrMalformedTask, err)
	}
	if len(strings.TrimSpace(string(msg.Data))) > 0 {
		if !json.Valid(msg.Data) {
			return nil, fmt.Errorf("%w: task %s: payload is not JSON", ErrMalformedTask, t.ID)
		}
		t.Payload = json.RawMessage(msg.Data)
	}
	return t, nil
}

// ParseCancel returns the task id of a cancel event (type
// events.TypeTaskCancelled) in either content mode.
func ParseCancel(msg *nats.Msg) (string, error) {
	var id, typ string
	if isStructured(msg.Header) {
		var ev struct {
			ID   string `json:"id"`
			Type string `json:"type"`
		}
		if err := json.Unmarshal(msg.Data, &ev); err != nil {
			return "", fmt.Errorf("%w: %v", ErrMalformedTask, err)
		}
		id, typ = ev.ID, ev.Type
	} else {
		h := header(msg.Header)
		id, typ = h.Get(events.HeaderID), h.Get(events.HeaderType)
	}
	if id == "" {
		return "", fmt.Errorf("%w: cancel event without id", ErrMalformedTask)
	}
	if typ != "" && typ != events.TypeTaskCancelled {
		return "", fmt.Errorf("%w: cancel subject carries type %q", ErrMalformedTask, typ)
	}
	return id, nil
}

// header reads NATS headers case-insensitively when the exact name is absent
// (nats.Header.Get is case-sensitive; CloudEvents names them in lower case).
type header nats.Header

func (h header) Get(key string) string {
	if v := nats.Header(h).Get(key); v != "" {
		return v
	}
	for k, v := range h {
		if len(v) > 0 && strings.EqualFold(k, key) {
			return v[0]
		}
	}
	return ""
}

func isStructured(h nats.Header) bool {
	ct := header(h).Get(events.HeaderDataContent)
	if ct == "" {
		return false
	}
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == events.ContentTypeStructured
}

func parseStructured(data []byte) (*Task, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%w: structured event: %v", ErrMalformedTask, err)
	}
	str := func(name string) (string, error) {
		v, ok := raw[name]
		if !ok || string(v) == "null" {
			return "", nil
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			// Extensions may be sent as JSON booleans or numbers.
			return strings.TrimSpace(string(v)), nil
		}
		return s, nil
	}
	var errs []error
	get := func(name string) string {
		s, err := str(name)
		if err != nil {
			errs = append(errs, err)
		}
		return s
	}
	t := &Task{Type: get("type"), Source: get("source")}
	t.ID = get("id")
	t.Topic = get(events.ExtTopic)
	if t.Topic == "" {
		t.Topic = get("subject")
	}
	t.ProcessInstanceID = get(events.ExtProcessInstanceID)
	t.ProcessModelID = get(events.ExtProcessModelID)
	t.CorrelationID = get(events.ExtCorrelationID)
	t.FlowNodeInstanceID = get(events.ExtFlowNodeInstanceID)
	t.TraceParent = get(events.ExtTraceParent)
	t.SingleTry = strings.EqualFold(get(events.ExtSingleTry), "true")
	var err error
	if t.LockExpiresAt, err = parseTime(get(events.ExtLockExpiresAt)); err != nil {
		errs = append(errs, err)
	}
	if t.Time, err = parseTime(get("time")); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: structured event: %v", ErrMalformedTask, errors.Join(errs...))
	}
	if t.ID == "" {
		return nil, fmt.Errorf("%w: structured event without id", ErrMalformedTask)
	}
	if d, ok := raw["data"]; ok && string(d) != "null" {
		t.Payload = d
	} else if b64 := get("data_base64"); b64 != "" {
		p, err := base64.StdEncoding.DecodeString(b64)
		if err != nil || !json.Valid(p) {
			return nil, fmt.Errorf("%w: task %s: data_base64 is not base64 JSON", ErrMalformedTask, t.ID)
		}
		t.Payload = p
	}
	return t, nil
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	return time.Parse(time.RFC3339Nano, s)
}
