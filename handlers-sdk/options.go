package handler

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/pe-bridge/pe-bridge/events"
)

// Defaults of the options.
const (
	DefaultConcurrency  = 16
	DefaultDrainTimeout = 30 * time.Second
)

// Option configures a Server. Options validate their argument: NewServer and
// Serve return the first option error.
type Option func(*config) error

type config struct {
	concurrency  int
	queueGroup   string
	logger       *slog.Logger
	drainTimeout time.Duration
}

func defaultConfig() config {
	return config{
		concurrency:  DefaultConcurrency,
		queueGroup:   events.DefaultQueueGroup,
		logger:       slog.New(slog.DiscardHandler),
		drainTimeout: DefaultDrainTimeout,
	}
}

// WithConcurrency bounds how many tasks run at once (default
// DefaultConcurrency). Further tasks wait in the client until a slot frees.
func WithConcurrency(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("handler: concurrency %d, want at least 1", n)
		}
		c.concurrency = n
		return nil
	}
}

// WithQueueGroup sets the NATS queue group (default events.DefaultQueueGroup).
// Handlers in the same group share the tasks of a topic; each task goes to one.
func WithQueueGroup(name string) Option {
	return func(c *config) error {
		if name == "" {
			return errors.New("handler: empty queue group")
		}
		c.queueGroup = name
		return nil
	}
}

// WithLogger sets the logger (nil: discard, the default).
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			l = slog.New(slog.DiscardHandler)
		}
		c.logger = l
		return nil
	}
}

// WithDrainTimeout bounds how long a drain waits for tasks in flight before it
// cancels their contexts (default DefaultDrainTimeout).
func WithDrainTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("handler: drain timeout %v, want > 0", d)
		}
		c.drainTimeout = d
		return nil
	}
}
