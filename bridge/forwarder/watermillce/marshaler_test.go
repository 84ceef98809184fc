package watermillce_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/bridge/forwarder/watermillce"
	"github.com/pe-bridge/pe-bridge/events"
)

func TestRoundTrip(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 5, time.UTC)
	ev := &events.Event{ID: "user_task_waiting/f1", Source: "pe-bridge://e", Type: events.EventType("user_task_waiting"),
		Subject: "f1", Time: at, DataContentType: events.ContentTypeJSON, Data: []byte(`{"a":1}`),
		Extensions: []events.Extension{{Name: events.ExtProcessInstanceID, Value: "p1"}}}
	for _, mode := range []events.Mode{events.Binary, events.Structured} {
		m := watermillce.Marshaler{Mode: mode}
		nm, err := m.Marshal("pe.event.user_task_waiting", watermillce.Message(ev))
		if err != nil {
			t.Fatal(err)
		}
		if nm.Subject != "pe.event.user_task_waiting" || nm.Header.Get(watermillce.HeaderMsgID) != ev.ID {
			t.Fatalf("%s: subject %q headers %v", mode, nm.Subject, nm.Header)
		}
		for k := range nm.Header { // ce-*, Content-Type and Nats-Msg-Id only: no Watermill headers
			if k != watermillce.HeaderMsgID && k != events.HeaderDataContent && !strings.HasPrefix(k, events.HeaderPrefix) {
				t.Fatalf("%s: unexpected header %s", mode, k)
			}
		}
		back, err := m.Unmarshal(nm)
		if err != nil {
			t.Fatal(err)
		}
		got, err := watermillce.Event(back)
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != ev.ID || got.Type != ev.Type || got.Source != ev.Source || got.Subject != ev.Subject ||
			!got.Time.Equal(at) || got.Ext(events.ExtProcessInstanceID) != "p1" || string(got.Data) != `{"a":1}` {
			t.Fatalf("%s: round trip %+v", mode, got)
		}
	}
}

func TestMarshalRejectsWhatIsNoCloudEvent(t *testing.T) {
	for name, msg := range map[string]*message.Message{
		"no type": func() *message.Message { m := message.NewMessage("id", nil); m.Metadata.Set("source", "s"); return m }(),
		"bad extension name": func() *message.Message {
			m := message.NewMessage("id", nil)
			m.Metadata = message.Metadata{"type": "t", "source": "s", "Bad_Name": "x"}
			return m
		}(),
		"bad time": func() *message.Message {
			m := message.NewMessage("id", nil)
			m.Metadata = message.Metadata{"type": "t", "source": "s", "time": "yesterday"}
			return m
		}(),
	} {
		if _, err := (watermillce.Marshaler{}).Marshal("x", msg); err == nil {
			t.Errorf("%s: marshalled", name)
		}
	}
	if _, err := (watermillce.Marshaler{}).Unmarshal(&nats.Msg{Header: nats.Header{}, Data: []byte("x")}); !errors.Is(err, events.ErrMalformedEvent) {
		t.Fatalf("unmarshal of a non-event: %v", err)
	}
}
