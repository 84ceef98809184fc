package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/events"
)

// report is an outcome to send to the engine: a finish (kind KindSuccess)
// or an error.
type report struct {
	kind   events.Kind
	result json.RawMessage
	err    engine.ExternalTaskError
}

// eventInfo is what an event carries besides its kind.
type eventInfo struct {
	cause      string        // why an attempt failed or the task ends
	retryAfter time.Duration // the handler's wish for the next attempt (evFailed)
	rep        report        // the handler's outcome (evOutcome)
	lockStart  time.Time     // start of the re-fetch (evRefetched)
	refused    error         // the engine's answer (evReportRefused)
	timedOut   bool          // the call hit its own bound (evReportFailed): retry at once
}

// task is one locked external task. Its state changes only in fire, through
// transition (lifecycle.go). Every field below mu is guarded by it. Lock
// order: task.mu, then Pump.mu, then topicState.mu, then Pump.rmu.
type task struct {
	p         *Pump
	ts        *topicState
	et        engine.ExternalTask
	subject   string
	mode      ContentMode
	traceID   string
	span      TaskSpan // nil without a Tracer
	fetchedAt time.Time
	deadline  time.Time // fetch + MaxProcessingTime

	mu        sync.Mutex
	state     taskState
	lock      lockCycle
	keepLock  bool
	lockTimer *time.Timer
	deadTimer *time.Timer
	step      *time.Timer // handler timeout, retry backoff or report retry
	stepGen   uint64
	key       string // reply key of the awaited attempt
	pubAt     time.Time
	endPub    func(error) // ends the attempt's span
	attempt   int         // publications so far
	failures  int         // technical failures so far
	nrCount   int         // consecutive no-responder answers (single-try)
	canary    bool
	slot      bool // holds a window slot (until the outcome is in)
	lastCause string
	rep       report
	repFails  int
	final     bool        // the pending report is the last try
	out       []*nats.Msg // to publish once mu is released
}

// startTask takes over a task the engine just locked for us.
func (p *Pump) startTask(ts *topicState, et *engine.ExternalTask, fetchStart time.Time) {
	p.stats.fetched.Add(1)
	if p.obs != nil {
		p.obs.TaskFetched(ts.name)
	}
	if strings.TrimSpace(et.ID) == "" {
		p.stats.badTasks.Add(1)
		p.log.Error("engine returned a task without an id; it cannot be reported and will lapse", "topic", et.Topic)
		return
	}
	p.mu.Lock()
	old := p.tasks[et.ID]
	p.mu.Unlock()
	if old != nil && old.refetched(fetchStart) {
		return
	}
	t := &task{
		p:         p,
		ts:        ts,
		et:        *et,
		mode:      p.cfg.contentMode(et.Topic),
		traceID:   newTraceID(),
		fetchedAt: fetchStart,
		deadline:  fetchStart.Add(p.cfg.maxProcessingTime(ts.name)),
		keepLock:  true,
		lock:      lockCycle{expiry: fetchStart.Add(p.cfg.LockDuration)},
	}
	if p.tracer != nil {
		t.span = p.tracer.StartTask(ts.name, et.ID, fetchStart)
	}
	p.stats.inFlight.Add(1)
	t.canary = ts.acquire(p.obs)
	t.slot = true
	p.mu.Lock()
	p.tasks[et.ID] = t
	p.mu.Unlock()

	t.mu.Lock()
	t.armLock()
	t.deadTimer = time.AfterFunc(time.Until(t.deadline), func() { p.track(t.onDeadline) })
	if bad := t.validate(); bad != "" {
		p.stats.badTasks.Add(1)
		p.log.Warn("bad task from the engine; reporting a technical failure", t.attrs("reason", bad)...)
		t.fire(evInvalid, eventInfo{cause: "pe-bridge cannot deliver this task: " + bad})
	} else {
		t.fire(evDeliver, eventInfo{})
	}
	t.unlock()
}

// refetched handles a task the engine handed out again while t still holds
// it: t keeps its running attempt and adopts the new lock. It reports false
// when t is done (the new copy starts afresh).
func (t *task) refetched(start time.Time) bool {
	t.mu.Lock()
	defer t.unlock()
	if t.state == stDone {
		return false
	}
	t.p.stats.refetched.Add(1)
	t.p.log.Warn("task fetched again while still held; keeping the running attempt and the new lock",
		t.attrs("state", t.state.String())...)
	t.fire(evRefetched, eventInfo{lockStart: start})
	return true
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

// unlock releases t.mu and publishes what the transitions queued.
func (t *task) unlock() {
	out := t.out
	t.out = nil
	t.mu.Unlock()
	for _, m := range out {
		t.send(m)
	}
}

// handle fires ev on t; t.mu must not be held.
func (t *task) handle(ev lifeEvent, in eventInfo) {
	t.mu.Lock()
	t.fire(ev, in)
	t.unlock()
}

// fire runs one transition and carries out its actions; t.mu held. An
// impossible event is rejected: counted, logged, and the state is kept.
func (t *task) fire(ev lifeEvent, in eventInfo) {
	p := t.p
	c := cond{singleTry: t.et.IsSingleTry, retriesLeft: t.failures+1 < p.cfg.MaxAttempts}
	if ev == evNoResponders && !c.singleTry && p.inReconnectHold() {
		c.singleTry = true // just after a reconnect: keep the lock, publish again (reconnectHold)
	}
	st, err := transition(t.state, ev, c)
	if err != nil {
		p.stats.rejected.Add(1)
		level := slog.LevelWarn
		if t.state == stDone {
			level = slog.LevelDebug // a timer or a call that ended just after the task settled
		}
		p.log.Log(context.Background(), level, "ignoring impossible task event", t.attrs("error", err)...)
		return
	}
	t.state = st.next
	a := st.act
	if a&actEndAttempt != 0 {
		t.endAttempt(ev, in.cause)
	}
	if a&actFreeSlot != 0 && t.slot {
		t.slot = false
		t.ts.release(true, false, p.obs)
	}
	if a&actPause != 0 {
		p.stats.noResponders.Add(1)
		if paused, d := t.ts.noResponders(t.canary, p.cfg.NoResponderBackoff, p.cfg.MaxNoResponderBackoff); paused {
			p.log.Warn("no handler receives the topic's tasks; pausing the topic", "topic", t.ts.name,
				"subject", t.subject, "reason", in.cause, "resume_in", d)
			if p.obs != nil {
				p.obs.TopicPaused(t.ts.name)
			}
		}
	}
	if a&actFailure != 0 && ev == evFailed {
		p.log.Warn("technical failure; retry budget used up, reporting the reserved error",
			t.attrs("reason", in.cause, "attempt", t.attempt, "error_code", p.cfg.FailureErrorCode)...)
	}
	if a&actFailure != 0 {
		t.rep = report{kind: events.KindFailure, err: engine.ExternalTaskError{
			ErrorCode: p.cfg.FailureErrorCode, ErrorMessage: t.failureMessage(ev, in.cause),
		}}
	}
	if a&actOutcome != 0 {
		t.rep = in.rep
	}
	if a&actFinal != 0 {
		t.final = true
	}
	if a&actReport != 0 {
		t.stopStep()
		p.queueReport(t)
	}
	if a&actArmRetry != 0 {
		t.armRetry(ev, in)
	}
	if a&actArmReportRetry != 0 {
		t.repFails++
		d := backoff(t.repFails, p.cfg.RetryBackoff, p.cfg.MaxRetryBackoff)
		if in.timedOut {
			d = 0 // the bound was the wait; a longer bound comes with the next try
		}
		t.armStep(d)
	}
	if a&actPublish != 0 {
		t.publish(ev == evReconnected)
	}
	if a&actStopLock != 0 {
		t.keepLock = false
		if t.lockTimer != nil {
			t.lockTimer.Stop()
		}
	}
	if a&actAdoptLock != 0 {
		p.lp.adopt(&t.lock, in.lockStart)
		t.armLock()
	}
	if a&actCancelEvent != 0 {
		t.cancelEvent(in.cause)
	}
	if a&actClose != 0 {
		s := st.settle
		if s == "" {
			s = t.settlement()
		}
		t.close(s, ev, in)
	}
}

// failureMessage is the message of the reserved technical failure.
func (t *task) failureMessage(ev lifeEvent, cause string) string {
	p := t.p
	switch ev {
	case evFailed:
		return fmt.Sprintf("pe-bridge: technical failure after %d attempts: %s", t.failures+1, cause)
	case evDeadline:
		if cause == "" {
			cause = "no outcome yet"
		}
		return fmt.Sprintf("pe-bridge: no outcome within max processing time %s (%s)",
			p.cfg.maxProcessingTime(t.ts.name), cause)
	case evAbandon:
		return "pe-bridge: bridge shutting down"
	}
	return cause
}

// settlement is how a reported task ended, from its pending outcome.
func (t *task) settlement() Settlement {
	switch {
	case t.rep.kind == events.KindSuccess:
		return SettledFinished
	case t.rep.kind == events.KindFailure && t.rep.err.ErrorCode == t.p.cfg.FailureErrorCode:
		return SettledFailure
	default:
		return SettledBPMNError
	}
}

// endAttempt forgets the awaited attempt; t.mu held.
func (t *task) endAttempt(ev lifeEvent, cause string) {
	if t.key != "" {
		t.p.retireKey(t.key)
		t.key = ""
	}
	t.stopStep()
	if t.endPub != nil {
		var err error
		if ev != evOutcome {
			err = errors.New(ev.String() + ": " + cause)
		}
		t.endPub(err)
		t.endPub = nil
	}
}

// armRetry schedules the next publication after a failed or undelivered
// attempt; t.mu held.
func (t *task) armRetry(ev lifeEvent, in eventInfo) {
	p := t.p
	t.lastCause = in.cause
	var d time.Duration
	if ev == evNoResponders {
		t.nrCount++
		t.canary = true
		d = backoff(t.nrCount, p.cfg.NoResponderBackoff, p.cfg.MaxNoResponderBackoff)
		p.log.Warn("task not delivered; keeping its lock and publishing again (single-try, or just after a NATS reconnect)",
			t.attrs("reason", in.cause, "retry_in", d)...)
	} else {
		t.failures++
		d = in.retryAfter
		if d <= 0 {
			d = backoff(t.failures, p.cfg.RetryBackoff, p.cfg.MaxRetryBackoff)
		}
		p.log.Warn("technical failure; retrying", t.attrs("reason", in.cause, "attempt", t.attempt, "retry_in", d)...)
	}
	t.armStep(d)
}

// publish registers a new attempt and queues its message; t.mu held.
// again is true for a re-publication after a NATS reconnect.
func (t *task) publish(again bool) {
	p := t.p
	if t.attempt > 0 && !again {
		p.stats.retries.Add(1)
	}
	tp, end := "", func(error) {}
	if t.span != nil {
		tp, end = t.span.Publish()
	} else {
		tp = traceParent(t.traceID)
	}
	ev, err := taskEvent(&t.et, p.cfg.Source, tp, t.lock.expiry, time.Now())
	var msg *nats.Msg
	if err == nil {
		msg, err = encodeEvent(ev, t.subject, t.mode)
	}
	if err != nil {
		end(err)
		p.stats.badTasks.Add(1)
		p.log.Warn("cannot encode task event; reporting a technical failure", t.attrs("error", err)...)
		t.fire(evTooLarge, eventInfo{cause: "pe-bridge cannot encode this task: " + err.Error()})
		return
	}
	key := p.newKey()
	msg.Reply = p.inbox + key
	t.key = key
	t.endPub = end
	t.pubAt = time.Now()
	t.attempt++
	p.addAttempt(key, t)
	t.armStep(p.cfg.HandlerTimeout)
	t.out = append(t.out, msg)
}

// send publishes m; t.mu must not be held.
func (t *task) send(m *nats.Msg) {
	p := t.p
	key := ""
	if strings.HasPrefix(m.Reply, p.inbox) {
		key = m.Reply[len(p.inbox):]
	}
	err := p.tr.Publish(m)
	switch {
	case key == "": // a cancel event
		if err != nil {
			p.log.Warn("publishing cancel event", t.attrs("error", err)...)
		}
	case errors.Is(err, nats.ErrMaxPayload):
		t.onAttempt(key, evTooLarge, eventInfo{cause: fmt.Sprintf(
			"pe-bridge cannot publish this task: its event is %d bytes, above the NATS server's max_payload of %d bytes",
			events.MsgSize(m.Header, m.Data), p.tr.MaxPayload())})
	case err != nil:
		t.onAttempt(key, evNoResponders, eventInfo{cause: "publishing: " + err.Error()})
	default:
		p.stats.published.Add(1)
		if p.obs != nil {
			p.obs.TaskPublished(t.ts.name)
		}
		if p.log.Enabled(context.Background(), slog.LevelDebug) {
			p.log.Debug("task published", t.attrs("subject", m.Subject, "single_try", t.et.IsSingleTry)...)
		}
	}
}

// onAttempt fires ev if key is still the awaited attempt.
func (t *task) onAttempt(key string, ev lifeEvent, in eventInfo) {
	t.mu.Lock()
	if t.key != key || t.state != stAwaiting {
		t.mu.Unlock()
		return
	}
	if ev == evTooLarge {
		t.p.stats.badTasks.Add(1)
		t.p.log.Warn("task cannot be published; reporting a technical failure", t.attrs("reason", in.cause)...)
	}
	if ev == evNoResponders && !t.et.IsSingleTry && !t.p.inReconnectHold() {
		t.p.log.Warn("task not delivered; leaving its lock to lapse so the engine offers it again",
			t.attrs("reason", in.cause)...)
	}
	t.fire(ev, in)
	t.unlock()
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

// onStep turns the step timer into the event of the current state.
func (t *task) onStep(gen uint64) {
	t.mu.Lock()
	if gen != t.stepGen { // re-armed or stopped since
		t.mu.Unlock()
		return
	}
	t.step = nil
	switch t.state {
	case stAwaiting:
		t.p.stats.handlerTimeouts.Add(1)
		t.fire(evFailed, eventInfo{cause: fmt.Sprintf("no reply within %s", t.p.cfg.HandlerTimeout)})
	case stBackoff:
		t.fire(evRetryDue, eventInfo{})
	default:
		t.fire(evReportDue, eventInfo{})
	}
	t.unlock()
}

func (t *task) onDeadline() {
	t.mu.Lock()
	if t.state == stDone {
		t.mu.Unlock()
		return
	}
	if t.state == stAwaiting || t.state == stBackoff {
		limit := t.p.cfg.maxProcessingTime(t.ts.name)
		t.p.log.Warn("task reached its max processing time", t.attrs("max_processing_time", limit,
			"reason", t.lastCause, "single_try", t.et.IsSingleTry)...)
	}
	t.fire(evDeadline, eventInfo{cause: t.lastCause})
	t.unlock()
}

// onReply handles a handler's reply to attempt key.
func (t *task) onReply(key string, out events.Outcome, decodeErr error) {
	p := t.p
	t.mu.Lock()
	if t.state != stAwaiting || t.key != key {
		t.mu.Unlock()
		p.stats.lateReplies.Add(1)
		p.log.Warn("dropping late reply", t.attrs()...)
		return
	}
	if p.obs != nil {
		p.obs.HandlerReplied(t.ts.name, time.Since(t.pubAt))
	}
	if t.ts.responder() {
		p.log.Info("a handler answered; topic resumes", "topic", t.ts.name)
	}
	switch {
	case decodeErr != nil:
		p.stats.badReplies.Add(1)
		t.fire(evFailed, eventInfo{cause: decodeErr.Error()})
	case out.Kind == events.KindSuccess:
		t.fire(evOutcome, eventInfo{rep: report{kind: events.KindSuccess, result: out.Result}})
	case out.Kind == events.KindBPMNError:
		t.fire(evOutcome, eventInfo{rep: report{kind: events.KindBPMNError, err: engine.ExternalTaskError{
			ErrorCode: out.Code, ErrorMessage: out.Message, ErrorDetails: out.Details,
		}}})
	default:
		msg := out.Message
		if msg == "" {
			msg = "no message"
		}
		t.fire(evFailed, eventInfo{cause: "handler reported a failure: " + msg, retryAfter: out.RetryAfter})
	}
	t.unlock()
}

// doReport sends the pending outcome once and settles the task from the
// engine's answer. Each call is bounded by the lock policy; a final report
// is not retried.
func (t *task) doReport(ctx context.Context) {
	p := t.p
	t.mu.Lock()
	if t.state != stReporting {
		t.mu.Unlock()
		return
	}
	r, final, tries := t.rep, t.final, t.repFails
	t.mu.Unlock()

	timeout := p.lp.reportTimeout(tries)
	if final {
		timeout = shutdownReportTimeout
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	kind := "finish"
	if r.kind != events.KindSuccess {
		kind = "error"
	}
	var endSpan func(error)
	if t.span != nil {
		endSpan = t.span.Report(kind)
	}
	var err error
	if r.kind == events.KindSuccess {
		err = p.eng.FinishTask(cctx, t.et.ID, p.cfg.WorkerID, r.result)
	} else {
		err = p.eng.HandleError(cctx, t.et.ID, p.cfg.WorkerID, r.err)
	}
	timedOut := err != nil && cctx.Err() != nil && ctx.Err() == nil
	cancel()
	if endSpan != nil {
		endSpan(err)
	}

	t.mu.Lock()
	defer t.unlock()
	if t.state != stReporting {
		return
	}
	switch {
	case err == nil:
		t.fire(evReportDone, eventInfo{})
	case errors.Is(err, engine.ErrGone) && tries > 0:
		// An earlier call of this report got no answer, a timeout or a 5xx,
		// and now the engine says the task is closed: that call most likely
		// took effect (a lost acknowledgement). Counted as reported; the
		// engine cannot tell whose finish closed it (API.md §3 items 3–4).
		p.stats.lostAcks.Add(1)
		if p.obs != nil {
			p.obs.AckLost(t.ts.name)
		}
		p.log.Info("engine reports the task closed after an earlier "+kind+" call got no clear answer; it most likely took effect",
			t.attrs("error", err, "earlier_failures", tries)...)
		t.fire(evReportDone, eventInfo{})
	case errors.Is(err, engine.ErrGone), errors.Is(err, engine.ErrLockLost), errors.Is(err, engine.ErrNotFound):
		p.log.Warn("engine did not accept the outcome; dropping the task", t.attrs("error", err)...)
		t.fire(evReportRefused, eventInfo{refused: err})
	case ctx.Err() != nil:
		p.log.Warn("outcome not reported before shutdown", t.attrs("error", err)...)
		t.fire(evCutOff, eventInfo{cause: err.Error()})
	case final:
		p.log.Warn("reporting outcome at shutdown", t.attrs("error", err)...)
		t.fire(evCutOff, eventInfo{cause: err.Error()})
	case engine.IsTemporary(err) || errors.Is(err, context.DeadlineExceeded):
		p.stats.reportErrors.Add(1)
		p.log.Debug("reporting outcome; retrying", t.attrs("error", err)...)
		t.fire(evReportFailed, eventInfo{cause: err.Error(), timedOut: timedOut})
	default:
		p.log.Error("engine rejected the outcome; dropping the task", t.attrs("error", err)...)
		t.fire(evReportRefused, eventInfo{refused: err})
	}
}

// armLock schedules the next extend_lock call from the lock policy; t.mu held.
func (t *task) armLock() {
	if !t.keepLock {
		return
	}
	at, ok := t.p.lp.next(t.lock)
	if !ok {
		return // re-armed when an open call ends
	}
	d := time.Until(at)
	if t.lockTimer == nil {
		t.lockTimer = time.AfterFunc(d, func() { t.p.track(t.lockTick) })
		return
	}
	t.lockTimer.Reset(d)
}

// lockTick starts one extend_lock call when the lock timer fires.
func (t *task) lockTick() {
	p := t.p
	t.mu.Lock()
	if t.state == stDone || !t.keepLock {
		t.mu.Unlock()
		return
	}
	if at, ok := p.lp.next(t.lock); !ok || time.Until(at) > 0 {
		t.armLock() // a success or adopted lock moved the schedule
		t.mu.Unlock()
		return
	}
	start := time.Now()
	bound := p.lp.start(&t.lock, start)
	t.armLock() // the next try of this cycle, should this call stall
	t.mu.Unlock()

	// A queue of outcome reports never delays an extension: extensions have
	// their own bound.
	ctx, cancel := context.WithTimeout(p.workCtx, bound)
	var err error
	if acquire(ctx, p.extendSem) {
		err = p.eng.ExtendLock(ctx, t.et.ID, p.cfg.WorkerID, p.cfg.LockDuration)
		<-p.extendSem
	} else {
		err = ctx.Err()
	}
	cancel()
	if p.obs != nil {
		p.obs.LockExtended(t.ts.name, err)
	}

	t.mu.Lock()
	defer t.unlock()
	p.lp.ended(&t.lock, start, err == nil)
	if t.state == stDone || !t.keepLock {
		return
	}
	switch {
	case err == nil:
		p.stats.lockExtensions.Add(1)
	case errors.Is(err, engine.ErrGone):
		if t.state != stReporting && t.state != stReportWait {
			p.stats.cancelled.Add(1)
			p.log.Info("task cancelled by the engine", t.attrs("error", err)...)
		}
		t.fire(evGone, eventInfo{cause: "the engine closed the task (boundary event, termination or expiry)"})
		return
	case errors.Is(err, engine.ErrLockLost), errors.Is(err, engine.ErrNotFound):
		p.log.Warn("lock lost; dropping the task", t.attrs("error", err)...)
		reason := "lock lost: the task is locked by another worker"
		if errors.Is(err, engine.ErrNotFound) {
			reason = "lock lost: the engine no longer knows the task"
		}
		t.fire(evLockLost, eventInfo{cause: reason})
		return
	case p.workCtx.Err() != nil:
		return
	default:
		p.stats.extendErrors.Add(1)
		level := slog.LevelWarn
		if engine.IsTemporary(err) || errors.Is(err, context.DeadlineExceeded) {
			level = slog.LevelDebug
		}
		p.log.Log(context.Background(), level, "extending lock; retrying", t.attrs("error", err,
			"lock_left", time.Until(t.lock.expiry).Round(time.Millisecond))...)
	}
	t.armLock()
}

// cancelEvent queues the cancel event that tells handlers to stop; t.mu held.
func (t *task) cancelEvent(reason string) {
	p := t.p
	tp := traceParent(t.traceID)
	if t.span != nil {
		var end func(error)
		tp, end = t.span.Publish()
		defer end(nil)
	}
	ev, err := cancelEvent(&t.et, p.cfg.Source, reason, tp, time.Now())
	var msg *nats.Msg
	if err == nil {
		subject := t.ts.cancelSubject
		if t.subject != t.ts.subject {
			subject, err = events.CancelSubject(t.et.Topic)
		}
		if err == nil {
			msg, err = encodeEvent(ev, subject, t.mode)
		}
	}
	if err != nil {
		p.log.Warn("building cancel event", t.attrs("error", err)...)
		return
	}
	t.out = append(t.out, msg)
}

// abandon ends the task at the end of a drain (evAbandon).
func (t *task) abandon() {
	t.mu.Lock()
	if t.state == stDone {
		t.mu.Unlock()
		return
	}
	if !t.et.IsSingleTry && (t.state == stAwaiting || t.state == stBackoff) {
		t.p.log.Warn("bridge shutting down; leaving the task's lock to lapse", t.attrs()...)
	}
	t.fire(evAbandon, eventInfo{})
	t.unlock()
}

// close makes the task final: timers stop, tables forget it, its window slot
// is freed; t.mu held (only from fire).
func (t *task) close(s Settlement, ev lifeEvent, in eventInfo) {
	p := t.p
	t.keepLock = false
	if t.lockTimer != nil {
		t.lockTimer.Stop()
	}
	if t.deadTimer != nil {
		t.deadTimer.Stop()
	}
	t.stopStep()
	p.forget(t)
	t.ts.release(t.slot, true, p.obs)
	t.slot = false
	p.stats.inFlight.Add(-1)
	switch s {
	case SettledFinished:
		p.stats.finished.Add(1)
		if p.log.Enabled(context.Background(), slog.LevelDebug) {
			p.log.Debug("task finished", t.attrs("attempt", t.attempt)...)
		}
	case SettledFailure:
		p.stats.failures.Add(1)
		p.log.Info("task reported as technical failure", t.attrs("error_code", t.rep.err.ErrorCode,
			"error_message", t.rep.err.ErrorMessage)...)
	case SettledBPMNError:
		p.stats.bpmnErrors.Add(1)
		if p.log.Enabled(context.Background(), slog.LevelDebug) {
			p.log.Debug("bpmn error raised", t.attrs("error_code", t.rep.err.ErrorCode)...)
		}
	case SettledDropped:
		p.stats.dropped.Add(1)
	case SettledReleased:
		p.stats.released.Add(1)
		if ev == evDeadline {
			p.log.Warn("task reached its max processing time; leaving its lock to lapse", t.attrs()...)
		}
	}
	if p.obs != nil {
		p.obs.TaskSettled(t.ts.name, s, time.Since(t.fetchedAt))
	}
	if t.span != nil {
		t.span.End(s)
	}
}
