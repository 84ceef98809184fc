package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsserver "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/engine/emulator"
	"github.com/pe-bridge/pe-bridge/events"
	"github.com/pe-bridge/pe-bridge/internal/testutil"
)

// *engine.Client is what cmd/bridge hands to NewPump.
var _ Engine = (*engine.Client)(nil)

// serviceModel is a BPMN process start → external task → end. boundary is
// "", "error:<code>" (error boundary → End_Error) or "timer:<ISO duration>"
// (interrupting timer boundary → End_Timeout).
func serviceModel(id, topic string, singleTry bool, boundary string) []byte {
	props := ""
	if singleTry {
		props = `<bpmn:extensionElements><camunda:properties>
        <camunda:property name="engine.isSingleTry" value="true" />
      </camunda:properties></bpmn:extensionElements>`
	}
	extra, defs := "", ""
	switch {
	case strings.HasPrefix(boundary, "error:"):
		extra = `<bpmn:boundaryEvent id="Boundary_1" attachedToRef="Task_1">
      <bpmn:outgoing>Flow_b</bpmn:outgoing>
      <bpmn:errorEventDefinition id="ErrDef_1" errorRef="Error_1" />
    </bpmn:boundaryEvent>
    <bpmn:sequenceFlow id="Flow_b" sourceRef="Boundary_1" targetRef="End_Error" />
    <bpmn:endEvent id="End_Error"><bpmn:incoming>Flow_b</bpmn:incoming></bpmn:endEvent>`
		defs = fmt.Sprintf(`<bpmn:error id="Error_1" name="E" errorCode="%s" />`, strings.TrimPrefix(boundary, "error:"))
	case strings.HasPrefix(boundary, "timer:"):
		extra = fmt.Sprintf(`<bpmn:boundaryEvent id="Boundary_1" attachedToRef="Task_1" cancelActivity="true">
      <bpmn:outgoing>Flow_b</bpmn:outgoing>
      <bpmn:timerEventDefinition id="TimerDef_1"><bpmn:timeDuration xsi:type="bpmn:tFormalExpression">%s</bpmn:timeDuration></bpmn:timerEventDefinition>
    </bpmn:boundaryEvent>
    <bpmn:sequenceFlow id="Flow_b" sourceRef="Boundary_1" targetRef="End_Timeout" />
    <bpmn:endEvent id="End_Timeout"><bpmn:incoming>Flow_b</bpmn:incoming></bpmn:endEvent>`, strings.TrimPrefix(boundary, "timer:"))
	}
	return []byte(fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
  xmlns:camunda="http://camunda.org/schema/1.0/bpmn" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  id="Definitions_%[1]s" targetNamespace="http://bpmn.io/schema/bpmn">
  <bpmn:process id="%[1]s" name="%[1]s" isExecutable="true">
    <bpmn:startEvent id="Start_1"><bpmn:outgoing>Flow_1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:sequenceFlow id="Flow_1" sourceRef="Start_1" targetRef="Task_1" />
    <bpmn:serviceTask id="Task_1" name="work" camunda:type="external" camunda:topic="%[2]s">
      %[3]s
      <bpmn:incoming>Flow_1</bpmn:incoming><bpmn:outgoing>Flow_2</bpmn:outgoing>
    </bpmn:serviceTask>
    <bpmn:sequenceFlow id="Flow_2" sourceRef="Task_1" targetRef="End_OK" />
    <bpmn:endEvent id="End_OK"><bpmn:incoming>Flow_2</bpmn:incoming></bpmn:endEvent>
    %[4]s
  </bpmn:process>
  %[5]s
</bpmn:definitions>`, id, topic, props, extra, defs))
}

// compEnv is one engine emulator (over HTTP), one embedded nats-server and
// the pump's NATS connection.
type compEnv struct {
	t    testing.TB
	emu  *emulator.Emulator
	eng  *engine.Client
	ns   *server.Server
	port int
	nc   *nats.Conn
	logs *testutil.Buffer
}

func newCompEnv(t testing.TB, models ...[]byte) *compEnv {
	t.Helper()
	emu, err := emulator.New(emulator.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range models {
		if _, err := emu.Deploy(m); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer(emu)
	t.Cleanup(func() {
		_ = emu.Close()
		srv.Close()
	})
	eng, err := engine.NewClient(srv.URL, engine.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close() })
	e := &compEnv{t: t, emu: emu, eng: eng, logs: &testutil.Buffer{}}
	e.startNATS(-1)
	e.nc = e.connect("bridge")
	return e
}

func (e *compEnv) startNATS(port int) {
	e.t.Helper()
	opts := natsserver.DefaultTestOptions
	opts.Port = port
	e.ns = natsserver.RunServer(&opts)
	e.port = e.ns.Addr().(*net.TCPAddr).Port
	ns := e.ns
	e.t.Cleanup(ns.Shutdown)
}

// restartNATS shuts the server down and starts a new one on the same port;
// every connection reconnects.
func (e *compEnv) restartNATS() {
	e.ns.Shutdown()
	e.ns.WaitForShutdown()
	e.startNATS(e.port)
}

func (e *compEnv) connect(name string) *nats.Conn {
	e.t.Helper()
	nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", e.port), nats.Name(name),
		nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond), nats.ReconnectJitter(0, 0))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close)
	return nc
}

func compConfig(topics ...string) Config {
	return Config{
		WorkerID:           "bridge-test",
		Topics:             topics,
		LockDuration:       time.Second,
		LongPollTimeout:    time.Second,
		HandlerTimeout:     5 * time.Second,
		RetryBackoff:       50 * time.Millisecond,
		MaxRetryBackoff:    200 * time.Millisecond,
		NoResponderBackoff: 50 * time.Millisecond,
		// Reconnects are fast in tests; a long pause would only slow them.
		MaxNoResponderBackoff: 300 * time.Millisecond,
		DrainTimeout:          5 * time.Second,
		Source:                "pe-bridge://test",
	}
}

// runPump starts a pump; the returned stop cancels it and waits for Run.
func (e *compEnv) runPump(cfg Config) (*Pump, func()) {
	e.t.Helper()
	logger := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	p, err := NewPump(e.eng, e.nc, cfg, logger)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("Run: %v", err)
			}
		})
	}
	e.t.Cleanup(stop)
	return p, stop
}

// handle subscribes a handler replica (own connection) to topic in the
// default queue group.
func (e *compEnv) handle(topic string, fn func(m *nats.Msg)) *nats.Subscription {
	e.t.Helper()
	subject, err := events.TaskSubject(topic)
	if err != nil {
		e.t.Fatal(err)
	}
	nc := e.connect("handler")
	sub, err := nc.QueueSubscribe(subject, events.DefaultQueueGroup, fn)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		e.t.Fatal(err)
	}
	return sub
}

func (e *compEnv) start(model string, token any) string {
	e.t.Helper()
	var it json.RawMessage
	if token != nil {
		b, err := json.Marshal(token)
		if err != nil {
			e.t.Fatal(err)
		}
		it = b
	}
	resp, err := e.emu.Start(context.Background(), engine.ProcessStartRequest{ProcessModelID: model, InitialToken: it})
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.ProcessInstanceID
}

// waitDone polls until every instance left the running state.
func (e *compEnv) waitDone(timeout time.Duration, ids ...string) map[string]engine.ProcessInstance {
	e.t.Helper()
	out := make(map[string]engine.ProcessInstance, len(ids))
	deadline := time.Now().Add(timeout)
	for _, id := range ids {
		for {
			pi, ok := e.emu.ProcessInstance(id)
			if !ok {
				e.t.Fatalf("instance %s unknown", id)
			}
			if pi.State != engine.InstanceRunning {
				out[id] = pi
				break
			}
			if time.Now().After(deadline) {
				e.t.Fatalf("instance %s still running after %s (emulator %+v)\nlogs:\n%s", id, timeout, e.emu.Stats(), e.logs)
			}
			time.Sleep(5 * time.Millisecond) // polling the emulator's state
		}
	}
	return out
}

// settled waits until the pump holds no task: the engine answered every
// outcome call (instance states change before the HTTP answer arrives).
func settled(t testing.TB, p *Pump) PumpStats {
	t.Helper()
	waitUntil(t, 10*time.Second, "no task in flight", func() bool { return p.Stats().InFlight == 0 })
	return p.Stats()
}

func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testutil.Until(t, timeout, what, cond)
}

func respond(t testing.TB, m *nats.Msg, body string) {
	if err := m.Respond([]byte(body)); err != nil {
		t.Errorf("respond: %v", err)
	}
}

func TestComponentHelloWorld(t *testing.T) {
	e := newCompEnv(t, serviceModel("hello_world", "SampleExternalTask", false, ""))
	got := make(chan *nats.Msg, 1)
	e.handle("SampleExternalTask", func(m *nats.Msg) {
		got <- m
		respond(t, m, `{"greeting":"hello"}`)
	})
	p, stop := e.runPump(compConfig()) // every deployed topic
	id := e.start("hello_world", map[string]any{"name": "world"})
	pi := e.waitDone(10*time.Second, id)[id]
	if pi.State != engine.InstanceFinished || pi.EndEventID != "End_OK" {
		t.Fatalf("instance = %+v", pi)
	}
	m := <-got
	if m.Header.Get("ce-type") != events.TypeTask || m.Header.Get("ce-processinstanceid") != id ||
		m.Header.Get("ce-subject") != "SampleExternalTask" || m.Header.Get("ce-source") != "pe-bridge://test" {
		t.Fatalf("headers = %v", m.Header)
	}
	var payload map[string]any
	if err := json.Unmarshal(m.Data, &payload); err != nil {
		t.Fatalf("payload %s: %v", m.Data, err)
	}
	if tid := m.Header.Get("ce-id"); e.emu.TaskCalls(tid) != 1 {
		t.Fatalf("finish calls = %d", e.emu.TaskCalls(tid))
	}
	if !strings.Contains(string(pi.EndToken), "hello") {
		t.Errorf("end token %s lacks the result", pi.EndToken)
	}
	stop()
	if s := p.Stats(); s.Finished != 1 || s.InFlight != 0 {
		t.Fatalf("stats = %+v", s)
	}
}

func TestComponentManyTasksQueueGroup(t *testing.T) {
	topics := []string{"alpha", "beta.v2", "gamma"}
	var models [][]byte
	for i, topic := range topics {
		models = append(models, serviceModel(fmt.Sprint("m", i), topic, false, ""))
	}
	e := newCompEnv(t, models...)
	var mu sync.Mutex
	seen := map[string]int{}
	for range 4 {
		for _, topic := range topics {
			e.handle(topic, func(m *nats.Msg) {
				mu.Lock()
				seen[m.Header.Get("ce-id")]++
				mu.Unlock()
				respond(t, m, `{"ok":true}`)
			})
		}
	}
	cfg := compConfig(topics...)
	cfg.LockDuration = 5 * time.Second
	p, _ := e.runPump(cfg)
	const n = 1000
	ids := make([]string, 0, n)
	for i := range n {
		ids = append(ids, e.start(fmt.Sprint("m", i%3), map[string]int{"i": i}))
	}
	for id, pi := range e.waitDone(60*time.Second, ids...) {
		if pi.State != engine.InstanceFinished {
			t.Fatalf("instance %s: %+v", id, pi)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != n {
		t.Fatalf("handlers saw %d distinct tasks, want %d", len(seen), n)
	}
	for tid := range seen {
		if c := e.emu.TaskCalls(tid); c != 1 {
			t.Fatalf("task %s: %d finish/error calls", tid, c)
		}
	}
	if s := settled(t, p); s.Finished != n {
		t.Fatalf("stats = %+v", s)
	}
}

// slowHandler answers each task after d (a timer, not a blocked goroutine).
func slowHandler(t testing.TB, d time.Duration, count *atomic.Int32) func(*nats.Msg) {
	return func(m *nats.Msg) {
		count.Add(1)
		time.AfterFunc(d, func() { respond(t, m, `{"slow":true}`) })
	}
}

func TestComponentSlowHandlerKeepsLock(t *testing.T) {
	for _, single := range []bool{false, true} {
		t.Run(fmt.Sprint("singleTry=", single), func(t *testing.T) {
			t.Parallel()
			e := newCompEnv(t, serviceModel("slow", "slow", single, ""))
			var deliveries atomic.Int32
			cfg := compConfig("slow")
			e.handle("slow", slowHandler(t, 3*cfg.LockDuration, &deliveries))
			p, _ := e.runPump(cfg)
			id := e.start("slow", nil)
			pi := e.waitDone(15*time.Second, id)[id]
			if pi.State != engine.InstanceFinished {
				t.Fatalf("instance = %+v", pi)
			}
			st := e.emu.Stats()
			if deliveries.Load() != 1 || st.TasksUnlocked != 0 || st.TasksExpired != 0 {
				t.Fatalf("deliveries %d, emulator %+v", deliveries.Load(), st)
			}
			if s := settled(t, p); s.LockExtensions < 3 || s.Finished != 1 {
				t.Fatalf("stats = %+v", s)
			}
		})
	}
}

func TestComponentTimerBoundaryCancels(t *testing.T) {
	e := newCompEnv(t, serviceModel("timer_cancel", "cancelme", false, "timer:PT1S"))
	cancels := make(chan *nats.Msg, 1)
	hnc := e.connect("canceller")
	if _, err := hnc.Subscribe(events.CancelPrefix+"cancelme", func(m *nats.Msg) { cancels <- m }); err != nil {
		t.Fatal(err)
	}
	if err := hnc.Flush(); err != nil {
		t.Fatal(err)
	}
	tasks := make(chan *nats.Msg, 1)
	e.handle("cancelme", func(m *nats.Msg) { tasks <- m }) // holds the task, replies late
	p, _ := e.runPump(compConfig("cancelme"))
	id := e.start("timer_cancel", nil)
	task := <-tasks
	var c *nats.Msg
	select {
	case c = <-cancels:
	case <-time.After(10 * time.Second):
		t.Fatal("no cancel event")
	}
	tid := task.Header.Get("ce-id")
	if c.Header.Get("ce-id") != tid || c.Header.Get("ce-type") != events.TypeTaskCancelled || c.Header.Get("ce-reason") == "" {
		t.Fatalf("cancel event headers %v", c.Header)
	}
	respond(t, task, `{"too":"late"}`)
	pi := e.waitDone(10*time.Second, id)[id]
	if pi.EndEventID != "End_Timeout" {
		t.Fatalf("instance = %+v", pi)
	}
	waitUntil(t, 5*time.Second, "late reply dropped", func() bool { return p.Stats().LateReplies == 1 })
	if n := e.emu.TaskCalls(tid); n != 0 {
		t.Fatalf("late reply reached the engine: %d calls", n)
	}
	if s := p.Stats(); s.Cancelled != 1 || s.Finished != 0 {
		t.Fatalf("stats = %+v", s)
	}
}

func TestComponentSilentHandlerRetriedByAnother(t *testing.T) {
	e := newCompEnv(t, serviceModel("silent", "silent", false, ""))
	first := make(chan *nats.Msg, 1)
	silent := e.handle("silent", func(m *nats.Msg) { first <- m }) // never replies
	cfg := compConfig("silent")
	cfg.HandlerTimeout = 500 * time.Millisecond
	p, _ := e.runPump(cfg)
	id := e.start("silent", nil)
	m1 := <-first
	// The silent replica goes away; a healthy one takes over.
	if err := silent.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	var second atomic.Value
	e.handle("silent", func(m *nats.Msg) {
		second.Store(m.Header.Get("ce-id"))
		respond(t, m, `{"by":"second"}`)
	})
	pi := e.waitDone(10*time.Second, id)[id]
	if pi.State != engine.InstanceFinished || !strings.Contains(string(pi.EndToken), "second") {
		t.Fatalf("instance = %+v", pi)
	}
	tid := m1.Header.Get("ce-id")
	if second.Load() != tid || e.emu.TaskCalls(tid) != 1 {
		t.Fatalf("second saw %v, calls %d", second.Load(), e.emu.TaskCalls(tid))
	}
	if s := settled(t, p); s.HandlerTimeouts != 1 || s.Retries != 1 {
		t.Fatalf("stats = %+v", s)
	}
}

func TestComponentBPMNErrorTakesBoundary(t *testing.T) {
	e := newCompEnv(t, serviceModel("bpmnerr", "bpmnerr", false, "error:NoStock"))
	e.handle("bpmnerr", func(m *nats.Msg) {
		body, _ := events.BPMNErrorReply("NoStock", "sold out", map[string]int{"sku": 7})
		respond(t, m, string(body))
	})
	p, _ := e.runPump(compConfig("bpmnerr"))
	id := e.start("bpmnerr", nil)
	pi := e.waitDone(10*time.Second, id)[id]
	if pi.State != engine.InstanceFinished || pi.EndEventID != "End_Error" {
		t.Fatalf("instance = %+v", pi)
	}
	if s := settled(t, p); s.BPMNErrors != 1 {
		t.Fatalf("stats = %+v", s)
	}
}

func TestComponentTechnicalFailure(t *testing.T) {
	e := newCompEnv(t, serviceModel("techfail", "techfail", false, ""))
	var deliveries atomic.Int32
	var tid atomic.Value
	e.handle("techfail", func(m *nats.Msg) {
		deliveries.Add(1)
		tid.Store(m.Header.Get("ce-id"))
		body, _ := events.FailureReply("database down", 0)
		respond(t, m, string(body))
	})
	p, _ := e.runPump(compConfig("techfail"))
	id := e.start("techfail", nil)
	pi := e.waitDone(10*time.Second, id)[id]
	if pi.State != engine.InstanceError || !strings.Contains(string(pi.Error), "TechnicalFailure") {
		t.Fatalf("instance = %+v", pi)
	}
	if deliveries.Load() != 3 || e.emu.TaskCalls(tid.Load().(string)) != 1 {
		t.Fatalf("deliveries %d, calls %d", deliveries.Load(), e.emu.TaskCalls(tid.Load().(string)))
	}
	if s := settled(t, p); s.Failures != 1 || s.Retries != 2 {
		t.Fatalf("stats = %+v", s)
	}
	if !strings.Contains(e.logs.String(), "database down") {
		t.Fatalf("cause not logged:\n%s", e.logs)
	}
}

func TestComponentBadReplies(t *testing.T) {
	e := newCompEnv(t, serviceModel("bad", "bad", false, ""))
	cases := map[string]string{ // a word the cause must contain -> reply body
		"not JSON":     `{"x":`,
		"1024":         `"` + strings.Repeat("x", 2000) + `"`,
		"unknown":      `{"$pe":"later"}`,
		"non-empty":    `{"$pe":"bpmn_error"}`,
		"must be":      `{"$pe":"failure","retryAfterMs":"soon"}`,
		"out of range": `{"$pe":"failure","retryAfterMs":-5}`,
		"fine":         `{"ok":1}`,
	}
	e.handle("bad", func(m *nats.Msg) {
		var in struct{ Case string }
		if err := json.Unmarshal(m.Data, &in); err != nil {
			t.Errorf("payload %s: %v", m.Data, err)
		}
		respond(t, m, cases[in.Case])
	})
	cfg := compConfig("bad")
	cfg.MaxAttempts = 1
	cfg.MaxReplyBytes = 1024
	p, _ := e.runPump(cfg)
	ids := map[string]string{}
	for want := range cases {
		ids[e.start("bad", map[string]string{"case": want})] = want
	}
	for id, want := range ids {
		pi := e.waitDone(10*time.Second, id)[id]
		if want == "fine" {
			if pi.State != engine.InstanceFinished {
				t.Fatalf("good reply among bad ones: %+v", pi)
			}
			continue
		}
		if pi.State != engine.InstanceError || !strings.Contains(string(pi.Error), "malformed reply") ||
			!strings.Contains(string(pi.Error), want) {
			t.Fatalf("%s: instance = %+v", want, pi)
		}
	}
	if s := settled(t, p); s.BadReplies != 6 || s.Failures != 6 || s.Finished != 1 {
		t.Fatalf("stats = %+v", s)
	}
	if !strings.Contains(e.logs.String(), "task_id=") || !strings.Contains(e.logs.String(), "malformed reply") {
		t.Fatalf("logs:\n%s", e.logs)
	}
}

func TestComponentNoResponders(t *testing.T) {
	e := newCompEnv(t, serviceModel("nobody", "nobody", false, ""))
	p, _ := e.runPump(compConfig("nobody"))
	ids := []string{e.start("nobody", nil), e.start("nobody", nil)}
	waitUntil(t, 5*time.Second, "no-responder answers", func() bool { return p.Stats().NoResponders >= 2 })
	// Nobody listens: the pump keeps nothing locked and holds at most a canary.
	if s := p.Stats(); s.InFlight > 1 || s.LockExtensions != 0 {
		t.Fatalf("stats = %+v", s)
	}
	if st := e.emu.Stats(); st.Extend.Total != 0 {
		t.Fatalf("locks extended without a handler: %+v", st.Extend)
	}
	// The topic is paused: it fetches one canary at a time (the pause and the
	// canary fetch themselves are checked in TestPumpNoRespondersMultiTry).
	p.mu.Lock()
	ts := p.topics["nobody"]
	p.mu.Unlock()
	ts.mu.Lock()
	probing := ts.probing
	ts.mu.Unlock()
	if !probing {
		t.Fatal("topic not paused after no-responder answers")
	}
	e.handle("nobody", func(m *nats.Msg) { respond(t, m, `{"late":"handler"}`) })
	for id, pi := range e.waitDone(15*time.Second, ids...) {
		if pi.State != engine.InstanceFinished {
			t.Fatalf("%s: %+v", id, pi)
		}
	}
	if !strings.Contains(e.logs.String(), "pausing the topic") {
		t.Fatalf("logs:\n%s", e.logs)
	}
}

func TestComponentNATSRestart(t *testing.T) {
	e := newCompEnv(t, serviceModel("restart", "restart", false, ""))
	var handled atomic.Int32
	restarted := make(chan struct{})
	for range 2 {
		e.handle("restart", func(m *nats.Msg) {
			if handled.Add(1) == 50 {
				go func() { // mid-flight, from outside the handler callback
					defer close(restarted)
					e.restartNATS()
				}()
			}
			time.AfterFunc(20*time.Millisecond, func() { _ = m.Respond([]byte(`{"ok":true}`)) })
		})
	}
	cfg := compConfig("restart")
	cfg.Window = 20
	cfg.HandlerTimeout = time.Second
	p, _ := e.runPump(cfg)
	const n = 200
	ids := make([]string, 0, n)
	for range n {
		ids = append(ids, e.start("restart", nil))
	}
	for id, pi := range e.waitDone(60*time.Second, ids...) {
		if pi.State != engine.InstanceFinished {
			t.Fatalf("%s: %+v", id, pi)
		}
	}
	<-restarted
	if st := e.emu.Stats(); st.Finish.Status4xx != 0 || st.Error.Total != 0 || st.TasksFinished != n {
		t.Fatalf("emulator %+v", st)
	}
	if r := e.nc.Stats().Reconnects; r == 0 {
		t.Fatal("the pump's connection never reconnected")
	}
	t.Logf("pump %+v", p.Stats())
}

// Handlers that come back later than the bridge after a nats-server
// restart: the multi-try tasks that were awaiting replies keep their locks
// and reach the handlers once they are back, instead of being left to lapse
// on "no responders" (which would hold them for a whole lock duration).
func TestComponentReconnectHoldsForSlowHandlers(t *testing.T) {
	e := newCompEnv(t, serviceModel("slowback", "slowback", false, ""))
	const n = 10
	var restarted atomic.Bool
	got := make(chan struct{}, n)
	subject, _ := events.TaskSubject("slowback")
	// The handler's reconnect wait is 3 s; the bridge's 20 ms.
	hc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", e.port), nats.MaxReconnects(-1),
		nats.ReconnectWait(3*time.Second), nats.ReconnectJitter(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	if _, err := hc.QueueSubscribe(subject, events.DefaultQueueGroup, func(m *nats.Msg) {
		got <- struct{}{}
		if restarted.Load() {
			_ = m.Respond([]byte(`{"ok":true}`))
		} // before the restart: the reply would be lost anyway
	}); err != nil {
		t.Fatal(err)
	}
	if err := hc.Flush(); err != nil {
		t.Fatal(err)
	}
	cfg := compConfig("slowback")
	cfg.LockDuration = 30 * time.Second // a lapse would outlast the test's wait
	p, _ := e.runPump(cfg)
	ids := make([]string, 0, n)
	for range n {
		ids = append(ids, e.start("slowback", nil))
	}
	for range n {
		<-got
	}
	restarted.Store(true)
	e.restartNATS()
	for id, pi := range e.waitDone(20*time.Second, ids...) {
		if pi.State != engine.InstanceFinished {
			t.Fatalf("%s: %+v", id, pi)
		}
	}
	if s := settled(t, p); s.Released != 0 || s.Finished != n || s.NoResponders == 0 {
		t.Fatalf("stats = %+v, want %d finished, 0 released, and some no-responder answers while the handler was away", s, n)
	}
}

func TestComponentEngineFaults(t *testing.T) {
	e := newCompEnv(t, serviceModel("faulty", "faulty", false, ""))
	var mu sync.Mutex
	seen := map[string]bool{}
	for range 2 {
		e.handle("faulty", func(m *nats.Msg) {
			mu.Lock()
			seen[m.Header.Get("ce-id")] = true
			mu.Unlock()
			respond(t, m, `{"ok":true}`)
		})
	}
	cfg := compConfig("faulty")
	cfg.LockDuration = 2 * time.Second
	p, _ := e.runPump(cfg)
	e.emu.SetFaults(emulator.Faults{ErrorRate: 0.2, Status: 503, Seed: 7})
	const n = 200
	ids := make([]string, 0, n)
	for range n {
		ids = append(ids, e.start("faulty", nil))
	}
	for id, pi := range e.waitDone(60*time.Second, ids...) {
		if pi.State != engine.InstanceFinished {
			t.Fatalf("%s: %+v", id, pi)
		}
	}
	st := e.emu.Stats()
	// Every task finished once: a second successful finish would be answered 409.
	if st.TasksFinished != n || st.Finish.Status2xx != n || st.Finish.Status4xx != 0 || st.Finish.Status5xx == 0 {
		t.Fatalf("emulator %+v", st)
	}
	mu.Lock()
	for tid := range seen {
		if e.emu.TaskCalls(tid) < 1 {
			t.Fatalf("task %s never reported", tid)
		}
	}
	mu.Unlock()
	s := settled(t, p)
	if s.Finished != n || s.ReportErrors == 0 || s.FetchErrors == 0 {
		t.Fatalf("stats = %+v", s)
	}
}

// A finish or error that took effect but whose answer was lost (the engine
// answers 500 after applying it): the retry gets 409, and the task counts
// as finished or errored once, not as dropped.
func TestComponentLostAcknowledgement(t *testing.T) {
	e := newCompEnv(t, serviceModel("lostack_ok", "lostack-ok", false, ""), serviceModel("lostack_err", "lostack-err", true, "error:Boom"))
	e.handle("lostack-ok", func(m *nats.Msg) { respond(t, m, `{"ok":true}`) })
	e.handle("lostack-err", func(m *nats.Msg) { respond(t, m, `{"$pe":"bpmn_error","code":"Boom","message":"no"}`) })
	cfg := compConfig("lostack-ok", "lostack-err")
	rec := &recorder{}
	cfg.Observer = rec
	p, _ := e.runPump(cfg)
	for _, c := range []struct{ path, model string }{{"/finish", "lostack_ok"}, {"/error", "lostack_err"}} {
		e.emu.SetFaults(emulator.Faults{AfterEffectRate: 1, PathContains: c.path})
		e.waitDone(30*time.Second, e.start(c.model, nil)) // the first call took effect
		e.emu.SetFaults(emulator.Faults{})                // the retry gets the engine's own answer
		settled(t, p)
	}
	if s := p.Stats(); s.Finished != 1 || s.BPMNErrors != 1 || s.Dropped != 0 || s.LostAcks != 2 {
		t.Fatalf("stats = %+v, want 1 finished, 1 BPMN error, 0 dropped, 2 lost acknowledgements", s)
	}
	if n, m := rec.has("ack lost lostack-ok"), rec.has("ack lost lostack-err"); n != 1 || m != 1 {
		t.Fatalf("observer saw %d and %d lost acknowledgements, want 1 and 1", n, m)
	}
}

func TestComponentDrainOnShutdown(t *testing.T) {
	e := newCompEnv(t,
		serviceModel("drain_single", "drain-single", true, ""),
		serviceModel("drain_multi", "drain-multi", false, ""),
		serviceModel("drain_ok", "drain-ok", false, ""))
	held := make(chan *nats.Msg, 3)
	for _, topic := range []string{"drain-single", "drain-multi", "drain-ok"} {
		e.handle(topic, func(m *nats.Msg) { held <- m })
	}
	cfg := compConfig("drain-single", "drain-multi", "drain-ok")
	cfg.DrainTimeout = 1500 * time.Millisecond
	p, stop := e.runPump(cfg)
	single, multi, ok := e.start("drain_single", nil), e.start("drain_multi", nil), e.start("drain_ok", nil)
	msgs := map[string]*nats.Msg{}
	for range 3 {
		m := <-held
		msgs[m.Header.Get("ce-processinstanceid")] = m
	}
	stopped := make(chan struct{})
	go func() {
		stop()
		close(stopped)
	}()
	// While draining, a reply still finishes its task.
	waitUntil(t, 5*time.Second, "drain start", func() bool { return strings.Contains(e.logs.String(), "draining") })
	respond(t, msgs[ok], `{"drained":true}`)
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the drain timeout")
	}
	pis := e.waitDone(5*time.Second, single, ok)
	if pis[ok].State != engine.InstanceFinished {
		t.Fatalf("drained task: %+v", pis[ok])
	}
	if pis[single].State != engine.InstanceError || !strings.Contains(string(pis[single].Error), "shutting down") {
		t.Fatalf("single-try task at shutdown: %+v", pis[single])
	}
	if pi, _ := e.emu.ProcessInstance(multi); pi.State != engine.InstanceRunning ||
		e.emu.TaskCalls(msgs[multi].Header.Get("ce-id")) != 0 {
		t.Fatalf("multi-try task at shutdown: %+v", pi)
	}
	if s := p.Stats(); s.Finished != 1 || s.Failures != 1 || s.Released != 1 || s.InFlight != 0 {
		t.Fatalf("stats = %+v", s)
	}
	if !strings.Contains(e.logs.String(), "task pump stopped") {
		t.Fatal("no summary line")
	}
}
