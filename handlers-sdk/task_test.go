package handler_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/events"
	handler "github.com/pe-bridge/pe-bridge/handlers-sdk"
	"github.com/pe-bridge/pe-bridge/handlers-sdk/handlertest"
)

func TestParseTaskHeaderCase(t *testing.T) {
	msg := nats.NewMsg("pe.task.x")
	msg.Header["Ce-Id"] = []string{"id-1"}
	msg.Header["CE-TOPIC"] = []string{"x"}
	msg.Header["Ce-Specversion"] = []string{"1.0"}
	msg.Header["CE-TYPE"] = []string{events.TypeTask}
	msg.Header["ce-Source"] = []string{"test"}
	msg.Header["content-type"] = []string{"application/json"}
	msg.Data = []byte(`{"a":1}`)
	task, err := handler.ParseTask(msg)
	if err != nil || task.ID != "id-1" || task.Topic != "x" || task.Type != events.TypeTask || string(task.Payload) != `{"a":1}` {
		t.Fatalf("task %+v, %v", task, err)
	}
}

func TestParseTaskRejects(t *testing.T) {
	for name, msg := range map[string]*nats.Msg{
		"no id":           {Header: nats.Header{}, Data: []byte(`{}`)},
		"payload no JSON": {Header: nats.Header{events.HeaderID: {"x"}}, Data: []byte(`nope`)},
		"bad lock time":   {Header: nats.Header{events.HeaderID: {"x"}, "ce-lockexpiresat": {"soon"}}},
		"structured junk": {Header: nats.Header{events.HeaderDataContent: {events.ContentTypeStructured}}, Data: []byte(`[`)},
		"structured no id": {Header: nats.Header{events.HeaderDataContent: {events.ContentTypeStructured + "; charset=utf-8"}},
			Data: []byte(`{"type":"io.pebridge.task.v1"}`)},
		"structured bad base64": {Header: nats.Header{events.HeaderDataContent: {events.ContentTypeStructured}},
			Data: []byte(`{"specversion":"1.0","id":"x","source":"s","type":"t","data_base64":"!!"}`)},
		"structured payload no JSON": {Header: nats.Header{events.HeaderDataContent: {events.ContentTypeStructured}},
			Data: []byte(`{"specversion":"1.0","id":"x","source":"s","type":"t","data_base64":"bm9wZQ=="}`)},
		"no specversion": {Header: nats.Header{events.HeaderID: {"x"}, events.HeaderType: {"t"}, events.HeaderSource: {"s"}}},
	} {
		if _, err := handler.ParseTask(msg); !errors.Is(err, handler.ErrMalformedTask) {
			t.Errorf("%s: %v, want ErrMalformedTask", name, err)
		}
	}
}

func TestParseStructuredBase64(t *testing.T) {
	msg := &nats.Msg{Header: nats.Header{events.HeaderDataContent: {events.ContentTypeStructured}},
		Data: []byte(`{"specversion":"1.0","id":"x","source":"s","type":"` + events.TypeTask + `","subject":"t","singletry":true,"data_base64":"eyJhIjoxfQ=="}`)}
	task, err := handler.ParseTask(msg)
	if err != nil || string(task.Payload) != `{"a":1}` || task.Topic != "t" || !task.SingleTry {
		t.Fatalf("task %+v, %v", task, err)
	}
}

func TestParseCancel(t *testing.T) {
	m, _ := handlertest.NewCancelMsg("t", "id-9", "terminated")
	if id, err := handler.ParseCancel(m); err != nil || id != "id-9" {
		t.Fatalf("%q %v", id, err)
	}
	st := &nats.Msg{Header: nats.Header{events.HeaderDataContent: {events.ContentTypeStructured}},
		Data: []byte(`{"specversion":"1.0","id":"id-8","source":"s","type":"` + events.TypeTaskCancelled + `"}`)}
	if id, err := handler.ParseCancel(st); err != nil || id != "id-8" {
		t.Fatalf("%q %v", id, err)
	}
	wrong, _ := handlertest.NewMsg(handlertest.Task{ID: "x"})
	if _, err := handler.ParseCancel(wrong); err == nil {
		t.Fatal("a task event accepted as cancel event")
	}
}

// FuzzParseTask: no input panics, and what parses has a JSON payload.
func FuzzParseTask(f *testing.F) {
	for _, structured := range []bool{false, true} {
		m, _ := handlertest.NewMsg(handlertest.Task{ID: "a", Topic: "b.c", Payload: map[string]any{"x": 1}, Structured: structured})
		f.Add(m.Data, m.Header.Get(events.HeaderDataContent), m.Header.Get(events.HeaderID), m.Header.Get("ce-lockexpiresat"))
	}
	f.Add([]byte(`{"specversion":"1.0","id":"x","source":"s","type":"t","data_base64":"e30="}`), events.ContentTypeStructured, "", "")
	f.Fuzz(func(t *testing.T, data []byte, contentType, id, lock string) {
		msg := &nats.Msg{Data: data, Header: nats.Header{}}
		if contentType != "" {
			msg.Header.Set(events.HeaderDataContent, contentType)
		}
		if id != "" {
			msg.Header.Set(events.HeaderID, id)
		}
		if lock != "" {
			msg.Header.Set("ce-lockexpiresat", lock)
		}
		task, err := handler.ParseTask(msg)
		if err != nil {
			return
		}
		if task.ID == "" {
			t.Fatal("parsed a task without id")
		}
		if len(task.Payload) > 0 && !json.Valid(task.Payload) {
			t.Fatalf("payload %q is not JSON", task.Payload)
		}
	})
}
