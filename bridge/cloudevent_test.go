package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/binding/format"
	"github.com/cloudevents/sdk-go/v2/binding/spec"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/events"
)

// sdkMessage reads a NATS message as the CloudEvents NATS protocol binding
// says, through sdk-go's binding machinery (the spec versions, attribute
// rules and validation are sdk-go's own): binary mode = "ce-" headers and
// Content-Type, structured mode = sdk-go's JSON format.
type sdkMessage struct{ m *nats.Msg }

func (s sdkMessage) ReadEncoding() binding.Encoding {
	if format.Lookup(s.m.Header.Get("Content-Type")) != nil {
		return binding.EncodingStructured
	}
	if s.m.Header.Get("ce-specversion") != "" {
		return binding.EncodingBinary
	}
	return binding.EncodingUnknown
}

func (s sdkMessage) ReadStructured(ctx context.Context, w binding.StructuredWriter) error {
	f := format.Lookup(s.m.Header.Get("Content-Type"))
	if f == nil {
		return binding.ErrNotStructured
	}
	return w.SetStructuredEvent(ctx, f, bytes.NewReader(s.m.Data))
}

func (s sdkMessage) ReadBinary(ctx context.Context, w binding.BinaryWriter) error {
	v := spec.VS.Version(s.m.Header.Get("ce-specversion"))
	if v == nil {
		return binding.ErrNotBinary
	}
	for k, vals := range s.m.Header {
		switch {
		case k == "Content-Type":
			if err := w.SetAttribute(v.AttributeFromKind(spec.DataContentType), vals[0]); err != nil {
				return err
			}
		case strings.HasPrefix(k, "ce-"):
			name := k[3:]
			if a := v.Attribute(name); a != nil {
				if err := w.SetAttribute(a, vals[0]); err != nil {
					return err
				}
			} else if err := w.SetExtension(name, vals[0]); err != nil {
				return err
			}
		}
	}
	if len(s.m.Data) > 0 {
		return w.SetData(bytes.NewReader(s.m.Data))
	}
	return nil
}

func (s sdkMessage) Finish(error) error { return nil }

func (s sdkMessage) GetAttribute(k spec.Kind) (spec.Attribute, any) {
	v := spec.VS.Version(s.m.Header.Get("ce-specversion"))
	if v == nil {
		return nil, nil
	}
	a := v.AttributeFromKind(k)
	if a == nil {
		return nil, nil
	}
	h := "ce-" + a.Name()
	if k == spec.DataContentType {
		h = "Content-Type"
	}
	if val := s.m.Header.Get(h); val != "" {
		return a, val
	}
	return a, nil
}

func (s sdkMessage) GetExtension(name string) any {
	if val := s.m.Header.Get("ce-" + name); val != "" {
		return val
	}
	return nil
}

var (
	_ binding.Message               = sdkMessage{}
	_ binding.MessageMetadataReader = sdkMessage{}
)

// readWithSDK decodes a pump message with sdk-go and validates it.
func readWithSDK(t testing.TB, m *nats.Msg) *event.Event {
	t.Helper()
	ev, err := binding.ToEvent(context.Background(), sdkMessage{m})
	if err != nil {
		t.Fatalf("sdk-go cannot read the message: %v\n%v %s", err, m.Header, m.Data)
	}
	if err := ev.Validate(); err != nil {
		t.Fatalf("sdk-go rejects the event: %v", err)
	}
	return ev
}

// TestTaskEventSDKCompliance: what the pump publishes (encoded by
// events.Encode) is a valid CloudEvent to sdk-go in both content modes.
func TestTaskEventSDKCompliance(t *testing.T) {
	et := &engine.ExternalTask{ID: "t-1", Topic: "orders", ProcessInstanceID: "pi", ProcessModelID: "pm",
		CorrelationID: "c", FlowNodeInstanceID: "f", IsSingleTry: true, Payload: []byte(`{"a":[1,2]}`)}
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	ev, err := taskEvent(et, "pe-bridge://test", traceParent(newTraceID()), now.Add(time.Minute), now)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []ContentMode{Binary, Structured} {
		t.Run(mode.String(), func(t *testing.T) {
			m, err := encodeEvent(ev, "pe.task.orders", mode)
			if err != nil {
				t.Fatal(err)
			}
			got := readWithSDK(t, m)
			if got.ID() != "t-1" || got.Type() != events.TypeTask || got.Source() != "pe-bridge://test" ||
				got.Subject() != "orders" || !got.Time().Equal(now) || got.DataContentType() != events.ContentTypeJSON ||
				got.SpecVersion() != "1.0" {
				t.Fatalf("event %v", got)
			}
			for name, want := range map[string]string{events.ExtTopic: "orders", events.ExtProcessInstanceID: "pi",
				events.ExtSingleTry: "true", events.ExtLockExpiresAt: "2026-11-21T12:01:00Z"} {
				if v, _ := got.Extensions()[name].(string); v != want {
					t.Errorf("extension %s = %v, want %s", name, got.Extensions()[name], want)
				}
			}
			if !jsonEqual(got.Data(), et.Payload) {
				t.Fatalf("data %s", got.Data())
			}
		})
	}
	cev, err := cancelEvent(et, "pe-bridge://test", "lock lost", traceParent(newTraceID()), now)
	if err != nil {
		t.Fatal(err)
	}
	m, err := encodeEvent(cev, "pe.cancel.orders", Binary)
	if err != nil {
		t.Fatal(err)
	}
	if got := readWithSDK(t, m); got.Type() != events.TypeTaskCancelled || got.Extensions()[events.ExtCancelReason] != "lock lost" {
		t.Fatalf("cancel event %v", got)
	}
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}

// FuzzTaskEvent checks that any task the engine may send either encodes in
// both content modes into an event sdk-go reads back with the same id,
// topic and payload, or is rejected with an error, never a panic.
func FuzzTaskEvent(f *testing.F) {
	f.Add("id-1", "topic", []byte(`{"a":1}`), true)
	f.Add("5a3f-…", "a.b*c>", []byte(`[1,2,3]`), false)
	f.Add("", "", []byte(``), false)
	f.Add("x", "ümlaut topic", []byte(`"str"`), true)
	f.Fuzz(func(t *testing.T, id, topic string, payload []byte, single bool) {
		if len(payload) > 0 && !json.Valid(payload) {
			return // the pump rejects such payloads before encoding (validate)
		}
		if strings.TrimSpace(id) != id || id == "" || strings.TrimSpace(topic) != topic ||
			!utf8.ValidString(id) || !utf8.ValidString(topic) {
			return // engine ids and topics come from JSON; the pump rejects blank ids (startTask); sdk-go trims
		}
		subject, err := events.TaskSubject(topic)
		if err != nil {
			return
		}
		et := &engine.ExternalTask{ID: id, Topic: topic, IsSingleTry: single, ProcessInstanceID: "pi", Payload: payload}
		now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
		ev, err := taskEvent(et, "pe-bridge://fuzz", traceParent(newTraceID()), now, now)
		if err != nil {
			t.Fatalf("taskEvent: %v", err)
		}
		for _, mode := range []ContentMode{Binary, Structured} {
			m, err := encodeEvent(ev, subject, mode)
			if err != nil {
				t.Fatalf("%s: %v", mode, err)
			}
			back := readWithSDK(t, m)
			if back.ID() != id || back.Subject() != topic || back.Extensions()[events.ExtTopic] != topic {
				t.Fatalf("%s round trip: %v", mode, back)
			}
			if len(payload) > 0 && !jsonEqual(back.Data(), payload) {
				t.Fatalf("%s data %q != %q", mode, back.Data(), payload)
			}
		}
	})
}

func TestTraceParent(t *testing.T) {
	id := newTraceID()
	a, b := traceParent(id), traceParent(id)
	if a == b || a[3:35] != id || b[3:35] != id || len(a) != 55 {
		t.Fatalf("%s %s", a, b)
	}
}
