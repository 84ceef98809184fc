package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/events"
)

// ErrClosed is returned by Run after Close.
var ErrClosed = errors.New("bridge: pump closed")

// shutdownReportTimeout bounds the engine calls that report single-try tasks
// when the drain time is over.
const shutdownReportTimeout = 10 * time.Second

// emptyPollPause is the pause after an empty fetch answer that came back at
// once (the engine lost a race for the task), so a poller never spins.
const emptyPollPause = 100 * time.Millisecond

// Pump moves external tasks from the engine to NATS and handler outcomes back.
// Create it with NewPump, run it with Run; it is safe for concurrent use.
type Pump struct {
	eng   Engine
	tr    transport
	cfg   Config
	log   *slog.Logger
	stats counters
	inbox string // reply subject prefix, ending in "."
	seq   atomic.Uint64

	mu        sync.Mutex
	attempts  map[string]*task // reply key -> task awaiting that reply
	tasks     map[string]*task // task id -> open task
	topics    map[string]*topicState
	subjects  map[string]string // task subject -> topic, to detect collisions
	badTopics map[string]bool   // topics already reported as unusable
	draining  bool
	idle      chan struct{} // closed once draining and no task is open
	idleShut  bool

	gmu      sync.Mutex
	gstopped bool
	wg       sync.WaitGroup // engine calls and timer work of tasks
	pollWG   sync.WaitGroup // pollers

	workCtx    context.Context // engine calls of in-flight tasks; cancelled when Run ends
	workCancel context.CancelFunc

	// Outcome reports: at most cap(reportSem) reporter goroutines, each
	// working through reportQ until it is empty. extendSem bounds the lock
	// extensions separately.
	rmu       sync.Mutex
	reportQ   []*task
	reportSem chan struct{}
	extendSem chan struct{}

	runMu   sync.Mutex
	started bool
	closed  bool
	cancel  context.CancelFunc
	done    chan struct{}
}

// NewPump returns a pump that takes tasks from eng and publishes them on nc.
// cfg zero values take their documented defaults; logger nil discards logs.
// The pump does not own nc: the caller closes it after Run returned.
func NewPump(eng Engine, nc *nats.Conn, cfg Config, logger *slog.Logger) (*Pump, error) {
	if nc == nil {
		return nil, errors.New("bridge: nats connection is nil")
	}
	return newPump(eng, natsTransport{nc}, cfg, logger)
}

func newPump(eng Engine, tr transport, cfg Config, logger *slog.Logger) (*Pump, error) {
	if eng == nil {
		return nil, errors.New("bridge: engine is nil")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	cfg.Topics = slices.Clone(cfg.Topics)
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	workCtx, workCancel := context.WithCancel(context.Background())
	return &Pump{
		eng:        eng,
		tr:         tr,
		cfg:        cfg,
		log:        logger,
		inbox:      tr.NewInbox() + ".",
		attempts:   make(map[string]*task),
		tasks:      make(map[string]*task),
		topics:     make(map[string]*topicState),
		subjects:   make(map[string]string),
		badTopics:  make(map[string]bool),
		idle:       make(chan struct{}),
		workCtx:    workCtx,
		workCancel: workCancel,
		reportSem:  make(chan struct{}, cfg.ReportConcurrency),
		extendSem:  make(chan struct{}, cfg.ExtendConcurrency),
		done:       make(chan struct{}),
	}, nil
}

// WorkerID is the engine worker id the pump locks tasks with.
func (p *Pump) WorkerID() string { return p.cfg.WorkerID }

// Stats returns the pump's counters.
func (p *Pump) Stats() PumpStats { return p.stats.snapshot() }

// Run fetches, publishes and reports tasks until ctx is cancelled, then
// drains: it stops fetching at once (open long polls are cancelled), keeps
// extending locks and handling replies of in-flight tasks for up to
// Config.DrainTimeout, then reports still-open single-try tasks with
// Config.FailureErrorCode ("bridge shutting down") and leaves multi-try tasks
// to lapse. It returns nil after a drain, and an error only if it could not
// start (reply subscription failed, already running or closed). Run may be
// called once.
func (p *Pump) Run(ctx context.Context) error {
	p.runMu.Lock()
	if p.closed {
		p.runMu.Unlock()
		return ErrClosed
	}
	if p.started {
		p.runMu.Unlock()
		return errors.New("bridge: pump already running")
	}
	p.started = true
	ctx, cancel := context.WithCancel(ctx)
	p.cancel = cancel
	p.runMu.Unlock()
	defer close(p.done)
	defer cancel()
	defer p.workCancel()

	unsubscribe, err := p.tr.Subscribe(p.inbox+">", p.onReply)
	if err != nil {
		return fmt.Errorf("bridge: subscribing to replies on %s>: %w", p.inbox, err)
	}
	p.log.Info("task pump started", "worker_id", p.cfg.WorkerID, "topics", p.cfg.Topics,
		"window", p.cfg.Window, "lock_duration", p.cfg.LockDuration, "content_mode", p.cfg.ContentMode.String())

	if len(p.cfg.Topics) > 0 {
		p.setTopics(ctx, p.cfg.Topics)
		<-ctx.Done()
	} else {
		p.watchTopics(ctx)
	}
	p.pollWG.Wait()
	p.drain()
	if err := unsubscribe(); err != nil {
		p.log.Debug("unsubscribing from replies", "error", err)
	}
	s := p.Stats()
	p.log.Info("task pump stopped", "fetched", s.Fetched, "published", s.Published, "finished", s.Finished,
		"bpmn_errors", s.BPMNErrors, "failures", s.Failures, "cancelled", s.Cancelled, "dropped", s.Dropped,
		"released", s.Released, "no_responders", s.NoResponders, "lock_extensions", s.LockExtensions)
	return nil
}

// Close stops a running pump as a cancelled context does and waits for Run
// to return. It is idempotent; a pump closed before Run never starts.
func (p *Pump) Close() error {
	p.runMu.Lock()
	p.closed = true
	cancel, started := p.cancel, p.started
	p.runMu.Unlock()
	if cancel != nil {
		cancel()
	}
	if started {
		<-p.done
	}
	return nil
}

// watchTopics follows the deployed topics until ctx is done.
func (p *Pump) watchTopics(ctx context.Context) {
	failures := 0
	for {
		delay := p.cfg.TopicRefresh
		topics, err := p.eng.DeployedTopics(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			failures++
			delay = backoff(failures, p.cfg.RetryBackoff, min(p.cfg.MaxRetryBackoff, p.cfg.TopicRefresh))
			p.log.Warn("reading deployed topics", "error", err, "retry_in", delay)
		default:
			failures = 0
			p.setTopics(ctx, topics)
		}
		if !sleepCtx(ctx, delay) {
			return
		}
	}
}

// setTopics starts a poller for every new topic and stops the pollers of
// topics that are gone (their in-flight tasks go on).
func (p *Pump) setTopics(ctx context.Context, topics []string) {
	want := make(map[string]bool, len(topics))
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, topic := range topics {
		if want[topic] {
			continue
		}
		want[topic] = true
		if p.topics[topic] != nil || p.badTopics[topic] {
			continue
		}
		subject, err := events.TaskSubject(topic)
		if err == nil {
			if other, ok := p.subjects[subject]; ok && other != topic {
				err = fmt.Errorf("subject %s is already used by topic %q", subject, other)
			}
		}
		var cancelSubject string
		if err == nil {
			cancelSubject, err = events.CancelSubject(topic)
		}
		if err != nil {
			p.badTopics[topic] = true
			p.log.Error("skipping topic that cannot be mapped to a NATS subject", "topic", topic, "error", err)
			continue
		}
		p.subjects[subject] = topic
		tctx, cancel := context.WithCancel(ctx)
		ts := &topicState{
			name:          topic,
			subject:       subject,
			cancelSubject: cancelSubject,
			cancel:        cancel,
			window:        p.cfg.Window,
			wake:          make(chan struct{}, 1),
		}
		p.topics[topic] = ts
		p.pollWG.Add(1)
		go p.poll(tctx, ts)
		p.log.Info("serving topic", "topic", topic, "subject", subject)
	}
	for topic, ts := range p.topics {
		if !want[topic] {
			ts.cancel()
			delete(p.topics, topic)
			delete(p.subjects, ts.subject)
			p.log.Info("topic no longer deployed; stopped fetching", "topic", topic)
		}
	}
}

// poll is the one long poll of a topic: it waits for free window slots,
// fetches at most that many tasks and hands them to startTask.
func (p *Pump) poll(ctx context.Context, ts *topicState) {
	defer p.pollWG.Done()
	defer ts.cancel()
	failures := 0
	for {
		n, ok := ts.waitSlots(ctx, p.cfg.fetchThreshold())
		if !ok {
			return
		}
		start := time.Now()
		tasks, err := p.eng.FetchAndLock(ctx, engine.FetchAndLockRequest{
			WorkerID:           p.cfg.WorkerID,
			Topics:             []string{ts.name},
			MaxTasks:           n,
			LongPollingTimeout: p.cfg.LongPollTimeout,
			LockDuration:       p.cfg.LockDuration,
		})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			p.stats.fetchErrors.Add(1)
			d := backoff(failures, p.cfg.RetryBackoff, p.cfg.MaxRetryBackoff)
			p.log.Warn("fetching tasks", "topic", ts.name, "error", err, "retry_in", d)
			if !sleepCtx(ctx, d) {
				return
			}
			continue
		}
		failures = 0
		for i := range tasks {
			p.startTask(ts, &tasks[i], start)
		}
		if len(tasks) == 0 && time.Since(start) < emptyPollPause/2 {
			if !sleepCtx(ctx, emptyPollPause) {
				return
			}
		}
	}
}

// track runs f as work owned by the pump unless the pump has stopped.
func (p *Pump) track(f func()) {
	p.gmu.Lock()
	if p.gstopped {
		p.gmu.Unlock()
		return
	}
	p.wg.Add(1)
	p.gmu.Unlock()
	defer p.wg.Done()
	f()
}

// goTracked runs f in a new goroutine owned by the pump; it reports false
// (and f does not run) once the pump has stopped.
func (p *Pump) goTracked(f func()) bool {
	p.gmu.Lock()
	defer p.gmu.Unlock()
	if p.gstopped {
		return false
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		f()
	}()
	return true
}

// queueReport has t's pending outcome sent by a reporter goroutine: a new
// one while fewer than ReportConcurrency run, else the next one that is free
// (FIFO). A queued report holds no goroutine and no engine connection.
func (p *Pump) queueReport(t *task) {
	p.rmu.Lock()
	select {
	case p.reportSem <- struct{}{}:
		p.rmu.Unlock()
		if !p.goTracked(func() { p.reportLoop(t) }) {
			p.rmu.Lock()
			<-p.reportSem
			p.rmu.Unlock()
		}
	default:
		p.reportQ = append(p.reportQ, t)
		p.rmu.Unlock()
	}
}

// reportLoop reports t, then the queued tasks, until the queue is empty;
// it holds one reportSem slot throughout. After the pump's work context is
// cancelled each queued report fails at once (the engine is not called).
func (p *Pump) reportLoop(t *task) {
	for {
		t.doReport(p.workCtx, false)
		p.rmu.Lock()
		if len(p.reportQ) == 0 {
			p.reportQ = nil
			<-p.reportSem
			p.rmu.Unlock()
			return
		}
		t = p.reportQ[0]
		p.reportQ[0] = nil
		p.reportQ = p.reportQ[1:]
		p.rmu.Unlock()
	}
}

// acquire takes a slot of sem, or gives up when ctx ends.
func acquire(ctx context.Context, sem chan struct{}) bool {
	select {
	case sem <- struct{}{}:
		return true
	default:
	}
	select {
	case sem <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

// onReply receives every reply on the pump's inbox (serially, from NATS).
func (p *Pump) onReply(m *nats.Msg) {
	if len(m.Subject) <= len(p.inbox) {
		return
	}
	key := m.Subject[len(p.inbox):]
	p.mu.Lock()
	t := p.attempts[key]
	p.mu.Unlock()
	if t == nil {
		p.stats.lateReplies.Add(1)
		if !isNoResponders(m) {
			p.log.Warn("dropping reply to an attempt that is no longer awaited", "reply_subject", m.Subject)
		}
		return
	}
	if isNoResponders(m) {
		t.onUndeliverable(key, "no responders")
		return
	}
	out, err := events.DecodeReply(m.Data, m.Header.Get(events.OutcomeHeader), p.cfg.MaxReplyBytes)
	t.onReply(key, out, err)
}

func isNoResponders(m *nats.Msg) bool {
	return len(m.Data) == 0 && m.Header.Get("Status") == "503"
}

// forget removes t from the pump's tables; t.mu is held.
func (p *Pump) forget(t *task) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t.key != "" && p.attempts[t.key] == t {
		delete(p.attempts, t.key)
	}
	if p.tasks[t.et.ID] == t {
		delete(p.tasks, t.et.ID)
	}
	if p.draining && len(p.tasks) == 0 && !p.idleShut {
		p.idleShut = true
		close(p.idle)
	}
}

func (p *Pump) addAttempt(key string, t *task) {
	p.mu.Lock()
	p.attempts[key] = t
	p.mu.Unlock()
}

func (p *Pump) removeAttempt(key string) {
	p.mu.Lock()
	delete(p.attempts, key)
	p.mu.Unlock()
}

// drain serves in-flight tasks for up to DrainTimeout, then gives up on the
// rest: single-try tasks are reported, multi-try tasks left to lapse.
func (p *Pump) drain() {
	p.mu.Lock()
	p.draining = true
	open := len(p.tasks)
	if open == 0 && !p.idleShut {
		p.idleShut = true
		close(p.idle)
	}
	p.mu.Unlock()
	if open > 0 {
		p.log.Info("draining in-flight tasks", "in_flight", open, "timeout", p.cfg.DrainTimeout)
		timer := time.NewTimer(p.cfg.DrainTimeout)
		select {
		case <-p.idle:
		case <-timer.C:
		}
		timer.Stop()
	}

	p.mu.Lock()
	rest := make([]*task, 0, len(p.tasks))
	for _, t := range p.tasks {
		rest = append(rest, t)
	}
	p.mu.Unlock()
	if len(rest) > 0 {
		p.log.Warn("drain time is over; giving up on in-flight tasks", "in_flight", len(rest))
		ctx, cancel := context.WithTimeout(context.Background(), shutdownReportTimeout)
		var wg sync.WaitGroup
		sem := make(chan struct{}, p.cfg.ReportConcurrency)
		for _, t := range rest {
			t.abandon(ctx, sem, &wg)
		}
		wg.Wait()
		cancel()
	}

	p.gmu.Lock()
	p.gstopped = true
	p.gmu.Unlock()
	p.workCancel()
	p.wg.Wait()

	// Anything still open had an engine call cut off by the shutdown.
	p.mu.Lock()
	rest = rest[:0]
	for _, t := range p.tasks {
		rest = append(rest, t)
	}
	p.mu.Unlock()
	for _, t := range rest {
		t.mu.Lock()
		t.close()
		t.mu.Unlock()
	}
}

// topicState is the window and no-responder state of one topic.
type topicState struct {
	name, subject, cancelSubject string
	cancel                       context.CancelFunc
	window                       int
	wake                         chan struct{} // cap 1: a slot was freed or the pause ended early

	mu        sync.Mutex
	handling  int  // tasks published or waiting to be published again: they occupy the window
	held      int  // every task not yet done, including those whose outcome is being reported
	probing   bool // no handler listened lately: fetch one canary task at a time
	nrBackoff time.Duration
	resumeAt  time.Time
}

func (ts *topicState) signal() {
	select {
	case ts.wake <- struct{}{}:
	default:
	}
}

// waitSlots blocks until the topic may fetch and at least threshold window
// slots are free (one while probing) and returns the number of free slots.
// A slot is taken from fetch until the handler's outcome is in; tasks whose
// outcome is still being reported to the engine no longer occupy the window
// but are capped at another window's worth, so a slow engine stops fetching.
func (ts *topicState) waitSlots(ctx context.Context, threshold int) (int, bool) {
	for {
		ts.mu.Lock()
		limit := ts.window
		if ts.probing {
			limit = 1
		}
		free := min(limit-ts.handling, 2*limit-ts.held)
		need := min(threshold, limit)
		wait := time.Until(ts.resumeAt)
		ts.mu.Unlock()
		if wait > 0 {
			timer := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				timer.Stop()
				return 0, false
			case <-ts.wake:
			case <-timer.C:
			}
			timer.Stop()
			continue
		}
		if free >= need {
			return free, true
		}
		select {
		case <-ctx.Done():
			return 0, false
		case <-ts.wake:
		}
	}
}

// acquire counts a fetched task and reports whether it is a canary.
func (ts *topicState) acquire() bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.handling++
	ts.held++
	return ts.probing
}

// release frees what a task held: its window slot if it still has it
// (handling) and its place among the held tasks.
func (ts *topicState) release(handling, held bool) {
	ts.mu.Lock()
	if handling {
		ts.handling--
	}
	if held {
		ts.held--
	}
	ts.mu.Unlock()
	ts.signal()
}

// noResponders pauses the topic: the first time for NoResponderBackoff, and
// twice as long (up to the maximum) each time a canary finds nobody either.
// It reports whether the topic just entered the paused state.
func (ts *topicState) noResponders(canary bool, base, limit time.Duration) (bool, time.Duration) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	switch {
	case !ts.probing:
		ts.probing = true
		ts.nrBackoff = base
	case canary:
		ts.nrBackoff = min(2*ts.nrBackoff, limit)
	default:
		return false, ts.nrBackoff
	}
	ts.resumeAt = time.Now().Add(ts.nrBackoff)
	return true, ts.nrBackoff
}

// responder ends a pause: a handler answered.
func (ts *topicState) responder() bool {
	ts.mu.Lock()
	was := ts.probing
	ts.probing = false
	ts.resumeAt = time.Time{}
	ts.mu.Unlock()
	if was {
		ts.signal()
	}
	return was
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}
