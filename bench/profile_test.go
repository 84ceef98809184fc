package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/bridge"
	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/engine/emulator"
	"github.com/pe-bridge/pe-bridge/examples/models"
	handler "github.com/pe-bridge/pe-bridge/handlers-sdk"
)

// BenchmarkBridgeFullLoad drives path (a) in one process, for profiling the
// bridge at full load: the emulator over loopback HTTP, an embedded
// nats-server, the task pump (window 100, its default; lock 30 s) and an SDK
// handler that answers {} at once. Every part runs under a pprof label
// part=bridge|emulator|nats-server|handler (goroutines inherit labels from
// the goroutine that starts them), so a profile can be split per part:
//
//	go test ./bench -run '^$' -bench BridgeFullLoad -benchtime 20000x -cpuprofile /tmp/b.pprof
//	go tool pprof -tagfocus part=bridge -top /tmp/b.pprof
//
// It is not run by `go test` without -bench.
func BenchmarkBridgeFullLoad(b *testing.B) {
	runInProcess(b, 100, 0, 0)
}

// BenchmarkBridgeInFlight is the 10,000-in-flight scenario in one process
// (window 10,000, 50 ms handlers, a backlog of b.N tasks). It reports the
// peak heap in use, goroutines and engine connections of the whole process
// (bridge, emulator, handler and NATS server together), with the engine
// client's connections capped at BENCH_MAX_CONNS per host when set (the
// default transport has no cap):
//
//	go test ./bench -run '^$' -bench BridgeInFlight -benchtime 30000x
//	BENCH_MAX_CONNS=128 go test ./bench -run '^$' -bench BridgeInFlight -benchtime 30000x
func BenchmarkBridgeInFlight(b *testing.B) {
	maxConns, _ := strconv.Atoi(os.Getenv("BENCH_MAX_CONNS"))
	runInProcess(b, 10000, 50*time.Millisecond, maxConns)
}

func runInProcess(b *testing.B, window int, cost time.Duration, maxConns int) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	label := func(part string, f func(context.Context)) {
		pprof.Do(ctx, pprof.Labels("part", part), f)
	}

	var emu *emulator.Emulator
	var srv *httptest.Server
	label("emulator", func(context.Context) {
		var err error
		if emu, err = emulator.New(emulator.Config{}); err != nil {
			b.Fatal(err)
		}
		if _, err = emu.LoadFS(models.FS); err != nil {
			b.Fatal(err)
		}
		srv = httptest.NewServer(emu)
	})
	defer srv.Close()
	defer emu.Close()

	var ns *server.Server
	label("nats-server", func(context.Context) {
		var err error
		ns, err = server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
		if err != nil {
			b.Fatal(err)
		}
		ns.Start()
	})
	defer ns.Shutdown()
	if !ns.ReadyForConnections(10 * time.Second) {
		b.Fatal("nats-server not ready")
	}

	var hs *handler.Server
	label("handler", func(context.Context) {
		nc, err := nats.Connect(ns.ClientURL())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(nc.Close)
		hs, err = handler.NewServer(nc, benchTopic, handler.HandlerFunc(func(ctx context.Context, _ *handler.Task) (any, error) {
			if cost > 0 {
				time.Sleep(cost)
			}
			return struct{}{}, nil
		}), handler.WithConcurrency(window))
		if err != nil {
			b.Fatal(err)
		}
	})
	defer hs.Close()

	done := make(chan error, 1)
	label("bridge", func(lctx context.Context) {
		nc, err := nats.Connect(ns.ClientURL())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(nc.Close)
		var cfg engine.ClientConfig
		if maxConns > 0 {
			t := http.DefaultTransport.(*http.Transport).Clone()
			t.MaxIdleConns, t.MaxIdleConnsPerHost, t.MaxConnsPerHost = 1024, maxConns, maxConns
			cfg.HTTPClient = &http.Client{Transport: t}
		}
		eng, err := engine.NewClient(srv.URL, cfg)
		if err != nil {
			b.Fatal(err)
		}
		p, err := bridge.NewPump(eng, nc, bridge.Config{Topics: []string{benchTopic}, Window: window}, nil)
		if err != nil {
			b.Fatal(err)
		}
		go func() { done <- p.Run(lctx) }()
	})

	b.ResetTimer()
	begin := time.Now()
	for range b.N {
		if _, err := emu.Start(ctx, engine.ProcessStartRequest{ProcessModelID: benchModel, ReturnOn: engine.ReturnOnCreated}); err != nil {
			b.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Minute)
	var peakHeap uint64
	var peakG, peakFDs int
	var ms runtime.MemStats
	for i := 0; emu.Stats().InstancesFinished < int64(b.N); i++ {
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d instances finished", emu.Stats().InstancesFinished, b.N)
		}
		if i%50 == 0 { // every ~100 ms
			runtime.ReadMemStats(&ms)
			peakHeap = max(peakHeap, ms.HeapInuse+ms.StackInuse)
			peakG = max(peakG, runtime.NumGoroutine())
			fds, _ := countFDs(os.Getpid())
			peakFDs = max(peakFDs, fds)
		}
		time.Sleep(2 * time.Millisecond) // polling the emulator's counter
	}
	elapsed := time.Since(begin)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "tasks/s")
	if window > 100 {
		b.ReportMetric(float64(peakHeap)/(1<<20), "peak-heap+stack-MB")
		b.ReportMetric(float64(peakG), "peak-goroutines")
		b.ReportMetric(float64(peakFDs), "peak-fds")
		if s := emu.Stats(); s.TasksExpired+s.TasksUnlocked > 0 {
			b.Errorf("%d lock lapses", s.TasksExpired+s.TasksUnlocked)
		}
	}
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}
