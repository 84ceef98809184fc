package emulator

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/internal/testutil"
)

func TestHelloWorldSmoke(t *testing.T) {
	h := newHarness(t, Config{})
	st := h.start("hello_world", map[string]any{"x": 1}, 1)
	task := h.fetchOne("w1", "SampleExternalTask")
	if task.ProcessInstanceID != st.ProcessInstanceID || task.WorkerID != "w1" || task.State != "pending" {
		t.Fatalf("task %+v", task)
	}
	jsonEq(t, task.Payload, `{"x":1}`)
	h.must(204, "PUT", "/external_tasks/"+task.ID+"/finish", map[string]any{"workerId": "w1", "result": map[string]any{"ok": true}}, nil)
	pi := h.instance(st.ProcessInstanceID)
	if pi.State != "finished" || pi.EndEventID != "the_end_event" {
		t.Fatalf("instance %+v", pi)
	}
	jsonEq(t, pi.EndToken, `{"ok":true}`)
	h.wantError(409, "PUT", "/external_tasks/"+task.ID+"/finish", map[string]any{"workerId": "w1"})
}

func TestDebugLogging(t *testing.T) {
	var buf testutil.Buffer
	h := newHarness(t, Config{Logger: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	h.start("hello_world", nil, 1)
	tk := h.fetchOne("w", "SampleExternalTask")
	h.must(204, "PUT", "/external_tasks/"+tk.ID+"/finish", map[string]any{"workerId": "w"}, nil)
	out := buf.String()
	for _, want := range []string{`"task_id":"` + tk.ID, `"msg":"process instance finished"`, `"process_model_ids"`} {
		if !strings.Contains(out, want) {
			t.Fatalf("log lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, engine.DummyToken) {
		t.Fatal("token in logs")
	}
}
