package forwarder_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	natstest "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/bridge/forwarder"
	"github.com/pe-bridge/pe-bridge/bridge/service"
	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/engine/emulator"
	"github.com/pe-bridge/pe-bridge/events"
	"github.com/pe-bridge/pe-bridge/examples/models"
)

const pollPath = engine.BasePath + "/notifications/long_polling/"

// world is emulator + NATS + service + forwarder. polls gets one value per
// long poll that reaches the emulator, keyed by event name, so a test can
// wait until the forwarder listens before it causes an event (the engine
// drops events nobody polls for).
type world struct {
	nc     *nats.Conn
	client *engine.Client
	polls  map[string]chan struct{}
	events chan *nats.Msg
	seen   []*nats.Msg // received, not yet expected (the loops publish in any order)
}

func newWorld(t *testing.T) *world {
	t.Helper()
	emu, err := emulator.New(emulator.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := emu.LoadFS(models.FS); err != nil {
		t.Fatal(err)
	}
	w := &world{polls: map[string]chan struct{}{}, events: make(chan *nats.Msg, 256)}
	for _, name := range forwarder.DefaultEvents {
		w.polls[name] = make(chan struct{}, 64)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if name, ok := strings.CutPrefix(r.URL.Path, pollPath); ok {
			if ch := w.polls[name]; ch != nil {
				ch <- struct{}{}
			}
		}
		emu.ServeHTTP(rw, r)
	}))
	t.Cleanup(func() {
		_ = emu.Close()
		srv.Close()
	})
	w.client, err = engine.NewClient(srv.URL, engine.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.client.Close() })

	opts := natstest.DefaultTestOptions
	opts.Port = -1
	ns := natstest.RunServer(&opts)
	t.Cleanup(ns.Shutdown)
	w.nc, err = nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.nc.Close)
	sub, err := w.nc.ChanSubscribe(events.EventPrefix+">", w.events)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	svc, err := service.New(w.nc, w.client, service.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	fwd, err := forwarder.New(w.client, w.nc, forwarder.Config{Source: "test-bridge"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 2)
	go func() { errs <- svc.Run(ctx) }()
	go func() { errs <- fwd.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-errs; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	})
	select {
	case <-svc.Ready():
	case err := <-errs:
		t.Fatalf("service: %v", err)
	}
	return w
}

// awaitPoll waits until the forwarder's next long poll of name reached the engine.
func (w *world) awaitPoll(t *testing.T, name string) {
	t.Helper()
	select {
	case <-w.polls[name]:
	case <-time.After(10 * time.Second):
		t.Fatalf("forwarder never polled %s", name)
	}
}

// expect waits up to timeout for the CloudEvent of notification name about
// instance pi, keeping the others for later calls. ok is false on timeout.
func (w *world) expect(t *testing.T, name, pi string, timeout time.Duration) (m *nats.Msg, em engine.EventMessage, ok bool) {
	t.Helper()
	match := func(m *nats.Msg) bool {
		return m.Subject == events.EventPrefix+name && m.Header.Get(events.HeaderPrefix+events.ExtProcessInstanceID) == pi
	}
	for i, s := range w.seen {
		if match(s) {
			m = s
			w.seen = append(w.seen[:i], w.seen[i+1:]...)
			break
		}
	}
	deadline := time.After(timeout)
	for m == nil {
		select {
		case got := <-w.events:
			if match(got) {
				m = got
			} else {
				w.seen = append(w.seen, got)
			}
		case <-deadline:
			return nil, em, false
		}
	}
	checkCloudEvent(t, name, m)
	if err := json.Unmarshal(m.Data, &em); err != nil {
		t.Fatalf("%s body %s: %v", name, m.Data, err)
	}
	if em.ProcessInstanceID != pi {
		t.Fatalf("%s body names instance %q, header %q", name, em.ProcessInstanceID, pi)
	}
	return m, em, true
}

// eventWait bounds the wait for one event; events normally arrive within
// milliseconds.
const eventWait = 3 * time.Second

// attempts runs try until it reports success, at most n times. The engine
// drops events for which no long poll is open at that moment, and nothing
// outside the emulator can see when the forwarder's next poll (which
// follows each event) is registered; so a test that sees an event missing
// repeats its scenario with a fresh instance instead of sleeping. A broken
// forwarder fails every attempt.
func attempts(t *testing.T, what string, n int, try func() (missing string)) {
	t.Helper()
	for i := 1; i <= n; i++ {
		missing := try()
		if missing == "" {
			return
		}
		t.Logf("%s, attempt %d: %s not seen (event between two polls), retrying with a new instance", what, i, missing)
	}
	t.Fatalf("%s: events missing in all %d attempts", what, n)
}

func checkCloudEvent(t *testing.T, name string, m *nats.Msg) {
	t.Helper()
	h := m.Header
	if h.Get(events.HeaderSpecVersion) != "1.0" || h.Get(events.HeaderType) != events.EventType(name) ||
		h.Get(events.HeaderSource) != "test-bridge" || h.Get(events.HeaderID) == "" ||
		h.Get(forwarder.HeaderMsgID) != h.Get(events.HeaderID) || h.Get(events.HeaderDataContent) != events.ContentTypeJSON ||
		h.Get(events.HeaderSubject) == "" {
		t.Fatalf("%s: headers %v", name, h)
	}
	if _, err := time.Parse(time.RFC3339Nano, h.Get(events.HeaderTime)); err != nil {
		t.Fatalf("%s: ce-time %q: %v", name, h.Get(events.HeaderTime), err)
	}
}

func req(t *testing.T, nc *nats.Conn, subject string, body any, out any) {
	t.Helper()
	data, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := nc.Request(subject, data, 20*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", subject, err)
	}
	if code := msg.Header.Get("Nats-Service-Error-Code"); code != "" {
		t.Fatalf("%s %s: error %s: %s", subject, data, code, msg.Data)
	}
	if out != nil {
		if err := json.Unmarshal(msg.Data, out); err != nil {
			t.Fatalf("%s reply %s: %v", subject, msg.Data, err)
		}
	}
}

// TestUserTaskLifeOverNATS drives a user task only through NATS: the
// waiting event, list, reserve, finish, and the finished event.
func TestUserTaskLifeOverNATS(t *testing.T) {
	w := newWorld(t)
	for _, name := range forwarder.DefaultEvents {
		w.awaitPoll(t, name)
	}

	attempts(t, "user task life", 3, func() string {
		var started service.StartReply
		req(t, w.nc, events.SubjectProcessStart, map[string]any{"processModelId": "approval", "initialToken": map[string]any{"amount": 5000}}, &started)
		pi := started.ProcessInstanceID

		m, waiting, ok := w.expect(t, "user_task_waiting", pi, eventWait)
		if !ok {
			return "user_task_waiting"
		}
		fni := waiting.FlowNodeInstanceID
		if fni == "" || waiting.FlowNodeID != "manual_approval" || m.Header.Get(events.HeaderSubject) != fni ||
			m.Header.Get(events.HeaderID) != "user_task_waiting/"+fni || m.Header.Get("ce-"+events.ExtFlowNodeInstanceID) != fni ||
			m.Header.Get("ce-"+events.ExtProcessModelID) != "approval" || m.Header.Get("ce-"+events.ExtCorrelationID) != started.CorrelationID ||
			string(waiting.CurrentToken) != `{"amount":5000}` {
			t.Fatalf("user_task_waiting %v %+v", m.Header, waiting)
		}

		var list service.UserTaskListReply
		req(t, w.nc, events.SubjectUserTaskList, service.UserTaskListRequest{ProcessInstanceID: pi}, &list)
		if len(list.UserTasks) != 1 || list.UserTasks[0].UserTaskInstanceID != fni {
			t.Fatalf("list %+v, want task %s", list, fni)
		}

		req(t, w.nc, events.SubjectUserTaskReserve, service.ReserveRequest{UserTaskInstanceID: fni, ActualOwnerID: "alice"}, nil)
		if _, _, ok := w.expect(t, "user_task_reserved", pi, eventWait); !ok {
			return "user_task_reserved"
		}
		req(t, w.nc, events.SubjectUserTaskList, service.UserTaskListRequest{ActualOwnerID: "alice", ProcessInstanceID: pi}, &list)
		if len(list.UserTasks) != 1 || list.UserTasks[0].ActualOwnerID != "alice" {
			t.Fatalf("alice's tasks %+v", list)
		}

		req(t, w.nc, events.SubjectUserTaskFinish, service.FinishRequest{UserTaskInstanceID: fni, Result: json.RawMessage(`{"approved":true}`)}, nil)
		m, finished, ok := w.expect(t, "user_task_finished", pi, eventWait)
		if !ok {
			return "user_task_finished"
		}
		if m.Header.Get(events.HeaderID) != "user_task_finished/"+fni {
			t.Fatalf("user_task_finished id %q", m.Header.Get(events.HeaderID))
		}
		var result struct{ Approved bool }
		if err := json.Unmarshal(finished.UserTaskResult, &result); err != nil || !result.Approved {
			t.Fatalf("userTaskResult %s (%v)", finished.UserTaskResult, err)
		}
		if _, _, ok := w.expect(t, "process_ended", pi, eventWait); !ok {
			return "process_ended"
		}
		return ""
	})
}

// TestProcessEventsOverNATS: started, terminated and error events.
func TestProcessEventsOverNATS(t *testing.T) {
	w := newWorld(t)
	for _, name := range forwarder.DefaultEvents {
		w.awaitPoll(t, name)
	}
	attempts(t, "start and terminate", 3, func() string {
		var r service.StartReply
		req(t, w.nc, events.SubjectProcessStart, map[string]any{"processModelId": "signal_catch"}, &r)
		m, _, ok := w.expect(t, "process_started", r.ProcessInstanceID, eventWait)
		if !ok {
			return "process_started"
		}
		if m.Header.Get(events.HeaderID) != "process_started/"+r.ProcessInstanceID || m.Header.Get(events.HeaderSubject) != r.ProcessInstanceID {
			t.Fatalf("process_started headers %v", m.Header)
		}
		req(t, w.nc, events.SubjectProcessTerminate, service.ProcessInstanceRef{ProcessInstanceID: r.ProcessInstanceID}, nil)
		if _, _, ok := w.expect(t, "process_terminated", r.ProcessInstanceID, eventWait); !ok {
			return "process_terminated"
		}
		return ""
	})
	attempts(t, "instance error", 3, func() string {
		var r service.StartReply
		req(t, w.nc, events.SubjectProcessStart, map[string]any{"processModelId": "error_boundary", "initialToken": map[string]any{"customer": "c", "amount": 1}}, &r)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		tasks, err := w.client.FetchAndLock(ctx, engine.FetchAndLockRequest{WorkerID: "w", Topics: []string{"CheckCredit"}, MaxTasks: 1,
			LongPollingTimeout: 5 * time.Second, LockDuration: time.Minute})
		if err != nil || len(tasks) != 1 || tasks[0].ProcessInstanceID != r.ProcessInstanceID {
			t.Fatalf("fetch: %+v %v", tasks, err)
		}
		if err := w.client.HandleError(ctx, tasks[0].ID, "w", engine.ExternalTaskError{ErrorCode: "unhandled"}); err != nil {
			t.Fatal(err)
		}
		if _, _, ok := w.expect(t, "process_error", r.ProcessInstanceID, eventWait); !ok {
			return "process_error"
		}
		return ""
	})
}

func ExampleEventID() {
	fmt.Println(forwarder.EventID("user_task_waiting", engine.EventMessage{ProcessInstanceID: "p1", FlowNodeInstanceID: "f1"}))
	fmt.Println(forwarder.EventID("process_ended", engine.EventMessage{ProcessInstanceID: "p1"}))
	// Output:
	// user_task_waiting/f1
	// process_ended/p1
}
