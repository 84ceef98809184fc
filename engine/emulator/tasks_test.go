package emulator

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/examples/models"
)

// local drives an emulator without a network (usable inside synctest bubbles).
type local struct {
	t *testing.T
	e *Emulator
}

func newLocal(t *testing.T) *local {
	t.Helper()
	e, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.LoadFS(models.FS); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return &local{t: t, e: e}
}

func (l *local) do(method, path string, body any) (int, []byte) {
	l.t.Helper()
	var b []byte
	switch v := body.(type) {
	case nil:
	case string:
		b = []byte(v)
	default:
		b, _ = json.Marshal(v)
	}
	req := httptest.NewRequest(method, engine.BasePath+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+engine.DummyToken)
	rec := httptest.NewRecorder()
	l.e.ServeHTTP(rec, req)
	return rec.Code, rec.Body.Bytes()
}

func (l *local) status(want int, method, path string, body any) []byte {
	l.t.Helper()
	got, b := l.do(method, path, body)
	if got != want {
		l.t.Fatalf("%s %s: %d, want %d: %s", method, path, got, want, b)
	}
	return b
}

func (l *local) fetch(worker, topic string, max int, pollMS, lockMS int64) []engine.ExternalTask {
	l.t.Helper()
	b := l.status(200, "POST", "/external_tasks/fetch_and_lock", map[string]any{"workerId": worker, "topicName": topic, "maxTasks": max, "longPollingTimeout": pollMS, "lockDuration": lockMS})
	var tasks []engine.ExternalTask
	if err := json.Unmarshal(b, &tasks); err != nil {
		l.t.Fatal(err)
	}
	return tasks
}

func (l *local) start(model string, tok string) string {
	l.t.Helper()
	resp, err := l.e.Start(context.Background(), engine.ProcessStartRequest{ProcessModelID: model, InitialToken: json.RawMessage(tok)})
	if err != nil {
		l.t.Fatal(err)
	}
	return resp.ProcessInstanceID
}

func (l *local) inst(id string) engine.ProcessInstance {
	pi, ok := l.e.ProcessInstance(id)
	if !ok {
		l.t.Fatalf("no instance %s", id)
	}
	return pi
}

func TestFetchAndLockBasics(t *testing.T) {
	h := newHarness(t, Config{})
	// Nothing there, no long poll: [] at once.
	st, b := h.do("POST", "/external_tasks/fetch_and_lock", map[string]any{"workerId": "w", "topicName": "SampleExternalTask", "maxTasks": 10, "longPollingTimeout": 0, "lockDuration": 1000})
	if st != 200 || strings.TrimSpace(string(b)) != "[]" {
		t.Fatalf("empty fetch: %d %s", st, b)
	}
	for i := 0; i < 5; i++ {
		h.start("hello_world", map[string]any{"i": i}, 1)
	}
	h.start("parallel", nil, 1)
	before := time.Now()
	tasks := h.fetch("w1", "SampleExternalTask", 3, 0, 30000)
	if len(tasks) != 3 {
		t.Fatalf("maxTasks: got %d", len(tasks))
	}
	for _, tk := range tasks {
		if tk.WorkerID != "w1" || tk.State != "pending" || tk.Topic != "SampleExternalTask" || tk.ProcessModelID != "hello_world" ||
			tk.ProcessDefinitionID != "Definition_hello_world" || tk.OwnerID != engine.DummyUserID || tk.CorrelationID == "" ||
			tk.FlowNodeInstanceID == "" || tk.CreatedAt == nil || tk.IsSingleTry {
			t.Fatalf("task fields %+v", tk)
		}
		if d := tk.LockExpirationTime.Sub(before); d < 29*time.Second || d > 31*time.Second {
			t.Fatalf("lockExpirationTime %v is not now+30s", tk.LockExpirationTime)
		}
	}
	// Locked tasks are not handed out again; maxTasks <= 0 = no limit; topic array.
	tasks = h.fetch("w2", []string{"SampleExternalTask", "BranchA", "BranchB"}, 0, 0, 30000)
	if len(tasks) != 4 {
		t.Fatalf("array fetch: got %d, want 2 hello + 2 parallel", len(tasks))
	}
	if got := h.fetch("w3", "SampleExternalTask", 10, 0, 30000); len(got) != 0 {
		t.Fatalf("all locked, got %d", len(got))
	}
}

func TestPayloadFilterAndExpression(t *testing.T) {
	h := newHarness(t, Config{})
	h.start("hello_world", map[string]any{"region": "eu"}, 1)
	h.start("hello_world", map[string]any{"region": "us"}, 1)
	var tasks []engine.ExternalTask
	h.must(200, "POST", "/external_tasks/fetch_and_lock", map[string]any{"workerId": "w", "topicName": "SampleExternalTask", "maxTasks": 10, "longPollingTimeout": 0, "lockDuration": 5000, "payloadFilter": `/"REGION":"EU"/i`}, &tasks)
	if len(tasks) != 1 {
		t.Fatalf("filter: got %d", len(tasks))
	}
	jsonEq(t, tasks[0].Payload, `{"region":"eu"}`)
	// payload property: a JS expression over token.
	h.start("error_boundary", map[string]any{"customer": "c1", "amount": 5, "secret": "x"}, 1)
	tk := h.fetchOne("w", "CheckCredit")
	jsonEq(t, tk.Payload, `{"customer":"c1","amount":5}`)
}

func TestLongPollWakesOnTaskCreation(t *testing.T) {
	h := newHarness(t, Config{})
	got := make(chan []engine.ExternalTask, 1)
	go func() {
		var tasks []engine.ExternalTask
		st, b := h.do("POST", "/external_tasks/fetch_and_lock", map[string]any{"workerId": "w", "topicName": "SampleExternalTask", "maxTasks": 10, "longPollingTimeout": 20000, "lockDuration": 5000})
		if st == 200 {
			_ = json.Unmarshal(b, &tasks)
		}
		got <- tasks
	}()
	// Wait until the poll is registered, then create the task.
	eventually(t, "long poll registered", func() bool {
		h.e.mu.Lock()
		defer h.e.mu.Unlock()
		q := h.e.topics["SampleExternalTask"]
		return q != nil && len(q.waiters) == 1
	})
	start := time.Now()
	st := h.start("hello_world", map[string]any{"n": 1}, 1)
	select {
	case tasks := <-got:
		if len(tasks) != 1 || tasks[0].ProcessInstanceID != st.ProcessInstanceID || tasks[0].WorkerID != "w" {
			t.Fatalf("woken with %+v", tasks)
		}
		if time.Since(start) > 2*time.Second {
			t.Fatalf("woke after %v", time.Since(start))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("long poll did not wake on task creation")
	}
}

func TestLongPollTimeoutAnswersEmpty(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLocal(t)
		done := make(chan []engine.ExternalTask, 1)
		go func() { done <- l.fetch("w", "SampleExternalTask", 10, 3000, 1000) }()
		synctest.Wait()
		select {
		case <-done:
			t.Fatal("answered before the long poll timeout")
		default:
		}
		time.Sleep(3 * time.Second)
		synctest.Wait()
		select {
		case tasks := <-done:
			if len(tasks) != 0 {
				t.Fatalf("got %d tasks", len(tasks))
			}
		default:
			t.Fatal("no answer after the long poll timeout")
		}
	})
}

func TestLockLifecycle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLocal(t)
		pi := l.start("hello_world", `{"a":1}`)
		tasks := l.fetch("w1", "SampleExternalTask", 1, 0, 1000)
		if len(tasks) != 1 {
			t.Fatalf("got %d", len(tasks))
		}
		id := tasks[0].ID
		tp := "/external_tasks/" + id
		// 404 unknown.
		l.status(404, "PUT", "/external_tasks/nope/finish", map[string]any{"workerId": "w1"})
		l.status(404, "PUT", "/external_tasks/nope/extend_lock", map[string]any{"workerId": "w1", "additionalDuration": 1000})
		l.status(404, "PUT", "/external_tasks/nope/error", map[string]any{"workerId": "w1", "error": map[string]any{"errorCode": "x"}})
		// 423 other worker while locked.
		b := l.status(423, "PUT", tp+"/finish", map[string]any{"workerId": "w2"})
		if !strings.Contains(string(b), "LockedError") || !strings.Contains(string(b), "locked by another worker") {
			t.Fatalf("423 body %s", b)
		}
		l.status(423, "PUT", tp+"/extend_lock", map[string]any{"workerId": "w2", "additionalDuration": 1000})
		l.status(423, "PUT", tp+"/error", map[string]any{"workerId": "w2", "error": map[string]any{"errorCode": "x"}})
		// extend_lock = now + additionalDuration.
		time.Sleep(500 * time.Millisecond)
		l.status(204, "PUT", tp+"/extend_lock", map[string]any{"workerId": "w1", "additionalDuration": 2000})
		time.Sleep(1900 * time.Millisecond) // t=2.4s: locked until 2.5s
		l.status(423, "PUT", tp+"/finish", map[string]any{"workerId": "w2"})
		time.Sleep(200 * time.Millisecond) // t=2.6s: expired if the extension counted from now (2.5s), not from the old expiry (3.0s)
		synctest.Wait()
		// Multi-try expiry → re-delivered to the next fetch (of any worker).
		if s := l.e.Stats(); s.TasksUnlocked != 1 {
			t.Fatalf("unlocked %d", s.TasksUnlocked)
		}
		again := l.fetch("w2", "SampleExternalTask", 1, 0, 1000)
		if len(again) != 1 || again[0].ID != id || again[0].WorkerID != "w2" {
			t.Fatalf("redelivery %+v", again)
		}
		// Now w2 holds it: the original worker gets 423.
		l.status(423, "PUT", tp+"/finish", map[string]any{"workerId": "w1"})
		// After w2's lock expired (not re-locked) a late finish by w1 is accepted.
		time.Sleep(1100 * time.Millisecond)
		l.status(204, "PUT", tp+"/finish", map[string]any{"workerId": "w1", "result": map[string]any{"late": true}})
		// Finished: every further call is 409.
		l.status(409, "PUT", tp+"/finish", map[string]any{"workerId": "w1"})
		l.status(409, "PUT", tp+"/extend_lock", map[string]any{"workerId": "w1", "additionalDuration": 1000})
		l.status(409, "PUT", tp+"/error", map[string]any{"workerId": "w2", "error": map[string]any{"errorCode": "x"}})
		if got := l.inst(pi); got.State != "finished" {
			t.Fatalf("instance %+v", got)
		}
		if n := l.e.TaskCalls(id); n != 7 {
			t.Fatalf("TaskCalls %d, want 7", n)
		}
	})
}

func TestExtendAfterExpiryTakesOwnership(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLocal(t)
		l.start("hello_world", `{}`)
		id := l.fetch("w1", "SampleExternalTask", 1, 0, 1000)[0].ID
		time.Sleep(1500 * time.Millisecond)
		l.status(204, "PUT", "/external_tasks/"+id+"/extend_lock", map[string]any{"workerId": "w2", "additionalDuration": 5000})
		l.status(423, "PUT", "/external_tasks/"+id+"/finish", map[string]any{"workerId": "w1"})
		if got := l.fetch("w3", "SampleExternalTask", 1, 0, 1000); len(got) != 0 {
			t.Fatal("extended task was handed out again")
		}
		l.status(204, "PUT", "/external_tasks/"+id+"/finish", map[string]any{"workerId": "w2"})
	})
}

func TestSingleTryExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLocal(t)
		ev := make(chan engine.EventMessage, 1)
		go func() {
			b := l.status(200, "GET", "/notifications/long_polling/external_task_expired", nil)
			var m engine.EventMessage
			_ = json.Unmarshal(b, &m)
			ev <- m
		}()
		pi := l.start("single_try", `{}`)
		tk := l.fetch("w1", "ChargeOnce", 1, 0, 1000)[0]
		if !tk.IsSingleTry {
			t.Fatal("isSingleTry not set")
		}
		time.Sleep(1001 * time.Millisecond)
		synctest.Wait()
		l.status(409, "PUT", "/external_tasks/"+tk.ID+"/finish", map[string]any{"workerId": "w1"})
		if got := l.fetch("w2", "ChargeOnce", 1, 0, 1000); len(got) != 0 {
			t.Fatal("single-try task was re-delivered")
		}
		got := l.inst(pi)
		if got.State != "error" || !strings.Contains(string(got.Error), "ExternalTaskExpired") {
			t.Fatalf("instance %+v error %s", got, got.Error)
		}
		m := <-ev
		if m.ExternalTaskID != tk.ID || m.IsSingleTry == nil || !*m.IsSingleTry || m.ProcessInstanceID != pi {
			t.Fatalf("event %+v", m)
		}
		if s := l.e.Stats(); s.TasksExpired != 1 || s.InstancesErrored != 1 || s.PendingTasks != 0 {
			t.Fatalf("stats %+v", s)
		}
	})
}

func TestServiceTaskErrors(t *testing.T) {
	h := newHarness(t, Config{})
	// Matching errorCode → boundary path.
	st := h.start("error_boundary", map[string]any{"customer": "c"}, 1)
	tk := h.fetchOne("w", "CheckCredit")
	h.must(204, "PUT", "/external_tasks/"+tk.ID+"/error", map[string]any{"workerId": "w", "error": map[string]any{"errorCode": "credit_rejected", "errorMessage": "no", "errorDetails": map[string]any{"score": 3}}}, nil)
	pi := h.instance(st.ProcessInstanceID)
	if pi.State != "finished" || pi.EndEventID != "error_end" {
		t.Fatalf("instance %+v", pi)
	}
	jsonEq(t, pi.EndToken, `{"errorCode":"credit_rejected","errorMessage":"no","errorDetails":{"score":3}}`)
	h.wantError(409, "PUT", "/external_tasks/"+tk.ID+"/finish", map[string]any{"workerId": "w"})
	// Other errorCode → instance error.
	st = h.start("error_boundary", map[string]any{}, 1)
	tk = h.fetchOne("w", "CheckCredit")
	h.must(204, "PUT", "/external_tasks/"+tk.ID+"/error", map[string]any{"workerId": "w", "error": map[string]any{"errorCode": "boom"}}, nil)
	if pi := h.instance(st.ProcessInstanceID); pi.State != "error" || !strings.Contains(string(pi.Error), "boom") {
		t.Fatalf("instance %+v", pi)
	}
	// No boundary at all → instance error.
	st = h.start("hello_world", nil, 1)
	tk = h.fetchOne("w", "SampleExternalTask")
	h.must(204, "PUT", "/external_tasks/"+tk.ID+"/error", map[string]any{"workerId": "w", "error": map[string]any{"errorCode": "x", "errorMessage": "m"}}, nil)
	if pi := h.instance(st.ProcessInstanceID); pi.State != "error" {
		t.Fatalf("instance %+v", pi)
	}
}

// TestLockRulesOverHTTP checks the §3.3 rules and multi-try re-delivery
// through a real HTTP server with short real lock durations.
func TestLockRulesOverHTTP(t *testing.T) {
	h := newHarness(t, Config{})
	unlocked := make(chan engine.EventMessage, 1)
	go func() {
		st, b := h.do("GET", "/notifications/long_polling/external_task_unlocked", nil)
		var m engine.EventMessage
		if st == 200 {
			_ = json.Unmarshal(b, &m)
		}
		unlocked <- m
	}()
	st := h.start("hello_world", map[string]any{"n": 1}, 1)
	tk := h.fetch("w1", "SampleExternalTask", 1, 0, 60)[0]
	p := "/external_tasks/" + tk.ID
	h.wantError(404, "PUT", "/external_tasks/unknown/finish", map[string]any{"workerId": "w1"})
	if be := h.wantError(423, "PUT", p+"/finish", map[string]any{"workerId": "w2"}); be.ErrorClassName != "LockedError" {
		t.Fatalf("class %s", be.ErrorClassName)
	}
	// After expiry it is re-delivered (any worker) and external_task_unlocked fires.
	var again []engine.ExternalTask
	eventually(t, "re-delivery", func() bool {
		again = h.fetch("w2", "SampleExternalTask", 1, 0, 60000)
		return len(again) == 1
	})
	if again[0].ID != tk.ID || again[0].WorkerID != "w2" {
		t.Fatalf("re-delivered %+v", again[0])
	}
	select {
	case m := <-unlocked:
		if m.ExternalTaskID != tk.ID || m.IsSingleTry == nil || *m.IsSingleTry {
			t.Fatalf("unlocked event %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no external_task_unlocked event")
	}
	h.wantError(423, "PUT", p+"/extend_lock", map[string]any{"workerId": "w1", "additionalDuration": 1000})
	h.must(204, "PUT", p+"/extend_lock", map[string]any{"workerId": "w2", "additionalDuration": 60000}, nil)
	h.must(204, "PUT", p+"/finish", map[string]any{"workerId": "w2", "result": map[string]any{"done": true}}, nil)
	if be := h.wantError(409, "PUT", p+"/finish", map[string]any{"workerId": "w2"}); be.ErrorClassName != "ConflictError" {
		t.Fatalf("class %s", be.ErrorClassName)
	}
	h.wantError(409, "PUT", p+"/error", map[string]any{"workerId": "w1", "error": map[string]any{"errorCode": "x"}})
	if pi := h.instance(st.ProcessInstanceID); pi.State != "finished" {
		t.Fatalf("instance %+v", pi)
	}
	if n := h.e.TaskCalls(tk.ID); n != 4 {
		t.Fatalf("TaskCalls %d, want 4", n)
	}
}
