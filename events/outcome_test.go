package events_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pe-bridge/pe-bridge/events"
)

func TestDecodeReply(t *testing.T) {
	cases := []struct {
		name, body, header string
		want               events.Outcome
	}{
		{"plain object", `{"some":"result"}`, "", events.Outcome{Kind: events.KindSuccess, Result: json.RawMessage(`{"some":"result"}`)}},
		{"plain array", ` [1,2] `, "", events.Outcome{Kind: events.KindSuccess, Result: json.RawMessage(`[1,2]`)}},
		{"scalar", `42`, "", events.Outcome{Kind: events.KindSuccess, Result: json.RawMessage(`42`)}},
		{"empty", ``, "", events.Outcome{Kind: events.KindSuccess}},
		{"explicit result", `{"$pe":"result","result":{"$pe":1}}`, "", events.Outcome{Kind: events.KindSuccess, Result: json.RawMessage(`{"$pe":1}`)}},
		{"bpmn error", `{"$pe":"bpmn_error","code":"code_4711","message":"nope","details":{"a":1}}`, "",
			events.Outcome{Kind: events.KindBPMNError, Code: "code_4711", Message: "nope", Details: json.RawMessage(`{"a":1}`)}},
		{"failure", `{"$pe":"failure","message":"db down","retryAfterMs":1500}`, "",
			events.Outcome{Kind: events.KindFailure, Message: "db down", RetryAfter: 1500 * time.Millisecond}},
		{"failure by header", `{"message":"x"}`, "failure", events.Outcome{Kind: events.KindFailure, Message: "x"}},
		{"failure header empty body", ``, "failure", events.Outcome{Kind: events.KindFailure, Message: "handler reported a failure"}},
		{"header result keeps body", `{"a":1}`, "result", events.Outcome{Kind: events.KindSuccess, Result: json.RawMessage(`{"a":1}`)}},
		{"plain reply with code", `{"code":200,"message":"ok"}`, "", events.Outcome{Kind: events.KindSuccess, Result: json.RawMessage(`{"code":200,"message":"ok"}`)}},
		{"plain reply message array", `{"message":["a"]}`, "", events.Outcome{Kind: events.KindSuccess, Result: json.RawMessage(`{"message":["a"]}`)}},
		{"plain reply details", `{"details":{"x":1}}`, "", events.Outcome{Kind: events.KindSuccess, Result: json.RawMessage(`{"details":{"x":1}}`)}},
		{"other case marker is data", `{"$PE":"failure"}`, "", events.Outcome{Kind: events.KindSuccess, Result: json.RawMessage(`{"$PE":"failure"}`)}},
		{"null marker is absent", `{"$pe":null,"a":1}`, "", events.Outcome{Kind: events.KindSuccess, Result: json.RawMessage(`{"$pe":null,"a":1}`)}},
		{"header any case", ``, "FAILURE", events.Outcome{Kind: events.KindFailure, Message: "handler reported a failure"}},
		{"body marker wins", `{"$pe":"bpmn_error","code":"C"}`, "failure", events.Outcome{Kind: events.KindBPMNError, Code: "C"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := events.DecodeReply([]byte(c.body), c.header, 0)
			if err != nil {
				t.Fatal(err)
			}
			if got.Kind != c.want.Kind || string(got.Result) != string(c.want.Result) || got.Code != c.want.Code ||
				got.Message != c.want.Message || string(got.Details) != string(c.want.Details) || got.RetryAfter != c.want.RetryAfter {
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestDecodeReplyMalformed(t *testing.T) {
	cases := []struct{ name, body, header, mention string }{
		{"not json", `hello`, "", "not JSON"},
		{"truncated", `{"a":`, "", "not JSON"},
		{"unknown marker", `{"$pe":"maybe"}`, "", `unknown outcome marker "maybe"`},
		{"marker wrong type", `{"$pe":5}`, "", `"$pe"`},
		{"bpmn without code", `{"$pe":"bpmn_error"}`, "", `"code"`},
		{"code wrong type", `{"$pe":"bpmn_error","code":7}`, "", `"code"`},
		{"negative retry", `{"$pe":"failure","retryAfterMs":-1}`, "", "retryAfterMs"},
		{"unknown header", ``, "later", "unknown Pe-Outcome header"},
		{"bpmn header no body", ``, "bpmn_error", "code"},
		{"oversize", `"` + strings.Repeat("x", 100) + `"`, "", "limit 50"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := events.DecodeReply([]byte(c.body), c.header, 50)
			if !errors.Is(err, events.ErrMalformedReply) {
				t.Fatalf("err = %v, want ErrMalformedReply", err)
			}
			if !strings.Contains(err.Error(), c.mention) {
				t.Fatalf("error %q does not mention %q", err, c.mention)
			}
		})
	}
}

func TestReplyEncodersRoundTrip(t *testing.T) {
	b, err := events.BPMNErrorReply("E1", "msg", map[string]int{"n": 1})
	if err != nil {
		t.Fatal(err)
	}
	o, err := events.DecodeReply(b, "", 0)
	if err != nil || o.Kind != events.KindBPMNError || o.Code != "E1" || o.Message != "msg" || string(o.Details) != `{"n":1}` {
		t.Fatalf("bpmn round trip: %+v, %v", o, err)
	}
	if _, err := events.BPMNErrorReply("", "", nil); err == nil {
		t.Fatal("empty code accepted")
	}
	b, _ = events.FailureReply("later", 2*time.Second)
	o, err = events.DecodeReply(b, "", 0)
	if err != nil || o.Kind != events.KindFailure || o.RetryAfter != 2*time.Second || o.Message != "later" {
		t.Fatalf("failure round trip: %+v, %v", o, err)
	}
	// A result that looks like an envelope is wrapped and comes back intact.
	b, _ = events.ResultReply(map[string]any{"$pe": "bpmn_error", "code": "X"})
	o, err = events.DecodeReply(b, "", 0)
	if err != nil || o.Kind != events.KindSuccess || string(o.Result) != `{"$pe":"bpmn_error","code":"X"}` {
		t.Fatalf("wrapped result: %+v, %v (%s)", o, err, b)
	}
	b, _ = events.ResultReply(map[string]string{"some": "result"})
	if string(b) != `{"some":"result"}` {
		t.Fatalf("plain result wrapped needlessly: %s", b)
	}
}

// FuzzDecodeReply: arbitrary reply bodies and headers never panic; success
// results are valid JSON; failures are always ErrMalformedReply.
func FuzzDecodeReply(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"$pe":"bpmn_error","code":"x"}`, `{"$pe":"failure","retryAfterMs":1e300}`,
		`{"$pe":"result","result":null}`, `[`, `"x"`, `{"$pe":null}`} {
		f.Add([]byte(s), "")
	}
	f.Add([]byte(`{}`), "failure")
	f.Fuzz(func(t *testing.T, body []byte, header string) {
		o, err := events.DecodeReply(body, header, 4096)
		if err != nil {
			if !errors.Is(err, events.ErrMalformedReply) {
				t.Fatalf("error %v is not ErrMalformedReply", err)
			}
			return
		}
		if o.Result != nil && !json.Valid(o.Result) {
			t.Fatalf("result %q is not JSON", o.Result)
		}
		if o.Kind == events.KindBPMNError && o.Code == "" {
			t.Fatal("bpmn error without code")
		}
		if o.RetryAfter < 0 {
			t.Fatal("negative retry")
		}
	})
}

// FuzzDecodeReplyPlain: any JSON value without a "$pe" member decodes,
// without a header, to a success that carries it unchanged.
func FuzzDecodeReplyPlain(f *testing.F) {
	for _, s := range []string{`{"code":200,"message":"ok"}`, `{"message":["a"]}`, `{"details":{"x":1}}`,
		`{"code":7}`, `{"retryAfterMs":"x","result":1}`, `[{"$pe":"failure"}]`, `null`, `"s"`, `{"$PE":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		trimmed := strings.TrimSpace(string(body))
		if trimmed == "" || !json.Valid([]byte(trimmed)) || len(body) > events.DefaultMaxReplyBytes {
			return
		}
		var members map[string]json.RawMessage
		if json.Unmarshal([]byte(trimmed), &members) == nil {
			if raw, ok := members["$pe"]; ok && string(raw) != "null" {
				return
			}
		}
		o, err := events.DecodeReply(body, "", 0)
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		if o.Kind != events.KindSuccess || string(o.Result) != trimmed {
			t.Fatalf("%s decoded to %+v", body, o)
		}
	})
}
