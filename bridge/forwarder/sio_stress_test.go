package forwarder_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pe-bridge/pe-bridge/bridge/forwarder"
	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/engine/emulator"
)

// TestSocketConnectStress connects a SocketFeed to the emulator
// SIO_STRESS times, SIO_PAR at a time (default 1), and reports how long
// each took to reach "connect", how many took over 2 s, and how many
// attempts lost the Engine.IO open event (errOpenLost) or failed. Opt-in:
// it matters only under CPU load, e.g.
//
//	for i in 1 2 3 4 5 6; do yes >/dev/null & done
//	SIO_STRESS=300 go test -race -run TestSocketConnectStress -v ./bridge/forwarder/
func TestSocketConnectStress(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("SIO_STRESS"))
	if n <= 0 {
		t.Skip("set SIO_STRESS to the number of connects")
	}
	par, _ := strconv.Atoi(os.Getenv("SIO_PAR"))
	par = max(par, 1)
	eng := newEngine(t, emulator.Config{})
	var (
		mu     sync.Mutex
		durs   []time.Duration
		counts = &attemptCounts{}
		sem    = make(chan struct{}, par)
		wg     sync.WaitGroup
	)
	logger := slog.New(counts)
	for range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			f, err := forwarder.NewSocketFeed(eng.url, engine.DummyTokenSource(), forwarder.SocketConfig{}, logger)
			if err != nil {
				t.Error(err)
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
				t.Error("no connect within 30s")
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
	t.Logf("connects=%d par=%d lost_opens=%d failed_attempts=%d slow(>2s)=%d p50=%v p99=%v max=%v",
		len(durs), par, counts.lost.Load(), counts.failed.Load(), slow,
		durs[len(durs)/2], durs[len(durs)*99/100], durs[len(durs)-1])
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
				println("failed attempt:", a.Value.String())
			}
			return true
		})
	}
	return nil
}
