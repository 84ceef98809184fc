package bpmn

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func sampleModels(tb testing.TB) map[string][]byte {
	files, err := filepath.Glob("../../../examples/models/*.bpmn")
	if err != nil || len(files) == 0 {
		tb.Fatalf("no sample models: %v", err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		out[filepath.Base(f)] = b
	}
	return out
}

func TestParseSamples(t *testing.T) {
	for name, b := range sampleModels(t) {
		defs, err := Parse(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want := strings.TrimSuffix(name, ".bpmn")
		if len(defs.Processes) != 1 || defs.Processes[0].ID != want {
			t.Fatalf("%s: processes %+v", name, defs.Processes)
		}
	}
}

func TestParseHelloWorld(t *testing.T) {
	defs, err := Parse(sampleModels(t)["hello_world.bpmn"])
	if err != nil {
		t.Fatal(err)
	}
	p := defs.Processes[0]
	if defs.ID != "Definition_hello_world" || p.Name != "Hello World" || !p.IsExecutable || len(p.StartEvents) != 1 || p.StartEvents[0].ID != "the_start_event" {
		t.Fatalf("process %+v", p)
	}
	task := p.ByID["sample_external_task"]
	if task == nil || !task.External || task.Topic != "SampleExternalTask" || task.Lane != "Lane" || task.Type != "bpmn:ServiceTask" || len(task.Outgoing) != 1 {
		t.Fatalf("task %+v", task)
	}
}

func TestParseDetails(t *testing.T) {
	m := sampleModels(t)
	d, _ := Parse(m["single_try.bpmn"])
	if n := d.Processes[0].ByID["once_task"]; !n.IsSingleTry {
		t.Fatal("isSingleTry")
	}
	d, _ = Parse(m["timer_cancel.bpmn"])
	if n := d.Processes[0].ByID["timeout"]; n.Timer == nil || n.Timer.Duration != 2*time.Second || !n.CancelActivity || n.AttachedTo.ID != "slow_task" {
		t.Fatalf("timer %+v", n)
	}
	d, _ = Parse(m["error_boundary.bpmn"])
	if n := d.Processes[0].ByID["credit_error"]; n.Error == nil || n.Error.Code != "credit_rejected" {
		t.Fatalf("error %+v", n)
	}
	if n := d.Processes[0].ByID["check_credit"]; !strings.Contains(n.Payload, "token.current.customer") {
		t.Fatalf("payload %q", n.Payload)
	}
	d, _ = Parse(m["approval.bpmn"])
	p := d.Processes[0]
	if gw := p.ByID["amount_gateway"]; gw.Default == nil || gw.Default.ID != "Flow_small" {
		t.Fatalf("default %+v", gw.Default)
	}
	ut := p.ByID["manual_approval"]
	if ut.Lane != "Manager" || len(ut.FormFields) != 5 || ut.Description == "" || ut.CustomForm != "DynamicForm" {
		t.Fatalf("user task %+v", ut)
	}
	d, _ = Parse(m["message_catch.bpmn"])
	if n := d.Processes[0].ByID["wait_for_approval"]; n.MessageName != "approval_received" || n.EventDef != DefMessage {
		t.Fatalf("message %+v", n)
	}
}

func TestParseErrors(t *testing.T) {
	base := string(sampleModels(t)["hello_world.bpmn"])
	cases := []struct {
		name, old, new, elem, reason string
	}{
		{"bad target", `targetRef="the_end_event"`, `targetRef="nowhere"`, "Flow_task_to_end", "nowhere"},
		{"no topic", `camunda:topic="SampleExternalTask"`, ``, "sample_external_task", "topic"},
		{"duplicate id", `id="the_end_event"`, `id="sample_external_task"`, "sample_external_task", "duplicate"},
		{"unsupported", `<bpmn:serviceTask id="sample_external_task"`, `<bpmn:subProcess id="sp" /><bpmn:serviceTask id="sample_external_task"`, "sp", "not supported"},
		{"no start", `<bpmn:startEvent id="the_start_event" name="Start">
      <bpmn:outgoing>Flow_start_to_task</bpmn:outgoing>
    </bpmn:startEvent>`, ``, "Flow_start_to_task", "sourceRef"},
		{"bad single try", `camunda:topic="SampleExternalTask">`, `camunda:topic="SampleExternalTask"><bpmn:extensionElements><camunda:properties><camunda:property name="engine.isSingleTry" value="yes"/></camunda:properties></bpmn:extensionElements>`, "sample_external_task", "isSingleTry"},
		{"bad timer", `<bpmn:endEvent id="the_end_event" name="End">`, `<bpmn:boundaryEvent id="tb" attachedToRef="sample_external_task"><bpmn:timerEventDefinition><bpmn:timeDuration>P1Y</bpmn:timeDuration></bpmn:timerEventDefinition></bpmn:boundaryEvent><bpmn:endEvent id="the_end_event" name="End">`, "tb", "timeDuration"},
		{"unknown error ref", `<bpmn:endEvent id="the_end_event" name="End">`, `<bpmn:boundaryEvent id="eb" attachedToRef="sample_external_task"><bpmn:errorEventDefinition errorRef="nope"/></bpmn:boundaryEvent><bpmn:endEvent id="the_end_event" name="End">`, "eb", "errorRef"},
		{"boundary on event", `<bpmn:endEvent id="the_end_event" name="End">`, `<bpmn:boundaryEvent id="eb" attachedToRef="the_start_event"><bpmn:errorEventDefinition/></bpmn:boundaryEvent><bpmn:endEvent id="the_end_event" name="End">`, "eb", "not an activity"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			doc := strings.Replace(base, c.old, c.new, 1)
			if doc == base {
				t.Fatal("replacement did not apply")
			}
			_, err := Parse([]byte(doc))
			var ee *ElementError
			if !errors.As(err, &ee) {
				t.Fatalf("err %v", err)
			}
			if ee.ElementID != c.elem || !strings.Contains(ee.Error(), c.reason) {
				t.Fatalf("got %q (element %q), want element %q and %q", ee.Error(), ee.ElementID, c.elem, c.reason)
			}
		})
	}
	_, err := Parse([]byte(`<definitions><process id="p"><endEvent id="e"/></process></definitions>`))
	if err == nil || !strings.Contains(err.Error(), `"p": process has no start event`) {
		t.Fatalf("no start event: %v", err)
	}
	for _, doc := range []string{"", "<x/>", "<bpmn:definitions xmlns:bpmn='" + NSBPMN + "'/>", "not xml"} {
		if _, err := Parse([]byte(doc)); err == nil {
			t.Fatalf("%q parsed", doc)
		}
	}
}

func TestParseDuration(t *testing.T) {
	good := map[string]time.Duration{"PT2S": 2 * time.Second, "PT0.5S": 500 * time.Millisecond, "P1DT2H": 26 * time.Hour, "PT1M30S": 90 * time.Second, "P1W": 7 * 24 * time.Hour}
	for s, want := range good {
		if d, err := ParseDuration(s); err != nil || d != want {
			t.Errorf("%s: %v %v", s, d, err)
		}
	}
	for _, s := range []string{"", "P", "PT", "2S", "P1Y", "P1M", "PTS", "PT-1S"} {
		if _, err := ParseDuration(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

func FuzzParseBPMN(f *testing.F) {
	for _, b := range sampleModels(f) {
		f.Add(b)
	}
	f.Add([]byte(`<definitions><process id="p"><startEvent id="s"/></process></definitions>`))
	f.Fuzz(func(t *testing.T, data []byte) {
		defs, err := Parse(data)
		if err != nil {
			var ee *ElementError
			if !errors.As(err, &ee) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		for _, p := range defs.Processes {
			if len(p.StartEvents) == 0 || p.ID == "" {
				t.Fatalf("invalid process accepted: %+v", p)
			}
			for _, fl := range p.Flows {
				if fl.Source == nil || fl.Target == nil {
					t.Fatal("dangling flow accepted")
				}
			}
		}
	})
}
