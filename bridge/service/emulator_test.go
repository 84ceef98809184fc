package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/engine/emulator"
	"github.com/pe-bridge/pe-bridge/events"
	"github.com/pe-bridge/pe-bridge/examples/models"
)

// env is an in-process engine emulator with the sample models, an engine
// client, embedded NATS and the service.
type env struct {
	nc     *nats.Conn
	emu    *emulator.Emulator
	client *engine.Client
}

func newEnv(t *testing.T, ecfg emulator.Config, scfg Config) *env {
	t.Helper()
	emu, err := emulator.New(ecfg)
	if err != nil {
		t.Fatalf("emulator: %v", err)
	}
	if _, err := emu.LoadFS(models.FS); err != nil {
		t.Fatalf("loading models: %v", err)
	}
	srv := httptest.NewServer(emu)
	t.Cleanup(func() {
		_ = emu.Close()
		srv.Close()
	})
	client, err := engine.NewClient(srv.URL, engine.ClientConfig{})
	if err != nil {
		t.Fatalf("engine client: %v", err)
	}
	t.Cleanup(func() { _ = client.Close() })
	nc := runNATS(t)
	startService(t, nc, client, scfg, nil)
	return &env{nc: nc, emu: emu, client: client}
}

// worker locks tasks of topic and completes each with handle: a result, or
// a BPMN error when handle returns a non-nil *engine.ExternalTaskError.
func (e *env) worker(t *testing.T, topic string, fetchers int,
	handle func(engine.ExternalTask) (json.RawMessage, *engine.ExternalTaskError)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	for i := range fetchers {
		wid := fmt.Sprintf("test-worker-%d", i)
		wg.Go(func() {
			for ctx.Err() == nil {
				tasks, err := e.client.FetchAndLock(ctx, engine.FetchAndLockRequest{
					WorkerID: wid, Topics: []string{topic}, MaxTasks: 100,
					LongPollingTimeout: 5 * time.Second, LockDuration: time.Minute,
				})
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("fetch_and_lock: %v", err)
					}
					return
				}
				for _, task := range tasks {
					wg.Go(func() {
						res, berr := handle(task)
						var err error
						if berr != nil {
							err = e.client.HandleError(ctx, task.ID, wid, *berr)
						} else {
							err = e.client.FinishTask(ctx, task.ID, wid, res)
						}
						if err != nil && ctx.Err() == nil {
							t.Errorf("completing task %s: %v", task.ID, err)
						}
					})
				}
			}
		})
	}
}

// echoResult makes a hello_world task's result {"echo": <payload>}.
func echoResult(task engine.ExternalTask) (json.RawMessage, *engine.ExternalTaskError) {
	return json.RawMessage(fmt.Sprintf(`{"echo":%s}`, task.Payload)), nil
}

func TestEmulatorProcessStart(t *testing.T) {
	e := newEnv(t, emulator.Config{}, Config{})
	e.worker(t, "SampleExternalTask", 2, echoResult)
	e.worker(t, "CheckCredit", 1, func(engine.ExternalTask) (json.RawMessage, *engine.ExternalTaskError) {
		return nil, &engine.ExternalTaskError{ErrorCode: "fatal_failure", ErrorMessage: "no credit service"}
	})

	t.Run("non-blocking", func(t *testing.T) {
		var r StartReply
		ok(t, request(t, e.nc, events.SubjectProcessStart, `{"processModelId":"hello_world","startEventId":"the_start_event","correlationId":"corr-nb"}`, nil), &r)
		if r.ProcessInstanceID == "" || r.CorrelationID != "corr-nb" || r.TokenPayload != nil || r.EndEventID != "" {
			t.Fatalf("reply %+v", r)
		}
	})
	t.Run("finished", func(t *testing.T) {
		var r StartReply
		ok(t, request(t, e.nc, events.SubjectProcessStart, `{"processModelId":"hello_world","initialToken":{"n":1},"returnOn":"finished"}`, nil), &r)
		if r.ProcessInstanceID == "" || r.CorrelationID == "" || r.EndEventID != "the_end_event" || string(r.TokenPayload) != `{"echo":{"n":1}}` {
			t.Fatalf("reply %+v (%s)", r, r.TokenPayload)
		}
		pi, found := e.emu.ProcessInstance(r.ProcessInstanceID)
		if !found || pi.State != engine.InstanceFinished || pi.CorrelationID != r.CorrelationID {
			t.Fatalf("instance %+v", pi)
		}
	})
	t.Run("end_event", func(t *testing.T) {
		var r StartReply
		ok(t, request(t, e.nc, events.SubjectProcessStart,
			`{"processModelId":"hello_world","startEventId":"the_start_event","initialToken":{"n":2},"returnOn":"end_event","endEventId":"the_end_event","timeout":"20s"}`, nil), &r)
		if r.EndEventID != "the_end_event" || string(r.TokenPayload) != `{"echo":{"n":2}}` {
			t.Fatalf("reply %+v (%s)", r, r.TokenPayload)
		}
	})
	t.Run("engine numbers", func(t *testing.T) {
		var r StartReply
		ok(t, request(t, e.nc, events.SubjectProcessStart, `{"processModelId":"hello_world","initialToken":{"n":3},"returnOn":2,"timeout":20000}`, nil), &r)
		if string(r.TokenPayload) != `{"echo":{"n":3}}` {
			t.Fatalf("reply %+v (%s)", r, r.TokenPayload)
		}
	})
	t.Run("unknown model", func(t *testing.T) {
		fails(t, request(t, e.nc, events.SubjectProcessStart, `{"processModelId":"no_such_model"}`, nil), 404, "")
	})
	t.Run("unknown start event", func(t *testing.T) {
		fails(t, request(t, e.nc, events.SubjectProcessStart, `{"processModelId":"hello_world","startEventId":"nope"}`, nil), 404, "")
	})
	t.Run("unknown end event", func(t *testing.T) {
		fails(t, request(t, e.nc, events.SubjectProcessStart, `{"processModelId":"hello_world","returnOn":"end_event","endEventId":"nope"}`, nil), 404, "")
	})
	t.Run("instance ends in error", func(t *testing.T) {
		msg := request(t, e.nc, events.SubjectProcessStart,
			`{"processModelId":"error_boundary","initialToken":{"customer":"c","amount":1},"returnOn":"finished","correlationId":"corr-err"}`, nil)
		se := fails(t, msg, CodeProcessError, "")
		var b struct{ Code string }
		if err := json.Unmarshal(se.BPMNError, &b); err != nil || b.Code != "fatal_failure" {
			t.Fatalf("bpmnError %s (%v)", se.BPMNError, err)
		}
		if se.CorrelationID != "corr-err" || se.ProcessInstanceID == "" {
			t.Fatalf("error %+v", se)
		}
		if pi, _ := e.emu.ProcessInstance(se.ProcessInstanceID); pi.State != engine.InstanceError {
			t.Fatalf("instance %+v", pi)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		// message_catch waits for a message nobody sends.
		se := fails(t, request(t, e.nc, events.SubjectProcessStart,
			`{"processModelId":"message_catch","returnOn":"finished","timeout":"200ms"}`, nil), 504, "")
		if se.ProcessInstanceID == "" || se.CorrelationID == "" {
			t.Fatalf("timeout error without ids: %+v", se)
		}
		if pi, _ := e.emu.ProcessInstance(se.ProcessInstanceID); pi.State != engine.InstanceRunning {
			t.Fatalf("instance %+v", pi)
		}
	})
}

func TestEmulatorProcessInstances(t *testing.T) {
	e := newEnv(t, emulator.Config{}, Config{})
	var r StartReply
	ok(t, request(t, e.nc, events.SubjectProcessStart, `{"processModelId":"signal_catch","correlationId":"corr-pi"}`, nil), &r)

	var pi engine.ProcessInstance
	ok(t, request(t, e.nc, events.SubjectProcessGet, ProcessInstanceRef{r.ProcessInstanceID}, nil), &pi)
	if pi.ProcessInstanceID != r.ProcessInstanceID || pi.State != engine.InstanceRunning || pi.ProcessModelID != "signal_catch" {
		t.Fatalf("get %+v", pi)
	}
	fails(t, request(t, e.nc, events.SubjectProcessGet, `{"processInstanceId":"unknown-id"}`, nil), 404, "")

	var q ProcessQueryReply
	ok(t, request(t, e.nc, events.SubjectProcessQuery, `{"processModelId":"signal_catch","correlationId":"corr-pi","state":"running"}`, nil), &q)
	if q.TotalCount != 1 || len(q.ProcessInstances) != 1 || q.ProcessInstances[0].ProcessInstanceID != r.ProcessInstanceID {
		t.Fatalf("query %+v", q)
	}
	ok(t, request(t, e.nc, events.SubjectProcessQuery, `{"processModelId":"signal_catch","state":"finished"}`, nil), &q)
	if q.TotalCount != 0 || q.ProcessInstances == nil {
		t.Fatalf("query finished %+v", q)
	}

	var ref ProcessInstanceRef
	ok(t, request(t, e.nc, events.SubjectProcessTerminate, ProcessInstanceRef{r.ProcessInstanceID}, nil), &ref)
	if ref.ProcessInstanceID != r.ProcessInstanceID {
		t.Fatalf("terminate reply %+v", ref)
	}
	ok(t, request(t, e.nc, events.SubjectProcessGet, ProcessInstanceRef{r.ProcessInstanceID}, nil), &pi)
	if pi.State != engine.InstanceTerminated {
		t.Fatalf("after terminate %+v", pi)
	}
	fails(t, request(t, e.nc, events.SubjectProcessTerminate, ProcessInstanceRef{r.ProcessInstanceID}, nil), 409, "")
	fails(t, request(t, e.nc, events.SubjectProcessTerminate, `{"processInstanceId":"unknown-id"}`, nil), 404, "")
}

func TestEmulatorUserTasks(t *testing.T) {
	e := newEnv(t, emulator.Config{}, Config{})
	var r StartReply
	ok(t, request(t, e.nc, events.SubjectProcessStart, `{"processModelId":"approval","initialToken":{"amount":5000}}`, nil), &r)

	var l UserTaskListReply
	ok(t, request(t, e.nc, events.SubjectUserTaskList, UserTaskListRequest{ProcessInstanceID: r.ProcessInstanceID}, nil), &l)
	if l.TotalCount != 1 || len(l.UserTasks) != 1 {
		t.Fatalf("list %+v", l)
	}
	task := l.UserTasks[0]
	if task.UserTaskInstanceID == "" || task.FlowNodeID != "manual_approval" || task.FlowNodeName != "Approve request" ||
		task.ProcessModelID != "approval" || task.ProcessInstanceID != r.ProcessInstanceID || task.CorrelationID != r.CorrelationID ||
		task.State != engine.FlowNodeSuspended || string(task.Token) != `{"amount":5000}` || len(task.FormFields) != 5 ||
		task.ActualOwnerID != "" {
		t.Fatalf("task %+v (token %s)", task, task.Token)
	}
	if f := task.FormFields[3]; f.ID != "category" || f.Type != "enum" || len(f.EnumValues) != 3 {
		t.Fatalf("enum field %+v", f)
	}
	id := task.UserTaskInstanceID
	ref := UserTaskRef{id}

	// Filters as in the seed: model, correlation, flow node, state.
	for _, f := range []UserTaskListRequest{
		{ProcessModelID: "approval"}, {CorrelationID: r.CorrelationID}, {FlowNodeID: "manual_approval", ProcessModelID: "approval"},
		{State: "suspended", ProcessInstanceID: r.ProcessInstanceID},
	} {
		ok(t, request(t, e.nc, events.SubjectUserTaskList, f, nil), &l)
		if len(l.UserTasks) != 1 || l.UserTasks[0].UserTaskInstanceID != id {
			t.Fatalf("filter %+v: %+v", f, l)
		}
	}
	ok(t, request(t, e.nc, events.SubjectUserTaskList, UserTaskListRequest{ProcessModelID: "hello_world"}, nil), &l)
	if len(l.UserTasks) != 0 {
		t.Fatalf("other model: %+v", l)
	}

	var rr ReserveRequest
	ok(t, request(t, e.nc, events.SubjectUserTaskReserve, ReserveRequest{id, "alice"}, nil), &rr)
	if rr != (ReserveRequest{id, "alice"}) {
		t.Fatalf("reserve reply %+v", rr)
	}
	ok(t, request(t, e.nc, events.SubjectUserTaskList, UserTaskListRequest{ActualOwnerID: "alice"}, nil), &l)
	if len(l.UserTasks) != 1 || l.UserTasks[0].ActualOwnerID != "alice" || l.TotalCount != 1 {
		t.Fatalf("alice's tasks %+v", l)
	}
	ok(t, request(t, e.nc, events.SubjectUserTaskList, UserTaskListRequest{ActualOwnerID: "bob"}, nil), &l)
	if len(l.UserTasks) != 0 || l.TotalCount != 0 {
		t.Fatalf("bob's tasks %+v", l)
	}
	fails(t, request(t, e.nc, events.SubjectUserTaskReserve, ReserveRequest{id, "bob"}, nil), 409, "")
	ok(t, request(t, e.nc, events.SubjectUserTaskCancelReserve, ref, nil), nil)
	var got UserTask
	ok(t, request(t, e.nc, events.SubjectUserTaskGet, ref, nil), &got)
	if got.ActualOwnerID != "" || got.State != engine.FlowNodeSuspended {
		t.Fatalf("after cancel %+v", got)
	}

	ok(t, request(t, e.nc, events.SubjectUserTaskFinish, FinishRequest{id, json.RawMessage(`{"approved":true,"comment":"ok"}`)}, nil), nil)
	ok(t, request(t, e.nc, events.SubjectUserTaskGet, ref, nil), &got)
	if got.State != engine.FlowNodeFinished {
		t.Fatalf("after finish %+v", got)
	}
	var pi engine.ProcessInstance
	ok(t, request(t, e.nc, events.SubjectProcessGet, ProcessInstanceRef{r.ProcessInstanceID}, nil), &pi)
	if pi.State != engine.InstanceFinished || pi.EndEventID != "approved_end" {
		t.Fatalf("instance %+v", pi)
	}
	ok(t, request(t, e.nc, events.SubjectUserTaskList, UserTaskListRequest{ProcessInstanceID: r.ProcessInstanceID}, nil), &l)
	if len(l.UserTasks) != 0 {
		t.Fatalf("finished task still waiting: %+v", l)
	}
	ok(t, request(t, e.nc, events.SubjectUserTaskList, UserTaskListRequest{ProcessInstanceID: r.ProcessInstanceID, State: "any"}, nil), &l)
	if len(l.UserTasks) != 1 {
		t.Fatalf("state any: %+v", l)
	}

	// 409 on a finished task, 404 on unknown ids.
	fails(t, request(t, e.nc, events.SubjectUserTaskFinish, FinishRequest{UserTaskInstanceID: id}, nil), 409, "")
	fails(t, request(t, e.nc, events.SubjectUserTaskReserve, ReserveRequest{id, "alice"}, nil), 409, "")
	fails(t, request(t, e.nc, events.SubjectUserTaskCancelReserve, ref, nil), 409, "")
	unknown := UserTaskRef{"no-such-task"}
	fails(t, request(t, e.nc, events.SubjectUserTaskGet, unknown, nil), 404, "")
	fails(t, request(t, e.nc, events.SubjectUserTaskFinish, unknown, nil), 404, "")
	fails(t, request(t, e.nc, events.SubjectUserTaskReserve, ReserveRequest{"no-such-task", "alice"}, nil), 404, "")
	fails(t, request(t, e.nc, events.SubjectUserTaskCancelReserve, unknown, nil), 404, "")
}

func TestEmulatorMessagesAndSignals(t *testing.T) {
	e := newEnv(t, emulator.Config{}, Config{})
	var m, s StartReply
	ok(t, request(t, e.nc, events.SubjectProcessStart, `{"processModelId":"message_catch"}`, nil), &m)
	ok(t, request(t, e.nc, events.SubjectProcessStart, `{"processModelId":"signal_catch"}`, nil), &s)

	var tr TriggerReply
	ok(t, request(t, e.nc, events.SubjectMessageTrigger,
		TriggerRequest{Name: "approval_received", Payload: json.RawMessage(`{"ok":true}`), ProcessInstanceID: m.ProcessInstanceID}, nil), &tr)
	if tr.Name != "approval_received" || tr.ProcessInstanceID != m.ProcessInstanceID {
		t.Fatalf("reply %+v", tr)
	}
	ok(t, request(t, e.nc, events.SubjectSignalTrigger, TriggerRequest{Name: "go"}, nil), nil)
	for _, id := range []string{m.ProcessInstanceID, s.ProcessInstanceID} {
		var pi engine.ProcessInstance
		ok(t, request(t, e.nc, events.SubjectProcessGet, ProcessInstanceRef{id}, nil), &pi)
		if pi.State != engine.InstanceFinished {
			t.Fatalf("instance %s not finished: %+v", id, pi)
		}
	}
	var pi engine.ProcessInstance
	ok(t, request(t, e.nc, events.SubjectProcessGet, ProcessInstanceRef{m.ProcessInstanceID}, nil), &pi)
	if string(pi.EndToken) != `{"ok":true}` {
		t.Fatalf("message payload not the token: %s", pi.EndToken)
	}
	fails(t, request(t, e.nc, events.SubjectMessageTrigger, TriggerRequest{Name: "approval_received", ProcessInstanceID: "unknown-id"}, nil), 404, "")
	fails(t, request(t, e.nc, events.SubjectSignalTrigger, TriggerRequest{Name: "go", ProcessInstanceID: "unknown-id"}, nil), 404, "")
}

// TestEmulatorAuth forwards end-user tokens: the emulator accepts the dummy
// token (the bridge's own) and verifies the others.
func TestEmulatorAuth(t *testing.T) {
	verify := func(tok string) (emulator.Identity, error) {
		switch tok {
		case "reader-token":
			return emulator.Identity{UserID: "reader", Scopes: []string{emulator.ScopeRead}}, nil
		case "writer-token":
			return emulator.Identity{UserID: "writer", Scopes: []string{emulator.ScopeRead, emulator.ScopeWrite}}, nil
		}
		return emulator.Identity{}, errors.New("token expired")
	}
	e := newEnv(t, emulator.Config{Verify: verify}, Config{})
	var r StartReply
	ok(t, request(t, e.nc, events.SubjectProcessStart, `{"processModelId":"approval","initialToken":{"amount":2000}}`, nil), &r)

	reader := nats.Header{"Authorization": {"Bearer reader-token"}}
	writer := nats.Header{"Pe-User-Token": {"writer-token"}}
	bad := nats.Header{"Authorization": {"Bearer forged"}}

	var l UserTaskListReply
	ok(t, request(t, e.nc, events.SubjectUserTaskList, UserTaskListRequest{ProcessInstanceID: r.ProcessInstanceID}, reader), &l)
	if len(l.UserTasks) != 1 {
		t.Fatalf("reader list %+v", l)
	}
	id := l.UserTasks[0].UserTaskInstanceID
	for _, c := range []struct {
		subject string
		body    any
	}{
		{events.SubjectUserTaskReserve, ReserveRequest{id, "reader"}},
		{events.SubjectUserTaskCancelReserve, UserTaskRef{id}},
		{events.SubjectUserTaskFinish, FinishRequest{UserTaskInstanceID: id}},
		{events.SubjectProcessStart, `{"processModelId":"hello_world"}`},
		{events.SubjectProcessTerminate, ProcessInstanceRef{r.ProcessInstanceID}},
		{events.SubjectMessageTrigger, TriggerRequest{Name: "x"}},
		{events.SubjectSignalTrigger, TriggerRequest{Name: "x"}},
	} {
		fails(t, request(t, e.nc, c.subject, c.body, reader), 403, "")
	}
	se := fails(t, request(t, e.nc, events.SubjectUserTaskList, `{}`, bad), 401, "")
	if se.Message == "" {
		t.Fatal("401 without message")
	}
	fails(t, request(t, e.nc, events.SubjectProcessGet, ProcessInstanceRef{r.ProcessInstanceID}, bad), 401, "")
	ok(t, request(t, e.nc, events.SubjectUserTaskFinish, FinishRequest{id, json.RawMessage(`{"approved":false}`)}, writer), nil)
	var got UserTask
	ok(t, request(t, e.nc, events.SubjectUserTaskGet, UserTaskRef{id}, nil), &got)
	if got.FinishedByUserID != "writer" {
		t.Fatalf("finished by %q", got.FinishedByUserID)
	}
	if got.State != engine.FlowNodeFinished {
		t.Fatalf("task %+v", got)
	}
}

func TestEmulatorFaults(t *testing.T) {
	e := newEnv(t, emulator.Config{}, Config{RequestTimeout: 300 * time.Millisecond})
	for _, c := range []struct {
		f    emulator.Faults
		code int
	}{
		{emulator.Faults{ErrorRate: 1, Status: 500, PathContains: "/flow_node_instances"}, 503},
		{emulator.Faults{ErrorRate: 1, Status: 503, PathContains: "/flow_node_instances"}, 503},
		{emulator.Faults{ErrorRate: 1, Status: 429, PathContains: "/flow_node_instances"}, 503},
		{emulator.Faults{DropRate: 1, PathContains: "/flow_node_instances"}, 503},
		{emulator.Faults{StallRate: 1, PathContains: "/flow_node_instances"}, 504},
	} {
		e.emu.SetFaults(c.f)
		fails(t, request(t, e.nc, events.SubjectUserTaskList, `{}`, nil), c.code, "")
	}
	e.emu.SetFaults(emulator.Faults{StallRate: 1, PathContains: "/start"})
	se := fails(t, request(t, e.nc, events.SubjectProcessStart, `{"processModelId":"hello_world","returnOn":"finished","timeout":"300ms"}`, nil), 504, "")
	if se.CorrelationID == "" {
		t.Fatalf("504 without correlation id: %+v", se)
	}
	e.emu.SetFaults(emulator.Faults{})
	ok(t, request(t, e.nc, events.SubjectUserTaskList, `{}`, nil), nil)
}

// TestEmulatorConcurrentBlockingStarts: 1,000 blocking starts of hello_world
// at once, each answered with its own final token.
func TestEmulatorConcurrentBlockingStarts(t *testing.T) {
	const n = 1000
	e := newEnv(t, emulator.Config{}, Config{})
	e.worker(t, "SampleExternalTask", 8, echoResult)

	begin := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			body := fmt.Sprintf(`{"processModelId":"hello_world","startEventId":"the_start_event","initialToken":{"n":%d},"returnOn":"end_event","endEventId":"the_end_event","timeout":"90s"}`, i)
			msg, err := e.nc.Request(events.SubjectProcessStart, []byte(body), 120*time.Second)
			if err != nil {
				errs <- fmt.Errorf("start %d: %w", i, err)
				return
			}
			if code := msg.Header.Get(headerServiceCode); code != "" {
				errs <- fmt.Errorf("start %d: error %s: %s", i, code, msg.Data)
				return
			}
			var r StartReply
			if err := json.Unmarshal(msg.Data, &r); err != nil {
				errs <- fmt.Errorf("start %d: %w", i, err)
				return
			}
			if want := fmt.Sprintf(`{"echo":{"n":%d}}`, i); string(r.TokenPayload) != want || r.ProcessInstanceID == "" || r.EndEventID != "the_end_event" {
				errs <- fmt.Errorf("start %d: reply %+v token %s, want %s", i, r, r.TokenPayload, want)
			}
		})
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if failed < 10 {
			t.Error(err)
		}
		failed++
	}
	if failed > 0 {
		t.Fatalf("%d of %d blocking starts failed", failed, n)
	}
	t.Logf("%d concurrent blocking starts in %s", n, time.Since(begin))
	if st := e.emu.Stats(); st.InstancesFinished != n {
		t.Fatalf("emulator finished %d instances, want %d", st.InstancesFinished, n)
	}
}
