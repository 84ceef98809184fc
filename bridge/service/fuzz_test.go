package service

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/pe-bridge/pe-bridge/engine"
)

// checkErr asserts the invariants of a decoder's error: a 400 with a message.
func checkErr(t *testing.T, data []byte, e *Error) {
	t.Helper()
	if e.Code != CodeBadRequest || e.Message == "" {
		t.Fatalf("%q: error %+v", data, e)
	}
	if _, err := json.Marshal(ErrorReply{e}); err != nil {
		t.Fatalf("%q: error reply not encodable: %v", data, err)
	}
}

func FuzzStartRequest(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `{"processModelId":"m"}`, `{"processModelId":"m","returnOn":"finished","timeout":"30s"}`,
		`{"processModelId":"m","returnOn":3,"endEventId":"e","timeout":1500}`, `{"processModelId":"m","returnOn":"end_event"}`,
		`{"processModelId":"m","initialToken":{"a":[1,2]},"correlationId":"c","startEventId":"s"}`,
		`{"processModelId":"m","timeout":1e300}`, `{"processModelId":"m","timeout":-1}`, `{"processModelId":"m","returnOn":2.5}`,
		`{"processModelId":"m","initialToken":null,"returnOn":null,"timeout":null}`, `[`, `{"processModelId":"m"} x`, `{"a":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, e := decodeStart(data, 10*time.Minute)
		if e != nil {
			checkErr(t, data, e)
			return
		}
		r := c.req
		if r.ProcessModelID == "" || r.ReturnOn < engine.ReturnOnCreated || r.ReturnOn > engine.ReturnOnEndEvent {
			t.Fatalf("%q: accepted %+v", data, r)
		}
		if (r.ReturnOn == engine.ReturnOnEndEvent) != (r.EndEventID != "") {
			t.Fatalf("%q: endEventId %q with returnOn %d", data, r.EndEventID, r.ReturnOn)
		}
		if c.timeout < 0 || c.timeout > 10*time.Minute {
			t.Fatalf("%q: timeout %s", data, c.timeout)
		}
		if r.InitialToken != nil && !json.Valid(r.InitialToken) {
			t.Fatalf("%q: invalid initial token %q", data, r.InitialToken)
		}
		if _, err := json.Marshal(r); err != nil {
			t.Fatalf("%q: engine request not encodable: %v", data, err)
		}
	})
}

func FuzzUserTaskListRequest(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `{"state":"any"}`, `{"state":"suspended","actualOwnerId":"u","offset":1,"limit":2}`,
		`{"processModelId":"m","processInstanceId":"p","correlationId":"c","flowNodeId":"f"}`, `{"limit":-1}`,
		`{"offset":99999999999999999999}`, `{"state":3}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, e := decodeUserTaskList(data)
		if e != nil {
			checkErr(t, data, e)
			return
		}
		if r.Offset < 0 || r.Limit < 0 || (r.State != "any" && !flowNodeStates[r.State]) {
			t.Fatalf("%q: accepted %+v", data, r)
		}
	})
}

func FuzzFinishRequest(f *testing.F) {
	for _, s := range []string{
		``, `{"userTaskInstanceId":"u"}`, `{"userTaskInstanceId":"u","result":{"approved":true}}`,
		`{"userTaskInstanceId":"u","result":[1]}`, `{"userTaskInstanceId":"u","result":" {}"}`, `{"userTaskInstanceId":"u","result":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, e := decodeFinish(data)
		if e != nil {
			checkErr(t, data, e)
			return
		}
		var obj map[string]any
		if r.UserTaskInstanceID == "" || json.Unmarshal(r.Result, &obj) != nil || obj == nil {
			t.Fatalf("%q: accepted %+v (result %q)", data, r, r.Result)
		}
	})
}

// FuzzOtherRequests runs every remaining decoder on the same input.
func FuzzOtherRequests(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `{"processInstanceId":"p"}`, `{"userTaskInstanceId":"u","actualOwnerId":"o"}`,
		`{"name":"n","payload":{"a":1},"processInstanceId":"p"}`, `{"state":"running","offset":1,"limit":2}`,
		`{"name":"n","payload":null}`, `null`, `{"name":"\u0000"}`,
		`{"processInstanceId":".."}`, `{"userTaskInstanceId":"a/b"}`, `{"name":"n","name":"m"}`,
		`{"name":"n","payload":{"a":[{"b":1,"b":2}]}}`, `{"userTaskInstanceId":"u\u0085"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, dup := duplicateKey(data); dup && json.Valid(data) {
			if _, e := decodeProcessQuery(data); e == nil {
				t.Fatalf("%q: duplicate member accepted", data)
			}
		}
		if r, e := decodeProcessRef(data); e != nil {
			checkErr(t, data, e)
		} else if !pathSafe(r.ProcessInstanceID) {
			t.Fatalf("%q: processInstanceId %q accepted", data, r.ProcessInstanceID)
		}
		if r, e := decodeProcessQuery(data); e != nil {
			checkErr(t, data, e)
		} else if r.Offset < 0 || r.Limit < 0 || (r.State != "" && !processStates[r.State]) {
			t.Fatalf("%q: query %+v accepted", data, r)
		}
		if r, e := decodeUserTaskRef(data); e != nil {
			checkErr(t, data, e)
		} else if !pathSafe(r.UserTaskInstanceID) {
			t.Fatalf("%q: userTaskInstanceId %q accepted", data, r.UserTaskInstanceID)
		}
		if r, e := decodeReserve(data); e != nil {
			checkErr(t, data, e)
		} else if r.UserTaskInstanceID == "" || r.ActualOwnerID == "" {
			t.Fatalf("%q: reserve %+v accepted", data, r)
		}
		if r, e := decodeTrigger(data); e != nil {
			checkErr(t, data, e)
		} else if !pathSafe(r.Name) || (r.Payload != nil && !json.Valid(r.Payload)) {
			t.Fatalf("%q: trigger %+v accepted", data, r)
		}
	})
}

// pathSafe is what an accepted path-segment id must be.
func pathSafe(id string) bool {
	if id == "" || id == "." || id == ".." || len(id) > maxIDBytes || strings.ContainsAny(id, "/\\") {
		return false
	}
	for _, r := range id {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return false
		}
	}
	return true
}

func TestDecodeErrorsNameFields(t *testing.T) {
	cases := []struct {
		data, field, msg string
	}{
		{`{"processModelId":1}`, "processModelId", "processModelId must be a string, not number"},
		{`{"processModelId":"m","bogus":true}`, "bogus", `unknown member "bogus"`},
		{`{"processModelId":"m","returnOn":"soon"}`, "returnOn", `returnOn "soon" is unknown (want "created", "finished" or "end_event")`},
		{`nope`, "", "request is not valid JSON"},
		{`[]`, "", "request must be a JSON object"},
		{`{}`, "processModelId", "processModelId is required"},
	}
	for _, c := range cases {
		_, e := decodeStart([]byte(c.data), time.Minute)
		if e == nil || e.Field != c.field || e.Message != c.msg {
			t.Errorf("%s: got %+v, want field %q message %q", c.data, e, c.field, c.msg)
		}
	}
}
