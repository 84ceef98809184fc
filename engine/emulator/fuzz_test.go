package emulator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/pe-bridge/pe-bridge/engine"
)

func FuzzFetchAndLockDecode(f *testing.F) {
	f.Add([]byte(`{"workerId":"w","topicName":"t","maxTasks":10,"longPollingTimeout":10000,"lockDuration":30000}`))
	f.Add([]byte(`{"workerId":"w","topicName":["a","b","a"],"maxTasks":0,"lockDuration":1,"payloadFilter":"/^.*\"region\":\"eu\".*$/i"}`))
	f.Add([]byte(`{"workerId":"w","topicName":"t","payloadFilter":"/(?<=x)y/gimsuy"}`))
	f.Add([]byte(`{"workerId":"","topicName":null,"maxTasks":1e400}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeFetch(b, time.Minute)
		if err != nil {
			if err.Status != 400 && err.Status != 413 {
				t.Fatalf("status %d", err.Status)
			}
			return
		}
		if r.workerID == "" || len(r.topics) == 0 || r.lockDur <= 0 || r.timeout < 0 || r.timeout > time.Minute {
			t.Fatalf("invalid request accepted: %+v", r)
		}
		matchFilter(r.filter, json.RawMessage(`{"region":"eu"}`))
	})
}

func FuzzRequestDecoders(f *testing.F) {
	seeds := []string{
		`{"workerId":"w","additionalDuration":30000}`,
		`{"workerId":"w","result":{"a":[1,2,{"b":null}]}}`,
		`{"workerId":"w","error":{"errorCode":"E","errorMessage":"m","errorDetails":"stack"}}`,
		`{"processModelId":"hello_world","returnOn":3,"endEventId":"e","initialToken":{"x":1}}`,
		`{"xml":["<a/>","<b/>"],"overwriteExisting":true}`,
		`{"payload":{"x":1}}`, `"str"`, `null`, ``, `{"error":null}`, `{"workerId":1}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		check := func(err *engine.Error) {
			if err != nil && (err.Status < 400 || err.Status >= 500) {
				t.Fatalf("status %d", err.Status)
			}
		}
		_, d, err := decodeExtend(b)
		check(err)
		if err == nil && d <= 0 {
			t.Fatal("non-positive duration accepted")
		}
		_, res, err := decodeFinish(b)
		check(err)
		if err == nil && !json.Valid(res) {
			t.Fatalf("invalid result %q", res)
		}
		_, te, err := decodeTaskError(b)
		check(err)
		if err == nil && te.ErrorCode == "" {
			t.Fatal("empty error code accepted")
		}
		_, err = decodeStart(b, "hello_world")
		check(err)
		_, err = decodeDeploy(b)
		check(err)
		p, err := decodeTrigger(b)
		check(err)
		if err == nil && p != nil && !json.Valid(p) {
			t.Fatalf("invalid payload %q", p)
		}
	})
}

// FuzzServeHTTP sends arbitrary requests to a loaded emulator: no panic, no
// 5xx, every error is a BaseError.
func FuzzServeHTTP(f *testing.F) {
	e, err := New(Config{MaxLongPoll: time.Millisecond, NotificationTimeout: time.Millisecond})
	if err != nil {
		f.Fatal(err)
	}
	defer e.Close()
	if _, err := e.LoadFS(modelsFS()); err != nil {
		f.Fatal(err)
	}
	f.Add("POST", "/external_tasks/fetch_and_lock", []byte(`{"workerId":"w","topicName":"SampleExternalTask","longPollingTimeout":1}`))
	f.Add("POST", "/process_models/hello_world/start", []byte(`{"returnOn":1,"initialToken":{"a":1}}`))
	f.Add("PUT", "/external_tasks/x/finish", []byte(`{"workerId":"w"}`))
	f.Add("GET", "/flow_node_instances?state=suspended,finished&limit=2", []byte(nil))
	f.Add("POST", "/messages/approval_received/trigger", []byte(`{"payload":1}`))
	f.Add("POST", "/process_definitions", []byte(`{"xml":"<definitions/>"}`))
	f.Add("GET", "/notifications/long_polling/process_started", []byte(nil))
	f.Add("DELETE", "/user_tasks/%zz/cancel-reservation", []byte(nil))
	f.Fuzz(func(t *testing.T, method, path string, body []byte) {
		switch method {
		case "GET", "POST", "PUT", "DELETE", "PATCH":
		default:
			return
		}
		req, err := newFuzzRequest(method, path, body)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req.WithContext(ctx))
		if rec.Code >= 500 && rec.Code != 503 {
			t.Fatalf("%s %s: %d %s", method, path, rec.Code, rec.Body.Bytes())
		}
		if rec.Code >= 400 {
			var be engine.BaseError
			if err := json.Unmarshal(rec.Body.Bytes(), &be); err != nil || be.Code != rec.Code {
				t.Fatalf("%s %s: bad error body %q", method, path, rec.Body.Bytes())
			}
		}
	})
}

func newFuzzRequest(method, path string, body []byte) (req *httptestRequest, err error) {
	defer func() {
		if recover() != nil {
			err = errBadURL
		}
	}()
	req = httptest.NewRequest(method, engine.BasePath+path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+engine.DummyToken)
	return req, nil
}

type httptestRequest = http.Request

var errBadURL = errors.New("bad url")
