// Command handler is the NATS side of path (a) of the side-by-side benchmark
// (go run ./bench): a Go handler written with the handlers SDK that answers
// every task of one topic with {} after a fixed cost.
//
// It prints "ready" once its subscriptions are registered with the server,
// and drains on SIGTERM or SIGINT.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	handler "github.com/pe-bridge/pe-bridge/handlers-sdk"
)

func main() {
	natsURL := flag.String("nats-url", nats.DefaultURL, "NATS server URL")
	topic := flag.String("topic", "SampleExternalTask", "engine topic to serve")
	cost := flag.Duration("cost", 0, "handler cost per task (a sleep)")
	concurrency := flag.Int("concurrency", 100, "tasks handled at once")
	flag.Parse()
	if err := run(*natsURL, *topic, *cost, *concurrency); err != nil {
		fmt.Fprintln(os.Stderr, "handler:", err)
		os.Exit(1)
	}
}

func run(natsURL, topic string, cost time.Duration, concurrency int) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	nc, err := nats.Connect(natsURL, nats.Name("pe-bridge-bench-handler"), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", natsURL, err)
	}
	defer nc.Close()
	h := handler.HandlerFunc(func(ctx context.Context, _ *handler.Task) (any, error) {
		if cost > 0 {
			t := time.NewTimer(cost)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return struct{}{}, nil
	})
	srv, err := handler.NewServer(nc, topic, h, handler.WithConcurrency(concurrency),
		handler.WithDrainTimeout(5*time.Second))
	if err != nil {
		return err
	}
	fmt.Println("ready")
	<-ctx.Done()
	return srv.Drain(context.Background())
}
