package emulator

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pe-bridge/pe-bridge/engine"
)

func TestFaultErrorRate(t *testing.T) {
	h := newHarness(t, Config{})
	h.start("hello_world", nil, 1)
	tk := h.fetchOne("w", "SampleExternalTask")
	h.e.SetFaults(Faults{ErrorRate: 1, Status: 503, PathContains: "/external_tasks/"})
	be := h.wantError(503, "PUT", "/external_tasks/"+tk.ID+"/finish", map[string]any{"workerId": "w"})
	if !strings.Contains(string(be.AdditionalInformation), "injected") {
		t.Fatalf("not marked injected: %+v", be)
	}
	// Other paths are untouched.
	h.must(200, "GET", "/process_models", nil, nil)
	h.e.SetFaults(Faults{})
	// No state change happened: the finish now succeeds.
	h.must(204, "PUT", "/external_tasks/"+tk.ID+"/finish", map[string]any{"workerId": "w"}, nil)
	if n := h.e.TaskCalls(tk.ID); n != 2 {
		t.Fatalf("TaskCalls %d", n)
	}
	s := h.e.Stats()
	if s.Finish.Total != 2 || s.Finish.Status5xx != 1 || s.Finish.Status2xx != 1 {
		t.Fatalf("stats %+v", s.Finish)
	}
}

func TestFaultRatesAreSeeded(t *testing.T) {
	h := newHarness(t, Config{})
	count := func() int {
		h.e.SetFaults(Faults{ErrorRate: 0.5, Seed: 7})
		n := 0
		for i := 0; i < 40; i++ {
			if st, _ := h.do("GET", "/info", nil); st == 500 {
				n++
			}
		}
		return n
	}
	a, b := count(), count()
	if a != b || a == 0 || a == 40 {
		t.Fatalf("seeded runs gave %d and %d failures of 40", a, b)
	}
}

func TestFaultDropAndStall(t *testing.T) {
	h := newHarness(t, Config{})
	h.start("hello_world", nil, 1)
	tk := h.fetchOne("w", "SampleExternalTask")
	h.e.SetFaults(Faults{DropRate: 1, PathContains: "/finish"})
	req, _ := http.NewRequest("PUT", h.url("/external_tasks/"+tk.ID+"/finish"), strings.NewReader(`{"workerId":"w"}`))
	req.Header.Set("Authorization", "Bearer "+engine.DummyToken)
	if resp, err := h.srv.Client().Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("dropped request answered %d", resp.StatusCode)
	}
	h.e.SetFaults(Faults{StallRate: 1, PathContains: "/finish"})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ = http.NewRequestWithContext(ctx, "PUT", h.url("/external_tasks/"+tk.ID+"/finish"), strings.NewReader(`{"workerId":"w"}`))
	req.Header.Set("Authorization", "Bearer "+engine.DummyToken)
	if resp, err := h.srv.Client().Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("stalled request answered %d", resp.StatusCode)
	}
	h.e.SetFaults(Faults{})
	// Neither changed state.
	h.must(204, "PUT", "/external_tasks/"+tk.ID+"/finish", map[string]any{"workerId": "w"}, nil)
	eventually(t, "stats", func() bool { return h.e.Stats().Finish.NoAnswer == 2 })
}

func TestFaultLatencyAndAfterEffect(t *testing.T) {
	h := newHarness(t, Config{})
	h.start("hello_world", nil, 1)
	tk := h.fetchOne("w", "SampleExternalTask")
	h.e.SetFaults(Faults{AfterEffectRate: 1, Latency: 20 * time.Millisecond, PathContains: "/external_tasks/"})
	t0 := time.Now()
	be := h.wantError(500, "PUT", "/external_tasks/"+tk.ID+"/finish", map[string]any{"workerId": "w"})
	if time.Since(t0) < 20*time.Millisecond {
		t.Fatal("latency not applied")
	}
	if !strings.Contains(string(be.AdditionalInformation), "applied") {
		t.Fatalf("body %+v", be)
	}
	h.e.SetFaults(Faults{})
	// The finish took effect: a retry gets 409, and the instance is finished.
	h.wantError(409, "PUT", "/external_tasks/"+tk.ID+"/finish", map[string]any{"workerId": "w"})
	if pi := h.instance(tk.ProcessInstanceID); pi.State != "finished" {
		t.Fatalf("instance %+v", pi)
	}
	if n := h.e.TaskCalls(tk.ID); n != 2 {
		t.Fatalf("TaskCalls %d", n)
	}
}

func TestCloseReleasesLongPolls(t *testing.T) {
	h := newHarness(t, Config{})
	done := make(chan int, 2)
	go func() {
		st, _ := h.do("POST", "/external_tasks/fetch_and_lock", map[string]any{"workerId": "w", "topicName": "none", "longPollingTimeout": 60000})
		done <- st
	}()
	go func() {
		st, _ := h.do("GET", "/notifications/long_polling/process_ended", nil)
		done <- st
	}()
	eventually(t, "polls registered", func() bool {
		h.e.mu.Lock()
		defer h.e.mu.Unlock()
		q := h.e.topics["none"]
		return q != nil && len(q.waiters) == 1 && len(h.e.notify["process_ended"]) == 1
	})
	if err := h.e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.e.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	for i := 0; i < 2; i++ {
		select {
		case st := <-done:
			if st != 200 && st != 204 {
				t.Fatalf("status %d", st)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("long poll not released by Close")
		}
	}
	h.wantError(503, "GET", "/info", nil)
}

// AnswerDelay lets the request take effect and holds the answer: a fetch
// locks its tasks although the client that gives up never reads them.
func TestFaultAnswerDelay(t *testing.T) {
	h := newHarness(t, Config{})
	h.start("hello_world", nil, 1)
	h.e.SetFaults(Faults{AnswerDelay: time.Hour, PathContains: "/fetch_and_lock"})
	ctx, cancel := context.WithCancel(context.Background())
	body := strings.NewReader(`{"workerId":"w","topicName":"SampleExternalTask","maxTasks":1,"longPollingTimeout":1000,"lockDuration":30000}`)
	req, _ := http.NewRequestWithContext(ctx, "POST", h.url("/external_tasks/fetch_and_lock"), body)
	req.Header.Set("Authorization", "Bearer "+engine.DummyToken)
	req.Header.Set("Content-Type", "application/json")
	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	// The task gets locked although no answer arrives.
	deadline := time.Now().Add(5 * time.Second)
	for h.e.Stats().TasksLocked == 0 {
		if time.Now().After(deadline) {
			t.Fatal("task not locked by the delayed fetch")
		}
		time.Sleep(5 * time.Millisecond) // polling the emulator
	}
	cancel()
	if err := <-done; err == nil {
		t.Fatal("client got an answer")
	}
	h.e.SetFaults(Faults{})
}
