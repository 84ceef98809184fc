// Command worker is the seed's SampleExternalTask worker written with the
// handler SDK: every task of the hello_world model gets
// {"some":"result","echo":<payload>}; a negative "amount" in the payload
// raises the BPMN error invalid_amount. Ctrl-C (SIGINT/SIGTERM) drains: tasks
// in flight finish first.
//
// Run against `bridge dev`: go run ./examples/polyglot/go/worker
// (NATS_URL or -nats, default nats://127.0.0.1:4222)
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/nats-io/nats.go"

	handler "github.com/pe-bridge/pe-bridge/handlers-sdk"
)

func main() {
	url := os.Getenv("NATS_URL")
	if url == "" {
		url = nats.DefaultURL
	}
	flag.StringVar(&url, "nats", url, "NATS URL (env NATS_URL)")
	topic := flag.String("topic", "SampleExternalTask", "engine topic to serve")
	concurrency := flag.Int("concurrency", 16, "tasks handled at once")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	nc, err := nats.Connect(url, nats.Name("pe-bridge-example-go-worker"), nats.MaxReconnects(-1))
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
	defer nc.Close()

	// Payload and task metadata, as in the seed's second handler style;
	// handler.PayloadFunc is the payload-only style.
	h := handler.TaskFunc(func(ctx context.Context, payload map[string]any, task *handler.Task) (any, error) {
		fmt.Printf("worker: task %s of process %s (%s): payload %s\n",
			task.ID, task.ProcessInstanceID, task.ProcessModelID, task.Payload)
		if a, ok := payload["amount"].(float64); ok && a < 0 {
			// A BPMN error: an error boundary event with errorCode invalid_amount catches it.
			return nil, handler.BPMNError("invalid_amount", "amount must not be negative", map[string]any{"amount": a})
		}
		return map[string]any{"some": "result", "echo": payload}, nil
	})
	fmt.Printf("worker: serving topic %s on %s\n", *topic, nc.ConnectedUrlRedacted())
	err = handler.Serve(ctx, nc, *topic, h,
		handler.WithConcurrency(*concurrency),
		handler.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, nil))))
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}
