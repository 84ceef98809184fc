package bridge

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/engine"
)

// benchTasks starts n instances of a one-task model and returns when the
// emulator holds them all.
func benchTasks(b *testing.B, e *compEnv, model string, n int) {
	b.Helper()
	for range n {
		e.start(model, map[string]int{"x": 1})
	}
}

// BenchmarkPumpThroughput measures engine → NATS → handler → engine with the
// emulator over loopback HTTP, an embedded nats-server and 4 in-process
// handler replicas that reply at once. It reports tasks/s, the average
// number of tasks in flight and the number of fetch_and_lock calls.
func BenchmarkPumpThroughput(b *testing.B) {
	e := newCompEnv(b, serviceModel("bench", "bench", false, ""))
	for range 4 {
		e.handle("bench", func(m *nats.Msg) { _ = m.Respond([]byte(`{"ok":true}`)) })
	}
	benchTasks(b, e, "bench", b.N)
	cfg := compConfig("bench")
	cfg.LockDuration = 30 * time.Second
	cfg.LongPollTimeout = 10 * time.Second
	b.ResetTimer()
	start := time.Now()
	p, stop := e.runPump(cfg)
	var samples, sum int64
	deadline := time.Now().Add(5 * time.Minute)
	for e.emu.Stats().TasksFinished < int64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d tasks finished", e.emu.Stats().TasksFinished, b.N)
		}
		samples++
		sum += p.Stats().InFlight
		time.Sleep(time.Millisecond) // polling the emulator's counter
	}
	if samples > 0 {
		b.ReportMetric(float64(sum)/float64(samples), "avg_inflight")
	}
	elapsed := time.Since(start)
	b.StopTimer()
	stop()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "tasks/s")
	b.ReportMetric(float64(e.emu.Stats().Fetch.Total), "fetches")
}

// BenchmarkDirectRESTWorker is the baseline: a plain Go worker on the engine
// client (fetch 100, finish each concurrently, fetch again), no NATS.
func BenchmarkDirectRESTWorker(b *testing.B) {
	e := newCompEnv(b, serviceModel("bench", "bench", false, ""))
	benchTasks(b, e, "bench", b.N)
	b.ResetTimer()
	start := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := 0
	for done < b.N {
		tasks, err := e.eng.FetchAndLock(ctx, engine.FetchAndLockRequest{
			WorkerID: "direct", Topics: []string{"bench"}, MaxTasks: 100,
			LongPollingTimeout: 10 * time.Second, LockDuration: 30 * time.Second,
		})
		if err != nil {
			b.Fatal(err)
		}
		var wg sync.WaitGroup
		for _, t := range tasks {
			wg.Go(func() {
				if err := e.eng.FinishTask(ctx, t.ID, "direct", []byte(`{"ok":true}`)); err != nil {
					panic(fmt.Sprint("finish: ", err))
				}
			})
		}
		wg.Wait()
		done += len(tasks)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "tasks/s")
}

// autoReplyBus is a transport whose handler answers every task at once, in
// the publishing goroutine: it isolates the pump's own cost per task.
type autoReplyBus struct{ fakeBus }

func (b *autoReplyBus) Publish(m *nats.Msg) error {
	if m.Reply != "" {
		b.deliver(&nats.Msg{Subject: m.Reply, Data: []byte(`{"ok":true}`)})
	}
	return nil
}

// BenchmarkPumpOverhead measures the pump alone (fake engine, in-memory
// transport): CloudEvent encoding, state machine, timers, reply decoding.
func BenchmarkPumpOverhead(b *testing.B) {
	eng := newFakeEngine()
	bus := &autoReplyBus{fakeBus: *newFakeBus()}
	tasks := make([]engine.ExternalTask, b.N)
	for i := range tasks {
		tasks[i] = testTask(fmt.Sprint("o", i), "t1", false)
	}
	cfg := unitConfig()
	cfg.Window = 100
	p, err := newPump(eng, bus, cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	eng.add(tasks...)
	b.ReportAllocs()
	b.ResetTimer()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	for range b.N {
		<-eng.reported
	}
	b.StopTimer()
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}
