package handler

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/events"
)

// ErrClosed is returned by Serve when the NATS connection or subscription
// closed before ctx was done, and is the context cause of tasks in flight
// when Close is called.
var ErrClosed = errors.New("handler: closed")

// Serve serves topic with h until ctx is done, then drains (see Server.Drain)
// and returns nil, or the drain's error. It returns early with an error when
// an option is invalid, the topic cannot be mapped to a subject, subscribing
// fails or the connection closes (ErrClosed).
func Serve(ctx context.Context, nc *nats.Conn, topic string, h Handler, opts ...Option) error {
	s, err := NewServer(nc, topic, h, opts...)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return s.Drain(context.Background())
	case <-s.stopped:
		if err := s.Drain(context.Background()); err != nil {
			return err
		}
		return ErrClosed
	}
}

// Server is a running handler for one topic. Create it with NewServer; stop it
// with Drain (graceful) or Close (immediate). Its methods are safe for
// concurrent use.
type Server struct {
	nc     *nats.Conn
	h      Handler
	cfg    config
	topic  string
	sub    *nats.Subscription // tasks, queue group
	cancel *nats.Subscription // cancel events, no queue group

	sem     chan struct{}
	hard    context.Context // cancelled on drain timeout or Close
	hardOff context.CancelCauseFunc
	stopped chan struct{} // closed when the dispatcher returned
	workers sync.WaitGroup

	mu        sync.Mutex
	seq       uint64
	inflight  map[string]map[uint64]context.CancelCauseFunc
	cancelled map[string]struct{} // recent cancel events (bounded, FIFO)
	order     []string

	stopOnce sync.Once
	stopErr  error
}

const maxRecentCancels = 4096

// NewServer subscribes to the task subject of topic (events.TaskSubject) in
// the configured queue group and to its cancel subject
// (events.CancelSubject), and starts dispatching tasks to h.
func NewServer(nc *nats.Conn, topic string, h Handler, opts ...Option) (*Server, error) {
	if nc == nil {
		return nil, errors.New("handler: nil connection")
	}
	if h == nil {
		return nil, errors.New("handler: nil handler")
	}
	cfg := defaultConfig()
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	taskSubj, err := events.TaskSubject(topic)
	if err != nil {
		return nil, fmt.Errorf("handler: mapping topic %q: %w", topic, err)
	}
	cancelSubj, err := events.CancelSubject(topic)
	if err != nil {
		return nil, fmt.Errorf("handler: mapping topic %q: %w", topic, err)
	}
	s := &Server{
		nc: nc, h: h, cfg: cfg, topic: topic,
		sem:       make(chan struct{}, cfg.concurrency),
		stopped:   make(chan struct{}),
		inflight:  map[string]map[uint64]context.CancelCauseFunc{},
		cancelled: map[string]struct{}{},
	}
	s.hard, s.hardOff = context.WithCancelCause(context.Background())
	// Subscribe to cancel events first so no cancel of a delivered task is missed.
	if s.cancel, err = nc.Subscribe(cancelSubj, s.onCancel); err != nil {
		return nil, fmt.Errorf("handler: subscribing to %s: %w", cancelSubj, err)
	}
	if s.sub, err = nc.QueueSubscribeSync(taskSubj, cfg.queueGroup); err != nil {
		_ = s.cancel.Unsubscribe()
		return nil, fmt.Errorf("handler: subscribing to %s: %w", taskSubj, err)
	}
	// Make sure the server knows both subscriptions before the caller starts
	// processes that publish tasks.
	if err := nc.Flush(); err != nil {
		_ = s.cancel.Unsubscribe()
		_ = s.sub.Unsubscribe()
		return nil, fmt.Errorf("handler: flushing subscriptions: %w", err)
	}
	go s.dispatch()
	cfg.logger.Info("handler serving", "topic", topic, "subject", taskSubj, "queue_group", cfg.queueGroup,
		"concurrency", cfg.concurrency)
	return s, nil
}

// dispatch takes a concurrency slot, then the next task, and runs it in a
// worker goroutine; it returns when the subscription is closed or drained, or
// on hard stop.
func (s *Server) dispatch() {
	defer close(s.stopped)
	for {
		select {
		case s.sem <- struct{}{}:
		case <-s.hard.Done():
			return
		}
		msg, err := s.sub.NextMsgWithContext(s.hard)
		if err != nil {
			<-s.sem
			if errors.Is(err, nats.ErrSlowConsumer) {
				s.cfg.logger.Warn("handler dropped task events: slow consumer", "topic", s.topic)
				continue
			}
			return
		}
		s.workers.Add(1)
		go func() {
			defer s.workers.Done()
			defer func() { <-s.sem }()
			s.run(msg)
		}()
	}
}

func (s *Server) run(msg *nats.Msg) {
	log := s.cfg.logger
	task, err := ParseTask(msg)
	if err != nil {
		log.Warn("handler rejected a task event", "topic", s.topic, "error", err)
		body, outcome := encodeFailure(err, 0)
		s.reply(msg, "", body, outcome)
		return
	}
	if task.Type != "" && task.Type != events.TypeTask {
		log.Warn("handler got an event of another type on the task subject", "topic", s.topic, "ce_id", task.ID, "ce_type", task.Type)
	}
	ctx, cancel, seq := s.track(task.ID)
	defer s.untrack(task.ID, seq, cancel)
	start := time.Now()
	body, outcome := Invoke(ctx, s.h, task)
	if cause := context.Cause(ctx); errors.Is(cause, ErrTaskCancelled) {
		log.Info("handler finished a cancelled task; the bridge drops the reply", "task_id", task.ID, "topic", s.topic)
	}
	log.Debug("handler answered task", "task_id", task.ID, "topic", s.topic, "outcome", outcome,
		"duration", time.Since(start))
	s.reply(msg, task.ID, body, outcome)
}

func (s *Server) reply(msg *nats.Msg, id string, body []byte, outcome string) {
	if msg.Reply == "" {
		s.cfg.logger.Warn("handler got a task event without reply subject", "task_id", id, "topic", s.topic)
		return
	}
	r := nats.NewMsg(msg.Reply)
	r.Header.Set(events.OutcomeHeader, outcome)
	if len(body) > 0 {
		r.Header.Set(events.HeaderDataContent, events.ContentTypeJSON)
	}
	r.Data = body
	if err := s.nc.PublishMsg(r); err != nil {
		s.cfg.logger.Warn("handler could not send a reply", "task_id", id, "topic", s.topic, "error", err)
	}
}

func (s *Server) track(id string) (context.Context, context.CancelCauseFunc, uint64) {
	ctx, cancel := context.WithCancelCause(s.hard)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	if _, gone := s.cancelled[id]; gone {
		cancel(ErrTaskCancelled)
	}
	m := s.inflight[id]
	if m == nil {
		m = map[uint64]context.CancelCauseFunc{}
		s.inflight[id] = m
	}
	m[s.seq] = cancel
	return ctx, cancel, s.seq
}

func (s *Server) untrack(id string, seq uint64, cancel context.CancelCauseFunc) {
	cancel(context.Canceled)
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.inflight[id]; m != nil {
		delete(m, seq)
		if len(m) == 0 {
			delete(s.inflight, id)
		}
	}
}

func (s *Server) onCancel(msg *nats.Msg) {
	id, err := ParseCancel(msg)
	if err != nil {
		s.cfg.logger.Warn("handler ignored a cancel event", "topic", s.topic, "error", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, cancel := range s.inflight[id] {
		cancel(ErrTaskCancelled)
		n++
	}
	if _, dup := s.cancelled[id]; !dup {
		s.cancelled[id] = struct{}{}
		s.order = append(s.order, id)
		if len(s.order) > maxRecentCancels {
			delete(s.cancelled, s.order[0])
			s.order = s.order[1:]
		}
	}
	s.cfg.logger.Info("handler got a cancel event", "task_id", id, "topic", s.topic, "in_flight", n)
}

// InFlight reports how many tasks are being handled now.
func (s *Server) InFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, m := range s.inflight {
		n += len(m)
	}
	return n
}

// Drain stops taking new tasks (the subscription is drained: tasks already
// delivered to this client still run), waits for the tasks in flight up to the
// drain timeout, then cancels their contexts (cause ErrDrainTimeout), drops
// tasks not yet started (the engine offers them again when their lock lapses)
// and waits for the handlers to return or ctx to be done. It returns nil when
// every task finished in time. Only the first call of Drain or Close does the
// work; later calls return its result.
func (s *Server) Drain(ctx context.Context) error {
	s.stopOnce.Do(func() { s.stopErr = s.stop(ctx, s.cfg.drainTimeout, ErrDrainTimeout) })
	return s.stopErr
}

// Close stops at once: it cancels the contexts of the tasks in flight (cause
// ErrClosed), drops tasks not yet started and waits for the running handlers
// to return. It is idempotent.
func (s *Server) Close() error {
	s.stopOnce.Do(func() { s.stopErr = s.stop(context.Background(), 0, ErrClosed) })
	return s.stopErr
}

func (s *Server) stop(ctx context.Context, timeout time.Duration, cause error) error {
	defer func() { _ = s.cancel.Unsubscribe() }()
	done := make(chan struct{})
	go func() {
		<-s.stopped
		s.workers.Wait()
		close(done)
	}()
	var err error
	if timeout > 0 {
		if derr := s.sub.Drain(); derr != nil && !errors.Is(derr, nats.ErrConnectionClosed) && !errors.Is(derr, nats.ErrBadSubscription) {
			err = fmt.Errorf("handler: draining subscription: %w", derr)
		}
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case <-done:
			s.hardOff(context.Canceled)
			return err
		case <-t.C:
		case <-ctx.Done():
		}
		n := s.InFlight()
		err = errors.Join(err, fmt.Errorf("%w after %v with %d tasks in flight", ErrDrainTimeout, timeout, n))
		s.cfg.logger.Warn("handler drain timed out; cancelling tasks in flight", "topic", s.topic, "in_flight", n)
	}
	s.hardOff(cause)
	_ = s.sub.Unsubscribe()
	select {
	case <-done:
	case <-ctx.Done():
		return errors.Join(err, fmt.Errorf("handler: waiting for handlers: %w", ctx.Err()))
	}
	return err
}
