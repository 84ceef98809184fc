package forwarder

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/pe-bridge/pe-bridge/engine"
)

// Notifier waits for the next engine notification of one event name
// (GET /notifications/long_polling/<event>). *engine.Client satisfies it:
// it returns engine.ErrNoNotification when the engine ended the poll
// without an event (204).
type Notifier interface {
	WaitForNotification(ctx context.Context, event string) (engine.EventMessage, error)
}

// Defaults of PollConfig.
const (
	DefaultMinBackoff  = 100 * time.Millisecond
	DefaultMaxBackoff  = 30 * time.Second
	DefaultPollTimeout = 2 * time.Minute
)

// PollConfig tunes PollFeed. Zero fields take the documented defaults.
type PollConfig struct {
	// MinBackoff and MaxBackoff bound the exponential, jittered wait after
	// an engine error (per event name). Defaults DefaultMinBackoff and
	// DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// PollTimeout bounds one long poll; when it runs out the poll is simply
	// re-issued (guards against connections that silently died). Default
	// DefaultPollTimeout.
	PollTimeout time.Duration
}

// Validate reports unusable settings.
func (c PollConfig) Validate() error {
	if c.MinBackoff < 0 || c.MaxBackoff < 0 || c.PollTimeout < 0 {
		return errors.New("forwarder: negative duration")
	}
	if c.MinBackoff > 0 && c.MaxBackoff > 0 && c.MinBackoff > c.MaxBackoff {
		return errors.New("forwarder: MinBackoff is longer than MaxBackoff")
	}
	return nil
}

func (c PollConfig) withDefaults() PollConfig {
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = max(DefaultMaxBackoff, c.MinBackoff)
	}
	if c.PollTimeout == 0 {
		c.PollTimeout = DefaultPollTimeout
	}
	return c
}

// PollFeed long-polls every notification name in its own loop
// (GET /notifications/long_polling/<name>), the fallback for engines
// without Socket.IO. The endpoint returns one event per round trip and
// keeps no cursor, so what happens between two polls of a name is lost:
// the events are hints. A 204 (engine.ErrNoNotification) or a poll cut by
// PollTimeout is the normal end of a poll and re-issued at once; after an
// engine error a loop waits with jittered exponential backoff, and the
// first poll answered after an outage reports Sink.Connected(false).
type PollFeed struct {
	n   Notifier
	cfg PollConfig
	log *slog.Logger
}

// NewPollFeed builds a long-poll feed. logger nil discards.
func NewPollFeed(n Notifier, cfg PollConfig, logger *slog.Logger) (*PollFeed, error) {
	if n == nil {
		return nil, errors.New("forwarder: nil notifier")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &PollFeed{n: n, cfg: cfg.withDefaults(), log: logger}, nil
}

// Run polls every name until ctx is done, then cancels the polls at once
// and returns nil after every loop ended.
func (p *PollFeed) Run(ctx context.Context, names []string, sink Sink) error {
	s := &pollState{sink: sink}
	s.mu.Lock()
	sink.Connected(true)
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, name := range names {
		wg.Go(func() { p.loop(ctx, name, s) })
	}
	wg.Wait()
	return nil
}

// pollState serialises the loops' calls into the sink and tracks outages.
type pollState struct {
	mu     sync.Mutex
	sink   Sink
	outage bool // an engine error happened since the last Connected
}

func (s *pollState) answered() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.outage {
		s.outage = false
		s.sink.Connected(false)
	}
}

func (p *PollFeed) loop(ctx context.Context, name string, s *pollState) {
	backoff := p.cfg.MinBackoff
	for ctx.Err() == nil {
		pctx, cancel := context.WithTimeout(ctx, p.cfg.PollTimeout)
		msg, err := p.n.WaitForNotification(pctx, name)
		pollExpired := pctx.Err() != nil
		cancel()
		if ctx.Err() != nil {
			return
		}
		switch {
		case err == nil, errors.Is(err, engine.ErrNoNotification):
			backoff = p.cfg.MinBackoff
			s.answered()
			if err != nil || empty(msg) { // the engine ended the poll without an event
				continue
			}
		case pollExpired: // our own bound on one poll: ask again
			continue
		default:
			s.mu.Lock()
			s.outage = true
			s.mu.Unlock()
			wait := jitter(backoff)
			// The engine client logs outages once; each retry is debug.
			p.log.Debug("forwarder: waiting for engine notification", "event", name, "error", err, "retry_in", wait)
			if !sleep(ctx, wait) {
				return
			}
			backoff = min(backoff*2, p.cfg.MaxBackoff)
			continue
		}
		body, err := json.Marshal(msg)
		if err != nil { // cannot happen for a decoded message
			continue
		}
		s.mu.Lock()
		s.sink.Event(name, msg, body)
		s.mu.Unlock()
	}
}

// jitter returns d ± 20 %.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d - d/5 + time.Duration(rand.Int64N(int64(d)*2/5+1))
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func empty(m engine.EventMessage) bool {
	return m.ProcessInstanceID == "" && m.ProcessDefinitionID == "" && m.ProcessModelID == "" &&
		m.FlowNodeInstanceID == "" && m.CorrelationID == "" && m.ExternalTaskID == ""
}
