package emulator

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/engine/emulator/bpmn"
)

// maxDeliverDepth bounds chains of thrown messages/signals that start or
// wake further instances which throw again.
const maxDeliverDepth = 32

// step is a token about to enter a node.
type step struct {
	node     *bpmn.Node
	current  json.RawMessage
	prevFNI  string
	fromNode string
}

// newID returns a random UUID v4 string from the emulator's ChaCha8 stream
// (seeded from crypto/rand). Call with mu held.
func (e *Emulator) newID() string {
	var b [16]byte
	_, _ = e.idRnd.Read(b[:])
	b[6] = (b[6] & 0x0f) | 0x40
	b[8] = (b[8] & 0x3f) | 0x80
	const hexd = "0123456789abcdef"
	var out [36]byte
	j := 0
	for i, x := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out[j] = '-'
			j++
		}
		out[j] = hexd[x>>4]
		out[j+1] = hexd[x&0x0f]
		j += 2
	}
	return string(out[:])
}

// startInstance creates and runs an instance. Call with mu held.
func (e *Emulator) startInstance(m *model, start *bpmn.Node, corr string, token json.RawMessage, id Identity, root bool, parent string, w *startWaiter, now time.Time) *instance {
	in := &instance{
		id:            e.newID(),
		correlationID: corr,
		model:         m,
		ownerID:       id.UserID,
		rootAccess:    root,
		parentID:      parent,
		createdAt:     now,
		startEventID:  start.ID,
		startToken:    token,
		tokens:        1,
	}
	if w != nil {
		in.waiters = []*startWaiter{w}
	}
	e.instances[in.id] = in
	e.instList = append(e.instList, in)
	e.stats.InstancesStarted++
	if e.debug {
		e.log.Debug("process instance started", "process_instance_id", in.id, "process_model_id", m.proc.ID, "correlation_id", corr)
	}
	if e.wants("process_started") {
		e.emitMsg("process_started", e.instMsg(in, token))
	}
	e.run(in, []step{{node: start, current: token}}, now)
	return in
}

// run moves tokens until every branch waits or ended. Call with mu held.
func (e *Emulator) run(in *instance, q []step, now time.Time) {
	for len(q) > 0 && in.state == instRunning {
		st := q[0]
		q = q[1:]
		q = e.enter(in, st, q, now)
	}
}

func (e *Emulator) newFNI(in *instance, n *bpmn.Node, st step, now time.Time) *fni {
	f := &fni{id: e.newID(), node: n, inst: in, prevID: st.prevFNI, startToken: st.current, startedAt: now}
	e.fnis[f.id] = f
	e.fniList = append(e.fniList, f)
	if n.Kind == bpmn.KindUserTask {
		e.userFNIs = append(e.userFNIs, f)
	}
	return f
}

func (e *Emulator) enter(in *instance, st step, q []step, now time.Time) []step {
	n := st.node
	f := e.newFNI(in, n, st, now)
	if n.IsActivity() && e.wants("activity_reached") {
		e.emitMsg("activity_reached", e.fniMsg(f, st.current))
	}
	switch n.Kind {
	case bpmn.KindStartEvent:
		e.finishFNI(f, st.current, now)
		if e.wants("start_event_finished") {
			e.emitMsg("start_event_finished", e.fniMsg(f, st.current))
		}
		return e.follow(in, f, st.current, q, now)
	case bpmn.KindEndEvent:
		e.finishFNI(f, st.current, now)
		if e.wants("end_event_finished") {
			e.emitMsg("end_event_finished", e.fniMsg(f, st.current))
		}
		switch n.EventDef {
		case bpmn.DefTerminate:
			in.endEventID, in.endToken = n.ID, st.current
			e.terminateInstance(in, "", now)
			return nil
		case bpmn.DefError:
			be := &bpmnError{Name: "Error", Message: "Process instance ended at error end event " + n.ID}
			if n.Error != nil {
				be.Name, be.Code = n.Error.Name, n.Error.Code
				if n.Error.Message != "" {
					be.Message = n.Error.Message
				}
				if be.Name == "" {
					be.Name = n.Error.ID
				}
			}
			in.endEventID, in.endToken = n.ID, st.current
			e.failInstance(in, be, now)
			return nil
		case bpmn.DefMessage:
			e.deliver(n.MessageName, false, st.current, "", now)
		case bpmn.DefSignal:
			e.deliver(n.SignalName, true, st.current, "", now)
		}
		in.tokens--
		e.endReached(in, n.ID, st.current)
		if in.tokens <= 0 {
			e.finishInstance(in, n.ID, st.current, now)
		}
		return q
	case bpmn.KindServiceTask:
		if !n.External {
			e.finishFNI(f, st.current, now)
			return e.follow(in, f, st.current, q, now)
		}
		e.suspend(f, now)
		e.createTask(f, now)
		return q
	case bpmn.KindUserTask:
		e.suspend(f, now)
		if e.wants("user_task_waiting") {
			e.emitMsg("user_task_waiting", e.fniMsg(f, st.current))
		}
		return q
	case bpmn.KindManualTask, bpmn.KindUntypedTask:
		e.suspend(f, now)
		for _, ev := range waitingEvents(n.Kind) {
			if e.wants(ev) {
				e.emitMsg(ev, e.fniMsg(f, st.current))
			}
		}
		return q
	case bpmn.KindReceiveTask:
		e.suspend(f, now)
		e.subscribe(n.MessageName, false, &sub{f: f})
		return q
	case bpmn.KindCatchEvent:
		switch n.EventDef {
		case bpmn.DefMessage:
			e.suspend(f, now)
			e.subscribe(n.MessageName, false, &sub{f: f})
			e.emitReached(f)
			return q
		case bpmn.DefSignal:
			e.suspend(f, now)
			e.subscribe(n.SignalName, true, &sub{f: f})
			e.emitReached(f)
			return q
		case bpmn.DefTimer:
			e.suspend(f, now)
			it := &timerItem{at: timerDue(n.Timer, now), idx: -1, kind: tmCatch, f: f}
			f.timers = append(f.timers, it)
			e.schedule(it)
			e.emitReached(f)
			return q
		}
		e.finishFNI(f, st.current, now)
		return e.follow(in, f, st.current, q, now)
	case bpmn.KindThrowEvent:
		e.finishFNI(f, st.current, now)
		switch n.EventDef {
		case bpmn.DefMessage:
			e.deliver(n.MessageName, false, st.current, "", now)
		case bpmn.DefSignal:
			e.deliver(n.SignalName, true, st.current, "", now)
		}
		if e.wants("intermediate_throw_event_triggered") {
			e.emitMsg("intermediate_throw_event_triggered", e.fniMsg(f, st.current))
		}
		return e.follow(in, f, st.current, q, now)
	case bpmn.KindScriptTask:
		out := st.current
		if n.Script != "" {
			res, _, err := e.scripts.eval(n.Script, true, tokenView{current: st.current, history: in.history}, in.ownerID)
			if err != nil {
				f.state = fniError
				e.failInstance(in, &bpmnError{Name: "ScriptError", Message: fmt.Sprintf("script task %s: %v", n.ID, err)}, now)
				return nil
			}
			out = res
		}
		e.finishFNI(f, out, now)
		return e.follow(in, f, out, q, now)
	case bpmn.KindTask, bpmn.KindBoundaryEvent:
		e.finishFNI(f, st.current, now)
		return e.follow(in, f, st.current, q, now)
	case bpmn.KindExclusiveGateway:
		e.finishFNI(f, st.current, now)
		if len(n.Outgoing) <= 1 {
			return e.follow(in, f, st.current, q, now)
		}
		for _, fl := range n.Outgoing {
			if fl == n.Default || fl.Condition == "" {
				continue
			}
			ok, err := e.condition(in, fl, st.current)
			if err != nil {
				e.failInstance(in, &bpmnError{Name: "ConditionError", Message: err.Error()}, now)
				return nil
			}
			if ok {
				return append(q, step{node: fl.Target, current: st.current, prevFNI: f.id, fromNode: n.ID})
			}
		}
		if n.Default != nil {
			return append(q, step{node: n.Default.Target, current: st.current, prevFNI: f.id, fromNode: n.ID})
		}
		e.failInstance(in, &bpmnError{Name: "GatewayError", Message: fmt.Sprintf("exclusive gateway %s: no outgoing flow condition is true and there is no default flow", n.ID)}, now)
		return nil
	case bpmn.KindParallelGateway:
		cur := st.current
		if len(n.Incoming) > 1 {
			if in.joins == nil {
				in.joins = map[string]*join{}
			}
			j := in.joins[n.ID]
			if j == nil {
				j = &join{}
				in.joins[n.ID] = j
			}
			j.count++
			j.vals = append(j.vals, histEntry{st.fromNode, st.current})
			if j.count < len(n.Incoming) {
				e.finishFNI(f, st.current, now)
				in.tokens--
				return q
			}
			delete(in.joins, n.ID)
			merged := make(map[string]json.RawMessage, len(j.vals))
			for _, v := range j.vals {
				val := v.val
				if val == nil {
					val = nullJSON
				}
				merged[v.id] = val
			}
			cur, _ = marshalCompact(merged)
		}
		e.finishFNI(f, cur, now)
		return e.follow(in, f, cur, q, now)
	}
	e.finishFNI(f, st.current, now)
	return e.follow(in, f, st.current, q, now)
}

func (e *Emulator) emitReached(f *fni) {
	if e.wants("intermediate_catch_event_reached") {
		e.emitMsg("intermediate_catch_event_reached", e.fniMsg(f, f.startToken))
	}
}

func timerDue(t *bpmn.Timer, now time.Time) time.Time {
	if t.Type == "date" {
		return t.Date
	}
	return now.Add(t.Duration)
}

func (e *Emulator) condition(in *instance, fl *bpmn.Flow, cur json.RawMessage) (bool, error) {
	_, ok, err := e.scripts.eval(fl.Condition, false, tokenView{current: cur, history: in.history}, in.ownerID)
	if err != nil {
		return false, fmt.Errorf("condition of sequence flow %s: %v", fl.ID, err)
	}
	return ok, nil
}

// follow sends the token along the outgoing flows of a finished node.
func (e *Emulator) follow(in *instance, f *fni, out json.RawMessage, q []step, now time.Time) []step {
	n := f.node
	switch len(n.Outgoing) {
	case 0:
		in.tokens--
		if in.tokens <= 0 {
			e.finishInstance(in, "", out, now)
		}
		return q
	case 1:
		return append(q, step{node: n.Outgoing[0].Target, current: out, prevFNI: f.id, fromNode: n.ID})
	}
	taken := 0
	for _, fl := range n.Outgoing {
		if fl == n.Default {
			continue
		}
		if fl.Condition != "" {
			ok, err := e.condition(in, fl, out)
			if err != nil {
				e.failInstance(in, &bpmnError{Name: "ConditionError", Message: err.Error()}, now)
				return nil
			}
			if !ok {
				continue
			}
		}
		taken++
		q = append(q, step{node: fl.Target, current: out, prevFNI: f.id, fromNode: n.ID})
	}
	if taken == 0 && n.Default != nil {
		taken = 1
		q = append(q, step{node: n.Default.Target, current: out, prevFNI: f.id, fromNode: n.ID})
	}
	if taken == 0 {
		e.failInstance(in, &bpmnError{Name: "FlowError", Message: fmt.Sprintf("%s: no outgoing flow condition is true", n.ID)}, now)
		return nil
	}
	in.tokens += taken - 1
	return q
}

func (e *Emulator) finishFNI(f *fni, out json.RawMessage, now time.Time) {
	if f.state == fniSuspended {
		f.inst.removeActive(f)
	}
	f.state = fniFinished
	f.endToken = out
	f.finishedAt = now
	f.inst.setHistory(f.node.ID, out)
	f.inst.current = out
	e.clearTimers(f)
}

func (e *Emulator) clearTimers(f *fni) {
	for _, it := range f.timers {
		e.unschedule(it)
	}
	f.timers = nil
}

// suspend parks f until a worker, user, message, signal or timer moves it on,
// and arms its boundary events.
func (e *Emulator) suspend(f *fni, now time.Time) {
	f.state = fniSuspended
	f.inst.active = append(f.inst.active, f)
	for _, b := range f.node.Boundaries {
		switch b.EventDef {
		case bpmn.DefTimer:
			it := &timerItem{at: timerDue(b.Timer, now), idx: -1, kind: tmBoundary, f: f, bnd: b}
			f.timers = append(f.timers, it)
			e.schedule(it)
		case bpmn.DefMessage:
			e.subscribe(b.MessageName, false, &sub{f: f, bnd: b})
		case bpmn.DefSignal:
			e.subscribe(b.SignalName, true, &sub{f: f, bnd: b})
		}
	}
}

func (e *Emulator) subscribe(name string, signal bool, s *sub) {
	m := e.msgSubs
	if signal {
		m = e.sigSubs
	}
	list := m[name]
	// Drop dead subscriptions now and then so the lists stay small.
	if len(list) >= 64 && len(list)&(len(list)-1) == 0 {
		live := list[:0]
		for _, x := range list {
			if x.f.state == fniSuspended && x.f.inst.state == instRunning {
				live = append(live, x)
			}
		}
		for i := len(live); i < len(list); i++ {
			list[i] = nil
		}
		list = live
	}
	m[name] = append(list, s)
}

// completeActivity finishes a suspended activity with out and moves on.
func (e *Emulator) completeActivity(f *fni, out json.RawMessage, now time.Time) {
	in := f.inst
	e.finishFNI(f, out, now)
	if f.node.IsActivity() && e.wants("activity_finished") {
		e.emitMsg("activity_finished", e.fniMsg(f, out))
	}
	if f.node.Kind == bpmn.KindCatchEvent && e.wants("intermediate_catch_event_finished") {
		e.emitMsg("intermediate_catch_event_finished", e.fniMsg(f, out))
	}
	e.run(in, e.follow(in, f, out, nil, now), now)
}

// closeFNI ends a suspended flow node without moving on (cancel, terminate,
// error). Its external task, if any, is closed so workers get 409.
func (e *Emulator) closeFNI(f *fni, state fniState, now time.Time) {
	if f.state == fniSuspended {
		f.inst.removeActive(f)
	}
	f.state = state
	f.finishedAt = now
	e.clearTimers(f)
	if t := f.task; t != nil && t.state == taskPending {
		e.closeTask(t, taskCanceled, now)
		e.stats.TasksCanceled++
	}
	if f.node.IsActivity() && e.wants("activity_canceled") {
		e.emitMsg("activity_canceled", e.fniMsg(f, f.startToken))
	}
}

// fireBoundary triggers boundary event b of the suspended activity f.
func (e *Emulator) fireBoundary(f *fni, b *bpmn.Node, payload json.RawMessage, now time.Time) {
	in := f.inst
	if f.state != fniSuspended || in.state != instRunning {
		return
	}
	cur := payload
	if cur == nil {
		cur = f.startToken
	}
	if b.CancelActivity {
		e.closeFNI(f, fniCanceled, now)
	} else {
		in.tokens++
	}
	if e.wants("boundary_event_triggered") {
		e.emitMsg("boundary_event_triggered", e.fniMsg(f, cur))
	}
	e.run(in, []step{{node: b, current: cur, prevFNI: f.id, fromNode: f.node.ID}}, now)
}

// raiseError raises a BPMN error on the suspended activity f: an error
// boundary event with a matching errorCode (or without error definition)
// catches it, else the instance fails.
func (e *Emulator) raiseError(f *fni, code, message string, details json.RawMessage, now time.Time) {
	in := f.inst
	if in.state != instRunning {
		return
	}
	var catchAll, match *bpmn.Node
	for _, b := range f.node.Boundaries {
		if b.EventDef != bpmn.DefError {
			continue
		}
		if b.Error == nil || b.Error.Code == "" {
			if catchAll == nil {
				catchAll = b
			}
		} else if b.Error.Code == code && match == nil {
			match = b
		}
	}
	if match == nil {
		match = catchAll
	}
	tok := map[string]any{"errorCode": code}
	if message != "" {
		tok["errorMessage"] = message
	}
	if len(details) > 0 {
		tok["errorDetails"] = details
	}
	errTok, _ := marshalCompact(tok)
	in.current = errTok
	if match == nil {
		f.errJSON = errTok
		e.closeFNI(f, fniError, now)
		e.failInstance(in, &bpmnError{Name: code, Code: code, Message: message, AdditionalInformation: details}, now)
		return
	}
	f.errJSON = errTok
	e.closeFNI(f, fniError, now)
	if e.wants("boundary_event_triggered") {
		e.emitMsg("boundary_event_triggered", e.fniMsg(f, errTok))
	}
	e.run(in, []step{{node: match, current: errTok, prevFNI: f.id, fromNode: f.node.ID}}, now)
}

func (e *Emulator) closeAll(in *instance, state fniState, now time.Time) {
	for len(in.active) > 0 {
		e.closeFNI(in.active[len(in.active)-1], state, now)
	}
}

func (e *Emulator) failInstance(in *instance, be *bpmnError, now time.Time) {
	if in.state != instRunning {
		return
	}
	in.state = instError
	in.finishedAt = now
	in.bpmnErr = be
	in.errJSON, _ = marshalCompact(be)
	e.closeAll(in, fniTerminated, now)
	e.stats.InstancesErrored++
	if e.debug {
		e.log.Debug("process instance failed", "process_instance_id", in.id, "error_code", be.Code, "error_message", be.Message)
	}
	e.retire(in)
	if e.wants("process_error") {
		e.emitMsg("process_error", e.instMsg(in, in.current))
	}
	e.resolveWaiters(in, func(w *startWaiter) startResult {
		return startResult{err: instanceError(in)}
	})
}

func (e *Emulator) terminateInstance(in *instance, by string, now time.Time) {
	if in.state != instRunning {
		return
	}
	in.state = instTerminated
	in.finishedAt = now
	in.terminatedBy = by
	e.closeAll(in, fniTerminated, now)
	e.stats.InstancesTerminated++
	if e.debug {
		e.log.Debug("process instance terminated", "process_instance_id", in.id, "user_id", by)
	}
	e.retire(in)
	if e.wants("process_terminated") {
		e.emitMsg("process_terminated", e.instMsg(in, in.current))
	}
	e.resolveWaiters(in, func(w *startWaiter) startResult {
		return startResult{err: apiError(409, fmt.Sprintf("Process instance '%s' was terminated.", in.id), map[string]string{"processInstanceId": in.id})}
	})
}

func (e *Emulator) finishInstance(in *instance, endID string, tok json.RawMessage, now time.Time) {
	if in.state != instRunning {
		return
	}
	in.state = instFinished
	in.finishedAt = now
	if endID != "" {
		in.endEventID = endID
	}
	in.endToken = tok
	e.stats.InstancesFinished++
	if e.debug {
		e.log.Debug("process instance finished", "process_instance_id", in.id, "end_event_id", in.endEventID)
	}
	e.retire(in)
	if e.wants("process_ended") {
		e.emitMsg("process_ended", e.instMsg(in, tok))
	}
	e.resolveWaiters(in, func(w *startWaiter) startResult {
		if w.returnOn == engine.ReturnOnFinished || w.endEventID == in.endEventID {
			return startResult{endEventID: in.endEventID, token: tok}
		}
		return startResult{err: apiError(409, fmt.Sprintf("Process instance '%s' finished at end event '%s', not at '%s'.", in.id, in.endEventID, w.endEventID), map[string]string{"processInstanceId": in.id})}
	})
}

// endReached answers start waiters when a (non-error) end event is reached.
func (e *Emulator) endReached(in *instance, endID string, tok json.RawMessage) {
	for _, w := range in.waiters {
		if w.done {
			continue
		}
		if w.returnOn == engine.ReturnOnFinished || (w.returnOn == engine.ReturnOnEndEvent && w.endEventID == endID) {
			w.done = true
			w.ch <- startResult{endEventID: endID, token: tok}
		}
	}
}

func (e *Emulator) resolveWaiters(in *instance, res func(*startWaiter) startResult) {
	for _, w := range in.waiters {
		if !w.done {
			w.done = true
			w.ch <- res(w)
		}
	}
	in.waiters = nil
}

func instanceError(in *instance) error {
	be := in.bpmnErr
	if be == nil {
		be = &bpmnError{Name: "Error", Message: "process instance failed"}
	}
	msg := fmt.Sprintf("Process instance '%s' ended with an error: %s", in.id, be.Message)
	return apiError(500, msg, map[string]any{"bpmnError": be, "processInstanceId": in.id})
}

// apiError builds the *engine.Error the REST layer writes as a BaseError.
func apiError(status int, msg string, info any) *engine.Error {
	return &engine.Error{Status: status, Body: engine.NewBaseError(status, msg, info)}
}

// deliver hands a message or signal to every waiting catcher (restricted to
// one instance when instanceID is set) and starts instances of models with
// a matching message/signal start event. Call with mu held.
func (e *Emulator) deliver(name string, signal bool, payload json.RawMessage, instanceID string, now time.Time) {
	if e.deliverDepth >= maxDeliverDepth {
		e.log.Warn("emulator: message/signal chain too deep; dropping", "event_name", name, "depth", e.deliverDepth)
		return
	}
	e.deliverDepth++
	defer func() { e.deliverDepth-- }()
	m := e.msgSubs
	if signal {
		m = e.sigSubs
	}
	list := m[name]
	var keep, fire []*sub
	for _, s := range list {
		if s.f.state != fniSuspended || s.f.inst.state != instRunning {
			continue
		}
		if instanceID != "" && s.f.inst.id != instanceID {
			keep = append(keep, s)
			continue
		}
		fire = append(fire, s)
	}
	if len(keep) == 0 {
		delete(m, name)
	} else {
		m[name] = keep
	}
	for _, s := range fire {
		if s.f.state != fniSuspended || s.f.inst.state != instRunning {
			continue
		}
		if s.bnd != nil {
			if !s.bnd.CancelActivity {
				// Non-interrupting boundaries stay armed while the activity waits.
				m[name] = append(m[name], s)
			}
			e.fireBoundary(s.f, s.bnd, payload, now)
			continue
		}
		out := payload
		if out == nil {
			out = s.f.startToken
		}
		e.completeActivity(s.f, out, now)
	}
	if instanceID != "" {
		return
	}
	for _, mod := range e.modelList {
		for _, st := range mod.proc.StartEvents {
			if (signal && st.EventDef == bpmn.DefSignal && st.SignalName == name) ||
				(!signal && st.EventDef == bpmn.DefMessage && st.MessageName == name) {
				tok := payload
				if tok == nil {
					tok = json.RawMessage("{}")
				}
				e.startInstance(mod, st, e.newID(), tok, Identity{UserID: engine.DummyUserID}, true, "", nil, now)
			}
		}
	}
}

// retire records a finished instance; beyond Config.RetainFinished the
// oldest finished instances are forgotten (with their flow node instances
// and external tasks), so long sessions keep bounded memory.
func (e *Emulator) retire(in *instance) {
	if e.cfg.RetainFinished < 0 {
		return
	}
	e.retired = append(e.retired, in)
	if len(e.retired) <= e.cfg.RetainFinished+e.cfg.RetainFinished/4 {
		return
	}
	drop := len(e.retired) - e.cfg.RetainFinished
	for _, old := range e.retired[:drop] {
		old.pruned = true
		delete(e.instances, old.id)
	}
	e.retired = append([]*instance(nil), e.retired[drop:]...)
	keepInst := e.instList[:0]
	for _, x := range e.instList {
		if !x.pruned {
			keepInst = append(keepInst, x)
		}
	}
	clear(e.instList[len(keepInst):])
	e.instList = keepInst
	var prunedTasks []string
	keep := e.fniList[:0]
	for _, f := range e.fniList {
		if f.inst.pruned {
			delete(e.fnis, f.id)
			if f.task != nil {
				delete(e.tasks, f.task.id)
				prunedTasks = append(prunedTasks, f.task.id)
			}
			continue
		}
		keep = append(keep, f)
	}
	clear(e.fniList[len(keep):])
	e.fniList = keep
	keepU := e.userFNIs[:0]
	for _, f := range e.userFNIs {
		if !f.inst.pruned {
			keepU = append(keepU, f)
		}
	}
	clear(e.userFNIs[len(keepU):])
	e.userFNIs = keepU
	e.statsMu.Lock()
	for _, id := range prunedTasks {
		delete(e.calls, id)
	}
	e.statsMu.Unlock()
}

func waitingEvents(k bpmn.Kind) []string {
	if k == bpmn.KindManualTask {
		return []string{"manual_task_waiting"}
	}
	return []string{"untyped_task_waiting", "empty_activity_waiting"}
}

func finishedEvents(k bpmn.Kind) []string {
	if k == bpmn.KindManualTask {
		return []string{"manual_task_finished"}
	}
	return []string{"untyped_task_finished", "empty_activity_finished"}
}
