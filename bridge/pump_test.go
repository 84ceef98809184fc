package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/events"
	"github.com/pe-bridge/pe-bridge/internal/testutil"
)

type harness struct {
	t      *testing.T
	eng    *fakeEngine
	bus    *fakeBus
	p      *Pump
	logs   *testutil.Buffer
	cancel context.CancelFunc
	done   chan error
}

func unitConfig() Config {
	return Config{
		WorkerID:          "w1",
		Topics:            []string{"t1"},
		LockDuration:      3 * time.Second,
		LongPollTimeout:   10 * time.Second,
		Window:            10,
		MaxProcessingTime: 2 * time.Minute,
		HandlerTimeout:    20 * time.Second,
		MaxAttempts:       3,
		RetryBackoff:      time.Second,
		MaxRetryBackoff:   4 * time.Second,
		DrainTimeout:      5 * time.Second,
		Source:            "pe-bridge://test",
	}
}

// startPump runs a pump over fakes; call it inside a synctest bubble.
func startPump(t *testing.T, cfg Config, eng *fakeEngine, bus *fakeBus) *harness {
	t.Helper()
	logs := &testutil.Buffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p, err := newPump(eng, bus, cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	h := startPumpWith(t, p, eng, bus)
	h.logs = logs
	return h
}

// startPumpWith runs p (made with newPump over eng and bus).
func startPumpWith(t *testing.T, p *Pump, eng *fakeEngine, bus *fakeBus) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: t, eng: eng, bus: bus, p: p, logs: &testutil.Buffer{}, cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-h.done
	})
	return h
}

// stop cancels Run and returns its result.
func (h *harness) stop() error {
	h.cancel()
	select {
	case err := <-h.done:
		h.done <- err
		return err
	case <-time.After(time.Hour):
		h.t.Fatal("Run did not return")
		return nil
	}
}

// next returns the next published message within d (virtual time).
func (h *harness) next(d time.Duration) *nats.Msg {
	h.t.Helper()
	select {
	case m := <-h.bus.pub:
		return m
	case <-time.After(d):
		h.t.Fatalf("nothing published within %s", d)
		return nil
	}
}

// none asserts nothing is published within d.
func (h *harness) none(d time.Duration) {
	h.t.Helper()
	select {
	case m := <-h.bus.pub:
		h.t.Fatalf("unexpected publication on %s: %s", m.Subject, m.Data)
	case <-time.After(d):
	}
}

// reported waits for the next successful finish/error call.
// reported waits for the next finish/error call and for the pump to settle
// it (its counters move after the call returned). Only inside a synctest bubble.
func (h *harness) reported(d time.Duration) string {
	h.t.Helper()
	select {
	case id := <-h.eng.reported:
		synctest.Wait()
		return id
	case <-time.After(d):
		h.t.Fatalf("no outcome reported within %s", d)
		return ""
	}
}

func testTask(id, topic string, singleTry bool) engine.ExternalTask {
	return engine.ExternalTask{
		ID: id, Topic: topic, IsSingleTry: singleTry,
		FlowNodeInstanceID: "fni-" + id, CorrelationID: "corr-" + id, ProcessDefinitionID: "def",
		ProcessModelID: "model", ProcessInstanceID: "pi-" + id, OwnerID: "owner",
		Payload: json.RawMessage(`{"n":1}`), State: engine.TaskStatePending,
	}
}

func TestPumpPublishesTaskEventAndFinishes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		eng := newFakeEngine()
		bus := newFakeBus()
		h := startPump(t, unitConfig(), eng, bus)
		eng.add(testTask("a1", "t1", false))
		m := h.next(time.Second)

		if m.Subject != "pe.task.t1" {
			t.Errorf("subject = %q", m.Subject)
		}
		if !strings.HasPrefix(m.Reply, "_INBOX.test.") {
			t.Errorf("reply = %q", m.Reply)
		}
		want := map[string]string{
			"ce-id": "a1", "ce-type": events.TypeTask, "ce-source": "pe-bridge://test", "ce-subject": "t1",
			"ce-specversion": "1.0", "Content-Type": "application/json", "ce-topic": "t1",
			"ce-processinstanceid": "pi-a1", "ce-processmodelid": "model", "ce-correlationid": "corr-a1",
			"ce-flownodeinstanceid": "fni-a1", "ce-singletry": "false",
		}
		for k, v := range want {
			if got := m.Header.Get(k); got != v {
				t.Errorf("header %s = %q, want %q", k, got, v)
			}
		}
		if _, err := time.Parse(time.RFC3339Nano, m.Header.Get("ce-lockexpiresat")); err != nil {
			t.Errorf("ce-lockexpiresat: %v", err)
		}
		if _, err := time.Parse(time.RFC3339Nano, m.Header.Get("ce-time")); err != nil {
			t.Errorf("ce-time: %v", err)
		}
		if tp := m.Header.Get("ce-traceparent"); len(tp) != 55 || !strings.HasPrefix(tp, "00-") || !strings.HasSuffix(tp, "-01") {
			t.Errorf("traceparent = %q", tp)
		}
		if string(m.Data) != `{"n":1}` {
			t.Errorf("data = %s", m.Data)
		}

		bus.reply(m, `{"ok":true}`)
		if id := h.reported(time.Second); id != "a1" {
			t.Fatalf("reported %s", id)
		}
		if got := eng.finishesOf("a1"); len(got) != 1 || string(got[0]) != `{"ok":true}` {
			t.Fatalf("finishes = %s", got)
		}
		// A duplicate reply is dropped: never finish twice.
		bus.reply(m, `{"ok":2}`)
		synctest.Wait()
		if got := eng.finishesOf("a1"); len(got) != 1 {
			t.Fatalf("finished %d times", len(got))
		}
		if err := h.stop(); err != nil {
			t.Fatal(err)
		}
		s := h.p.Stats()
		if s.Finished != 1 || s.Published != 1 || s.LateReplies != 1 || s.InFlight != 0 {
			t.Fatalf("stats = %+v", s)
		}
		if !strings.Contains(h.logs.String(), "task pump stopped") {
			t.Error("no summary line logged")
		}
	})
}

func TestPumpStructuredMode(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := unitConfig()
		cfg.ContentMode = Structured
		eng, bus := newFakeEngine(), newFakeBus()
		h := startPump(t, cfg, eng, bus)
		eng.add(testTask("s1", "t1", true))
		m := h.next(time.Second)
		if ct := m.Header.Get("Content-Type"); ct != events.ContentTypeStructured {
			t.Fatalf("content type = %q", ct)
		}
		var doc map[string]any
		if err := json.Unmarshal(m.Data, &doc); err != nil {
			t.Fatal(err)
		}
		if doc["id"] != "s1" || doc["type"] != events.TypeTask || doc["singletry"] != "true" || doc["subject"] != "t1" {
			t.Fatalf("event = %v", doc)
		}
		if data, ok := doc["data"].(map[string]any); !ok || data["n"] != float64(1) {
			t.Fatalf("data = %v", doc["data"])
		}
		bus.reply(m, ``)
		h.reported(time.Second)
		if got := eng.finishesOf("s1"); len(got) != 1 || got[0] != nil {
			t.Fatalf("finishes = %q", got)
		}
	})
}

func TestPumpExtendsLockUntilReply(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		eng, bus := newFakeEngine(), newFakeBus()
		h := startPump(t, unitConfig(), eng, bus) // lock 3 s: extended when 2 s are left, every 1 s
		eng.add(testTask("slow", "t1", false))
		start := time.Now()
		m := h.next(time.Second)
		time.Sleep(8500 * time.Millisecond) // the handler works for almost 3 lock durations
		if n := eng.extendCount("slow"); n != 8 {
			t.Fatalf("extended %d times in 8.5 s, want 8 (at 1, 2, ... 8 s)", n)
		}
		eng.mu.Lock()
		for i, at := range eng.extends["slow"] {
			if d := at.Sub(start); d != time.Duration(i+1)*time.Second {
				t.Errorf("extension %d at %s", i, d)
			}
		}
		eng.mu.Unlock()
		bus.reply(m, `{"done":1}`)
		h.reported(time.Second)
		time.Sleep(10 * time.Second)
		if n := eng.extendCount("slow"); n != 8 {
			t.Fatalf("extended after the finish: %d", n)
		}
	})
}

func TestPumpCancelledTask(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		eng, bus := newFakeEngine(), newFakeBus()
		eng.extendErr = func(id string, n int) error {
			return &engine.Error{Status: 409, Op: "extend", Body: engine.NewBaseError(409, "finished", nil)}
		}
		h := startPump(t, unitConfig(), eng, bus)
		eng.add(testTask("c1", "t1", false))
		m := h.next(time.Second)
		c := h.next(3 * time.Second)
		if c.Subject != "pe.cancel.t1" || c.Header.Get("ce-type") != events.TypeTaskCancelled ||
			c.Header.Get("ce-id") != "c1" || c.Header.Get("ce-reason") == "" || c.Reply != "" {
			t.Fatalf("cancel event %s %v", c.Subject, c.Header)
		}
		bus.reply(m, `{"late":true}`)
		synctest.Wait()
		if got := eng.finishesOf("c1"); len(got) != 0 {
			t.Fatalf("late reply finished the task: %s", got)
		}
		s := h.p.Stats()
		if s.Cancelled != 1 || s.LateReplies != 1 || s.InFlight != 0 {
			t.Fatalf("stats = %+v", s)
		}
	})
}

func TestPumpLockLost(t *testing.T) {
	for _, status := range []int{404, 423} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				eng, bus := newFakeEngine(), newFakeBus()
				eng.extendErr = func(string, int) error {
					return &engine.Error{Status: status, Op: "extend", Body: engine.NewBaseError(status, "x", nil)}
				}
				h := startPump(t, unitConfig(), eng, bus)
				eng.add(testTask("l1", "t1", false))
				m := h.next(time.Second)
				time.Sleep(3 * time.Second)
				c := h.next(time.Second)
				if c.Subject != "pe.cancel.t1" || !strings.Contains(c.Header.Get("ce-reason"), "lock lost") {
					t.Fatalf("cancel event %s %v", c.Subject, c.Header)
				}
				bus.reply(m, `{}`)
				h.none(time.Second)
				if s := h.p.Stats(); s.Dropped != 1 || s.Finished != 0 || s.Cancelled != 0 {
					t.Fatalf("stats = %+v", s)
				}
			})
		})
	}
}

func TestPumpExtendErrorsRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		eng, bus := newFakeEngine(), newFakeBus()
		eng.extendErr = func(id string, n int) error {
			if n <= 2 {
				return &engine.Error{Status: 503, Op: "extend", Body: engine.NewBaseError(503, "busy", nil)}
			}
			return nil
		}
		h := startPump(t, unitConfig(), eng, bus)
		eng.add(testTask("e1", "t1", false))
		m := h.next(time.Second)
		time.Sleep(1900 * time.Millisecond) // at 1 s, 1.3 s, 1.6 s: every tenth of the lock
		if n := eng.extendCount("e1"); n != 3 {
			t.Fatalf("extend calls before expiry = %d, want 3 (two failures retried)", n)
		}
		bus.reply(m, `1`)
		h.reported(time.Second)
		if s := h.p.Stats(); s.ExtendErrors != 2 || s.LockExtensions != 1 || s.Finished != 1 {
			t.Fatalf("stats = %+v", s)
		}
	})
}

func TestPumpBPMNError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		eng, bus := newFakeEngine(), newFakeBus()
		h := startPump(t, unitConfig(), eng, bus)
		eng.add(testTask("b1", "t1", false))
		m := h.next(time.Second)
		bus.reply(m, `{"$pe":"bpmn_error","code":"NoStock","message":"out","details":{"sku":7}}`)
		h.reported(time.Second)
		errs := eng.errorsOf("b1")
		if len(errs) != 1 || errs[0].ErrorCode != "NoStock" || errs[0].ErrorMessage != "out" || string(errs[0].ErrorDetails) != `{"sku":7}` {
			t.Fatalf("errors = %+v", errs)
		}
		if s := h.p.Stats(); s.BPMNErrors != 1 {
			t.Fatalf("stats = %+v", s)
		}
	})
}

func TestPumpTechnicalFailureRetriesThenReports(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		eng, bus := newFakeEngine(), newFakeBus()
		h := startPump(t, unitConfig(), eng, bus)
		eng.add(testTask("f1", "t1", false))
		m := h.next(time.Second)
		bus.reply(m, `{"$pe":"failure","message":"db down","retryAfterMs":7000}`)
		start := time.Now()
		m2 := h.next(time.Minute)
		if d := time.Since(start); d != 7*time.Second {
			t.Errorf("re-published after %s, want the handler's retryAfter 7s", d)
		}
		if m2.Reply == m.Reply || m2.Header.Get("ce-id") != "f1" {
			t.Fatalf("second attempt reply %q id %q", m2.Reply, m2.Header.Get("ce-id"))
		}
		bus.reply(m, `{"late":1}`) // stale attempt: dropped
		bus.reply(m2, `not json`)
		m3 := h.next(time.Minute)
		bus.reply(m3, `{"$pe":"failure","message":"still down"}`)
		h.reported(time.Second)
		errs := eng.errorsOf("f1")
		if len(errs) != 1 || errs[0].ErrorCode != "TechnicalFailure" || !strings.Contains(errs[0].ErrorMessage, "3 attempts") ||
			!strings.Contains(errs[0].ErrorMessage, "still down") {
			t.Fatalf("errors = %+v", errs)
		}
		if len(eng.finishesOf("f1")) != 0 {
			t.Fatal("finished")
		}
		h.none(time.Minute)
		s := h.p.Stats()
		if s.Failures != 1 || s.Published != 3 || s.Retries != 2 || s.BadReplies != 1 || s.LateReplies != 1 {
			t.Fatalf("stats = %+v", s)
		}
		logs := h.logs.String()
		if !strings.Contains(logs, "malformed reply: not JSON") || !strings.Contains(logs, "task_id=f1") || !strings.Contains(logs, "ce_id=f1") {
			t.Fatalf("log lacks the cause or task id:\n%s", logs)
		}
	})
}

func TestPumpBadReplies(t *testing.T) {
	for name, body := range map[string]string{
		"not json":       `{"a":`,
		"unknown marker": `{"$pe":"maybe"}`,
		"oversize":       `"` + strings.Repeat("x", 200) + `"`,
	} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := unitConfig()
				cfg.MaxAttempts = 1
				cfg.MaxReplyBytes = 100
				eng, bus := newFakeEngine(), newFakeBus()
				h := startPump(t, cfg, eng, bus)
				eng.add(testTask("x1", "t1", false))
				bus.reply(h.next(time.Second), body)
				h.reported(time.Second)
				errs := eng.errorsOf("x1")
				if len(errs) != 1 || errs[0].ErrorCode != "TechnicalFailure" || !strings.Contains(errs[0].ErrorMessage, "malformed reply") {
					t.Fatalf("errors = %+v", errs)
				}
			})
		})
	}
}

func TestPumpHandlerTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		eng, bus := newFakeEngine(), newFakeBus()
		h := startPump(t, unitConfig(), eng, bus)
		eng.add(testTask("h1", "t1", false))
		m := h.next(time.Second)
		start := time.Now()
		m2 := h.next(time.Minute) // after HandlerTimeout (20 s) + backoff (0.5–1 s)
		if d := time.Since(start); d < 20*time.Second || d > 21*time.Second {
			t.Errorf("re-published after %s", d)
		}
		bus.reply(m2, `{"by":"second"}`)
		h.reported(time.Second)
		bus.reply(m, `{"by":"first"}`)
		synctest.Wait()
		if got := eng.finishesOf("h1"); len(got) != 1 || string(got[0]) != `{"by":"second"}` {
			t.Fatalf("finishes = %s", got)
		}
		if s := h.p.Stats(); s.HandlerTimeouts != 1 {
			t.Fatalf("stats = %+v", s)
		}
	})
}

func TestPumpReportRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		eng, bus := newFakeEngine(), newFakeBus()
		eng.reportErr = func(id string, n int) error {
			if n <= 3 {
				return &engine.TransportError{Op: "finish", Err: errors.New("connection reset")}
			}
			return nil
		}
		h := startPump(t, unitConfig(), eng, bus)
		eng.add(testTask("r1", "t1", false))
		bus.reply(h.next(time.Second), `{}`)
		h.reported(time.Minute)
		eng.mu.Lock()
		calls := eng.calls["r1"]
		eng.mu.Unlock()
		if calls != 4 || len(eng.finishesOf("r1")) != 1 {
			t.Fatalf("calls = %d", calls)
		}
		if n := eng.extendCount("r1"); n == 0 {
			t.Fatal("lock not extended while the finish was retried")
		}
	})
}

func TestPumpReportRejected(t *testing.T) {
	for _, status := range []int{404, 409, 423} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				eng, bus := newFakeEngine(), newFakeBus()
				eng.reportErr = func(string, int) error {
					return &engine.Error{Status: status, Op: "finish", Body: engine.NewBaseError(status, "x", nil)}
				}
				h := startPump(t, unitConfig(), eng, bus)
				eng.add(testTask("j1", "t1", false))
				bus.reply(h.next(time.Second), `{}`)
				time.Sleep(time.Minute)
				eng.mu.Lock()
				calls := eng.calls["j1"]
				eng.mu.Unlock()
				if calls != 1 {
					t.Fatalf("finish called %d times, want 1", calls)
				}
				if s := h.p.Stats(); s.Dropped != 1 || s.InFlight != 0 {
					t.Fatalf("stats = %+v", s)
				}
			})
		})
	}
}

func TestPumpWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := unitConfig()
		cfg.Window = 4
		eng, bus := newFakeEngine(), newFakeBus()
		h := startPump(t, cfg, eng, bus)
		for i := range 10 {
			eng.add(testTask(fmt.Sprint("w", i), "t1", false))
		}
		var held []*nats.Msg
		for range 4 {
			held = append(held, h.next(time.Second))
		}
		h.none(10 * time.Second) // the window is full: no fifth task is fetched (handler timeout is 20 s)
		for _, f := range eng.fetchLog() {
			if f.MaxTasks > 4 {
				t.Fatalf("fetched %d tasks with a window of 4", f.MaxTasks)
			}
		}
		bus.reply(held[0], `{}`)
		h.reported(time.Second)
		m := h.next(time.Second) // one free slot (threshold 1 for window 4): one more task
		if got := h.p.Stats().InFlight; got != 4 {
			t.Fatalf("in flight = %d", got)
		}
		for _, x := range append(held[1:], m) {
			bus.reply(x, `{}`)
		}
		for range 5 {
			bus.reply(h.next(time.Second), `{}`)
		}
		for range 9 {
			h.reported(time.Second)
		}
		if s := h.p.Stats(); s.Finished != 10 {
			t.Fatalf("stats = %+v", s)
		}
	})
}

func TestPumpNoRespondersMultiTry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := unitConfig()
		cfg.NoResponderBackoff = time.Second
		cfg.MaxNoResponderBackoff = 4 * time.Second
		eng, bus := newFakeEngine(), newFakeBus()
		bus.setNoResponders(true)
		h := startPump(t, cfg, eng, bus)
		eng.add(testTask("n1", "t1", false), testTask("n2", "t1", false), testTask("n3", "t1", false))
		h.next(time.Second)
		h.next(time.Second)
		h.next(time.Second)
		synctest.Wait()
		if s := h.p.Stats(); s.NoResponders != 3 || s.InFlight != 0 || s.Released != 3 {
			t.Fatalf("stats = %+v", s)
		}
		// Nobody listens: no lock is kept.
		time.Sleep(10 * time.Second)
		for _, id := range []string{"n1", "n2", "n3"} {
			if n := eng.extendCount(id); n != 0 {
				t.Fatalf("%s extended %d times without a handler", id, n)
			}
		}
		// The engine offers tasks again; the paused topic fetches one canary at a time.
		eng.add(testTask("n4", "t1", false), testTask("n5", "t1", false))
		h.next(time.Minute)
		fetches := eng.fetchLog()
		if fetches[len(fetches)-1].MaxTasks != 1 {
			t.Fatalf("canary fetch = %+v", fetches)
		}
		// A handler subscribes: the next canary is answered and the topic resumes.
		bus.setNoResponders(false)
		m := h.next(time.Minute)
		bus.reply(m, `{}`)
		h.reported(time.Second)
		eng.add(testTask("n6", "t1", false), testTask("n7", "t1", false))
		a, b := h.next(time.Second), h.next(time.Second)
		if last := eng.fetchLog(); last[len(last)-1].MaxTasks == 1 {
			t.Fatalf("topic still probing: %+v", last[len(last)-1])
		}
		bus.reply(a, `{}`)
		bus.reply(b, `{}`)
		h.reported(time.Second)
		h.reported(time.Second)
		if !strings.Contains(h.logs.String(), "pausing the topic") || !strings.Contains(h.logs.String(), "topic resumes") {
			t.Fatalf("logs:\n%s", h.logs)
		}
	})
}

func TestPumpNoRespondersSingleTry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := unitConfig()
		cfg.MaxProcessingTime = 30 * time.Second
		eng, bus := newFakeEngine(), newFakeBus()
		bus.setNoResponders(true)
		_ = startPump(t, cfg, eng, bus)
		eng.add(testTask("st", "t1", true))
		start := time.Now()
		n := 0
		for {
			select {
			case <-bus.pub:
				n++
				continue
			case id := <-eng.reported:
				if id != "st" {
					t.Fatal(id)
				}
			}
			break
		}
		if d := time.Since(start); d < 30*time.Second || d > 33*time.Second {
			t.Errorf("reported after %s, want at the max processing time (30 s)", d)
		}
		if n < 4 {
			t.Errorf("published %d times; the single-try task should be re-published with backoff", n)
		}
		if ext := eng.extendCount("st"); ext < 14 {
			t.Errorf("lock extended %d times in 30 s with a 3 s lock", ext)
		}
		errs := eng.errorsOf("st")
		if len(errs) != 1 || errs[0].ErrorCode != "TechnicalFailure" || !strings.Contains(errs[0].ErrorMessage, "max processing time") {
			t.Fatalf("errors = %+v", errs)
		}
	})
}

func TestPumpMaxProcessingTimeMultiTry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := unitConfig()
		cfg.MaxProcessingTimeByTopic = map[string]time.Duration{"t1": 9500 * time.Millisecond}
		eng, bus := newFakeEngine(), newFakeBus()
		h := startPump(t, cfg, eng, bus)
		eng.add(testTask("mp", "t1", false))
		m := h.next(time.Second)
		time.Sleep(15 * time.Second)
		if n := eng.extendCount("mp"); n != 9 {
			t.Fatalf("extended %d times; want 9 (1, 2, ... 9 s) and none past the 9.5 s limit", n)
		}
		bus.reply(m, `{}`)
		synctest.Wait()
		if s := h.p.Stats(); s.Released != 1 || s.Finished != 0 || s.LateReplies != 1 {
			t.Fatalf("stats = %+v", s)
		}
	})
}

func TestPumpPublishErrorSingleTryRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		eng, bus := newFakeEngine(), newFakeBus()
		bus.publishErr = nats.ErrConnectionClosed
		h := startPump(t, unitConfig(), eng, bus)
		eng.add(testTask("pe", "t1", true))
		time.Sleep(5 * time.Second)
		bus.mu.Lock()
		bus.publishErr = nil
		bus.mu.Unlock()
		m := h.next(time.Minute)
		bus.reply(m, `{}`)
		h.reported(time.Second)
	})
}

func TestPumpBadTasks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		eng, bus := newFakeEngine(), newFakeBus()
		h := startPump(t, unitConfig(), eng, bus)
		bad := testTask("bp", "t1", false)
		bad.Payload = json.RawMessage(`{"broken`)
		eng.add(bad)
		h.reported(time.Second)
		errs := eng.errorsOf("bp")
		if len(errs) != 1 || errs[0].ErrorCode != "TechnicalFailure" || !strings.Contains(errs[0].ErrorMessage, "not valid JSON") {
			t.Fatalf("errors = %+v", errs)
		}
		h.none(time.Second)
		if !strings.Contains(h.logs.String(), "task_id=bp") {
			t.Fatal("no log line with the task id")
		}
		if s := h.p.Stats(); s.BadTasks != 1 || s.Failures != 1 {
			t.Fatalf("stats = %+v", s)
		}
	})
}

func TestPumpTaskWithInvalidTopic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		eng, bus := newFakeEngine(), newFakeBus()
		h := startPump(t, unitConfig(), eng, bus)
		// The engine answers a fetch for t1 with a task whose topic cannot be mapped.
		eng.mu.Lock()
		bad := testTask("bt", "", false)
		eng.queue["t1"] = append(eng.queue["t1"], bad)
		close(eng.added)
		eng.added = make(chan struct{})
		eng.mu.Unlock()
		h.reported(time.Second)
		if errs := eng.errorsOf("bt"); len(errs) != 1 || !strings.Contains(errs[0].ErrorMessage, "invalid topic") {
			t.Fatalf("errors = %+v", errs)
		}
	})
}

func TestPumpDeployedTopics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := unitConfig()
		cfg.Topics = nil
		cfg.TopicRefresh = 10 * time.Second
		cfg.HandlerTimeout = time.Hour // held tasks are not re-published during the test
		cfg.MaxProcessingTime = 2 * time.Hour
		eng, bus := newFakeEngine("a", "bad.topic*", ""), newFakeBus()
		h := startPump(t, cfg, eng, bus)
		eng.add(testTask("1", "a", false), testTask("2", "b", false), testTask("3", "bad.topic*", false))
		subjects := map[string]bool{}
		for range 2 {
			subjects[h.next(time.Second).Subject] = true
		}
		if !subjects["pe.task.a"] || !subjects["pe.task.bad%2Etopic%2A"] {
			t.Fatalf("subjects = %v", subjects)
		}
		h.none(5 * time.Second) // topic b is not deployed yet
		eng.setTopics("a", "b")
		if m := h.next(11 * time.Second); m.Subject != "pe.task.b" {
			t.Fatalf("subject = %s", m.Subject)
		}
		if !strings.Contains(h.logs.String(), "skipping topic") {
			t.Fatalf("empty topic not reported:\n%s", h.logs)
		}
		// Topic a is undeployed: its poller stops at the next refresh.
		eng.setTopics("b")
		// The next refresh stops the poller; the fetch it has open runs out.
		time.Sleep(11*time.Second + cfg.LongPollTimeout + cfg.withDefaults().fetchMargin())
		eng.add(testTask("4", "a", false))
		h.none(time.Minute)
		if !strings.Contains(h.logs.String(), "topic no longer deployed") {
			t.Fatalf("logs:\n%s", h.logs)
		}
	})
}

// A task the engine hands out again while the pump holds it (issue 9 item
// 5) keeps its running attempt: no second publication, the first reply
// finishes it.
func TestPumpTaskFetchedAgainKeepsAttempt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		eng, bus := newFakeEngine(), newFakeBus()
		h := startPump(t, unitConfig(), eng, bus)
		eng.add(testTask("dup", "t1", false))
		m1 := h.next(time.Second)
		eng.add(testTask("dup", "t1", false)) // the engine offers it again (our lock lapsed)
		h.none(time.Second)
		bus.reply(m1, `{"from":"first"}`)
		h.reported(time.Second)
		synctest.Wait()
		if got := eng.finishesOf("dup"); len(got) != 1 || string(got[0]) != `{"from":"first"}` {
			t.Fatalf("finishes = %s", got)
		}
		if s := h.p.Stats(); s.InFlight != 0 || s.Refetched != 1 || s.Published != 1 || s.Fetched != 2 {
			t.Fatalf("stats = %+v", s)
		}
	})
}

func TestPumpFetchErrorsBackOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		eng, bus := newFakeEngine(), newFakeBus()
		eng.fetchErr = func(n int) error {
			if n <= 3 {
				return &engine.Error{Status: 500, Op: "fetch", Body: engine.NewBaseError(500, "boom", nil)}
			}
			return nil
		}
		h := startPump(t, unitConfig(), eng, bus)
		eng.add(testTask("fe", "t1", false))
		start := time.Now()
		h.next(time.Minute)
		// Backoff 1 s, 2 s, 4 s with equal jitter: between 3.5 s and 7 s.
		if d := time.Since(start); d < 3500*time.Millisecond || d > 7*time.Second {
			t.Fatalf("first task after %s", d)
		}
		if s := h.p.Stats(); s.FetchErrors != 3 {
			t.Fatalf("stats = %+v", s)
		}
	})
}

func TestPumpDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		eng, bus := newFakeEngine(), newFakeBus()
		h := startPump(t, unitConfig(), eng, bus)
		eng.add(testTask("d1", "t1", false), testTask("d2", "t1", true), testTask("d3", "t1", false))
		m1, m2, m3 := h.next(time.Second), h.next(time.Second), h.next(time.Second)
		ids := map[string]*nats.Msg{}
		for _, m := range []*nats.Msg{m1, m2, m3} {
			ids[m.Header.Get("ce-id")] = m
		}
		synctest.Wait() // the poller sits in its next long poll
		fetchesBefore := len(eng.fetchLog())
		h.cancel()
		time.Sleep(time.Second)
		// During the drain replies are still handled and locks extended.
		bus.reply(ids["d3"], `{"late":"but in time"}`)
		if id := h.reported(time.Second); id != "d3" {
			t.Fatal(id)
		}
		err := <-h.done
		h.done <- err
		if err != nil {
			t.Fatal(err)
		}
		if len(eng.fetchLog()) != fetchesBefore {
			t.Fatal("fetched while draining")
		}
		if n := eng.extendCount("d1"); n < 2 {
			t.Fatalf("d1 extended %d times during the drain", n)
		}
		errs := eng.errorsOf("d2")
		if len(errs) != 1 || errs[0].ErrorCode != "TechnicalFailure" || !strings.Contains(errs[0].ErrorMessage, "shutting down") {
			t.Fatalf("single-try task at shutdown: %+v", errs)
		}
		if len(eng.errorsOf("d1")) != 0 || len(eng.finishesOf("d1")) != 0 {
			t.Fatal("multi-try task reported at shutdown")
		}
		s := h.p.Stats()
		if s.Finished != 1 || s.Failures != 1 || s.Released != 1 || s.InFlight != 0 {
			t.Fatalf("stats = %+v", s)
		}
		bus.reply(ids["d1"], `{}`)
		if len(eng.finishesOf("d1")) != 0 {
			t.Fatal("reply after shutdown finished the task")
		}
	})
}

func TestPumpDrainReturnsAtOnceWhenIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		eng, bus := newFakeEngine(), newFakeBus()
		h := startPump(t, unitConfig(), eng, bus)
		synctest.Wait()
		start := time.Now()
		if err := h.stop(); err != nil {
			t.Fatal(err)
		}
		// The open long poll is not cut off (it may have locked tasks): the
		// stop waits for it, never longer than the long poll plus its margin.
		if d, limit := time.Since(start), unitConfig().LongPollTimeout+unitConfig().withDefaults().fetchMargin(); d > limit {
			t.Fatalf("idle pump took %s to stop, more than %s", d, limit)
		}
		if err := h.p.Close(); err != nil {
			t.Fatal(err)
		}
		if err := h.p.Run(context.Background()); err == nil {
			t.Fatal("second Run succeeded")
		}
	})
}

func TestPumpClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		eng, bus := newFakeEngine(), newFakeBus()
		p, err := newPump(eng, bus, unitConfig(), nil)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- p.Run(context.Background()) }()
		synctest.Wait()
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("zero config: %v", err)
	}
	bad := []Config{
		{LockDuration: 500 * time.Millisecond},
		{Window: -1},
		{HandlerTimeout: -time.Second},
		{RetryBackoff: time.Minute, MaxRetryBackoff: time.Second},
		{Topics: []string{""}},
		{ContentMode: ContentMode(7)},
		{MaxProcessingTimeByTopic: map[string]time.Duration{"x": 0}},
	}
	for _, c := range bad {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: no error", c)
		} else if !strings.HasPrefix(err.Error(), "bridge: ") {
			t.Errorf("error %q lacks the package prefix", err)
		}
	}
	d := Config{}.withDefaults()
	if !strings.HasPrefix(d.WorkerID, "pe-bridge-") || d.Window != 100 || d.LockDuration != 30*time.Second ||
		d.FailureErrorCode != "TechnicalFailure" || d.MaxAttempts != 3 {
		t.Fatalf("defaults = %+v", d)
	}
	if _, err := ParseContentMode("structured"); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseContentMode("xml"); err == nil {
		t.Fatal("xml accepted")
	}
}

func TestBackoff(t *testing.T) {
	for n := 1; n <= 10; n++ {
		for range 100 {
			d := backoff(n, time.Second, 30*time.Second)
			step := min(time.Second<<(n-1), 30*time.Second)
			if d < step/2 || d > step {
				t.Fatalf("backoff(%d) = %s, want in [%s, %s]", n, d, step/2, step)
			}
		}
	}
}

func TestPumpWindowFreesOnReplyButCapsReporting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := unitConfig()
		cfg.Window = 2
		eng, bus := newFakeEngine(), newFakeBus()
		var down atomic.Bool // the engine answers 503 to every finish while set
		down.Store(true)
		eng.reportErr = func(string, int) error {
			if down.Load() {
				return &engine.Error{Status: 503, Op: "finish", Body: engine.NewBaseError(503, "busy", nil)}
			}
			return nil
		}
		h := startPump(t, cfg, eng, bus)
		for i := range 10 {
			eng.add(testTask(fmt.Sprint("c", i), "t1", false))
		}
		// Handlers answer at once: each reply frees a window slot, but the
		// finishes keep failing, so at most 2 windows' worth are held.
		published := 0
		for {
			select {
			case m := <-bus.pub:
				published++
				bus.reply(m, `{}`)
				continue
			case <-time.After(10 * time.Second):
			}
			break
		}
		if published != 4 {
			t.Fatalf("published %d tasks with a window of 2 and failing finishes, want 4", published)
		}
		if s := h.p.Stats(); s.InFlight != 4 || s.ReportErrors == 0 {
			t.Fatalf("stats = %+v", s)
		}
		down.Store(false)
		for range 6 {
			bus.reply(h.next(time.Minute), `{}`)
		}
		for range 10 {
			h.reported(time.Minute)
		}
	})
}

// TestPumpBoundsEngineCalls finishes 500 tasks at once against an engine
// that holds every finish: at most ReportConcurrency finish calls are open,
// the rest wait in the queue, and locks (of the queued tasks and of a task a
// handler still works on) are extended meanwhile, at most
// ExtendConcurrency at once.
func TestPumpBoundsEngineCalls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 500
		eng, bus := newFakeEngine(), newFakeBus()
		gate := make(chan struct{})
		eng.reportGate = gate
		eng.extendDelay = time.Millisecond
		cfg := unitConfig()
		cfg.LockDuration = 30 * time.Second // extended at 10 s; report calls bounded at 2 s, 4 s, 8 s (then retried)
		cfg.Window = 1000
		cfg.ReportConcurrency = 8
		cfg.ExtendConcurrency = 3
		h := startPump(t, cfg, eng, bus)
		eng.add(testTask("slow", "t1", false))
		slow := h.next(time.Second)
		tasks := make([]engine.ExternalTask, n)
		for i := range tasks {
			tasks[i] = testTask(fmt.Sprintf("task-%d", i), "t1", false)
		}
		eng.add(tasks...)
		for range n {
			bus.reply(h.next(time.Second), `{"ok":true}`)
		}
		synctest.Wait()
		if in, most, _, _ := eng.concurrency(); in != cfg.ReportConcurrency || most != cfg.ReportConcurrency {
			t.Fatalf("finish calls open %d, most at once %d; want %d (the bound) while %d outcomes wait",
				in, most, cfg.ReportConcurrency, n)
		}
		if g := runtime.NumGoroutine(); g > 100 {
			t.Errorf("%d goroutines while %d outcomes are queued; queued reports must not hold one each", g, n)
		}

		time.Sleep(10500 * time.Millisecond) // past the first extension (at 10 s), reports still held
		synctest.Wait()
		if c := eng.extendCount("slow"); c != 1 {
			t.Errorf("the handler's task was extended %d times while reports were queued, want 1", c)
		}
		if c := eng.extendCount("task-499"); c != 1 {
			t.Errorf("a queued task was extended %d times, want 1", c)
		}
		if _, _, _, most := eng.concurrency(); most != cfg.ExtendConcurrency {
			t.Errorf("most extend_lock calls at once %d, want %d", most, cfg.ExtendConcurrency)
		}

		close(gate)
		for range n {
			h.reported(time.Minute)
		}
		bus.reply(slow, `{}`)
		h.reported(time.Minute)
		synctest.Wait() // the last report's answer is counted after the call returns
		if _, most, _, _ := eng.concurrency(); most > cfg.ReportConcurrency {
			t.Fatalf("most finish calls at once %d, over the bound %d", most, cfg.ReportConcurrency)
		}
		if s := h.p.Stats(); s.Finished != n+1 {
			t.Fatalf("finished %d, want %d", s.Finished, n+1)
		}
	})
}
