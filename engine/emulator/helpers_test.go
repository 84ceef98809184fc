package emulator

import (
	"bytes"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/examples/models"
	"github.com/pe-bridge/pe-bridge/internal/testutil"
)

type harness struct {
	t     *testing.T
	e     *Emulator
	srv   *httptest.Server
	token string
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.LoadFS(models.FS); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(e)
	t.Cleanup(func() {
		e.Close()
		srv.Close()
	})
	return &harness{t: t, e: e, srv: srv, token: engine.DummyToken}
}

func (h *harness) url(path string) string { return h.srv.URL + engine.BasePath + path }

// raw sends a request with an explicit body and headers.
func (h *harness) raw(method, path string, body []byte, hdr map[string]string) (int, []byte) {
	h.t.Helper()
	req, err := http.NewRequest(method, h.url(path), bytes.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// do sends body (marshalled unless []byte/string) with the harness token.
func (h *harness) do(method, path string, body any) (int, []byte) {
	h.t.Helper()
	var b []byte
	switch v := body.(type) {
	case nil:
	case []byte:
		b = v
	case string:
		b = []byte(v)
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			h.t.Fatal(err)
		}
	}
	return h.raw(method, path, b, map[string]string{"Authorization": "Bearer " + h.token})
}

// must calls do and checks the status; out (if non-nil) receives the JSON body.
func (h *harness) must(status int, method, path string, body, out any) []byte {
	h.t.Helper()
	got, b := h.do(method, path, body)
	if got != status {
		h.t.Fatalf("%s %s: status %d, want %d; body %s", method, path, got, status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			h.t.Fatalf("%s %s: decoding %s: %v", method, path, b, err)
		}
	}
	return b
}

// wantError checks status and the BaseError shape; it returns the body.
func (h *harness) wantError(status int, method, path string, body any) engine.BaseError {
	h.t.Helper()
	got, b := h.do(method, path, body)
	return checkError(h.t, status, got, b)
}

func checkError(t *testing.T, status, got int, b []byte) engine.BaseError {
	t.Helper()
	if got != status {
		t.Fatalf("status %d, want %d; body %s", got, status, b)
	}
	var be engine.BaseError
	if err := json.Unmarshal(b, &be); err != nil {
		t.Fatalf("error body %s is not a BaseError: %v", b, err)
	}
	if be.Code != status || be.ErrorClassName == "" || be.Message == "" || !be.IsEngineError || be.Name != be.ErrorClassName {
		t.Fatalf("bad BaseError for %d: %+v", status, be)
	}
	return be
}

func (h *harness) start(model string, token any, returnOn int) engine.ProcessStartResponse {
	h.t.Helper()
	body := map[string]any{"processModelId": model, "returnOn": returnOn}
	if token != nil {
		body["initialToken"] = token
	}
	var resp engine.ProcessStartResponse
	h.must(200, "POST", "/process_models/"+model+"/start", body, &resp)
	return resp
}

func (h *harness) fetch(worker string, topic any, max int, pollMS, lockMS int64) []engine.ExternalTask {
	h.t.Helper()
	var tasks []engine.ExternalTask
	h.must(200, "POST", "/external_tasks/fetch_and_lock", map[string]any{
		"workerId": worker, "topicName": topic, "maxTasks": max, "longPollingTimeout": pollMS, "lockDuration": lockMS,
	}, &tasks)
	return tasks
}

func (h *harness) fetchOne(worker, topic string) engine.ExternalTask {
	h.t.Helper()
	tasks := h.fetch(worker, topic, 1, 2000, 30000)
	if len(tasks) != 1 {
		h.t.Fatalf("fetch %s: got %d tasks, want 1", topic, len(tasks))
	}
	return tasks[0]
}

func (h *harness) instance(id string) engine.ProcessInstance {
	h.t.Helper()
	pi, ok := h.e.ProcessInstance(id)
	if !ok {
		h.t.Fatalf("instance %s not found", id)
	}
	return pi
}

// eventually waits up to 5 s for cond (testutil.Until).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Until(t, 5*time.Second, what, cond)
}

func jsonEq(t *testing.T, got json.RawMessage, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("bad json %s: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if string(gb) != string(wb) {
		t.Fatalf("json %s, want %s", gb, wb)
	}
}

func modelsFS() fs.FS { return models.FS }
