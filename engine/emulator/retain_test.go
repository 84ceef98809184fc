package emulator

import (
	"context"
	"testing"

	"github.com/pe-bridge/pe-bridge/engine"
)

func TestRetainFinished(t *testing.T) {
	e, err := New(Config{RetainFinished: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if _, err := e.LoadFS(modelsFS()); err != nil {
		t.Fatal(err)
	}
	l := &local{t: t, e: e}
	running := l.start("message_catch", `{}`)
	var first string
	for i := 0; i < 30; i++ {
		resp, err := e.Start(context.Background(), engine.ProcessStartRequest{ProcessModelID: "approval", InitialToken: []byte(`{"amount":1}`)})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = resp.ProcessInstanceID
		}
	}
	if _, ok := e.ProcessInstance(first); ok {
		t.Fatal("oldest finished instance still kept")
	}
	if _, ok := e.ProcessInstance(running); !ok {
		t.Fatal("running instance was pruned")
	}
	e.mu.Lock()
	n, nf := len(e.instances), len(e.fnis)
	e.mu.Unlock()
	if n > 1+10+10/4 || nf > (1+10+10/4)*4 {
		t.Fatalf("kept %d instances, %d flow node instances", n, nf)
	}
	l.status(204, "POST", "/messages/approval_received/trigger", `{}`)
	if pi := l.inst(running); pi.State != "finished" {
		t.Fatalf("%+v", pi)
	}
}
