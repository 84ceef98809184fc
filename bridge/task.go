package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/events"
)

// taskState is where a task is in its life; stDone is final.
type taskState int

const (
	stAwaiting  taskState = iota // published, waiting for the reply to attempt key
	stBackoff                    // waiting before the next publication
	stReporting                  // an outcome is being reported to the engine (or waits for a retry)
	stDone                       // finished, errored, cancelled, dropped or released: nothing more is sent
)

func (s taskState) String() string {
	return [...]string{"awaiting", "backoff", "reporting", "done"}[s]
}

// report is an outcome to send to the engine: a finish (kind KindSuccess)
// or an error.
type report struct {
	kind   events.Kind
	result json.RawMessage
	err    engine.ExternalTaskError
}

// task is the state machine of one locked external task. Every field below
// mu is guarded by it. Lock order: task.mu, then Pump.mu, then topicState.mu.
type task struct {
	p        *Pump
	ts       *topicState
	et       engine.ExternalTask
	subject  string
	traceID  string
	deadline time.Time // fetch + MaxProcessingTime

	mu          sync.Mutex
	state       taskState
	keepLock    bool
	lockExpiry  time.Time // local estimate: start of the last successful lock call + LockDuration
	lockTimer   *time.Timer
	extendFails int
	step        *time.Timer // handler timeout, retry backoff or report retry
	stepGen     uint64
	key         string // reply key of the awaited attempt
	attempt     int    // publications so far
	failures    int    // technical failures so far
	nrCount     int    // consecutive no-responder answers (single-try)
	canary      bool
	slot        bool // holds a window slot (until the outcome is in)
	lastCause   string
	rep         report
	repFails    int
}

// startTask takes over a task the engine just locked for us.
func (p *Pump) startTask(ts *topicState, et *engine.ExternalTask, fetchStart time.Time) {
	p.stats.fetched.Add(1)
	if et.ID == "" {
		p.stats.badTasks.Add(1)
		p.log.Error("engine returned a task without an id; it cannot be reported and will lapse", "topic", et.Topic)
		return
	}
	t := &task{
		p:          p,
		ts:         ts,
		et:         *et,
		traceID:    newTraceID(),
		deadline:   fetchStart.Add(p.cfg.maxProcessingTime(ts.name)),
		keepLock:   true,
		lockExpiry: fetchStart.Add(p.cfg.LockDuration),
	}
	p.stats.inFlight.Add(1)
	t.canary = ts.acquire()
	t.slot = true
	p.mu.Lock()
	old := p.tasks[et.ID]
	p.tasks[et.ID] = t
	p.mu.Unlock()
	if old != nil {
		// Our earlier lock on it lapsed and the engine offered it again: the new
		// copy takes over, the old one stops quietly.
		old.mu.Lock()
		old.close()
		old.mu.Unlock()
		p.log.Warn("task fetched again while still held; replacing the old copy", t.attrs()...)
	}

	t.mu.Lock()
	t.lockTimer = time.AfterFunc(t.nextLockCall(), func() { p.track(t.lockTick) })
	bad := t.validate()
	if bad != "" {
		p.stats.badTasks.Add(1)
		p.log.Warn("bad task from the engine; reporting a technical failure", t.attrs("reason", bad)...)
		t.startReport(report{kind: events.KindFailure, err: engine.ExternalTaskError{
			ErrorCode:    p.cfg.FailureErrorCode,
			ErrorMessage: "pe-bridge cannot deliver this task: " + bad,
		}})
		t.mu.Unlock()
		return
	}
	msg, key := t.prepareAttempt()
	t.mu.Unlock()
	t.send(msg, key)
}

// validate checks what the engine sent; it returns a reason when the task
// cannot be delivered.
func (t *task) validate() string {
	subject := t.ts.subject
	if t.et.Topic != t.ts.name {
		s, err := events.TaskSubject(t.et.Topic)
		if err != nil {
			return fmt.Sprintf("invalid topic %q: %v", t.et.Topic, err)
		}
		subject = s
	}
	t.subject = subject
	if len(t.et.Payload) > 0 && !json.Valid(t.et.Payload) {
		return "payload is not valid JSON"
	}
	return ""
}

func (t *task) attrs(extra ...any) []any {
	return append([]any{"task_id", t.et.ID, "topic", t.et.Topic, "ce_id", t.et.ID}, extra...)
}

// nextLockCall is the delay until the next extend_lock (or until the
// deadline, when that comes first and no outcome is being reported).
func (t *task) nextLockCall() time.Duration {
	at := t.lockExpiry.Add(-t.p.cfg.lockMargin())
	if t.state != stReporting && t.deadline.Before(at) {
		at = t.deadline
	}
	return time.Until(at)
}

// prepareAttempt registers a new attempt and builds its message; t.mu held.
// It returns a nil message if the task was reported instead.
func (t *task) prepareAttempt() (*nats.Msg, string) {
	p := t.p
	key := strconv.FormatUint(p.seq.Add(1), 36)
	ev, err := taskEvent(&t.et, p.cfg.Source, traceParent(t.traceID), t.lockExpiry, time.Now())
	var msg *nats.Msg
	if err == nil {
		msg, err = encodeEvent(ev, t.subject, p.cfg.ContentMode)
	}
	if err != nil {
		p.stats.badTasks.Add(1)
		p.log.Warn("cannot encode task event; reporting a technical failure", t.attrs("error", err)...)
		t.startReport(report{kind: events.KindFailure, err: engine.ExternalTaskError{
			ErrorCode:    p.cfg.FailureErrorCode,
			ErrorMessage: "pe-bridge cannot encode this task: " + err.Error(),
		}})
		return nil, ""
	}
	msg.Reply = p.inbox + key
	t.key = key
	t.state = stAwaiting
	t.attempt++
	p.addAttempt(key, t)
	t.armStep(p.cfg.HandlerTimeout)
	return msg, key
}

// send publishes an attempt; t.mu must not be held.
func (t *task) send(msg *nats.Msg, key string) {
	if msg == nil {
		return
	}
	p := t.p
	if err := p.tr.Publish(msg); err != nil {
		t.onUndeliverable(key, "publishing: "+err.Error())
		return
	}
	p.stats.published.Add(1)
	if p.log.Enabled(context.Background(), slog.LevelDebug) {
		p.log.Debug("task published", t.attrs("subject", t.subject, "single_try", t.et.IsSingleTry)...)
	}
}

// armStep (re)starts the step timer; t.mu held. A fire of an older arming is
// ignored through the generation number.
func (t *task) armStep(d time.Duration) {
	t.stopStep()
	gen := t.stepGen
	t.step = time.AfterFunc(d, func() { t.p.track(func() { t.onStep(gen) }) })
}

func (t *task) stopStep() {
	if t.step != nil {
		t.step.Stop()
		t.step = nil
	}
	t.stepGen++
}

func (t *task) onStep(gen uint64) {
	t.mu.Lock()
	if gen != t.stepGen || t.state == stDone {
		t.mu.Unlock()
		return
	}
	t.step = nil
	switch t.state {
	case stAwaiting:
		t.p.stats.handlerTimeouts.Add(1)
		t.dropAttempt()
		t.failure(fmt.Sprintf("no reply within %s", t.p.cfg.HandlerTimeout), 0)
		t.mu.Unlock()
	case stBackoff:
		if !time.Now().Before(t.deadline) {
			t.deadlineReached()
			t.mu.Unlock()
			return
		}
		t.p.stats.retries.Add(1)
		msg, key := t.prepareAttempt()
		t.mu.Unlock()
		t.send(msg, key)
	case stReporting:
		t.mu.Unlock()
		t.p.queueReport(t)
	default:
		t.mu.Unlock()
	}
}

func (t *task) dropAttempt() {
	if t.key != "" {
		t.p.removeAttempt(t.key)
		t.key = ""
	}
}

// onReply handles a handler's reply to attempt key.
func (t *task) onReply(key string, out events.Outcome, decodeErr error) {
	p := t.p
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state != stAwaiting || t.key != key {
		p.stats.lateReplies.Add(1)
		p.log.Warn("dropping late reply", t.attrs("state", t.state.String())...)
		return
	}
	t.dropAttempt()
	t.stopStep()
	if t.ts.responder() {
		p.log.Info("a handler answered; topic resumes", "topic", t.ts.name)
	}
	if decodeErr != nil {
		p.stats.badReplies.Add(1)
		t.failure(decodeErr.Error(), 0)
		return
	}
	switch out.Kind {
	case events.KindSuccess:
		t.startReport(report{kind: events.KindSuccess, result: out.Result})
	case events.KindBPMNError:
		t.startReport(report{kind: events.KindBPMNError, err: engine.ExternalTaskError{
			ErrorCode: out.Code, ErrorMessage: out.Message, ErrorDetails: out.Details,
		}})
	default:
		msg := out.Message
		if msg == "" {
			msg = "no message"
		}
		t.failure("handler reported a failure: "+msg, out.RetryAfter)
	}
}

// failure counts a technical failure of the current attempt and either
// schedules the next attempt or reports the task; t.mu held, no attempt open.
func (t *task) failure(cause string, retryAfter time.Duration) {
	p := t.p
	t.failures++
	t.lastCause = cause
	if t.failures >= p.cfg.MaxAttempts {
		p.log.Warn("technical failure; retry budget used up, reporting the reserved error",
			t.attrs("reason", cause, "attempt", t.attempt, "error_code", p.cfg.FailureErrorCode)...)
		t.startReport(report{kind: events.KindFailure, err: engine.ExternalTaskError{
			ErrorCode:    p.cfg.FailureErrorCode,
			ErrorMessage: fmt.Sprintf("pe-bridge: technical failure after %d attempts: %s", t.failures, cause),
		}})
		return
	}
	d := retryAfter
	if d <= 0 {
		d = backoff(t.failures, p.cfg.RetryBackoff, p.cfg.MaxRetryBackoff)
	}
	p.log.Warn("technical failure; retrying", t.attrs("reason", cause, "attempt", t.attempt, "retry_in", d)...)
	t.state = stBackoff
	t.armStep(d)
}

// onUndeliverable handles an attempt nobody could receive: a no-responders
// status or a publish error.
func (t *task) onUndeliverable(key, reason string) {
	p := t.p
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state != stAwaiting || t.key != key {
		return
	}
	t.dropAttempt()
	t.stopStep()
	p.stats.noResponders.Add(1)
	if paused, d := t.ts.noResponders(t.canary, p.cfg.NoResponderBackoff, p.cfg.MaxNoResponderBackoff); paused {
		p.log.Warn("no handler receives the topic's tasks; pausing the topic", "topic", t.ts.name,
			"subject", t.subject, "reason", reason, "resume_in", d)
	}
	if !t.et.IsSingleTry {
		p.stats.released.Add(1)
		p.log.Warn("task not delivered; leaving its lock to lapse so the engine offers it again",
			t.attrs("reason", reason)...)
		t.close()
		return
	}
	t.nrCount++
	t.canary = true
	d := backoff(t.nrCount, p.cfg.NoResponderBackoff, p.cfg.MaxNoResponderBackoff)
	p.log.Warn("single-try task not delivered; keeping its lock and publishing again",
		t.attrs("reason", reason, "retry_in", d)...)
	t.lastCause = reason
	t.state = stBackoff
	t.armStep(d)
}

// deadlineReached ends a task that got no outcome within MaxProcessingTime;
// t.mu held.
func (t *task) deadlineReached() {
	p := t.p
	t.dropAttempt()
	t.stopStep()
	cause := t.lastCause
	if cause == "" {
		cause = "no outcome yet"
	}
	limit := p.cfg.maxProcessingTime(t.ts.name)
	if t.et.IsSingleTry {
		p.log.Warn("single-try task reached its max processing time; reporting the reserved error",
			t.attrs("max_processing_time", limit, "reason", cause)...)
		t.startReport(report{kind: events.KindFailure, err: engine.ExternalTaskError{
			ErrorCode:    p.cfg.FailureErrorCode,
			ErrorMessage: fmt.Sprintf("pe-bridge: no outcome within max processing time %s (%s)", limit, cause),
		}})
		return
	}
	p.stats.released.Add(1)
	p.log.Warn("task reached its max processing time; leaving its lock to lapse",
		t.attrs("max_processing_time", limit, "reason", cause)...)
	t.close()
}

// startReport moves the task to stReporting and sends r; t.mu held. The
// task's window slot is free from here: the handler is done with it.
func (t *task) startReport(r report) {
	t.dropAttempt()
	t.stopStep()
	t.state = stReporting
	if t.slot {
		t.slot = false
		t.ts.release(true, false)
	}
	t.rep = r
	t.p.queueReport(t)
}

// doReport sends the pending outcome once and settles the task from the
// engine's answer; final reports are not retried.
func (t *task) doReport(ctx context.Context, final bool) {
	p := t.p
	t.mu.Lock()
	if t.state != stReporting {
		t.mu.Unlock()
		return
	}
	r := t.rep
	t.mu.Unlock()

	var err error
	if r.kind == events.KindSuccess {
		err = p.eng.FinishTask(ctx, t.et.ID, p.cfg.WorkerID, r.result)
	} else {
		err = p.eng.HandleError(ctx, t.et.ID, p.cfg.WorkerID, r.err)
	}

	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state != stReporting {
		return
	}
	switch {
	case err == nil:
		switch {
		case r.kind == events.KindSuccess:
			p.stats.finished.Add(1)
			if p.log.Enabled(context.Background(), slog.LevelDebug) {
				p.log.Debug("task finished", t.attrs("attempt", t.attempt)...)
			}
		case r.err.ErrorCode == p.cfg.FailureErrorCode && r.kind == events.KindFailure:
			p.stats.failures.Add(1)
			p.log.Info("task reported as technical failure", t.attrs("error_code", r.err.ErrorCode,
				"error_message", r.err.ErrorMessage)...)
		default:
			p.stats.bpmnErrors.Add(1)
			if p.log.Enabled(context.Background(), slog.LevelDebug) {
				p.log.Debug("bpmn error raised", t.attrs("error_code", r.err.ErrorCode)...)
			}
		}
		t.close()
	case errors.Is(err, engine.ErrGone), errors.Is(err, engine.ErrLockLost), errors.Is(err, engine.ErrNotFound):
		p.stats.dropped.Add(1)
		p.log.Warn("engine did not accept the outcome; dropping the task", t.attrs("error", err)...)
		t.close()
	case ctx.Err() != nil:
		p.log.Warn("outcome not reported before shutdown", t.attrs("error", err)...)
		t.close()
	case final:
		p.log.Warn("reporting outcome at shutdown", t.attrs("error", err)...)
		t.close()
	case engine.IsTemporary(err):
		t.repFails++
		p.stats.reportErrors.Add(1)
		d := backoff(t.repFails, p.cfg.RetryBackoff, p.cfg.MaxRetryBackoff)
		p.log.Warn("reporting outcome; retrying", t.attrs("error", err, "retry_in", d)...)
		t.armStep(d)
	default:
		p.stats.dropped.Add(1)
		p.log.Error("engine rejected the outcome; dropping the task", t.attrs("error", err)...)
		t.close()
	}
}

// lockTick extends the lock (or handles the deadline) when the lock timer fires.
func (t *task) lockTick() {
	p := t.p
	t.mu.Lock()
	if t.state == stDone || !t.keepLock {
		t.mu.Unlock()
		return
	}
	if t.state != stReporting && !time.Now().Before(t.deadline) {
		t.deadlineReached()
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()

	// A queue of outcome reports never delays an extension: extensions have
	// their own bound.
	if !acquire(p.workCtx, p.extendSem) {
		return
	}
	start := time.Now()
	err := p.eng.ExtendLock(p.workCtx, t.et.ID, p.cfg.WorkerID, p.cfg.LockDuration)
	<-p.extendSem

	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state == stDone || !t.keepLock {
		return
	}
	switch {
	case err == nil:
		p.stats.lockExtensions.Add(1)
		t.extendFails = 0
		t.lockExpiry = start.Add(p.cfg.LockDuration)
		t.lockTimer.Reset(t.nextLockCall())
	case errors.Is(err, engine.ErrGone):
		if t.state == stReporting {
			// Our own outcome may have closed it; the report settles the task.
			t.keepLock = false
			return
		}
		p.stats.cancelled.Add(1)
		p.log.Info("task cancelled by the engine", t.attrs("error", err)...)
		t.cancelled("the engine closed the task (boundary event, termination or expiry)")
	case errors.Is(err, engine.ErrLockLost), errors.Is(err, engine.ErrNotFound):
		p.stats.dropped.Add(1)
		p.log.Warn("lock lost; dropping the task", t.attrs("error", err)...)
		reason := "lock lost: the task is locked by another worker"
		if errors.Is(err, engine.ErrNotFound) {
			reason = "lock lost: the engine no longer knows the task"
		}
		t.cancelled(reason)
	case p.workCtx.Err() != nil:
		return
	default:
		t.extendFails++
		p.stats.extendErrors.Add(1)
		d := backoff(t.extendFails, p.cfg.RetryBackoff, p.cfg.MaxRetryBackoff)
		if left := time.Until(t.lockExpiry); left > 0 {
			d = min(d, max(left/3, 10*time.Millisecond))
		}
		p.log.Warn("extending lock; retrying", t.attrs("error", err, "retry_in", d)...)
		t.lockTimer.Reset(d)
	}
}

// cancelled ends a task the engine closed or took away and tells the
// handlers with a cancel event; t.mu held.
func (t *task) cancelled(reason string) {
	p := t.p
	t.close()
	ev, err := cancelEvent(&t.et, p.cfg.Source, reason, traceParent(t.traceID), time.Now())
	var msg *nats.Msg
	if err == nil {
		msg, err = encodeEvent(ev, t.ts.cancelSubject, p.cfg.ContentMode)
	}
	if err == nil {
		if t.subject != t.ts.subject {
			msg.Subject, err = events.CancelSubject(t.et.Topic)
		}
	}
	if err == nil {
		err = p.tr.Publish(msg)
	}
	if err != nil {
		p.log.Warn("publishing cancel event", t.attrs("error", err)...)
	}
}

// abandon gives up on the task at the end of a drain: single-try tasks are
// reported (their handler outcome if one is waiting for a retry, else the
// reserved error), multi-try tasks are left to lapse.
// At most cap(sem) of these final reports are open at once.
func (t *task) abandon(ctx context.Context, sem chan struct{}, wg *sync.WaitGroup) {
	p := t.p
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.state == stDone:
		return
	case t.state == stReporting && t.step == nil:
		return // a report call is in flight; the shutdown cancels it
	case t.state == stReporting:
		// An outcome waits for a retry: one last try.
	case !t.et.IsSingleTry:
		p.stats.released.Add(1)
		p.log.Warn("bridge shutting down; leaving the task's lock to lapse", t.attrs()...)
		t.close()
		return
	}
	if t.state != stReporting {
		t.rep = report{kind: events.KindFailure, err: engine.ExternalTaskError{
			ErrorCode: p.cfg.FailureErrorCode, ErrorMessage: "pe-bridge: bridge shutting down",
		}}
	}
	t.dropAttempt()
	t.stopStep()
	t.state = stReporting
	wg.Add(1)
	go func() {
		defer wg.Done()
		if !acquire(ctx, sem) {
			t.doReport(ctx, true) // fails at once: ctx is done
			return
		}
		defer func() { <-sem }()
		t.doReport(ctx, true)
	}()
}

// close makes the task final: timers stop, tables forget it, its window slot
// is freed. t.mu held; idempotent.
func (t *task) close() {
	if t.state == stDone {
		return
	}
	t.state = stDone
	t.keepLock = false
	if t.lockTimer != nil {
		t.lockTimer.Stop()
	}
	t.stopStep()
	t.p.forget(t)
	t.key = ""
	t.ts.release(t.slot, true)
	t.slot = false
	t.p.stats.inFlight.Add(-1)
}
