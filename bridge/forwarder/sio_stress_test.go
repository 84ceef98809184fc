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
	"github.com/pe-bridge/pe-bridge/internal/testutil"
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

// TestSocketFeedConnectsOnce starts rounds of feeds at the same time (the
// contention makes the Socket.IO client's open races of socketio.go show)
// and checks each got one namespace socket on the engine (race 3: two, and
// every event twice), each event exactly once, and no reconnect after its
// ConnectTimeout (race 2: the library's timer closed the connection then).
func TestSocketFeedConnectsOnce(t *testing.T) {
	const rounds, feeds = 6, 30
	const connectTimeout = 300 * time.Millisecond
	eng := newEngine(t, emulator.Config{})
	for round := range rounds {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		sinks := make([]*onceSink, feeds)
		for i := range sinks {
			sinks[i] = &onceSink{}
			f, err := forwarder.NewSocketFeed(eng.url, engine.DummyTokenSource(),
				forwarder.SocketConfig{MinBackoff: 10 * time.Millisecond, ConnectTimeout: connectTimeout}, nil)
			if err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() { defer wg.Done(); _ = f.Run(ctx, []string{"process_started"}, sinks[i]) }()
		}
		testutil.Until(t, 10*time.Second, "every feed connected", func() bool {
			for _, s := range sinks {
				if s.connects.Load() == 0 {
					return false
				}
			}
			return true
		})
		testutil.Until(t, 5*time.Second, "one engine socket per feed", func() bool { return eng.emu.SocketClients() == feeds })
		pi, err := eng.client.StartProcess(context.Background(), engine.ProcessStartRequest{ProcessModelID: "direct"})
		if err != nil {
			t.Fatal(err)
		}
		testutil.Until(t, 5*time.Second, "the event at every feed", func() bool {
			for _, s := range sinks {
				if s.count(pi.ProcessInstanceID) == 0 {
					return false
				}
			}
			return true
		})
		// Race 2 shows only once ConnectTimeout has passed: nothing may
		// happen to the connections in that time.
		time.Sleep(2 * connectTimeout)
		for i, s := range sinks {
			if c, n := s.connects.Load(), s.count(pi.ProcessInstanceID); c != 1 || n != 1 {
				t.Errorf("round %d feed %d: connected %d times, got the event %d times; want 1 and 1", round, i, c, n)
			}
		}
		if n := eng.emu.SocketClients(); n != feeds {
			t.Errorf("round %d: %d engine sockets for %d feeds", round, n, feeds)
		}
		cancel()
		wg.Wait()
		testutil.Until(t, 5*time.Second, "the engine sockets closed", func() bool { return eng.emu.SocketClients() == 0 })
		if t.Failed() {
			return
		}
	}
}

// onceSink counts connects and process_started events by instance.
type onceSink struct {
	connects atomic.Int64
	mu       sync.Mutex
	seen     map[string]int
}

func (s *onceSink) Connected(bool) { s.connects.Add(1) }
func (s *onceSink) Event(_ string, m engine.EventMessage, _ json.RawMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = map[string]int{}
	}
	s.seen[m.ProcessInstanceID]++
}

func (s *onceSink) count(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[id]
}
