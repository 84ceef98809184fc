package emulator

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pe-bridge/pe-bridge/engine"
)

// startAsync starts over HTTP in the background.
func (h *harness) startAsync(body map[string]any, path string) chan [2]any {
	ch := make(chan [2]any, 1)
	go func() {
		st, b := h.do("POST", path, body)
		ch <- [2]any{st, b}
	}()
	return ch
}

func waitResult(t *testing.T, ch chan [2]any) (int, []byte) {
	t.Helper()
	select {
	case r := <-ch:
		return r[0].(int), r[1].([]byte)
	case <-time.After(10 * time.Second):
		t.Fatal("no answer")
	}
	return 0, nil
}

func TestStartReturnOn(t *testing.T) {
	h := newHarness(t, Config{})
	// returnOn 1 (and missing returnOn) answers at once.
	var r engine.ProcessStartResponse
	h.must(200, "POST", "/process_models/hello_world/start", map[string]any{"processModelId": "hello_world", "correlationId": "c-1"}, &r)
	if r.ProcessInstanceID == "" || r.CorrelationID != "c-1" || r.EndEventID != "" || r.TokenPayload != nil {
		t.Fatalf("returnOn default: %+v", r)
	}
	h.must(200, "POST", "/process_models/hello_world/start", map[string]any{"returnOn": 1}, &r)
	if len(r.CorrelationID) != 36 {
		t.Fatalf("generated correlation id %q", r.CorrelationID)
	}
	// returnOn 2 waits for the end event; the literal :process_model_id falls back to the body.
	ch := h.startAsync(map[string]any{"processModelId": "hello_world", "returnOn": 2, "initialToken": map[string]any{"in": 1}}, "/process_models/:process_model_id/start")
	var tk engine.ExternalTask
	eventually(t, "task created", func() bool {
		ts := h.fetch("w", "SampleExternalTask", 10, 0, 30000)
		for _, x := range ts {
			if string(x.Payload) == `{"in":1}` {
				tk = x
			} else {
				h.must(204, "PUT", "/external_tasks/"+x.ID+"/finish", map[string]any{"workerId": "w"}, nil)
			}
		}
		return tk.ID != ""
	})
	select {
	case <-ch:
		t.Fatal("returnOn 2 answered before the end")
	default:
	}
	h.must(204, "PUT", "/external_tasks/"+tk.ID+"/finish", map[string]any{"workerId": "w", "result": map[string]any{"out": 2}}, nil)
	st, b := waitResult(t, ch)
	if st != 200 {
		t.Fatalf("returnOn 2: %d %s", st, b)
	}
	_ = json.Unmarshal(b, &r)
	if r.EndEventID != "the_end_event" || r.ProcessInstanceID != tk.ProcessInstanceID {
		t.Fatalf("returnOn 2: %+v", r)
	}
	jsonEq(t, r.TokenPayload, `{"out":2}`)
	// returnOn 3 with a specific end event.
	ch = h.startAsync(map[string]any{"returnOn": 3, "endEventId": "error_end", "initialToken": map[string]any{"k": 3}}, "/process_models/error_boundary/start")
	var tk2 engine.ExternalTask
	eventually(t, "task created", func() bool {
		ts := h.fetch("w", "CheckCredit", 1, 0, 30000)
		if len(ts) == 1 {
			tk2 = ts[0]
		}
		return tk2.ID != ""
	})
	h.must(204, "PUT", "/external_tasks/"+tk2.ID+"/error", map[string]any{"workerId": "w", "error": map[string]any{"errorCode": "credit_rejected"}}, nil)
	st, b = waitResult(t, ch)
	_ = json.Unmarshal(b, &r)
	if st != 200 || r.EndEventID != "error_end" {
		t.Fatalf("returnOn 3: %d %s", st, b)
	}
	// returnOn 2 on an instance that fails → error with bpmnError.
	ch = h.startAsync(map[string]any{"returnOn": 2}, "/process_models/hello_world/start")
	var tk3 engine.ExternalTask
	eventually(t, "task created", func() bool {
		ts := h.fetch("w", "SampleExternalTask", 1, 0, 30000)
		if len(ts) == 1 {
			tk3 = ts[0]
		}
		return tk3.ID != ""
	})
	h.must(204, "PUT", "/external_tasks/"+tk3.ID+"/error", map[string]any{"workerId": "w", "error": map[string]any{"errorCode": "E1", "errorMessage": "bad"}}, nil)
	st, b = waitResult(t, ch)
	be := checkError(t, 500, st, b)
	if !strings.Contains(string(be.AdditionalInformation), `"bpmnError"`) || !strings.Contains(string(be.AdditionalInformation), `"E1"`) {
		t.Fatalf("bpmnError missing: %s", be.AdditionalInformation)
	}
	h.wantError(404, "POST", "/process_models/missing/start", map[string]any{})
	h.wantError(404, "POST", "/process_models/hello_world/start", map[string]any{"startEventId": "nope"})
	h.wantError(404, "POST", "/process_models/hello_world/start", map[string]any{"returnOn": 3, "endEventId": "nope"})
}

func TestGoStartHonoursContext(t *testing.T) {
	h := newHarness(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := h.e.Start(ctx, engine.ProcessStartRequest{ProcessModelID: "hello_world", ReturnOn: engine.ReturnOnFinished})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v", err)
	}
	_, err = h.e.Start(context.Background(), engine.ProcessStartRequest{ProcessModelID: "nope"})
	if !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("err %v", err)
	}
}

func TestInstanceQueryAndTerminate(t *testing.T) {
	h := newHarness(t, Config{})
	a := h.start("hello_world", nil, 1)
	b := h.start("hello_world", nil, 1)
	h.start("message_catch", nil, 1)
	var list engine.ProcessInstanceList
	h.must(200, "GET", "/process_instances/query?processModelId=hello_world&includeCount=true", nil, &list)
	if list.TotalCount != 2 || len(list.ProcessInstances) != 2 {
		t.Fatalf("query: %+v", list)
	}
	h.must(200, "GET", "/process_instances/query?processInstanceId="+a.ProcessInstanceID+","+b.ProcessInstanceID+"&state=running", nil, &list)
	if list.TotalCount != 2 {
		t.Fatalf("comma list: %+v", list)
	}
	h.must(200, "GET", "/process_instances/query?limit=1&offset=1", nil, &list)
	if list.TotalCount != 3 || len(list.ProcessInstances) != 1 {
		t.Fatalf("paging: %+v", list)
	}
	tk := h.fetchOne("w", "SampleExternalTask")
	other := a.ProcessInstanceID
	if tk.ProcessInstanceID == other {
		other = b.ProcessInstanceID
	}
	h.must(204, "PUT", "/process_instances/"+tk.ProcessInstanceID+"/terminate", map[string]any{}, nil)
	// The terminated instance's task is closed: extend/finish → 409.
	h.wantError(409, "PUT", "/external_tasks/"+tk.ID+"/extend_lock", map[string]any{"workerId": "w", "additionalDuration": 1000})
	h.wantError(409, "PUT", "/external_tasks/"+tk.ID+"/finish", map[string]any{"workerId": "w"})
	h.wantError(409, "PUT", "/process_instances/"+tk.ProcessInstanceID+"/terminate", map[string]any{})
	h.wantError(404, "PUT", "/process_instances/nope/terminate", map[string]any{})
	pi := h.instance(tk.ProcessInstanceID)
	if pi.State != "terminated" || pi.TerminatedByUserID != engine.DummyUserID || pi.FinishedAt == nil {
		t.Fatalf("terminated instance %+v", pi)
	}
	h.must(200, "GET", "/process_instances/query?state=terminated", nil, &list)
	if list.TotalCount != 1 || list.ProcessInstances[0].ProcessInstanceID != tk.ProcessInstanceID {
		t.Fatalf("state filter %+v", list)
	}
	// The other instance's task is still fetchable.
	if got := h.fetchOne("w", "SampleExternalTask"); got.ProcessInstanceID != other {
		t.Fatalf("wrong task %+v", got)
	}
}

func TestUserTasksAndApproval(t *testing.T) {
	h := newHarness(t, Config{})
	big := h.start("approval", map[string]any{"amount": 1500}, 1)
	small := h.start("approval", map[string]any{"amount": 200}, 1)
	if pi := h.instance(small.ProcessInstanceID); pi.State != "finished" || pi.EndEventID != "approved_end" {
		t.Fatalf("auto path: %+v", pi)
	} else {
		jsonEq(t, pi.EndToken, `{"approved":true,"autoApproved":true,"amount":200}`)
	}
	var list engine.FlowNodeInstanceList
	h.must(200, "GET", "/flow_node_instances?processInstanceId="+big.ProcessInstanceID+"&state=suspended&flowNodeType=bpmn%3AUserTask&includeCount=true", nil, &list)
	if list.TotalCount != 1 || len(list.FlowNodeInstances) != 1 {
		t.Fatalf("user task query: %+v", list)
	}
	ut := list.FlowNodeInstances[0]
	if ut.FlowNodeID != "manual_approval" || ut.FlowNodeLane != "Manager" || ut.State != "suspended" || ut.FlowNodeType != "bpmn:UserTask" ||
		ut.UserTaskConfig == nil || len(ut.UserTaskConfig.FormFields) != 5 || ut.ProcessModelID != "approval" {
		t.Fatalf("user task %+v", ut)
	}
	jsonEq(t, ut.StartToken, `{"amount":1500}`)
	ff := ut.UserTaskConfig.FormFields
	if ff[0].ID != "approved" || ff[0].Type != "boolean" || ff[2].DefaultValue != "0" || string(ff[2].ParsedCustomForm) == "" ||
		len(ff[3].EnumValues) != 3 || ff[3].EnumValues[1].Name != "Hardware" {
		t.Fatalf("form fields %+v", ff)
	}
	// Comma lists and other filters.
	h.must(200, "GET", "/flow_node_instances?state=suspended,finished&flowNodeType=bpmn:UserTask", nil, &list)
	if list.TotalCount != 1 {
		t.Fatalf("comma state: %+v", list.TotalCount)
	}
	h.must(200, "GET", "/flow_node_instances?processInstanceId="+small.ProcessInstanceID, nil, &list)
	if list.TotalCount != 4 { // start, gateway, script task, end
		t.Fatalf("flow nodes of auto path: %d", list.TotalCount)
	}
	id := ut.FlowNodeInstanceID
	h.wantError(404, "PUT", "/user_tasks/nope/reserve", map[string]any{"actualOwnerId": "u1"})
	h.must(204, "PUT", "/user_tasks/"+id+"/reserve", map[string]any{"actualOwnerId": "u1"}, nil)
	h.wantError(409, "PUT", "/user_tasks/"+id+"/reserve", map[string]any{"actualOwnerId": "u2"})
	h.must(200, "GET", "/flow_node_instances?flowNodeInstanceId="+id, nil, &list)
	if list.FlowNodeInstances[0].ActualOwnerID != "u1" {
		t.Fatalf("owner %q", list.FlowNodeInstances[0].ActualOwnerID)
	}
	h.must(204, "DELETE", "/user_tasks/"+id+"/cancel-reservation", nil, nil)
	list = engine.FlowNodeInstanceList{}
	h.must(200, "GET", "/flow_node_instances?flowNodeInstanceId="+id, nil, &list)
	if list.FlowNodeInstances[0].ActualOwnerID != "" {
		t.Fatal("reservation not cancelled")
	}
	h.must(204, "PUT", "/user_tasks/"+id+"/finish", map[string]any{"approved": true, "comment": "ok"}, nil)
	pi := h.instance(big.ProcessInstanceID)
	if pi.State != "finished" || pi.EndEventID != "approved_end" {
		t.Fatalf("approval: %+v", pi)
	}
	jsonEq(t, pi.EndToken, `{"approved":true,"comment":"ok"}`)
	h.wantError(409, "PUT", "/user_tasks/"+id+"/finish", map[string]any{})
	h.wantError(409, "PUT", "/user_tasks/"+id+"/reserve", map[string]any{"actualOwnerId": "u1"})
	h.wantError(409, "DELETE", "/user_tasks/"+id+"/cancel-reservation", nil)
	h.wantError(404, "DELETE", "/user_tasks/nope/cancel-reservation", nil)
	// Rejected path through the default flow.
	rej := h.start("approval", map[string]any{"amount": 5000}, 1)
	h.must(200, "GET", "/flow_node_instances?processInstanceId="+rej.ProcessInstanceID+"&flowNodeType=bpmn:UserTask&state=suspended", nil, &list)
	h.must(204, "PUT", "/user_tasks/"+list.FlowNodeInstances[0].FlowNodeInstanceID+"/finish", nil, nil)
	if pi := h.instance(rej.ProcessInstanceID); pi.EndEventID != "rejected_end" {
		t.Fatalf("rejected: %+v", pi)
	}
}

func TestMessagesAndSignals(t *testing.T) {
	h := newHarness(t, Config{})
	a := h.start("message_catch", nil, 1)
	b := h.start("message_catch", nil, 1)
	// Restricted to one instance (process_instance_id), TS form: the body is the payload.
	h.must(204, "POST", "/messages/approval_received/trigger?process_instance_id="+a.ProcessInstanceID, map[string]any{"ok": 1}, nil)
	if pi := h.instance(a.ProcessInstanceID); pi.State != "finished" {
		t.Fatalf("a: %+v", pi)
	} else {
		jsonEq(t, pi.EndToken, `{"ok":1}`)
	}
	if pi := h.instance(b.ProcessInstanceID); pi.State != "running" {
		t.Fatalf("b triggered too: %+v", pi)
	}
	// Python form {payload: ...} with processInstanceId.
	h.must(204, "POST", "/messages/approval_received/trigger?processInstanceId="+b.ProcessInstanceID, map[string]any{"payload": map[string]any{"ok": 2}}, nil)
	if pi := h.instance(b.ProcessInstanceID); pi.State != "finished" {
		t.Fatalf("b: %+v", pi)
	} else {
		jsonEq(t, pi.EndToken, `{"ok":2}`)
	}
	h.wantError(404, "POST", "/messages/approval_received/trigger?process_instance_id=nope", nil)
	// Unknown message: accepted, nothing happens.
	h.must(204, "POST", "/messages/nobody_waits/trigger", nil, nil)
	// Signals reach every waiting instance.
	s1 := h.start("signal_catch", nil, 1)
	s2 := h.start("signal_catch", nil, 1)
	h.must(204, "POST", "/signals/go/trigger", map[string]any{"go": true}, nil)
	for _, s := range []string{s1.ProcessInstanceID, s2.ProcessInstanceID} {
		if pi := h.instance(s); pi.State != "finished" {
			t.Fatalf("signal: %+v", pi)
		}
	}
}

func TestParallelAndTerminateEnd(t *testing.T) {
	h := newHarness(t, Config{})
	st := h.start("parallel", map[string]any{"n": 1}, 1)
	a := h.fetchOne("w", "BranchA")
	b := h.fetchOne("w", "BranchB")
	h.must(204, "PUT", "/external_tasks/"+a.ID+"/finish", map[string]any{"workerId": "w", "result": "A"}, nil)
	if pi := h.instance(st.ProcessInstanceID); pi.State != "running" {
		t.Fatalf("join did not wait: %+v", pi)
	}
	h.must(204, "PUT", "/external_tasks/"+b.ID+"/finish", map[string]any{"workerId": "w", "result": "B"}, nil)
	pi := h.instance(st.ProcessInstanceID)
	if pi.State != "finished" || pi.EndEventID != "par_end" {
		t.Fatalf("parallel: %+v", pi)
	}
	jsonEq(t, pi.EndToken, `{"task_a":"A","task_b":"B"}`)

	// Terminate end event closes the open external task of the other branch.
	tr := h.start("terminate", nil, 1)
	tk := h.fetchOne("w", "LongTask")
	h.must(204, "POST", "/messages/stop_process/trigger", nil, nil)
	pi = h.instance(tr.ProcessInstanceID)
	if pi.State != "terminated" || pi.EndEventID != "terminate_end" {
		t.Fatalf("terminate: %+v", pi)
	}
	h.wantError(409, "PUT", "/external_tasks/"+tk.ID+"/extend_lock", map[string]any{"workerId": "w", "additionalDuration": 1000})
}

func TestTimerBoundaryCancelsTask(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLocal(t)
		pi := l.start("timer_cancel", `{"slow":true}`)
		tk := l.fetch("w", "SlowTask", 1, 0, 30000)[0]
		time.Sleep(1900 * time.Millisecond)
		l.status(204, "PUT", "/external_tasks/"+tk.ID+"/extend_lock", map[string]any{"workerId": "w", "additionalDuration": 30000})
		time.Sleep(200 * time.Millisecond)
		synctest.Wait()
		got := l.inst(pi)
		if got.State != "finished" || got.EndEventID != "timeout_end" {
			t.Fatalf("instance %+v", got)
		}
		l.status(409, "PUT", "/external_tasks/"+tk.ID+"/extend_lock", map[string]any{"workerId": "w", "additionalDuration": 30000})
		l.status(409, "PUT", "/external_tasks/"+tk.ID+"/finish", map[string]any{"workerId": "w"})
		if s := l.e.Stats(); s.TasksCanceled != 1 || s.PendingTasks != 0 {
			t.Fatalf("stats %+v", s)
		}
		// Finishing before the timer takes the normal path and disarms the timer.
		pi2 := l.start("timer_cancel", `{}`)
		tk2 := l.fetch("w", "SlowTask", 1, 0, 30000)[0]
		l.status(204, "PUT", "/external_tasks/"+tk2.ID+"/finish", map[string]any{"workerId": "w"})
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if got := l.inst(pi2); got.EndEventID != "done_end" {
			t.Fatalf("instance %+v", got)
		}
	})
}

func TestNotifications(t *testing.T) {
	h := newHarness(t, Config{})
	events := []string{"process_started", "external_task_created", "activity_reached", "process_ended", "external_task_locked", "activity_finished"}
	got := map[string]chan engine.EventMessage{}
	for _, ev := range events {
		ch := make(chan engine.EventMessage, 1)
		got[ev] = ch
		go func(ev string) {
			st, b := h.do("GET", "/notifications/long_polling/"+ev, nil)
			var m engine.EventMessage
			if st == 200 {
				_ = json.Unmarshal(b, &m)
			}
			ch <- m
		}(ev)
	}
	eventually(t, "pollers registered", func() bool {
		h.e.mu.Lock()
		defer h.e.mu.Unlock()
		return len(h.e.notify) == len(events)
	})
	st := h.start("hello_world", map[string]any{"v": 1}, 1)
	tk := h.fetchOne("w", "SampleExternalTask")
	h.must(204, "PUT", "/external_tasks/"+tk.ID+"/finish", map[string]any{"workerId": "w", "result": 1}, nil)
	for _, ev := range events {
		select {
		case m := <-got[ev]:
			if m.ProcessInstanceID != st.ProcessInstanceID || m.ProcessModelID != "hello_world" || m.CorrelationID == "" || m.CurrentToken == nil {
				t.Fatalf("%s: %+v", ev, m)
			}
			if strings.HasPrefix(ev, "external_task") && m.ExternalTaskID != tk.ID {
				t.Fatalf("%s: %+v", ev, m)
			}
			if ev == "external_task_locked" && (m.WorkerID != "w" || m.LockExpirationTime == nil) {
				t.Fatalf("%s: %+v", ev, m)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %s event", ev)
		}
	}
	h.wantError(404, "GET", "/notifications/long_polling/not_an_event", nil)
}

func TestNotificationTimeoutAndUserTaskEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, err := New(Config{NotificationTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		l := &local{t: t, e: e}
		if _, err := e.LoadFS(modelsFS()); err != nil {
			t.Fatal(err)
		}
		res := make(chan int, 1)
		go func() {
			st, _ := l.do("GET", "/notifications/long_polling/user_task_finished", nil)
			res <- st
		}()
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if st := <-res; st != 204 {
			t.Fatalf("timeout status %d", st)
		}
		waiting := make(chan []byte, 1)
		go func() { _, b := l.do("GET", "/notifications/long_polling/user_task_waiting", nil); waiting <- b }()
		synctest.Wait()
		pi := l.start("approval", `{"amount":2000}`)
		var m engine.EventMessage
		_ = json.Unmarshal(<-waiting, &m)
		if m.FlowNodeID != "manual_approval" || m.FlowNodeType != "bpmn:UserTask" || m.ProcessInstanceID != pi || m.FlowNodeInstanceID == "" {
			t.Fatalf("user_task_waiting %+v", m)
		}
		fin := make(chan []byte, 1)
		go func() { _, b := l.do("GET", "/notifications/long_polling/user_task_finished", nil); fin <- b }()
		synctest.Wait()
		l.status(204, "PUT", "/user_tasks/"+m.FlowNodeInstanceID+"/finish", `{"approved":false}`)
		var f engine.EventMessage
		_ = json.Unmarshal(<-fin, &f)
		if string(f.UserTaskResult) != `{"approved":false}` {
			t.Fatalf("user_task_finished %+v", f)
		}
	})
}
