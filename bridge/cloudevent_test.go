package bridge

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding/format"
	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/events"
)

// FuzzTaskEvent checks that any task the engine may send either encodes in
// both content modes and decodes back to the same id, topic and payload, or
// is rejected with an error, never a panic.
func FuzzTaskEvent(f *testing.F) {
	f.Add("id-1", "topic", []byte(`{"a":1}`), true)
	f.Add("5a3f-…", "a.b*c>", []byte(`[1,2,3]`), false)
	f.Add("", "", []byte(``), false)
	f.Add("x", "ümlaut topic", []byte(`"str"`), true)
	f.Fuzz(func(t *testing.T, id, topic string, payload []byte, single bool) {
		if len(payload) > 0 && !json.Valid(payload) {
			return // the pump rejects such payloads before encoding (validate)
		}
		subject, err := events.TaskSubject(topic)
		if err != nil {
			return
		}
		et := &engine.ExternalTask{ID: id, Topic: topic, IsSingleTry: single, ProcessInstanceID: "pi", Payload: payload}
		now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
		ev, err := taskEvent(et, "pe-bridge://fuzz", traceParent(newTraceID()), now, now)
		if err != nil {
			if strings.TrimSpace(id) == "" {
				return // an event needs an id; the pump reports such a task as a technical failure
			}
			t.Fatalf("taskEvent: %v", err)
		}
		bin, err := encodeEvent(ev, subject, Binary)
		if err != nil {
			t.Fatalf("binary: %v", err)
		}
		// The SDK trims id and subject; the topic extension keeps the topic as it is.
		id, subj := strings.TrimSpace(id), strings.TrimSpace(topic)
		if bin.Header.Get(events.HeaderID) != id || bin.Header.Get(events.HeaderSubject) != subj ||
			bin.Header.Get("ce-"+events.ExtTopic) != topic || !bytes.Equal(bin.Data, payload) {
			t.Fatalf("binary message %v %q", bin.Header, bin.Data)
		}
		st, err := encodeEvent(ev, subject, Structured)
		if err != nil {
			t.Fatalf("structured: %v", err)
		}
		var back event.Event
		if err := format.JSON.Unmarshal(st.Data, &back); err != nil {
			t.Fatalf("structured decode: %v\n%s", err, st.Data)
		}
		if back.ID() != id || back.Subject() != subj || back.Type() != events.TypeTask {
			t.Fatalf("structured round trip: %v", back)
		}
		if len(payload) > 0 {
			var a, b any
			_ = json.Unmarshal(payload, &a)
			if err := json.Unmarshal(back.Data(), &b); err != nil {
				t.Fatalf("data %q: %v", back.Data(), err)
			}
			ab, _ := json.Marshal(a)
			bb, _ := json.Marshal(b)
			if !bytes.Equal(ab, bb) {
				t.Fatalf("data %s != %s", bb, ab)
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
