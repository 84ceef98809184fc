package emulator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/dlclark/regexp2/v2"

	"github.com/pe-bridge/pe-bridge/engine"
)

// createTask opens the external task of the suspended service task f.
func (e *Emulator) createTask(f *fni, now time.Time) {
	in := f.inst
	payload := f.startToken
	if f.node.Payload != "" {
		res, _, err := e.scripts.eval(f.node.Payload, false, tokenView{current: f.startToken, history: in.history}, in.ownerID)
		if err != nil {
			f.errJSON, _ = marshalCompact(map[string]string{"errorCode": "PayloadError", "errorMessage": err.Error()})
			e.closeFNI(f, fniError, now)
			e.failInstance(in, &bpmnError{Name: "PayloadError", Code: "PayloadError", Message: fmt.Sprintf("payload expression of %s: %v", f.node.ID, err)}, now)
			return
		}
		payload = res
	}
	payload = compactJSON(payload)
	t := &extTask{id: e.newID(), f: f, payload: payload, state: taskPending, createdAt: now}
	t.tm = timerItem{idx: -1, kind: tmLock, task: t}
	f.task = t
	e.tasks[t.id] = t
	e.openTasks++
	e.stats.TasksCreated++
	if e.debug {
		e.log.Debug("external task created", "task_id", t.id, "topic", t.topic(), "process_instance_id", in.id)
	}
	if e.wants("external_task_created") {
		m := e.fniMsg(f, payload)
		m.ExternalTaskID, m.Topic, m.IsSingleTry = t.id, t.topic(), boolPtr(f.node.IsSingleTry)
		e.emitMsg("external_task_created", m)
	}
	e.offer(t, now)
}

func boolPtr(b bool) *bool { return &b }

// compactJSON returns raw without insignificant whitespace, so that payload
// filters see what JSON.stringify would produce; nil becomes null.
func compactJSON(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return nullJSON
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return raw
	}
	if buf.Len() == len(raw) {
		return raw
	}
	return json.RawMessage(buf.Bytes())
}

func (e *Emulator) topicQ(topic string) *topicQueue {
	q := e.topics[topic]
	if q == nil {
		q = &topicQueue{}
		e.topics[topic] = q
	}
	return q
}

// offer hands a fetchable task to the first waiting long poll that wants it,
// or queues it.
func (e *Emulator) offer(t *extTask, now time.Time) {
	q := e.topicQ(t.topic())
	for _, w := range q.waiters {
		if w.done || !matchFilter(w.filter, t.payload) {
			continue
		}
		e.lock(t, w.workerID, w.lockDur, now)
		w.got = append(w.got, t.view())
		e.releaseWaiter(w)
		return
	}
	q.push(t)
}

func (e *Emulator) releaseWaiter(w *fetchWaiter) {
	w.done = true
	for _, topic := range w.topics {
		q := e.topics[topic]
		if q == nil {
			continue
		}
		for i, x := range q.waiters {
			if x == w {
				copy(q.waiters[i:], q.waiters[i+1:])
				q.waiters[len(q.waiters)-1] = nil
				q.waiters = q.waiters[:len(q.waiters)-1]
				break
			}
		}
	}
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

func (e *Emulator) lock(t *extTask, worker string, d time.Duration, now time.Time) {
	e.topicQ(t.topic()).remove(t)
	t.workerID = worker
	t.lockExp = now.Add(d)
	t.tm.at = t.lockExp
	e.schedule(&t.tm)
	e.stats.TasksLocked++
	if e.wants("external_task_locked") {
		m := e.fniMsg(t.f, t.payload)
		m.ExternalTaskID, m.Topic, m.IsSingleTry = t.id, t.topic(), boolPtr(t.f.node.IsSingleTry)
		m.WorkerID, m.LockExpirationTime = worker, isoPtr(t.lockExp)
		e.emitMsg("external_task_locked", m)
	}
}

// closeTask takes t out of circulation with a final state.
func (e *Emulator) closeTask(t *extTask, st taskState, now time.Time) {
	if t.state != taskPending {
		return
	}
	e.topicQ(t.topic()).remove(t)
	e.unschedule(&t.tm)
	t.state = st
	t.finishedAt = now
	e.openTasks--
}

func (e *Emulator) lockExpired(t *extTask, now time.Time) {
	if t.state != taskPending || t.lockExp.After(now) {
		return
	}
	m := func() engine.EventMessage {
		m := e.fniMsg(t.f, t.payload)
		m.ExternalTaskID, m.Topic, m.IsSingleTry = t.id, t.topic(), boolPtr(t.f.node.IsSingleTry)
		return m
	}
	if t.f.node.IsSingleTry {
		e.closeTask(t, taskExpired, now)
		e.stats.TasksExpired++
		if e.debug {
			e.log.Debug("single-try external task expired", "task_id", t.id, "topic", t.topic(), "worker_id", t.workerID)
		}
		if e.wants("external_task_expired") {
			e.emitMsg("external_task_expired", m())
		}
		e.raiseError(t.f, "ExternalTaskExpired", fmt.Sprintf("The lock of single-try External Task '%s' expired.", t.id), nil, now)
		return
	}
	e.stats.TasksUnlocked++
	if e.debug {
		e.log.Debug("external task lock expired", "task_id", t.id, "topic", t.topic(), "worker_id", t.workerID)
	}
	if e.wants("external_task_unlocked") {
		e.emitMsg("external_task_unlocked", m())
	}
	e.offer(t, now)
}

// fetchRequest is a validated fetch_and_lock request.
type fetchRequest struct {
	workerID string
	topics   []string
	max      int
	timeout  time.Duration
	lockDur  time.Duration
	filter   *regexp2.Regexp
}

func (e *Emulator) takeAvailable(r *fetchRequest, now time.Time) []engine.ExternalTask {
	var out []engine.ExternalTask
	for _, topic := range r.topics {
		q := e.topics[topic]
		if q == nil {
			continue
		}
		for t := q.head; t != nil; {
			next := t.next
			if matchFilter(r.filter, t.payload) {
				e.lock(t, r.workerID, r.lockDur, now)
				out = append(out, t.view())
				if r.max > 0 && len(out) >= r.max {
					return out
				}
			}
			t = next
		}
	}
	return out
}

// fetchAndLock locks available tasks or waits for the first matching one.
func (e *Emulator) fetchAndLock(ctx context.Context, r *fetchRequest) []engine.ExternalTask {
	e.mu.Lock()
	now := time.Now()
	e.advance(now)
	got := e.takeAvailable(r, now)
	if len(got) > 0 || r.timeout <= 0 || e.closed {
		e.unlock()
		if got == nil {
			got = []engine.ExternalTask{}
		}
		return got
	}
	w := &fetchWaiter{workerID: r.workerID, topics: r.topics, filter: r.filter, max: r.max, lockDur: r.lockDur, ch: make(chan struct{}, 1)}
	for _, topic := range r.topics {
		q := e.topicQ(topic)
		q.waiters = append(q.waiters, w)
	}
	e.unlock()
	timer := time.NewTimer(r.timeout)
	select {
	case <-w.ch:
	case <-timer.C:
	case <-ctx.Done():
	case <-e.closing:
	}
	timer.Stop()
	e.mu.Lock()
	if !w.done {
		e.releaseWaiter(w)
	}
	got = w.got
	e.unlock()
	if got == nil {
		got = []engine.ExternalTask{}
	}
	return got
}

// access applies the checks of API.md §3.3 for extend/finish/error.
func (e *Emulator) access(id, worker string, now time.Time) (*extTask, *engine.Error) {
	t, ok := e.tasks[id]
	if !ok {
		return nil, apiError(404, fmt.Sprintf("External Task with ID '%s' not found.", id), map[string]string{"externalTaskId": id})
	}
	switch t.state {
	case taskFinished:
		return nil, apiError(409, fmt.Sprintf("External Task with ID '%s' has been finished and is no longer accessible.", id), map[string]string{"externalTaskId": id})
	case taskExpired:
		return nil, apiError(409, fmt.Sprintf("External Task with ID '%s' has expired and is no longer accessible.", id), map[string]string{"externalTaskId": id})
	case taskCanceled:
		return nil, apiError(409, fmt.Sprintf("External Task with ID '%s' was canceled and is no longer accessible.", id), map[string]string{"externalTaskId": id})
	}
	if t.workerID != worker && t.lockExp.After(now) {
		return nil, apiError(423, fmt.Sprintf("External Task with ID '%s' is locked by another worker, until %s.", id, t.lockExp.UTC().Format(time.RFC3339Nano)),
			map[string]string{"externalTaskId": id})
	}
	return t, nil
}

func (e *Emulator) extendLock(id, worker string, d time.Duration) error {
	e.mu.Lock()
	defer e.unlock()
	now := time.Now()
	e.advance(now)
	t, err := e.access(id, worker, now)
	if err != nil {
		return err
	}
	e.topicQ(t.topic()).remove(t)
	t.workerID = worker
	t.lockExp = now.Add(d)
	t.tm.at = t.lockExp
	e.schedule(&t.tm)
	return nil
}

func (e *Emulator) finishTask(id, worker string, result json.RawMessage) error {
	if result == nil {
		result = nullJSON
	}
	return e.settleTask(id, worker, func(t *extTask, now time.Time) { e.completeActivity(t.f, result, now) })
}

func (e *Emulator) errorTask(id, worker string, te engine.ExternalTaskError) error {
	return e.settleTask(id, worker, func(t *extTask, now time.Time) {
		e.raiseError(t.f, te.ErrorCode, te.ErrorMessage, te.ErrorDetails, now)
	})
}

// settleTask closes task id for worker after the access checks of finish and
// error, then lets then move its flow node on.
func (e *Emulator) settleTask(id, worker string, then func(t *extTask, now time.Time)) error {
	e.mu.Lock()
	defer e.unlock()
	now := time.Now()
	e.advance(now)
	t, err := e.access(id, worker, now)
	if err != nil {
		return err
	}
	e.closeTask(t, taskFinished, now)
	e.stats.TasksFinished++
	then(t, now)
	return nil
}

// compileFilter translates a JS regular expression literal (/src/flags, as
// String(RegExp) gives it) into an ECMAScript-mode regexp2 expression. A
// value without the slashes is taken as the pattern source. Flags: i, m, s
// map to the same options; g, y, u, d are accepted and ignored.
func compileFilter(lit string) (*regexp2.Regexp, error) {
	if lit == "" {
		return nil, nil
	}
	src, flags := lit, ""
	if strings.HasPrefix(lit, "/") {
		end := strings.LastIndex(lit, "/")
		if end <= 0 {
			return nil, fmt.Errorf("payloadFilter %q is not a regular expression literal /source/flags", lit)
		}
		src, flags = lit[1:end], lit[end+1:]
	}
	opts := regexp2.ECMAScript
	for _, c := range flags {
		switch c {
		case 'i':
			opts |= regexp2.IgnoreCase
		case 'm':
			opts |= regexp2.Multiline
		case 's':
			opts |= regexp2.Singleline
		case 'g', 'y', 'u', 'd':
		default:
			return nil, fmt.Errorf("payloadFilter %q has an unknown flag %q", lit, c)
		}
	}
	re, err := regexp2.Compile(src, opts)
	if err != nil {
		return nil, fmt.Errorf("payloadFilter %q: %v", lit, err)
	}
	re.MatchTimeout = 100 * time.Millisecond
	return re, nil
}

func matchFilter(re *regexp2.Regexp, payload json.RawMessage) bool {
	if re == nil {
		return true
	}
	ok, err := re.MatchString(string(payload))
	return err == nil && ok
}
