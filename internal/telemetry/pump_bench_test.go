package telemetry_test

import (
	"context"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/pe-bridge/pe-bridge/bridge"
	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/engine/emulator"
	"github.com/pe-bridge/pe-bridge/examples/models"
	"github.com/pe-bridge/pe-bridge/internal/natsserver"
	"github.com/pe-bridge/pe-bridge/internal/telemetry"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkPump is the task pump end to end (engine emulator over loopback
// HTTP, embedded nats-server, 4 handlers that reply at once, all in this
// process) without hooks, with the Prometheus metrics (pump observer and
// engine call observer), and with metrics and tracing to a no-op exporter.
// It reports tasks/s and the process's CPU per task (emulator, NATS and
// handlers included, the same in every variant). Run the variants
// interleaved: go test -bench Pump -count 6 (each count runs all three).
func BenchmarkPump(b *testing.B) {
	for _, v := range []string{"none", "metrics", "metrics+tracing"} {
		b.Run(v, func(b *testing.B) { benchPump(b, v) })
	}
}

func benchPump(b *testing.B, variant string) {
	emu, err := emulator.New(emulator.Config{})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := emu.LoadFS(models.FS); err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(emu)
	defer srv.Close()
	defer emu.Close()
	ns, err := natsserver.Start(natsserver.Config{Listen: "127.0.0.1:0", NoJetStream: true})
	if err != nil {
		b.Fatal(err)
	}
	defer ns.Close()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	hc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer hc.Close()
	for range 4 {
		if _, err := hc.QueueSubscribe("pe.task.SampleExternalTask", "pe-handlers", func(m *nats.Msg) { _ = m.Respond([]byte(`{"ok":true}`)) }); err != nil {
			b.Fatal(err)
		}
	}
	cfg := bridge.Config{Topics: []string{"SampleExternalTask"}}
	var ecfg engine.ClientConfig
	if variant != "none" {
		m := telemetry.NewMetrics("bench")
		cfg.Observer = m
		ecfg.Observer = m
	}
	if variant == "metrics+tracing" {
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
		defer func() { _ = tp.Shutdown(context.Background()) }()
		cfg.Tracer = telemetry.NewTracing(tp)
	}
	eng, err := engine.NewClient(srv.URL, ecfg)
	if err != nil {
		b.Fatal(err)
	}
	defer eng.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range b.N {
		if _, err := emu.Start(ctx, engine.ProcessStartRequest{ProcessModelID: "hello_world"}); err != nil {
			b.Fatal(err)
		}
	}
	p, err := bridge.NewPump(eng, nc, cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	tick := time.NewTicker(time.Millisecond) // polling the emulator's counter, as BenchmarkPumpThroughput does
	defer tick.Stop()
	deadline := time.Now().Add(5 * time.Minute)
	for emu.Stats().TasksFinished < int64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d tasks finished", emu.Stats().TasksFinished, b.N)
		}
		<-tick.C
	}
	elapsed, cpu := time.Since(start), cpuTime()-cpu0
	b.StopTimer()
	cancel()
	<-done
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "tasks/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu_µs/task")
}
