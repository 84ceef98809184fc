package emulator

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pe-bridge/pe-bridge/engine"
)

const defsHead = `<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:camunda="http://camunda.org/schema/1.0/bpmn" id="Defs_test">`

// elementsBPMN exercises the elements the sample models do not.
const elementsBPMN = defsHead + `
  <bpmn:process id="elements" isExecutable="true">
    <bpmn:startEvent id="s"><bpmn:outgoing>f1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="wait" />
    <bpmn:intermediateCatchEvent id="wait"><bpmn:incoming>f1</bpmn:incoming><bpmn:outgoing>f2</bpmn:outgoing>
      <bpmn:timerEventDefinition><bpmn:timeDuration>PT1S</bpmn:timeDuration></bpmn:timerEventDefinition>
    </bpmn:intermediateCatchEvent>
    <bpmn:sequenceFlow id="f2" sourceRef="wait" targetRef="work" />
    <bpmn:serviceTask id="work" camunda:type="external" camunda:topic="Work"><bpmn:incoming>f2</bpmn:incoming><bpmn:outgoing>f3</bpmn:outgoing></bpmn:serviceTask>
    <bpmn:boundaryEvent id="remind" attachedToRef="work" cancelActivity="false"><bpmn:outgoing>f4</bpmn:outgoing>
      <bpmn:timerEventDefinition><bpmn:timeDuration>PT0.5S</bpmn:timeDuration></bpmn:timerEventDefinition>
    </bpmn:boundaryEvent>
    <bpmn:boundaryEvent id="abort" attachedToRef="work"><bpmn:outgoing>f5</bpmn:outgoing>
      <bpmn:messageEventDefinition messageRef="m_abort" />
    </bpmn:boundaryEvent>
    <bpmn:boundaryEvent id="any_error" attachedToRef="work"><bpmn:outgoing>f6</bpmn:outgoing>
      <bpmn:errorEventDefinition />
    </bpmn:boundaryEvent>
    <bpmn:sequenceFlow id="f3" sourceRef="work" targetRef="throw" />
    <bpmn:intermediateThrowEvent id="throw"><bpmn:incoming>f3</bpmn:incoming><bpmn:outgoing>f7</bpmn:outgoing>
      <bpmn:signalEventDefinition signalRef="sig_done" />
    </bpmn:intermediateThrowEvent>
    <bpmn:sequenceFlow id="f7" sourceRef="throw" targetRef="done" />
    <bpmn:endEvent id="done"><bpmn:incoming>f7</bpmn:incoming></bpmn:endEvent>
    <bpmn:sequenceFlow id="f4" sourceRef="remind" targetRef="reminded" />
    <bpmn:endEvent id="reminded"><bpmn:incoming>f4</bpmn:incoming></bpmn:endEvent>
    <bpmn:sequenceFlow id="f5" sourceRef="abort" targetRef="aborted" />
    <bpmn:endEvent id="aborted"><bpmn:incoming>f5</bpmn:incoming></bpmn:endEvent>
    <bpmn:sequenceFlow id="f6" sourceRef="any_error" targetRef="failed" />
    <bpmn:endEvent id="failed"><bpmn:incoming>f6</bpmn:incoming>
      <bpmn:errorEventDefinition errorRef="err_final" />
    </bpmn:endEvent>
  </bpmn:process>
  <bpmn:process id="listener" isExecutable="true">
    <bpmn:startEvent id="ls"><bpmn:outgoing>g1</bpmn:outgoing><bpmn:signalEventDefinition signalRef="sig_done" /></bpmn:startEvent>
    <bpmn:sequenceFlow id="g1" sourceRef="ls" targetRef="recv" />
    <bpmn:receiveTask id="recv" messageRef="m_ack"><bpmn:incoming>g1</bpmn:incoming><bpmn:outgoing>g2</bpmn:outgoing></bpmn:receiveTask>
    <bpmn:sequenceFlow id="g2" sourceRef="recv" targetRef="le" />
    <bpmn:endEvent id="le"><bpmn:incoming>g2</bpmn:incoming></bpmn:endEvent>
  </bpmn:process>
  <bpmn:message id="m_abort" name="abort_work" />
  <bpmn:message id="m_ack" name="ack" />
  <bpmn:signal id="sig_done" name="work_done" />
  <bpmn:error id="err_final" name="Final" errorCode="final_error" />
</bpmn:definitions>`

func TestBPMNElements(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLocal(t)
		if _, err := l.e.Deploy([]byte(elementsBPMN)); err != nil {
			t.Fatal(err)
		}
		// Timer catch event holds the token for PT1S; POST /timer/{id}/trigger fires it early.
		early := l.start("elements", `{}`)
		b := l.status(200, "GET", "/flow_node_instances?processInstanceId="+early+"&flowNodeId=wait", nil)
		var waits engine.FlowNodeInstanceList
		_ = json.Unmarshal(b, &waits)
		l.status(204, "POST", "/timer/"+waits.FlowNodeInstances[0].FlowNodeInstanceID+"/trigger", nil)
		l.status(409, "POST", "/timer/"+waits.FlowNodeInstances[0].FlowNodeInstanceID+"/trigger", nil)
		l.status(404, "POST", "/timer/nope/trigger", nil)
		if got := l.fetch("w", "Work", 1, 0, 60000); len(got) != 1 || got[0].ProcessInstanceID != early {
			t.Fatalf("triggered timer: %+v", got)
		}
		l.status(204, "PUT", "/process_instances/"+early+"/terminate", `{}`)
		pi := l.start("elements", `{"n":1}`)
		if got := l.fetch("w", "Work", 1, 0, 60000); len(got) != 0 {
			t.Fatal("task before the timer fired")
		}
		time.Sleep(time.Second)
		synctest.Wait()
		tk := l.fetch("w", "Work", 1, 0, 60000)
		if len(tk) != 1 {
			t.Fatal("no task after the timer")
		}
		// Non-interrupting timer boundary: a second token ends at "reminded"; the task stays open.
		time.Sleep(600 * time.Millisecond)
		synctest.Wait()
		var list engine.FlowNodeInstanceList
		b = l.status(200, "GET", "/flow_node_instances?processInstanceId="+pi+"&flowNodeId=reminded", nil)
		if !strings.Contains(string(b), `"state":"finished"`) {
			t.Fatalf("non-interrupting timer path: %s", b)
		}
		_ = list
		if got := l.inst(pi); got.State != "running" {
			t.Fatalf("instance %+v", got)
		}
		// Finish → signal throw starts "listener" (signal start) which waits in a receive task.
		l.status(204, "PUT", "/external_tasks/"+tk[0].ID+"/finish", map[string]any{"workerId": "w", "result": map[string]any{"r": 1}})
		got := l.inst(pi)
		if got.State != "finished" || got.EndEventID != "done" {
			t.Fatalf("instance %+v", got)
		}
		b = l.status(200, "GET", "/process_instances/query?processModelId=listener&state=running", nil)
		if !strings.Contains(string(b), `"totalCount":1`) {
			t.Fatalf("signal start: %s", b)
		}
		l.status(204, "POST", "/messages/ack/trigger", `{"acked":true}`)
		b = l.status(200, "GET", "/process_instances/query?processModelId=listener&state=finished", nil)
		if !strings.Contains(string(b), `"totalCount":1`) || !strings.Contains(string(b), `"endToken":{"acked":true}`) {
			t.Fatalf("receive task: %s", b)
		}

		// Interrupting message boundary closes the task (409 afterwards).
		pi2 := l.start("elements", `{}`)
		time.Sleep(time.Second)
		synctest.Wait()
		tk2 := l.fetch("w", "Work", 1, 0, 60000)[0]
		l.status(204, "POST", "/messages/abort_work/trigger?process_instance_id="+pi2, `{"why":"stop"}`)
		if got := l.inst(pi2); got.EndEventID != "aborted" || got.State != "finished" {
			t.Fatalf("message boundary: %+v", got)
		}
		l.status(409, "PUT", "/external_tasks/"+tk2.ID+"/finish", map[string]any{"workerId": "w"})

		// Catch-all error boundary → error end event → instance error with that error code.
		resp := make(chan error, 1)
		go func() {
			_, err := l.e.Start(context.Background(), engine.ProcessStartRequest{ProcessModelID: "elements", ReturnOn: engine.ReturnOnFinished})
			resp <- err
		}()
		time.Sleep(time.Second)
		synctest.Wait()
		tk3 := l.fetch("w", "Work", 1, 0, 60000)[0]
		l.status(204, "PUT", "/external_tasks/"+tk3.ID+"/error", map[string]any{"workerId": "w", "error": map[string]any{"errorCode": "whatever"}})
		err := <-resp
		var ee *engine.Error
		if !asEngineError(err, &ee) || ee.Status != 500 || !strings.Contains(string(ee.Body.AdditionalInformation), "final_error") {
			t.Fatalf("error end: %v", err)
		}
		if got := l.inst(tk3.ProcessInstanceID); got.State != "error" || got.EndEventID != "failed" {
			t.Fatalf("error end instance: %+v", got)
		}
	})
}

func TestRuntimeExpressionErrors(t *testing.T) {
	h := newHarness(t, Config{})
	bad := defsHead + `
  <bpmn:process id="cond" isExecutable="true">
    <bpmn:startEvent id="s"><bpmn:outgoing>f1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="gw" />
    <bpmn:exclusiveGateway id="gw"><bpmn:incoming>f1</bpmn:incoming><bpmn:outgoing>f2</bpmn:outgoing><bpmn:outgoing>f3</bpmn:outgoing></bpmn:exclusiveGateway>
    <bpmn:sequenceFlow id="f2" sourceRef="gw" targetRef="e1"><bpmn:conditionExpression>token.current.a.b.c &gt; 1</bpmn:conditionExpression></bpmn:sequenceFlow>
    <bpmn:sequenceFlow id="f3" sourceRef="gw" targetRef="e1"><bpmn:conditionExpression>false</bpmn:conditionExpression></bpmn:sequenceFlow>
    <bpmn:endEvent id="e1"><bpmn:incoming>f2</bpmn:incoming><bpmn:incoming>f3</bpmn:incoming></bpmn:endEvent>
  </bpmn:process>
</bpmn:definitions>`
	if _, err := h.e.Deploy([]byte(bad)); err != nil {
		t.Fatal(err)
	}
	st := h.start("cond", map[string]any{}, 1)
	if pi := h.instance(st.ProcessInstanceID); pi.State != "error" || !strings.Contains(string(pi.Error), "f2") {
		t.Fatalf("condition error: %+v %s", pi, pi.Error)
	}
	st = h.start("cond", map[string]any{"a": map[string]any{"b": map[string]any{"c": 0}}}, 1)
	if pi := h.instance(st.ProcessInstanceID); pi.State != "error" || !strings.Contains(string(pi.Error), "no outgoing flow") {
		t.Fatalf("no flow: %+v %s", pi, pi.Error)
	}
	// Syntax errors are reported at deploy time with the element id.
	syn := strings.Replace(bad, "token.current.a.b.c &gt; 1", "token.current.(", 1)
	syn = strings.Replace(syn, `id="cond"`, `id="cond2"`, 1)
	_, err := h.e.Deploy([]byte(syn))
	if err == nil || !strings.Contains(err.Error(), `"f2"`) {
		t.Fatalf("deploy error %v", err)
	}
	// Endless loops are interrupted.
	loop := strings.Replace(bad, "token.current.a.b.c &gt; 1", "(function(){ while(true){} })()", 1)
	loop = strings.Replace(loop, `id="cond"`, `id="cond3"`, 1)
	if _, err := h.e.Deploy([]byte(loop)); err != nil {
		t.Fatal(err)
	}
	st = h.start("cond3", nil, 1)
	if pi := h.instance(st.ProcessInstanceID); pi.State != "error" {
		t.Fatalf("loop: %+v", pi)
	}
}

func asEngineError(err error, target **engine.Error) bool {
	e, ok := err.(*engine.Error)
	if ok {
		*target = e
	}
	return ok
}

const waitingTasksBPMN = defsHead + `
  <bpmn:process id="waiting" isExecutable="true">
    <bpmn:startEvent id="s"><bpmn:outgoing>f1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="manual" />
    <bpmn:manualTask id="manual" name="Sign paper"><bpmn:incoming>f1</bpmn:incoming><bpmn:outgoing>f2</bpmn:outgoing></bpmn:manualTask>
    <bpmn:sequenceFlow id="f2" sourceRef="manual" targetRef="untyped" />
    <bpmn:task id="untyped"><bpmn:incoming>f2</bpmn:incoming><bpmn:outgoing>f3</bpmn:outgoing></bpmn:task>
    <bpmn:sequenceFlow id="f3" sourceRef="untyped" targetRef="send" />
    <bpmn:sendTask id="send"><bpmn:incoming>f3</bpmn:incoming><bpmn:outgoing>f4</bpmn:outgoing></bpmn:sendTask>
    <bpmn:sequenceFlow id="f4" sourceRef="send" targetRef="e" />
    <bpmn:endEvent id="e"><bpmn:incoming>f4</bpmn:incoming></bpmn:endEvent>
  </bpmn:process>
</bpmn:definitions>`

func TestManualUntypedTasksAndModelAdmin(t *testing.T) {
	h := newHarness(t, Config{})
	if _, err := h.e.Deploy([]byte(waitingTasksBPMN)); err != nil {
		t.Fatal(err)
	}
	st := h.start("waiting", map[string]any{"k": 1}, 1)
	var list engine.FlowNodeInstanceList
	h.must(200, "GET", "/flow_node_instances?processInstanceId="+st.ProcessInstanceID+"&state=suspended", nil, &list)
	if list.TotalCount != 1 || list.FlowNodeInstances[0].FlowNodeType != "bpmn:ManualTask" {
		t.Fatalf("manual task: %+v", list)
	}
	manual := list.FlowNodeInstances[0].FlowNodeInstanceID
	h.wantError(404, "PUT", "/untyped_tasks/"+manual+"/finish", nil)
	h.must(204, "PUT", "/manual_tasks/"+manual+"/finish", nil, nil)
	h.wantError(409, "PUT", "/manual_tasks/"+manual+"/finish", nil)
	list = engine.FlowNodeInstanceList{}
	h.must(200, "GET", "/flow_node_instances?processInstanceId="+st.ProcessInstanceID+"&state=suspended", nil, &list)
	if list.TotalCount != 1 || list.FlowNodeInstances[0].FlowNodeType != "bpmn:Task" {
		t.Fatalf("untyped task: %+v", list)
	}
	h.must(204, "PUT", "/empty_activities/"+list.FlowNodeInstances[0].FlowNodeInstanceID+"/finish", nil, nil)
	pi := h.instance(st.ProcessInstanceID)
	if pi.State != "finished" {
		t.Fatalf("instance %+v", pi)
	}
	jsonEq(t, pi.EndToken, `{"k":1}`)

	h.must(204, "POST", "/process_models/waiting/disable", nil, nil)
	h.wantError(400, "POST", "/process_models/waiting/start", map[string]any{})
	var pm engine.ProcessModel
	h.must(200, "GET", "/process_models/waiting", nil, &pm)
	if pm.IsExecutable {
		t.Fatal("still executable")
	}
	h.must(204, "POST", "/process_models/waiting/enable", nil, nil)
	h.start("waiting", nil, 1)
	h.must(204, "DELETE", "/process_models/waiting", nil, nil)
	h.wantError(404, "GET", "/process_models/waiting", nil)
	h.wantError(404, "DELETE", "/process_models/waiting", nil)
	h.wantError(404, "POST", "/process_models/waiting/enable", nil)
}
