package forwarder_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pe-bridge/pe-bridge/bridge/forwarder"
	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/engine/emulator"
)

// BenchmarkSocketConnect connects a SocketFeed to the emulator b.N times,
// par at a time, and reports the time to "connect" (p50, p99, max), the
// connects over 2 s and the attempts that lost the Engine.IO open event
// (errOpenLost) or failed. The race it watches matters only under CPU load:
//
//	for i in 1 2 3 4 5 6; do yes >/dev/null & done
//	go test -race -run '^$' -bench SocketConnect -benchtime 300x ./bridge/forwarder/
func BenchmarkSocketConnect(b *testing.B) {
	for _, par := range []int{1, 20} {
		b.Run(fmt.Sprintf("par=%d", par), func(b *testing.B) { benchConnects(b, par) })
	}
}

func benchConnects(b *testing.B, par int) {
	eng := newEngine(b, emulator.Config{})
	var (
		mu     sync.Mutex
		durs   []time.Duration
		counts = &attemptCounts{}
		sem    = make(chan struct{}, par)
		wg     sync.WaitGroup
	)
	logger := slog.New(counts)
	b.ResetTimer()
	for range b.N {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			f, err := forwarder.NewSocketFeed(eng.url, engine.DummyTokenSource(), forwarder.SocketConfig{}, logger)
			if err != nil {
				b.Error(err)
				return
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			sink := &connectSink{up: make(chan struct{}, 1)}
			done := make(chan struct{})
			t0 := time.Now()
			go func() { _ = f.Run(ctx, []string{"process_ended"}, sink); close(done) }()
			select {
			case <-sink.up:
			case <-time.After(30 * time.Second):
				b.Error("no connect within 30s")
			}
			d := time.Since(t0)
			cancel()
			<-done
			mu.Lock()
			durs = append(durs, d)
			mu.Unlock()
		}()
	}
	wg.Wait()
	b.StopTimer()
	if len(durs) == 0 {
		return
	}
	slices.Sort(durs)
	slow := 0
	for _, d := range durs {
		if d > 2*time.Second {
			slow++
		}
	}
	b.ReportMetric(float64(slow), "slow_connects")
	b.ReportMetric(float64(counts.lost.Load()), "lost_opens")
	b.ReportMetric(float64(counts.failed.Load()), "failed_attempts")
	b.ReportMetric(durs[len(durs)/2].Seconds()*1e3, "p50_ms")
	b.ReportMetric(durs[len(durs)*99/100].Seconds()*1e3, "p99_ms")
	b.ReportMetric(durs[len(durs)-1].Seconds()*1e3, "max_ms")
}

type connectSink struct{ up chan struct{} }

func (s *connectSink) Event(string, engine.EventMessage, json.RawMessage) {}
func (s *connectSink) Connected(bool) {
	select {
	case s.up <- struct{}{}:
	default:
	}
}

// attemptCounts is a slog.Handler counting the feed's failed attempts.
type attemptCounts struct{ lost, failed atomic.Int64 }

func (c *attemptCounts) Enabled(context.Context, slog.Level) bool { return true }
func (c *attemptCounts) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *attemptCounts) WithGroup(string) slog.Handler            { return c }
func (c *attemptCounts) Handle(_ context.Context, r slog.Record) error {
	switch {
	case strings.Contains(r.Message, "retrying at once"):
		c.lost.Add(1)
	case r.Level >= slog.LevelWarn:
		c.failed.Add(1)
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "error" {
				slog.Default().Warn("failed attempt", "error", a.Value.String())
			}
			return true
		})
	}
	return nil
}
