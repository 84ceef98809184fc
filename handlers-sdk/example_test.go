package handler_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"time"

	"github.com/nats-io/nats.go"

	handler "github.com/pe-bridge/pe-bridge/handlers-sdk"
	"github.com/pe-bridge/pe-bridge/handlers-sdk/handlertest"
)

// ExampleServe serves the seed's SampleExternalTask topic until Ctrl-C, then
// drains: tasks in flight finish before Serve returns.
func ExampleServe() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	nc, err := nats.Connect(nats.DefaultURL) // bridge dev: nats://127.0.0.1:4222
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	err = handler.Serve(ctx, nc, "SampleExternalTask",
		handler.HandlerFunc(func(ctx context.Context, task *handler.Task) (any, error) {
			var payload map[string]any
			if err := task.Decode(&payload); err != nil {
				return nil, err
			}
			log.Printf("task %s of process %s: %v", task.ID, task.ProcessInstanceID, payload)
			return map[string]any{"some": "result"}, nil
		}),
		handler.WithConcurrency(8),
		handler.WithDrainTimeout(20*time.Second),
	)
	if err != nil {
		log.Fatal(err)
	}
}

type invoice struct {
	Amount   float64 `json:"amount"`
	Customer string  `json:"customer"`
}

// ExamplePayloadFunc shows the payload-only style: the payload arrives
// decoded into a struct, the returned value becomes the task result.
func ExamplePayloadFunc() {
	h := handler.PayloadFunc(func(ctx context.Context, in invoice) (any, error) {
		return map[string]any{"net": in.Amount / 1.19}, nil
	})
	r, err := handlertest.Run(h, handlertest.Task{Topic: "invoice", Payload: invoice{Amount: 119}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(r.Kind, string(r.Result))
	// Output: success {"net":100}
}

// ExampleBPMNError raises a BPMN error that an error boundary event with
// errorCode "credit_denied" catches; other errors are technical failures the
// bridge retries.
func ExampleBPMNError() {
	h := handler.PayloadFunc(func(ctx context.Context, in invoice) (any, error) {
		switch {
		case in.Amount > 10000:
			return nil, handler.BPMNError("credit_denied", "amount over the credit limit", map[string]any{"limit": 10000})
		case in.Customer == "":
			return nil, handler.Failure(errors.New("customer service unavailable"), handler.RetryAfter(30*time.Second))
		}
		return map[string]any{"approved": true}, nil
	})
	r, _ := handlertest.Run(h, handlertest.Task{Payload: invoice{Amount: 20000, Customer: "acme"}})
	fmt.Println(r.Kind, r.Code, r.Message, string(r.Details))
	fmt.Println(string(r.Body))
	r, _ = handlertest.Run(h, handlertest.Task{Payload: invoice{Amount: 5}})
	fmt.Println(r.Kind, r.RetryAfter, string(r.Body))
	// Output:
	// bpmn_error credit_denied amount over the credit limit {"limit":10000}
	// {"$pe":"bpmn_error","code":"credit_denied","details":{"limit":10000},"message":"amount over the credit limit"}
	// failure 30s {"$pe":"failure","message":"customer service unavailable","retryAfterMs":30000}
}
