package bridge

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
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

// reconnectGrace is the pause between a NATS reconnect and the
// re-publication of the attempts that awaited a reply, so the handlers'
// connections are back too.
const reconnectGrace = time.Second

// reconnectHold is how long after a NATS reconnect a multi-try task that
// finds no responders keeps its lock and is published again (as a
// single-try task always is), instead of being left to lapse: handlers
// whose reconnect wait is longer than the bridge's come back meanwhile.
const reconnectHold = 15 * time.Second

// retiredKeys is how many reply keys of ended attempts the pump remembers,
// to tell a late reply from one to a key it never issued.
const retiredKeys = 4096

// Pump moves external tasks from the engine to NATS and handler outcomes back.
// Create it with NewPump, run it with Run; it is safe for concurrent use.
type Pump struct {
	eng    Engine
	tr     transport
	cfg    Config
	log    *slog.Logger
	stats  counters
	inbox  string // reply subject prefix, ending in "."
	obs    Observer
	tracer Tracer
	lp     lockPolicy

	reconnectedAt atomic.Int64 // unix nanos of the last NATS reconnect; 0 never

	refresh        chan struct{} // cap 1: RefreshTopics
	discovered     chan struct{} // closed after the first topic discovery
	discoveredOnce sync.Once

	mu        sync.Mutex
	attempts  map[string]*task // reply key -> task awaiting that reply
	retired   map[string]struct{}
	retiredQ  []string // ring of the retired keys, oldest at retiredAt
	retiredAt int
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
	cfg.ContentModeByTopic = maps.Clone(cfg.ContentModeByTopic)
	cfg.MaxProcessingTimeByTopic = maps.Clone(cfg.MaxProcessingTimeByTopic)
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	workCtx, workCancel := context.WithCancel(context.Background())
	p := &Pump{
		eng:        eng,
		tr:         tr,
		cfg:        cfg,
		log:        logger,
		obs:        cfg.Observer,
		tracer:     cfg.Tracer,
		lp:         lockPolicy{lock: cfg.LockDuration},
		refresh:    make(chan struct{}, 1),
		discovered: make(chan struct{}),
		// The inbox is random per process (nats.go's NewInbox: a nuid with a
		// crypto-random prefix, under the connection's inbox prefix); each
		// attempt's key under it is 128 bits from crypto/rand.
		inbox:      tr.NewInbox() + "." + rand.Text()[:8] + ".",
		attempts:   make(map[string]*task),
		retired:    make(map[string]struct{}, retiredKeys),
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
	}
	if len(cfg.Topics) > 0 {
		p.discoveredOnce.Do(func() { close(p.discovered) })
	}
	return p, nil
}

// RefreshTopics makes the pump re-read the deployed topics now (e.g. after
// a process was deployed). It never blocks; calls while a refresh is pending
// coalesce. Without effect when Config.Topics is set.
func (p *Pump) RefreshTopics() {
	select {
	case p.refresh <- struct{}{}:
	default:
	}
}

// Discovered is closed after the first successful discovery of the deployed
// topics, or at once when Config.Topics lists them (a readiness signal).
func (p *Pump) Discovered() <-chan struct{} { return p.discovered }

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
	stopReconnect := p.tr.OnReconnect(p.onReconnect)
	p.log.Info("task pump started", "worker_id", p.cfg.WorkerID, "topics", p.cfg.Topics,
		"window", p.cfg.Window, "lock_duration", p.cfg.LockDuration, "content_mode", p.cfg.ContentMode.String())

	if len(p.cfg.Topics) > 0 {
		p.setTopics(ctx, p.cfg.Topics)
		<-ctx.Done()
	} else {
		p.watchTopics(ctx)
	}
	// Pollers finish the fetch they have open (bounded by the long poll):
	// tasks it locked are delivered and drained like the others.
	p.pollWG.Wait()
	p.drain()
	stopReconnect()
	if err := unsubscribe(); err != nil {
		p.log.Debug("unsubscribing from replies", "error", err)
	}
	s := p.Stats()
	p.log.Info("task pump stopped", "fetched", s.Fetched, "published", s.Published, "finished", s.Finished,
		"bpmn_errors", s.BPMNErrors, "failures", s.Failures, "cancelled", s.Cancelled, "dropped", s.Dropped,
		"released", s.Released, "no_responders", s.NoResponders, "lock_extensions", s.LockExtensions,
		"unknown_replies", s.UnknownReplies)
	return nil
}

// onReconnect re-publishes, soon after a NATS reconnect, every attempt that
// awaited a reply: a reply sent while the connection was down is lost.
func (p *Pump) onReconnect() {
	p.reconnectedAt.Store(time.Now().UnixNano())
	p.log.Info("nats reconnected; publishing awaited attempts again", "in", reconnectGrace)
	time.AfterFunc(reconnectGrace, func() {
		p.track(func() {
			p.mu.Lock()
			open := make([]*task, 0, len(p.tasks))
			for _, t := range p.tasks {
				open = append(open, t)
			}
			p.mu.Unlock()
			n := 0
			for _, t := range open {
				t.mu.Lock()
				if t.state == stAwaiting {
					n++
					t.fire(evReconnected, eventInfo{cause: "nats reconnected"})
				}
				t.unlock()
			}
			if n > 0 {
				p.stats.republished.Add(uint64(n))
				p.log.Info("published awaited attempts again after a reconnect", "count", n)
			}
		})
	})
}

// inReconnectHold reports whether the last NATS reconnect was less than
// reconnectHold ago.
func (p *Pump) inReconnectHold() bool {
	at := p.reconnectedAt.Load()
	return at != 0 && time.Since(time.Unix(0, at)) < reconnectHold
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

// watchTopics follows the deployed topics until ctx is done: every
// TopicRefresh, and at once after RefreshTopics.
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
			level := slog.LevelWarn
			if engine.IsTemporary(err) {
				level = slog.LevelDebug // the engine client logs the outage
			}
			p.log.Log(ctx, level, "reading deployed topics", "error", err, "retry_in", delay)
		default:
			failures = 0
			p.setTopics(ctx, topics)
			p.discoveredOnce.Do(func() { close(p.discovered) })
		}
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-p.refresh:
		case <-timer.C:
		}
		timer.Stop()
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

// maxOpenFetches bounds the fetches open at once for one topic: one
// current and the rest given up on as stalled. A given-up fetch stays open
// until its bound (LongPollTimeout plus margin: cutting it off could strand
// tasks it locked), so on a busy topic whose engine stalls now and then
// many pile up (a busy topic fetches often: each stall leaves one open for
// up to 12.5 s). Each holds a goroutine and an engine connection.
const maxOpenFetches = 64

// maxHedges is how many fetches in a row may be started beside a slow one
// before a fetch brings tasks again.
const maxHedges = 2

// fetchSlot is one open fetch_and_lock of a topic and the window slots it
// asked for (reserved while it is open, unless a hedge took them over).
type fetchSlot struct {
	n        int
	start    time.Time
	reserved bool
	hedged   bool
}

type fetchResult struct {
	fs    *fetchSlot
	tasks []engine.ExternalTask
	err   error
	took  time.Duration
}

// poll runs the long polls of a topic: it waits for free window slots,
// fetches at most that many tasks and hands them to startTask. Each fetch is
// bounded by LongPollTimeout plus a margin. While the topic is busy (a fetch
// brought tasks within the last LongPollTimeout), a fetch open for longer
// than hedgeDelay is
// probably stalled: another one starts beside it with the free slots (the
// first one's tasks, should it still answer, are taken too; the window may
// then briefly hold up to one fetch more). At most maxOpenFetches are open
// per topic, one of them not given up on; when a busy topic goes quiet this
// costs up to maxHedges extra long polls (an idle topic keeps one long poll
// at a time). When ctx ends no fetch starts, but
// the open ones are waited for and their tasks delivered: the engine has
// locked them.
func (p *Pump) poll(ctx context.Context, ts *topicState) {
	defer p.pollWG.Done()
	defer ts.cancel()
	results := make(chan fetchResult, maxOpenFetches)
	var open []*fetchSlot
	// lastTasks: when a fetch last brought tasks. The topic is busy for one
	// long poll after that; not at first, so an idle topic keeps one long
	// poll at a time (performance.md: idle budget).
	var lastTasks time.Time
	hedges := 0 // hedges since a fetch last brought tasks
	failures := 0
	var notBefore time.Time
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		stopping := ctx.Err() != nil
		if stopping && len(open) == 0 {
			return
		}
		var tick <-chan time.Time
		var active []*fetchSlot // open fetches not yet given up on
		for _, fs := range open {
			if !fs.hedged {
				active = append(active, fs)
			}
		}
		// Two hedges per sign of work (the first one may stall as well): when
		// they only long-poll too, the topic went quiet.
		busy := !lastTasks.IsZero() && time.Since(lastTasks) < p.cfg.LongPollTimeout && hedges < maxHedges
		if !stopping && len(open) < maxOpenFetches && (len(active) == 0 || len(active) == 1 && busy) {
			at := notBefore
			var skip *fetchSlot
			if len(active) == 1 {
				skip = active[0]
				if h := skip.start.Add(p.cfg.hedgeDelay()); h.After(at) {
					at = h
				}
			}
			d := time.Until(at)
			if d <= 0 {
				n, pause := ts.slots(p.cfg.fetchThreshold(), skip)
				switch {
				case pause > 0:
					d = pause
				case n > 0:
					if skip != nil {
						hedges++
						skip.hedged = true
						ts.unreserve(skip)
						p.stats.hedgedFetches.Add(1)
						p.log.Debug("fetch open for long on a busy topic; fetching beside it", "topic", ts.name,
							"open_for", time.Since(skip.start).Round(time.Millisecond))
					}
					fs := &fetchSlot{n: n, start: time.Now()}
					ts.reserve(fs)
					open = append(open, fs)
					go p.fetch(ctx, ts, fs, results)
					continue
				}
			}
			if d > 0 {
				timer.Reset(d)
				tick = timer.C
			}
		}
		done := ctx.Done()
		if stopping {
			done = nil
		}
		select {
		case r := <-results:
			open = slices.DeleteFunc(open, func(fs *fetchSlot) bool { return fs == r.fs })
			ts.unreserve(r.fs)
			if r.err != nil && r.fs.hedged {
				// Given up on already: its error says nothing about the fetches since.
				p.stats.fetchErrors.Add(1)
				p.log.Debug("fetching tasks (a fetch given up on)", "topic", ts.name, "error", r.err)
				break
			}
			if r.err != nil {
				failures++ // lastTasks stays: a stalled engine is no sign of an idle topic
				p.stats.fetchErrors.Add(1)
				d := backoff(failures, p.cfg.RetryBackoff, p.cfg.MaxRetryBackoff)
				notBefore = time.Now().Add(d)
				level := slog.LevelWarn
				if engine.IsTemporary(r.err) || errors.Is(r.err, context.DeadlineExceeded) {
					level = slog.LevelDebug // the engine client logs an outage
				}
				p.log.Log(context.Background(), level, "fetching tasks", "topic", ts.name, "error", r.err, "retry_in", d)
				break
			}
			failures = 0
			if len(r.tasks) > 0 {
				lastTasks = time.Now()
				hedges = 0
			}
			for i := range r.tasks {
				p.startTask(ts, &r.tasks[i], r.fs.start)
			}
			if len(r.tasks) == 0 && r.took < emptyPollPause/2 {
				notBefore = time.Now().Add(emptyPollPause)
			}
		case <-ts.wake:
		case <-tick:
		case <-done:
		}
		if tick != nil && !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// fetch runs one fetch_and_lock for fs. It is not cancelled by ctx (a
// cancelled fetch may have locked tasks whose answer is then never read),
// only bounded by the long poll plus a margin.
func (p *Pump) fetch(ctx context.Context, ts *topicState, fs *fetchSlot, results chan<- fetchResult) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.LongPollTimeout+p.cfg.fetchMargin())
	tasks, err := p.eng.FetchAndLock(fctx, engine.FetchAndLockRequest{
		WorkerID:           p.cfg.WorkerID,
		Topics:             []string{ts.name},
		MaxTasks:           fs.n,
		LongPollingTimeout: p.cfg.LongPollTimeout,
		LockDuration:       p.cfg.LockDuration,
	})
	cancel()
	results <- fetchResult{fs: fs, tasks: tasks, err: err, took: time.Since(fs.start)}
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
		t.doReport(p.workCtx)
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
	_, late := p.retired[key]
	p.mu.Unlock()
	if t == nil {
		switch {
		case late:
			p.stats.lateReplies.Add(1)
			if !isNoResponders(m) {
				p.log.Warn("dropping reply to an attempt that is no longer awaited", "reply_subject", m.Subject)
			}
		default:
			// Keys are random: nobody who did not see the task event can name one.
			p.stats.unknownReplies.Add(1)
			p.log.Debug("dropping reply to a key this bridge never issued", "reply_subject", m.Subject)
		}
		return
	}
	if isNoResponders(m) {
		t.onAttempt(key, evNoResponders, eventInfo{cause: "no responders"})
		return
	}
	out, err := events.DecodeReply(m.Data, events.HeaderGet(events.Header(m.Header), events.OutcomeHeader), p.cfg.MaxReplyBytes)
	t.onReply(key, out, err)
}

func isNoResponders(m *nats.Msg) bool {
	return len(m.Data) == 0 && events.HeaderGet(events.Header(m.Header), "Status") == "503"
}

// newKey returns a reply key nobody can guess: 128 bits from crypto/rand.
func (p *Pump) newKey() string { return rand.Text() }

// retireKey forgets an attempt's key but remembers that it was issued.
func (p *Pump) retireKey(key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.attempts, key)
	if len(p.retiredQ) < retiredKeys {
		p.retiredQ = append(p.retiredQ, key)
	} else {
		delete(p.retired, p.retiredQ[p.retiredAt])
		p.retiredQ[p.retiredAt] = key
		p.retiredAt = (p.retiredAt + 1) % retiredKeys
	}
	p.retired[key] = struct{}{}
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

// drain serves in-flight tasks for up to DrainTimeout, then gives up on the
// rest: single-try tasks are reported, multi-try tasks left to lapse. The
// outcomes queued or being reported by then (and the single-try failures)
// get up to shutdownReportTimeout more before the engine calls are cut off.
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
		p.waitIdle(p.cfg.DrainTimeout)
	}

	rest := p.openTasks()
	if len(rest) > 0 {
		p.log.Warn("drain time is over; giving up on in-flight tasks", "in_flight", len(rest))
		for _, t := range rest {
			t.abandon()
		}
		p.waitIdle(shutdownReportTimeout)
	}

	p.gmu.Lock()
	p.gstopped = true
	p.gmu.Unlock()
	p.workCancel()
	p.wg.Wait()

	// Anything still open had an engine call cut off by the shutdown.
	for _, t := range p.openTasks() {
		t.handle(evCutOff, eventInfo{cause: "bridge stopped"})
	}
}

func (p *Pump) openTasks() []*task {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*task, 0, len(p.tasks))
	for _, t := range p.tasks {
		out = append(out, t)
	}
	return out
}

// waitIdle waits until no task is open while draining, or d passed.
func (p *Pump) waitIdle(d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-p.idle:
	case <-timer.C:
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
	reserved  int  // slots asked for by open fetches
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

// slots returns how many tasks a new fetch may ask for: the free window
// slots (one while probing) not reserved by open fetches other than skip,
// or 0 when fewer than threshold are free; and how long a no-responder pause
// has left. A slot is taken from fetch until the handler's outcome is in;
// tasks whose outcome is still being reported to the engine no longer occupy
// the window but are capped at another window's worth, so a slow engine
// stops fetching.
func (ts *topicState) slots(threshold int, skip *fetchSlot) (int, time.Duration) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if wait := time.Until(ts.resumeAt); wait > 0 {
		return 0, wait
	}
	limit := ts.window
	if ts.probing {
		if skip != nil {
			return 0, 0 // one canary at a time: no fetch beside it
		}
		limit = 1
	}
	reserved := ts.reserved
	if skip != nil && skip.reserved {
		reserved -= skip.n
	}
	free := min(limit-ts.handling, 2*limit-ts.held) - reserved
	if free < min(threshold, limit) || free <= 0 {
		return 0, 0
	}
	return free, 0
}

func (ts *topicState) reserve(fs *fetchSlot) {
	ts.mu.Lock()
	ts.reserved += fs.n
	fs.reserved = true
	ts.mu.Unlock()
}

// unreserve frees fs's slots (once).
func (ts *topicState) unreserve(fs *fetchSlot) {
	ts.mu.Lock()
	if fs.reserved {
		fs.reserved = false
		ts.reserved -= fs.n
	}
	ts.mu.Unlock()
}

// acquire counts a fetched task and reports whether it is a canary.
func (ts *topicState) acquire(obs Observer) bool {
	ts.mu.Lock()
	ts.handling++
	ts.held++
	probing, handling := ts.probing, ts.handling
	ts.mu.Unlock()
	if obs != nil {
		obs.Window(ts.name, handling, ts.window)
	}
	return probing
}

// release frees what a task held: its window slot if it still has it
// (handling) and its place among the held tasks.
func (ts *topicState) release(handling, held bool, obs Observer) {
	ts.mu.Lock()
	if handling {
		ts.handling--
	}
	if held {
		ts.held--
	}
	n := ts.handling
	ts.mu.Unlock()
	if obs != nil && handling {
		obs.Window(ts.name, n, ts.window)
	}
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
