package events

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// The one CloudEvents codec of pe-bridge (CloudEvents 1.0, NATS protocol
// binding). The task pump, the event forwarder and the handler SDK all encode
// and decode with it, so the three can never drift apart.
//
// Binary content mode: every attribute travels as a NATS header "ce-<name>"
// (datacontenttype as "Content-Type"), the body is the event data.
// Structured content mode: the body is the whole event as JSON (format
// application/cloudevents+json) and the only header is "Content-Type".
//
// It works on Header, the type underlying nats.Header, so it needs no NATS
// import: pass msg.Header (converted: events.Header(msg.Header)) directly.

// SpecVersion is the CloudEvents version of every event.
const SpecVersion = "1.0"

// Header is a NATS message header (nats.Header's underlying type).
type Header = map[string][]string

// Mode is a CloudEvents content mode.
type Mode int

const (
	// Binary: attributes in ce-* headers, body = data. The default.
	Binary Mode = iota
	// Structured: body = the whole event as JSON.
	Structured
)

func (m Mode) String() string {
	if m == Structured {
		return "structured"
	}
	return "binary"
}

// ParseMode reads "binary" or "structured" (any case).
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(s) {
	case "binary", "":
		return Binary, nil
	case "structured":
		return Structured, nil
	}
	return Binary, fmt.Errorf("events: unknown content mode %q (want binary or structured)", s)
}

// Extension is one CloudEvent extension attribute with its string form.
type Extension struct{ Name, Value string }

// Event is one CloudEvent. Time zero means no time attribute; Data nil means
// no data. DataContentType "" with data means ContentTypeJSON.
type Event struct {
	ID, Source, Type, Subject string
	Time                      time.Time
	DataContentType           string
	Data                      []byte
	Extensions                []Extension
}

// Ext returns the value of extension name ("" when absent).
func (ev *Event) Ext(name string) string {
	for _, x := range ev.Extensions {
		if x.Name == name {
			return x.Value
		}
	}
	return ""
}

// SetExt sets extension name; an empty value removes it.
func (ev *Event) SetExt(name, value string) {
	for i, x := range ev.Extensions {
		if x.Name == name {
			if value == "" {
				ev.Extensions = append(ev.Extensions[:i], ev.Extensions[i+1:]...)
			} else {
				ev.Extensions[i].Value = value
			}
			return
		}
	}
	if value != "" {
		ev.Extensions = append(ev.Extensions, Extension{name, value})
	}
}

// ErrMalformedEvent is matched by every error of Decode and Validate.
var ErrMalformedEvent = errors.New("events: malformed cloudevent")

// reserved are the context attributes that are not extensions.
var reserved = map[string]bool{
	"id": true, "source": true, "type": true, "subject": true, "time": true, "specversion": true,
	"datacontenttype": true, "dataschema": true, "data": true, "data_base64": true,
}

// Validate checks the required attributes and the extension names.
func (ev *Event) Validate() error {
	switch {
	case ev.ID == "":
		return fmt.Errorf("%w: id is empty", ErrMalformedEvent)
	case ev.Source == "":
		return fmt.Errorf("%w: source is empty", ErrMalformedEvent)
	case ev.Type == "":
		return fmt.Errorf("%w: type is empty", ErrMalformedEvent)
	}
	for _, x := range ev.Extensions {
		if !validExtName(x.Name) || reserved[x.Name] {
			return fmt.Errorf("%w: extension name %q must be lower-case letters and digits and not a context attribute", ErrMalformedEvent, x.Name)
		}
	}
	return nil
}

func validExtName(n string) bool {
	if n == "" || len(n) > 20 {
		return false
	}
	for i := 0; i < len(n); i++ {
		if c := n[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func (ev *Event) contentType() string {
	if ev.DataContentType == "" && ev.Data != nil {
		return ContentTypeJSON
	}
	return ev.DataContentType
}

// Encode writes ev in mode: headers go into h (which must not be nil) and
// the body is returned.
func Encode(ev *Event, mode Mode, h Header) ([]byte, error) {
	if err := ev.Validate(); err != nil {
		return nil, err
	}
	if mode == Structured {
		body, err := MarshalStructured(ev)
		if err != nil {
			return nil, err
		}
		h[HeaderDataContent] = []string{ContentTypeStructured}
		return body, nil
	}
	// One backing array for all values: one allocation instead of one per header.
	vals := make([]string, 0, 6+len(ev.Extensions))
	set := func(k, v string) {
		vals = append(vals, v)
		n := len(vals)
		h[k] = vals[n-1 : n : n]
	}
	set(HeaderSpecVersion, SpecVersion)
	set(HeaderID, ev.ID)
	set(HeaderSource, ev.Source)
	set(HeaderType, ev.Type)
	if ev.Subject != "" {
		set(HeaderSubject, ev.Subject)
	}
	if !ev.Time.IsZero() {
		set(HeaderTime, ev.Time.UTC().Format(time.RFC3339Nano))
	}
	if ct := ev.contentType(); ct != "" {
		set(HeaderDataContent, ct)
	}
	for _, x := range ev.Extensions {
		set(HeaderPrefix+x.Name, x.Value)
	}
	return ev.Data, nil
}

// MarshalStructured returns ev in the JSON event format. Data whose content
// type is JSON is embedded as "data"; any other data as "data_base64".
func MarshalStructured(ev *Event) ([]byte, error) {
	if err := ev.Validate(); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.Grow(256 + len(ev.Data))
	b.WriteString(`{"specversion":"1.0"`)
	str := func(k, v string) {
		b.WriteString(`,"`)
		b.WriteString(k)
		b.WriteString(`":`)
		q, _ := json.Marshal(v) // strings always marshal
		b.Write(q)
	}
	str("id", ev.ID)
	str("source", ev.Source)
	str("type", ev.Type)
	if ev.Subject != "" {
		str("subject", ev.Subject)
	}
	if !ev.Time.IsZero() {
		str("time", ev.Time.UTC().Format(time.RFC3339Nano))
	}
	ct := ev.contentType()
	if ct != "" {
		str("datacontenttype", ct)
	}
	for _, x := range ev.Extensions {
		str(x.Name, x.Value)
	}
	if ev.Data != nil {
		if isJSONType(ct) {
			if !json.Valid(ev.Data) {
				return nil, fmt.Errorf("%w: data of content type %s is not JSON", ErrMalformedEvent, ct)
			}
			b.WriteString(`,"data":`)
			b.Write(ev.Data)
		} else {
			str("data_base64", base64.StdEncoding.EncodeToString(ev.Data))
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func isJSONType(ct string) bool {
	ct = strings.ToLower(strings.TrimSpace(strings.SplitN(ct, ";", 2)[0]))
	return ct == "" || ct == ContentTypeJSON || ct == "text/json" || strings.HasSuffix(ct, "+json")
}

// HeaderGet returns the first value of header key, matched exactly first and
// then case-insensitively (NATS headers are case-sensitive; clients differ in
// how they spell them).
func HeaderGet(h Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	for k, v := range h {
		if len(v) > 0 && strings.EqualFold(k, key) {
			return v[0]
		}
	}
	return ""
}

// MsgSize is the size a NATS server compares with its max_payload for a
// message with header h and body: the headers in their wire form plus the
// body.
func MsgSize(h Header, body []byte) int {
	n := len(body)
	if len(h) > 0 {
		n += len("NATS/1.0\r\n\r\n")
		for k, vs := range h {
			for _, v := range vs {
				n += len(k) + len(": ") + len(v) + len("\r\n")
			}
		}
	}
	return n
}

// IsStructured reports whether a message with header h carries a
// structured-mode event.
func IsStructured(h Header) bool {
	ct := strings.ToLower(strings.TrimSpace(strings.SplitN(HeaderGet(h, HeaderDataContent), ";", 2)[0]))
	return ct == ContentTypeStructured
}

// Decode reads an event in either content mode (structured when the
// Content-Type header says application/cloudevents+json, else binary).
func Decode(h Header, body []byte) (*Event, error) {
	if IsStructured(h) {
		return UnmarshalStructured(body)
	}
	ev := &Event{}
	var sv string
	for k, v := range h {
		if len(v) == 0 || len(k) <= len(HeaderPrefix) || !strings.EqualFold(k[:len(HeaderPrefix)], HeaderPrefix) {
			continue
		}
		name := strings.ToLower(k[len(HeaderPrefix):])
		val := v[0]
		switch name {
		case "specversion":
			sv = val
		case "id":
			ev.ID = val
		case "source":
			ev.Source = val
		case "type":
			ev.Type = val
		case "subject":
			ev.Subject = val
		case "time":
			t, err := time.Parse(time.RFC3339Nano, val)
			if err != nil {
				return nil, fmt.Errorf("%w: ce-time %q is not RFC 3339", ErrMalformedEvent, val)
			}
			ev.Time = t
		case "datacontenttype":
			ev.DataContentType = val
		case "dataschema":
		default:
			ev.Extensions = append(ev.Extensions, Extension{name, val})
		}
	}
	if ct := HeaderGet(h, HeaderDataContent); ct != "" {
		ev.DataContentType = ct
	}
	if sv != SpecVersion {
		return nil, fmt.Errorf("%w: ce-specversion %q, want %q", ErrMalformedEvent, sv, SpecVersion)
	}
	if len(body) > 0 {
		ev.Data = body
	}
	if err := ev.Validate(); err != nil {
		return nil, err
	}
	return ev, nil
}

// UnmarshalStructured reads an event in the JSON event format. Extension
// values that are JSON numbers or booleans keep their JSON text.
func UnmarshalStructured(body []byte) (*Event, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("%w: structured event is not a JSON object: %v", ErrMalformedEvent, err)
	}
	ev := &Event{}
	str := func(k string) (string, error) {
		raw, ok := m[k]
		if !ok || string(raw) == "null" {
			return "", nil
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", fmt.Errorf("%w: member %q must be a string", ErrMalformedEvent, k)
		}
		return s, nil
	}
	var sv, tm, b64 string
	var err error
	for _, f := range []struct {
		k string
		p *string
	}{{"specversion", &sv}, {"id", &ev.ID}, {"source", &ev.Source}, {"type", &ev.Type},
		{"subject", &ev.Subject}, {"time", &tm}, {"datacontenttype", &ev.DataContentType}, {"data_base64", &b64}} {
		if *f.p, err = str(f.k); err != nil {
			return nil, err
		}
	}
	if sv != SpecVersion {
		return nil, fmt.Errorf("%w: specversion %q, want %q", ErrMalformedEvent, sv, SpecVersion)
	}
	if tm != "" {
		if ev.Time, err = time.Parse(time.RFC3339Nano, tm); err != nil {
			return nil, fmt.Errorf("%w: time %q is not RFC 3339", ErrMalformedEvent, tm)
		}
	}
	if raw, ok := m["data"]; ok && string(raw) != "null" {
		ev.Data = raw
		if _, has := m["data_base64"]; has {
			return nil, fmt.Errorf("%w: both data and data_base64", ErrMalformedEvent)
		}
	} else if b64 != "" {
		if ev.Data, err = base64.StdEncoding.DecodeString(b64); err != nil {
			return nil, fmt.Errorf("%w: data_base64: %v", ErrMalformedEvent, err)
		}
	}
	for k, raw := range m {
		if reserved[k] {
			continue
		}
		var v string
		if json.Unmarshal(raw, &v) != nil {
			if len(raw) == 0 || raw[0] == '{' || raw[0] == '[' || string(raw) == "null" {
				return nil, fmt.Errorf("%w: extension %q must be a string, number or boolean", ErrMalformedEvent, k)
			}
			v = string(raw)
		}
		ev.Extensions = append(ev.Extensions, Extension{k, v})
	}
	if err := ev.Validate(); err != nil {
		return nil, err
	}
	return ev, nil
}

// Task metadata from a task event (TypeTask): the attributes and extensions
// the bridge sets, as docs/contract.md lists them.
func TaskOf(ev *Event) (Task, error) {
	t := Task{
		ID:                 ev.ID,
		Topic:              ev.Ext(ExtTopic),
		ProcessInstanceID:  ev.Ext(ExtProcessInstanceID),
		ProcessModelID:     ev.Ext(ExtProcessModelID),
		CorrelationID:      ev.Ext(ExtCorrelationID),
		FlowNodeInstanceID: ev.Ext(ExtFlowNodeInstanceID),
		TraceParent:        ev.Ext(ExtTraceParent),
		SingleTry:          strings.EqualFold(ev.Ext(ExtSingleTry), "true"),
		Time:               ev.Time,
	}
	if t.Topic == "" {
		t.Topic = ev.Subject
	}
	if s := ev.Ext(ExtLockExpiresAt); s != "" {
		var err error
		if t.LockExpiresAt, err = time.Parse(time.RFC3339Nano, s); err != nil {
			return Task{}, fmt.Errorf("%w: %s %q is not RFC 3339", ErrMalformedEvent, ExtLockExpiresAt, s)
		}
	}
	return t, nil
}
