package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/engine/authority"
	"github.com/pe-bridge/pe-bridge/engine/emulator"
	"github.com/pe-bridge/pe-bridge/internal/testutil"
)

const testBPMN = `<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:camunda="http://camunda.org/schema/1.0/bpmn"
    id="Definitions_client_test" targetNamespace="http://bpmn.io/schema/bpmn">
  <bpmn:process id="ct_external" name="Client test external" isExecutable="true">
    <bpmn:startEvent id="ct_ext_start"><bpmn:outgoing>e1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:sequenceFlow id="e1" sourceRef="ct_ext_start" targetRef="ct_ext_task" />
    <bpmn:serviceTask id="ct_ext_task" name="Work" camunda:type="external" camunda:topic="ct_work">
      <bpmn:incoming>e1</bpmn:incoming><bpmn:outgoing>e2</bpmn:outgoing>
    </bpmn:serviceTask>
    <bpmn:sequenceFlow id="e2" sourceRef="ct_ext_task" targetRef="ct_ext_end" />
    <bpmn:endEvent id="ct_ext_end" name="Done"><bpmn:incoming>e2</bpmn:incoming></bpmn:endEvent>
    <bpmn:boundaryEvent id="ct_ext_boundary" attachedToRef="ct_ext_task">
      <bpmn:outgoing>e3</bpmn:outgoing>
      <bpmn:errorEventDefinition id="ct_errdef" errorRef="ct_error" />
    </bpmn:boundaryEvent>
    <bpmn:sequenceFlow id="e3" sourceRef="ct_ext_boundary" targetRef="ct_ext_error_end" />
    <bpmn:endEvent id="ct_ext_error_end" name="Handled"><bpmn:incoming>e3</bpmn:incoming></bpmn:endEvent>
  </bpmn:process>
  <bpmn:error id="ct_error" name="CtError" errorCode="ct_code" />

  <bpmn:process id="ct_user" name="Client test user task" isExecutable="true">
    <bpmn:startEvent id="ct_user_start"><bpmn:outgoing>u1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:sequenceFlow id="u1" sourceRef="ct_user_start" targetRef="ct_user_task" />
    <bpmn:userTask id="ct_user_task" name="Approve">
      <bpmn:extensionElements>
        <camunda:formData>
          <camunda:formField id="approved" label="Approved" type="boolean" />
        </camunda:formData>
      </bpmn:extensionElements>
      <bpmn:incoming>u1</bpmn:incoming><bpmn:outgoing>u2</bpmn:outgoing>
    </bpmn:userTask>
    <bpmn:sequenceFlow id="u2" sourceRef="ct_user_task" targetRef="ct_user_end" />
    <bpmn:endEvent id="ct_user_end"><bpmn:incoming>u2</bpmn:incoming></bpmn:endEvent>
  </bpmn:process>

  <bpmn:process id="ct_events" name="Client test events" isExecutable="true">
    <bpmn:startEvent id="ct_ev_start"><bpmn:outgoing>m1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:sequenceFlow id="m1" sourceRef="ct_ev_start" targetRef="ct_msg_catch" />
    <bpmn:intermediateCatchEvent id="ct_msg_catch">
      <bpmn:incoming>m1</bpmn:incoming><bpmn:outgoing>m2</bpmn:outgoing>
      <bpmn:messageEventDefinition id="ct_msgdef" messageRef="ct_msg" />
    </bpmn:intermediateCatchEvent>
    <bpmn:sequenceFlow id="m2" sourceRef="ct_msg_catch" targetRef="ct_sig_catch" />
    <bpmn:intermediateCatchEvent id="ct_sig_catch">
      <bpmn:incoming>m2</bpmn:incoming><bpmn:outgoing>m3</bpmn:outgoing>
      <bpmn:signalEventDefinition id="ct_sigdef" signalRef="ct_sig" />
    </bpmn:intermediateCatchEvent>
    <bpmn:sequenceFlow id="m3" sourceRef="ct_sig_catch" targetRef="ct_ev_end" />
    <bpmn:endEvent id="ct_ev_end"><bpmn:incoming>m3</bpmn:incoming></bpmn:endEvent>
  </bpmn:process>
  <bpmn:message id="ct_msg" name="ct message" />
  <bpmn:signal id="ct_sig" name="ct_signal" />
</bpmn:definitions>`

type env struct {
	emu *emulator.Emulator
	srv *httptest.Server
	c   *engine.Client
}

// newEnv serves an emulator (testBPMN deployed through the client) and a
// client with the dummy token.
func newEnv(t *testing.T, cfg emulator.Config, ccfg engine.ClientConfig) *env {
	t.Helper()
	emu, err := emulator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(emu)
	t.Cleanup(func() {
		_ = emu.Close()
		srv.Close()
	})
	if _, err := emu.Deploy([]byte(testBPMN)); err != nil {
		t.Fatal(err)
	}
	c, err := engine.NewClient(srv.URL, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &env{emu: emu, srv: srv, c: c}
}

// fetchOne starts ct_external and locks its task for worker.
func (e *env) fetchOne(t *testing.T, worker string, token json.RawMessage) (engine.ProcessStartResponse, engine.ExternalTask) {
	t.Helper()
	ctx := t.Context()
	st, err := e.c.StartProcess(ctx, engine.ProcessStartRequest{ProcessModelID: "ct_external", InitialToken: token, ReturnOn: engine.ReturnOnCreated})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		tasks, err := e.c.FetchAndLock(ctx, engine.FetchAndLockRequest{WorkerID: worker, Topics: []string{"ct_work"}, MaxTasks: 1,
			LongPollingTimeout: 2 * time.Second, LockDuration: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		for _, tk := range tasks {
			if tk.ProcessInstanceID == st.ProcessInstanceID {
				return st, tk
			}
			t.Fatalf("locked a foreign task %s", tk.ID)
		}
	}
	t.Fatal("no task for the started instance")
	return st, engine.ExternalTask{}
}

func wantStatus(t *testing.T, what string, err error, status int, sentinel error) {
	t.Helper()
	var e *engine.Error
	if !errors.As(err, &e) {
		t.Fatalf("%s: got %T %v, want engine status %d", what, err, err, status)
	}
	if e.Status != status || e.Body.Code != status || e.Body.ErrorClassName != engine.ClassForStatus(status) || e.Body.Message == "" {
		t.Errorf("%s: got %d %+v, want %d", what, e.Status, e.Body, status)
	}
	if sentinel != nil && !errors.Is(err, sentinel) {
		t.Errorf("%s: %v is not %v", what, err, sentinel)
	}
}

func instanceState(t *testing.T, c *engine.Client, id string) string {
	t.Helper()
	l, err := c.QueryProcessInstances(t.Context(), engine.ProcessInstanceQuery{ProcessInstanceID: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.ProcessInstances) != 1 || l.TotalCount != 1 {
		t.Fatalf("query of %s: %+v", id, l)
	}
	return l.ProcessInstances[0].State
}

func TestEmulatorDeployAndModels(t *testing.T) {
	ctx := t.Context()
	e := newEnv(t, emulator.Config{}, engine.ClientConfig{})
	xml := strings.ReplaceAll(strings.ReplaceAll(testBPMN, "ct_", "dp_"), "Definitions_client_test", "Definitions_dp")
	if err := e.c.Deploy(ctx, engine.DeployRequest{XML: []string{xml}, OverwriteExisting: true}); err != nil {
		t.Fatal(err)
	}
	topics, err := e.c.DeployedTopics(ctx)
	if err != nil || !slices.Contains(topics, "ct_work") || !slices.Contains(topics, "dp_work") {
		t.Fatalf("topics %v, %v", topics, err)
	}
	l, err := e.c.ProcessModels(ctx, 0, 0)
	if err != nil || l.TotalCount < 6 || len(l.ProcessModels) != l.TotalCount {
		t.Fatalf("models %+v, %v", l, err)
	}
	page, err := e.c.ProcessModels(ctx, 1, 2)
	if err != nil || len(page.ProcessModels) != 2 || page.TotalCount != l.TotalCount || page.ProcessModels[0].ProcessModelID != l.ProcessModels[1].ProcessModelID {
		t.Fatalf("page %+v, %v", page, err)
	}
	m, err := e.c.ProcessModel(ctx, "dp_external")
	if err != nil || m.ProcessModelID != "dp_external" || len(m.StartEvents) != 1 || m.StartEvents[0].ID != "dp_ext_start" {
		t.Fatalf("model %+v, %v", m, err)
	}
	_, err = e.c.ProcessModel(ctx, "nope/../x")
	wantStatus(t, "unknown model", err, 404, engine.ErrNotFound)
	err = e.c.Deploy(ctx, engine.DeployRequest{XML: []string{"<not-bpmn/>"}})
	wantStatus(t, "bad xml", err, 400, engine.ErrBadRequest)
	info, err := e.c.Info(ctx)
	if err != nil || info.Name == "" || !info.AllowAnonymousRootAccess {
		t.Fatalf("info %+v, %v", info, err)
	}
}

func TestEmulatorExternalTasks(t *testing.T) {
	ctx := t.Context()
	e := newEnv(t, emulator.Config{}, engine.ClientConfig{})
	st, tk := e.fetchOne(t, "w1", json.RawMessage(`{"n":1}`))
	if tk.WorkerID != "w1" || tk.Topic != "ct_work" || tk.State != engine.TaskStatePending || string(tk.Payload) != `{"n":1}` ||
		!tk.LockExpirationTime.After(time.Now()) || tk.CorrelationID != st.CorrelationID {
		t.Fatalf("task %+v", tk)
	}
	if err := e.c.ExtendLock(ctx, tk.ID, "w1", time.Minute); err != nil {
		t.Fatal(err)
	}
	err := e.c.ExtendLock(ctx, tk.ID, "w2", time.Minute)
	wantStatus(t, "extend by another worker", err, 423, engine.ErrLockLost)
	err = e.c.FinishTask(ctx, tk.ID, "w2", nil)
	wantStatus(t, "finish by another worker", err, 423, engine.ErrLockLost)
	if err := e.c.FinishTask(ctx, tk.ID, "w1", json.RawMessage(`{"done":true}`)); err != nil {
		t.Fatal(err)
	}
	err = e.c.FinishTask(ctx, tk.ID, "w1", nil)
	wantStatus(t, "second finish", err, 409, engine.ErrGone)
	err = e.c.ExtendLock(ctx, tk.ID, "w1", time.Minute)
	wantStatus(t, "extend finished", err, 409, engine.ErrGone)
	err = e.c.FinishTask(ctx, "no-such-task", "w1", nil)
	wantStatus(t, "unknown task", err, 404, engine.ErrNotFound)
	err = e.c.ExtendLock(ctx, tk.ID, "w1", 0)
	wantStatus(t, "zero extension", err, 400, engine.ErrBadRequest)
	_, err = e.c.FetchAndLock(ctx, engine.FetchAndLockRequest{WorkerID: "w1", Topics: []string{"ct_work"}, MaxTasks: 1})
	wantStatus(t, "fetch without lock duration", err, 400, engine.ErrBadRequest)
	if s := instanceState(t, e.c, st.ProcessInstanceID); s != engine.InstanceFinished {
		t.Errorf("instance state %s", s)
	}

	// A BPMN error caught by the boundary event.
	st, tk = e.fetchOne(t, "w1", nil)
	if err := e.c.HandleError(ctx, tk.ID, "w1", engine.ExternalTaskError{ErrorCode: "ct_code", ErrorMessage: "nope", ErrorDetails: json.RawMessage(`{"x":1}`)}); err != nil {
		t.Fatal(err)
	}
	err = e.c.HandleError(ctx, tk.ID, "w1", engine.ExternalTaskError{ErrorCode: "ct_code"})
	wantStatus(t, "second error", err, 409, engine.ErrGone)
	l, err := e.c.QueryProcessInstances(ctx, engine.ProcessInstanceQuery{ProcessInstanceID: []string{st.ProcessInstanceID}})
	if err != nil || len(l.ProcessInstances) != 1 || l.ProcessInstances[0].EndEventID != "ct_ext_error_end" {
		t.Fatalf("after error: %+v, %v", l, err)
	}

	// Terminate closes the task: the worker sees 409 at its next extension.
	st, tk = e.fetchOne(t, "w1", nil)
	if err := e.c.TerminateProcessInstance(ctx, st.ProcessInstanceID); err != nil {
		t.Fatal(err)
	}
	err = e.c.ExtendLock(ctx, tk.ID, "w1", time.Minute)
	wantStatus(t, "extend after terminate", err, 409, engine.ErrGone)
	if s := instanceState(t, e.c, st.ProcessInstanceID); s != engine.InstanceTerminated {
		t.Errorf("state after terminate %s", s)
	}
	err = e.c.TerminateProcessInstance(ctx, "no-such-instance")
	wantStatus(t, "terminate unknown", err, 404, engine.ErrNotFound)
	l, err = e.c.QueryProcessInstances(ctx, engine.ProcessInstanceQuery{ProcessModelID: []string{"ct_external"}, State: []string{"finished", "terminated"}})
	if err != nil || l.TotalCount != 3 {
		t.Fatalf("query by model and states: %d, %v", l.TotalCount, err)
	}
}

func TestEmulatorBlockingStart(t *testing.T) {
	ctx := t.Context()
	e := newEnv(t, emulator.Config{}, engine.ClientConfig{RequestTimeout: 200 * time.Millisecond})
	worker, err := engine.NewClient(e.srv.URL, engine.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer worker.Close()
	// The worker's finish takes longer than the starter's RequestTimeout:
	// the blocking start must wait for it anyway.
	e.emu.SetFaults(emulator.Faults{Latency: 400 * time.Millisecond, PathContains: "/finish"})
	workerDone := make(chan struct{})
	defer func() { <-workerDone }()
	go func() {
		defer close(workerDone)
		tasks, err := worker.FetchAndLock(ctx, engine.FetchAndLockRequest{WorkerID: "w", Topics: []string{"ct_work"}, MaxTasks: 1,
			LongPollingTimeout: 5 * time.Second, LockDuration: time.Minute})
		if err != nil || len(tasks) != 1 {
			t.Errorf("fetch %v, %v", tasks, err)
			return
		}
		if err := worker.FinishTask(ctx, tasks[0].ID, "w", json.RawMessage(`{"out":2}`)); err != nil {
			t.Error(err)
		}
	}()
	start := time.Now()
	r, err := e.c.StartProcess(ctx, engine.ProcessStartRequest{ProcessModelID: "ct_external", InitialToken: json.RawMessage(`{"in":1}`),
		ReturnOn: engine.ReturnOnFinished})
	if err != nil || r.EndEventID != "ct_ext_end" || !bytes.Contains(r.TokenPayload, []byte(`"out":2`)) {
		t.Fatalf("blocking start = %+v, %v", r, err)
	}
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Errorf("start answered after %v, before the task finished", d)
	}
}

func TestEmulatorUserTasks(t *testing.T) {
	ctx := t.Context()
	e := newEnv(t, emulator.Config{}, engine.ClientConfig{})
	st, err := e.c.StartProcess(ctx, engine.ProcessStartRequest{ProcessModelID: "ct_user", InitialToken: json.RawMessage(`{"a":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	var ut engine.FlowNodeInstance
	for deadline := time.Now().Add(5 * time.Second); ; {
		l, err := e.c.UserTasks(ctx, engine.FlowNodeInstanceQuery{ProcessInstanceID: []string{st.ProcessInstanceID}, State: []string{engine.FlowNodeSuspended}})
		if err != nil {
			t.Fatal(err)
		}
		if len(l.FlowNodeInstances) == 1 {
			ut = l.FlowNodeInstances[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("user task never waited")
		}
	}
	if ut.FlowNodeType != engine.UserTaskFlowNodeType || ut.FlowNodeID != "ct_user_task" || ut.UserTaskConfig == nil ||
		len(ut.UserTaskConfig.FormFields) != 1 || ut.UserTaskConfig.FormFields[0].ID != "approved" {
		t.Fatalf("user task %+v", ut)
	}
	err = e.c.ReserveUserTask(ctx, ut.FlowNodeInstanceID, "")
	wantStatus(t, "reserve without owner", err, 400, engine.ErrBadRequest)
	if err := e.c.ReserveUserTask(ctx, ut.FlowNodeInstanceID, "alice"); err != nil {
		t.Fatal(err)
	}
	err = e.c.ReserveUserTask(ctx, ut.FlowNodeInstanceID, "bob")
	wantStatus(t, "reserve reserved", err, 409, engine.ErrGone)
	l, err := e.c.UserTasks(ctx, engine.FlowNodeInstanceQuery{FlowNodeInstanceID: []string{ut.FlowNodeInstanceID}})
	if err != nil || len(l.FlowNodeInstances) != 1 || l.FlowNodeInstances[0].ActualOwnerID != "alice" {
		t.Fatalf("reserved task %+v, %v", l, err)
	}
	if err := e.c.CancelUserTaskReservation(ctx, ut.FlowNodeInstanceID); err != nil {
		t.Fatal(err)
	}
	if err := e.c.FinishUserTask(ctx, ut.FlowNodeInstanceID, json.RawMessage(`{"approved":true}`)); err != nil {
		t.Fatal(err)
	}
	err = e.c.FinishUserTask(ctx, ut.FlowNodeInstanceID, json.RawMessage(`{"approved":true}`))
	wantStatus(t, "finish finished user task", err, 409, engine.ErrGone)
	err = e.c.FinishUserTask(ctx, "no-such-user-task", nil)
	wantStatus(t, "finish unknown user task", err, 404, engine.ErrNotFound)
	err = e.c.CancelUserTaskReservation(ctx, "no-such-user-task")
	wantStatus(t, "cancel unknown", err, 404, engine.ErrNotFound)
	if s := instanceState(t, e.c, st.ProcessInstanceID); s != engine.InstanceFinished {
		t.Errorf("instance %s", s)
	}
	fl, err := e.c.QueryFlowNodeInstances(ctx, engine.FlowNodeInstanceQuery{ProcessInstanceID: []string{st.ProcessInstanceID}, State: []string{"finished"}})
	if err != nil || fl.TotalCount < 3 {
		t.Fatalf("flow nodes %+v, %v", fl, err)
	}
}

func TestEmulatorMessagesAndSignals(t *testing.T) {
	ctx := t.Context()
	e := newEnv(t, emulator.Config{}, engine.ClientConfig{})
	st, err := e.c.StartProcess(ctx, engine.ProcessStartRequest{ProcessModelID: "ct_events"})
	if err != nil {
		t.Fatal(err)
	}
	waitFlowNode := func(id string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
			l, err := e.c.QueryFlowNodeInstances(ctx, engine.FlowNodeInstanceQuery{ProcessInstanceID: []string{st.ProcessInstanceID}, FlowNodeID: []string{id}, State: []string{"suspended", "running"}})
			if err != nil {
				t.Fatal(err)
			}
			if l.TotalCount > 0 {
				return
			}
		}
		t.Fatalf("%s never reached", id)
	}
	waitFlowNode("ct_msg_catch")
	err = e.c.TriggerMessage(ctx, "ct message", nil, "no-such-instance")
	wantStatus(t, "message to unknown instance", err, 404, engine.ErrNotFound)
	if err := e.c.TriggerMessage(ctx, "ct message", json.RawMessage(`{"m":1}`), st.ProcessInstanceID); err != nil {
		t.Fatal(err)
	}
	waitFlowNode("ct_sig_catch")
	if err := e.c.TriggerSignal(ctx, "ct_signal", json.RawMessage(`{"s":1}`), ""); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); instanceState(t, e.c, st.ProcessInstanceID) != engine.InstanceFinished; {
		if time.Now().After(deadline) {
			t.Fatal("instance did not finish after message and signal")
		}
	}
}

func TestEmulatorLongPolls(t *testing.T) {
	ctx := t.Context()
	e := newEnv(t, emulator.Config{NotificationTimeout: 100 * time.Millisecond}, engine.ClientConfig{RequestTimeout: 400 * time.Millisecond})

	// fetch_and_lock holds the call for LongPollingTimeout (> RequestTimeout) and answers [].
	start := time.Now()
	tasks, err := e.c.FetchAndLock(ctx, engine.FetchAndLockRequest{WorkerID: "w", Topics: []string{"ct_work"}, MaxTasks: 1,
		LongPollingTimeout: 800 * time.Millisecond, LockDuration: time.Minute})
	if err != nil || tasks == nil || len(tasks) != 0 {
		t.Fatalf("long poll = %#v, %v", tasks, err)
	}
	if d := time.Since(start); d < 800*time.Millisecond {
		t.Errorf("long poll returned after %v", d)
	}

	// A waiting fetch wakes up on a new task.
	got := make(chan []engine.ExternalTask, 1)
	go func() {
		tasks, err := e.c.FetchAndLock(ctx, engine.FetchAndLockRequest{WorkerID: "w", Topics: []string{"ct_work"}, MaxTasks: 1,
			LongPollingTimeout: 10 * time.Second, LockDuration: time.Minute})
		if err != nil {
			t.Error(err)
		}
		got <- tasks
	}()
	// Start instances until the poll sees one (it may register after the first start; both are then locked by it or left).
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
wake:
	for started := 0; ; {
		select {
		case tasks := <-got:
			if len(tasks) != 1 || started == 0 {
				t.Fatalf("woken with %v after %d starts", tasks, started)
			}
			break wake
		case <-tick.C:
			if _, err := e.c.StartProcess(ctx, engine.ProcessStartRequest{ProcessModelID: "ct_external"}); err != nil {
				t.Fatal(err)
			}
			started++
		}
	}
	// Notifications: one event per call; the engine's own timeout → ErrNoNotification.
	if _, err := e.c.WaitForNotification(ctx, "user_task_finished"); !errors.Is(err, engine.ErrNoNotification) {
		t.Fatalf("idle notification: %v", err)
	}
	_, err = e.c.WaitForNotification(ctx, "no_such_event")
	wantStatus(t, "unknown event", err, 404, engine.ErrNotFound)
	ev := make(chan engine.EventMessage, 1)
	long := newEnv(t, emulator.Config{}, engine.ClientConfig{RequestTimeout: 100 * time.Millisecond})
	go func() {
		m, err := long.c.WaitForNotification(ctx, "process_started")
		if err != nil {
			t.Error(err)
		}
		ev <- m
	}()
	var ids []string
	for {
		select {
		case m := <-ev:
			if !slices.Contains(ids, m.ProcessInstanceID) || m.ProcessModelID != "ct_user" {
				t.Fatalf("event %+v, started %v", m, ids)
			}
			return
		case <-tick.C:
			st, err := long.c.StartProcess(ctx, engine.ProcessStartRequest{ProcessModelID: "ct_user"})
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, st.ProcessInstanceID)
		}
	}
}

func TestEmulatorFaults(t *testing.T) {
	ctx := t.Context()
	e := newEnv(t, emulator.Config{}, engine.ClientConfig{RequestTimeout: 200 * time.Millisecond})
	_, tk := e.fetchOne(t, "w", nil)

	for _, status := range []int{500, 502, 503} {
		e.emu.SetFaults(emulator.Faults{ErrorRate: 1, Status: status, PathContains: "/finish"})
		err := e.c.FinishTask(ctx, tk.ID, "w", nil)
		wantStatus(t, fmt.Sprintf("fault %d", status), err, status, nil)
		if !engine.IsTemporary(err) {
			t.Errorf("%d not temporary", status)
		}
	}
	e.emu.SetFaults(emulator.Faults{DropRate: 1, PathContains: "/finish"})
	err := e.c.FinishTask(ctx, tk.ID, "w", nil)
	var te *engine.TransportError
	if !errors.As(err, &te) || !engine.IsTemporary(err) {
		t.Fatalf("dropped: %T %v", err, err)
	}
	e.emu.SetFaults(emulator.Faults{StallRate: 1, PathContains: "/extend_lock"})
	start := time.Now()
	err = e.c.ExtendLock(ctx, tk.ID, "w", time.Minute)
	if !errors.As(err, &te) || !engine.IsTemporary(err) || time.Since(start) < 200*time.Millisecond {
		t.Fatalf("stalled: %T %v after %v", err, err, time.Since(start))
	}
	// Faults hit no state: with them off, the task is still ours to finish.
	e.emu.SetFaults(emulator.Faults{})
	if err := e.c.FinishTask(ctx, tk.ID, "w", nil); err != nil {
		t.Fatal(err)
	}
}

type fakeClock struct {
	off atomic.Int64
}

func (c *fakeClock) Now() time.Time      { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *fakeClock) Add(d time.Duration) { c.off.Add(int64(d)) }

func newOAuthEnv(t *testing.T, clientID, secret string, scopes []string) (*env, *authority.Authority, *countingHandler, *fakeClock, *testutil.Buffer, error) {
	t.Helper()
	clk := &fakeClock{}
	a, asrv, counter := startAuthority(t, authority.Config{Now: clk.Now})
	logs := &testutil.Buffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	emu, err := emulator.New(emulator.Config{Verify: a.Verify, AuthorityURL: asrv.URL + "/", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(emu)
	t.Cleanup(func() {
		_ = emu.Close()
		srv.Close()
	})
	if _, err := emu.Deploy([]byte(testBPMN)); err != nil {
		t.Fatal(err)
	}
	cc := engine.CredentialsConfig{EngineURL: srv.URL, ClientID: clientID, ClientSecret: secret, Scopes: scopes}
	log.Info("connecting", "credentials", cc)
	ts, err := engine.ClientCredentials(t.Context(), cc)
	if err != nil {
		return nil, a, counter, clk, logs, err
	}
	c, err := engine.NewClient(srv.URL, engine.ClientConfig{TokenSource: ts, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &env{emu: emu, srv: srv, c: c}, a, counter, clk, logs, nil
}

func TestEmulatorOAuthEndToEnd(t *testing.T) {
	ctx := t.Context()
	e, a, counter, clk, logs, err := newOAuthEnv(t, workerID, workerSecret, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, tk := e.fetchOne(t, "w", json.RawMessage(`{"k":"v"}`))
	if err := e.c.FinishTask(ctx, tk.ID, "w", json.RawMessage(`{}`)); err != nil {
		t.Fatal(err)
	}
	l, err := e.c.QueryProcessInstances(ctx, engine.ProcessInstanceQuery{ProcessInstanceID: []string{st.ProcessInstanceID}})
	if err != nil || len(l.ProcessInstances) != 1 || l.ProcessInstances[0].OwnerID != workerID {
		t.Fatalf("instance %+v, %v (owner must be the authority's client id)", l, err)
	}
	if n := counter.tokens.Load(); n != 1 {
		t.Errorf("%d token requests, want 1", n)
	}

	// The engine rejects the token as expired before the source thinks so
	// (authority clock ahead): the client refreshes once and retries.
	clk.Add(2 * time.Hour)
	st, tk = e.fetchOne(t, "w", nil)
	if n := counter.tokens.Load(); n != 2 {
		t.Errorf("%d token requests after expiry, want 2", n)
	}
	if err := e.c.FinishTask(ctx, tk.ID, "w", nil); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "refreshing") {
		t.Errorf("no refresh logged: %s", logs.String())
	}

	// An end user's token forwarded with WithToken: its identity owns the instance.
	userTok, err := a.Issue("etw_only", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.c.StartProcess(engine.WithToken(ctx, userTok), engine.ProcessStartRequest{ProcessModelID: "ct_external"})
	wantStatus(t, "forwarded token without engine_write", err, 403, engine.ErrForbidden)
	_, err = e.c.ProcessModels(engine.WithToken(ctx, "not-a-token"), 0, 0)
	wantStatus(t, "invalid token", err, 401, engine.ErrUnauthorized)

	assertNoSecrets(t, logs.String(), workerSecret, userTok)
	_ = st
}

func TestEmulatorAuthErrors(t *testing.T) {
	ctx := t.Context()
	// Wrong secret at the authority.
	_, _, _, _, logs, err := newOAuthEnv(t, workerID, "not-the-secret-123", nil)
	if err == nil || !strings.Contains(err.Error(), "invalid_client") {
		t.Fatalf("wrong secret: %v", err)
	}
	assertNoSecrets(t, err.Error()+logs.String(), "not-the-secret-123", workerSecret)

	// A token lacking scopes: 403 per route.
	e, _, _, _, logs, err := newOAuthEnv(t, "etw_only", "etw-only-secret-123", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.c.StartProcess(ctx, engine.ProcessStartRequest{ProcessModelID: "ct_external"})
	wantStatus(t, "start without engine_write", err, 403, engine.ErrForbidden)
	_, err = e.c.QueryProcessInstances(ctx, engine.ProcessInstanceQuery{})
	wantStatus(t, "query without engine_read", err, 403, engine.ErrForbidden)
	_, err = e.c.WaitForNotification(ctx, "process_started")
	wantStatus(t, "notifications without engine_read", err, 403, engine.ErrForbidden)
	if _, err := e.c.DeployedTopics(ctx); err != nil {
		t.Errorf("engine_etw route: %v", err)
	}
	assertNoSecrets(t, logs.String(), "etw-only-secret-123")

	// Dummy token refused when anonymous root access is off.
	emu, err := emulator.New(emulator.Config{DenyAnonymous: true, Verify: func(string) (emulator.Identity, error) {
		return emulator.Identity{}, errors.New("unknown token")
	}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(emu)
	defer srv.Close()
	defer emu.Close()
	c, err := engine.NewClient(srv.URL, engine.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.DeployedTopics(ctx)
	wantStatus(t, "dummy token denied", err, 401, engine.ErrUnauthorized)
	_, err = c.DeployedTopics(engine.WithToken(ctx, "some-token"))
	wantStatus(t, "unknown token", err, 401, engine.ErrUnauthorized)
}

func assertNoSecrets(t *testing.T, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("secret or token %q… found in output", s[:min(6, len(s))])
		}
	}
}

// BenchmarkFinishTaskEmulator measures the FinishTask round trip against the
// in-process emulator over loopback HTTP.
func BenchmarkFinishTaskEmulator(b *testing.B) {
	emu, err := emulator.New(emulator.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer emu.Close()
	if _, err := emu.Deploy([]byte(testBPMN)); err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(emu)
	defer srv.Close()
	c, err := engine.NewClient(srv.URL, engine.ClientConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	for range b.N {
		if _, err := emu.Start(ctx, engine.ProcessStartRequest{ProcessModelID: "ct_external", ReturnOn: engine.ReturnOnCreated}); err != nil {
			b.Fatal(err)
		}
	}
	var ids []string
	for len(ids) < b.N {
		tasks, err := c.FetchAndLock(ctx, engine.FetchAndLockRequest{WorkerID: "w", Topics: []string{"ct_work"}, MaxTasks: 1000,
			LongPollingTimeout: time.Second, LockDuration: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		for _, tk := range tasks {
			ids = append(ids, tk.ID)
		}
	}
	var next atomic.Int64
	result := json.RawMessage(`{"ok":true}`)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1) - 1
			if err := c.FinishTask(ctx, ids[i], "w", result); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
