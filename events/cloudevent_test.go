package events_test

import (
	"bytes"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pe-bridge/pe-bridge/events"
)

func sampleEvent() *events.Event {
	return &events.Event{
		ID: "t-1", Source: "pe-bridge", Type: events.TypeTask, Subject: "order.created",
		Time: time.Date(2026, 12, 1, 10, 0, 0, 123000000, time.UTC),
		Data: []byte(`{"amount":3}`),
		Extensions: []events.Extension{
			{events.ExtTopic, "order.created"}, {events.ExtSingleTry, "true"},
			{events.ExtLockExpiresAt, "2026-12-01T10:00:30Z"},
		},
	}
}

func sortExt(ev *events.Event) {
	slices.SortFunc(ev.Extensions, func(a, b events.Extension) int { return strings.Compare(a.Name, b.Name) })
}

func TestCodecRoundTrip(t *testing.T) {
	for _, mode := range []events.Mode{events.Binary, events.Structured} {
		t.Run(mode.String(), func(t *testing.T) {
			ev := sampleEvent()
			h := events.Header{}
			body, err := events.Encode(ev, mode, h)
			if err != nil {
				t.Fatal(err)
			}
			if got := events.IsStructured(h); got != (mode == events.Structured) {
				t.Fatalf("IsStructured = %v for %s", got, mode)
			}
			back, err := events.Decode(h, body)
			if err != nil {
				t.Fatal(err)
			}
			want := sampleEvent()
			want.DataContentType = events.ContentTypeJSON
			sortExt(want)
			sortExt(back)
			if !reflect.DeepEqual(back, want) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", back, want)
			}
			task, err := events.TaskOf(back)
			if err != nil || task.ID != "t-1" || task.Topic != "order.created" || !task.SingleTry ||
				!task.LockExpiresAt.Equal(time.Date(2026, 12, 1, 10, 0, 30, 0, time.UTC)) {
				t.Fatalf("TaskOf = %+v, %v", task, err)
			}
		})
	}
}

func TestCodecBinaryHeaders(t *testing.T) {
	h := events.Header{}
	body, err := events.Encode(sampleEvent(), events.Binary, h)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"ce-id": "t-1", "ce-specversion": "1.0", "ce-type": events.TypeTask, "ce-source": "pe-bridge",
		"ce-subject": "order.created", "ce-time": "2026-12-01T10:00:00.123Z", "Content-Type": "application/json",
		"ce-topic": "order.created", "ce-singletry": "true",
	} {
		if got := h[k]; len(got) != 1 || got[0] != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if string(body) != `{"amount":3}` {
		t.Errorf("body = %s", body)
	}
}

func TestCodecDecodeIsCaseInsensitive(t *testing.T) {
	h := events.Header{"CE-ID": {"x"}, "Ce-Source": {"s"}, "ce-TYPE": {"t"}, "ce-specversion": {"1.0"},
		"content-type": {"application/json"}, "CE-Topic": {"a"}}
	ev, err := events.Decode(h, []byte(`1`))
	if err != nil {
		t.Fatal(err)
	}
	if ev.ID != "x" || ev.Source != "s" || ev.Type != "t" || ev.Ext("topic") != "a" || ev.DataContentType != "application/json" {
		t.Fatalf("decoded %+v", ev)
	}
	if got := events.HeaderGet(events.Header{"pe-outcome": {"failure"}}, events.OutcomeHeader); got != "failure" {
		t.Fatalf("HeaderGet case-insensitive = %q", got)
	}
}

func TestCodecStructuredNonJSONData(t *testing.T) {
	ev := &events.Event{ID: "1", Source: "s", Type: "t", DataContentType: "text/plain", Data: []byte("hi\x00")}
	b, err := events.MarshalStructured(ev)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`"data_base64"`)) {
		t.Fatalf("want data_base64 in %s", b)
	}
	back, err := events.UnmarshalStructured(b)
	if err != nil || string(back.Data) != "hi\x00" {
		t.Fatalf("back = %+v, %v", back, err)
	}
}

func TestCodecRejects(t *testing.T) {
	good := events.Header{"ce-id": {"1"}, "ce-source": {"s"}, "ce-type": {"t"}, "ce-specversion": {"1.0"}}
	with := func(k, v string) events.Header {
		h := events.Header{}
		for k2, v2 := range good {
			h[k2] = v2
		}
		if v == "" {
			delete(h, k)
		} else {
			h[k] = []string{v}
		}
		return h
	}
	bad := map[string]events.Header{
		"no id":           with("ce-id", ""),
		"no source":       with("ce-source", ""),
		"no type":         with("ce-type", ""),
		"no specversion":  with("ce-specversion", ""),
		"old specversion": with("ce-specversion", "0.3"),
		"bad time":        with("ce-time", "yesterday"),
		"bad ext name":    with("ce-Bad_Name", "x"),
	}
	for name, h := range bad {
		if _, err := events.Decode(h, nil); !errors.Is(err, events.ErrMalformedEvent) {
			t.Errorf("%s: err = %v, want ErrMalformedEvent", name, err)
		}
	}
	for name, body := range map[string]string{
		"not json":          `{`,
		"array":             `[]`,
		"id not string":     `{"specversion":"1.0","id":1,"source":"s","type":"t"}`,
		"ext object":        `{"specversion":"1.0","id":"1","source":"s","type":"t","x":{}}`,
		"both data":         `{"specversion":"1.0","id":"1","source":"s","type":"t","data":1,"data_base64":"AA=="}`,
		"bad base64":        `{"specversion":"1.0","id":"1","source":"s","type":"t","data_base64":"!"}`,
		"wrong specversion": `{"specversion":"2","id":"1","source":"s","type":"t"}`,
	} {
		h := events.Header{"Content-Type": {events.ContentTypeStructured}}
		if _, err := events.Decode(h, []byte(body)); !errors.Is(err, events.ErrMalformedEvent) {
			t.Errorf("%s: err = %v, want ErrMalformedEvent", name, err)
		}
	}
	if _, err := events.Encode(&events.Event{ID: "1", Source: "s"}, events.Binary, events.Header{}); !errors.Is(err, events.ErrMalformedEvent) {
		t.Errorf("Encode without type: err = %v", err)
	}
}

// FuzzDecode: decoding any body in either mode never panics, and whatever
// decodes re-encodes and decodes to the same event.
func FuzzDecode(f *testing.F) {
	b, _ := events.MarshalStructured(sampleEvent())
	f.Add(b, true)
	f.Add([]byte(`{"a":1}`), false)
	f.Add([]byte(`{"specversion":"1.0","id":"1","source":"s","type":"t","n":5,"data_base64":"AA=="}`), true)
	f.Fuzz(func(t *testing.T, body []byte, structured bool) {
		h := events.Header{"ce-id": {"1"}, "ce-source": {"s"}, "ce-type": {"t"}, "ce-specversion": {"1.0"}}
		if structured {
			h = events.Header{"Content-Type": {events.ContentTypeStructured}}
		}
		ev, err := events.Decode(h, body)
		if err != nil {
			if !errors.Is(err, events.ErrMalformedEvent) {
				t.Fatalf("error %v does not match ErrMalformedEvent", err)
			}
			return
		}
		for _, mode := range []events.Mode{events.Binary, events.Structured} {
			h2 := events.Header{}
			b2, err := events.Encode(ev, mode, h2)
			if err != nil {
				if mode == events.Structured && errors.Is(err, events.ErrMalformedEvent) {
					continue // e.g. binary data labelled JSON cannot be embedded
				}
				t.Fatalf("re-encoding %+v: %v", ev, err)
			}
			again, err := events.Decode(h2, b2)
			if err != nil {
				t.Fatalf("decoding re-encoded %s event: %v", mode, err)
			}
			if again.ID != ev.ID || again.Type != ev.Type || !bytes.Equal(bytes.TrimSpace(again.Data), bytes.TrimSpace(ev.Data)) && mode == events.Binary {
				t.Fatalf("%s round trip changed the event: %+v -> %+v", mode, ev, again)
			}
		}
	})
}

// TestMsgSize: the wire size counts the NATS/1.0 header block, each header
// line and the body; a message without headers is its body.
func TestMsgSize(t *testing.T) {
	if got := events.MsgSize(nil, []byte("abc")); got != 3 {
		t.Errorf("no headers: %d, want 3", got)
	}
	h := events.Header{"ce-id": {"1"}}
	// "NATS/1.0\r\n" + "ce-id: 1\r\n" + "\r\n" + body
	if got, want := events.MsgSize(h, []byte("abc")), len("NATS/1.0\r\nce-id: 1\r\n\r\nabc"); got != want {
		t.Errorf("with a header: %d, want %d", got, want)
	}
}
