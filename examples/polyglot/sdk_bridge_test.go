package polyglot_test

import (
	"context"
	"errors"
	"testing"
	"time"

	handler "github.com/pe-bridge/pe-bridge/handlers-sdk"
)

// TestSDKAgainstBridge checks the handler SDK against the real bridge for
// what the examples do not exercise: a BPMN error caught by an error boundary
// event, and a cancel event (timer boundary) cancelling the handler's context.
func TestSDKAgainstBridge(t *testing.T) {
	for _, mode := range contentModes {
		t.Run(mode, func(t *testing.T) {
			// A short lock so the bridge's next extension (and its 409) comes soon after the timer fires.
			nc, _ := startBridgeDev(t, "--content-mode", mode, "--lock-duration", "3s")

			credit, err := handler.NewServer(nc, "CheckCredit", handler.PayloadFunc(func(ctx context.Context, p struct {
				Customer string  `json:"customer"`
				Amount   float64 `json:"amount"`
			}) (any, error) {
				if p.Amount > 1000 {
					return nil, handler.BPMNError("credit_rejected", "amount over the limit", map[string]any{"customer": p.Customer})
				}
				return map[string]any{"creditOk": true}, nil
			}))
			if err != nil {
				t.Fatal(err)
			}
			defer credit.Close()

			causes := make(chan error, 4)
			slow, err := handler.NewServer(nc, "SlowTask", handler.HandlerFunc(func(ctx context.Context, task *handler.Task) (any, error) {
				select {
				case <-ctx.Done():
					causes <- context.Cause(ctx)
					return nil, ctx.Err()
				case <-time.After(time.Minute):
					return "too late", nil
				}
			}))
			if err != nil {
				t.Fatal(err)
			}
			defer slow.Close()

			if r := startProcess(t, nc, "error_boundary", map[string]any{"customer": "acme", "amount": 5000}); r.EndEventID != "error_end" {
				t.Errorf("error_boundary with a BPMN error ended at %q, want error_end", r.EndEventID)
			}
			if r := startProcess(t, nc, "error_boundary", map[string]any{"customer": "acme", "amount": 50}); r.EndEventID != "ok_end" {
				t.Errorf("error_boundary with a result ended at %q, want ok_end", r.EndEventID)
			}
			if r := startProcess(t, nc, "timer_cancel", map[string]any{}); r.EndEventID != "timeout_end" {
				t.Errorf("timer_cancel ended at %q, want timeout_end", r.EndEventID)
			}
			select {
			case c := <-causes:
				if !errors.Is(c, handler.ErrTaskCancelled) {
					t.Fatalf("SlowTask handler's context ended with %v, want ErrTaskCancelled", c)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the bridge's cancel event did not cancel the SlowTask handler")
			}
		})
	}
}
