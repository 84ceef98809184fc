package emulator

import (
	"container/heap"
	"encoding/json"
	"time"

	"github.com/dlclark/regexp2/v2"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/engine/emulator/bpmn"
)

var nullJSON = json.RawMessage("null")

type instState uint8

const (
	instRunning instState = iota
	instFinished
	instError
	instTerminated
)

func (s instState) String() string {
	switch s {
	case instFinished:
		return engine.InstanceFinished
	case instError:
		return engine.InstanceError
	case instTerminated:
		return engine.InstanceTerminated
	}
	return engine.InstanceRunning
}

type histEntry struct {
	id  string
	val json.RawMessage
}

type instance struct {
	id, correlationID string
	model             *model
	ownerID           string
	rootAccess        bool
	parentID          string
	state             instState
	createdAt         time.Time
	finishedAt        time.Time
	startEventID      string
	endEventID        string
	startToken        json.RawMessage
	endToken          json.RawMessage
	errJSON           json.RawMessage
	bpmnErr           *bpmnError
	terminatedBy      string
	history           []histEntry
	current           json.RawMessage // token of the last finished flow node
	tokens            int             // live branches
	active            []*fni          // suspended flow node instances
	joins             map[string]*join
	waiters           []*startWaiter
	pruned            bool
}

type join struct {
	count int
	vals  []histEntry
}

type bpmnError struct {
	Name                  string          `json:"name"`
	Code                  string          `json:"code"`
	Message               string          `json:"message"`
	AdditionalInformation json.RawMessage `json:"additionalInformation,omitempty"`
}

type startWaiter struct {
	returnOn   engine.StartCallbackType
	endEventID string
	ch         chan startResult // buffered 1
	done       bool
}

type startResult struct {
	endEventID string
	token      json.RawMessage
	err        error
}

func (in *instance) setHistory(id string, v json.RawMessage) {
	for i := range in.history {
		if in.history[i].id == id {
			in.history[i].val = v
			return
		}
	}
	in.history = append(in.history, histEntry{id, v})
}

func (in *instance) removeActive(f *fni) {
	for i, a := range in.active {
		if a == f {
			last := len(in.active) - 1
			in.active[i] = in.active[last]
			in.active[last] = nil
			in.active = in.active[:last]
			return
		}
	}
}

func isoPtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func (in *instance) view() engine.ProcessInstance {
	p := engine.ProcessInstance{
		ProcessInstanceID:       in.id,
		CorrelationID:           in.correlationID,
		ProcessDefinitionID:     in.model.proc.DefinitionID,
		ProcessModelID:          in.model.proc.ID,
		ProcessModelName:        in.model.proc.Name,
		ParentProcessInstanceID: in.parentID,
		Hash:                    in.model.hash,
		State:                   in.state.String(),
		Error:                   in.errJSON,
		OwnerID:                 in.ownerID,
		StartedByRootAccess:     in.rootAccess,
		CreatedAt:               isoPtr(in.createdAt),
		FinishedAt:              isoPtr(in.finishedAt),
		TerminatedByUserID:      in.terminatedBy,
		StartEventID:            in.startEventID,
		StartToken:              in.startToken,
		EndEventID:              in.endEventID,
		EndToken:                in.endToken,
	}
	if p.Error == nil {
		p.Error = nullJSON
	}
	return p
}

type fniState uint8

const (
	fniRunning fniState = iota
	fniSuspended
	fniFinished
	fniTerminated
	fniError
	fniCanceled
)

func (s fniState) String() string {
	switch s {
	case fniSuspended:
		return engine.FlowNodeSuspended
	case fniFinished:
		return engine.FlowNodeFinished
	case fniTerminated:
		return engine.FlowNodeTerminated
	case fniError:
		return engine.FlowNodeError
	case fniCanceled:
		return engine.FlowNodeCanceled
	}
	return engine.FlowNodeRunning
}

// fni is one flow node instance.
type fni struct {
	id         string
	node       *bpmn.Node
	inst       *instance
	state      fniState
	prevID     string
	startToken json.RawMessage
	endToken   json.RawMessage
	startedAt  time.Time
	finishedAt time.Time
	task       *extTask
	owner      string // user tasks: actualOwnerId
	finishedBy string
	timers     []*timerItem
	errJSON    json.RawMessage
}

func (f *fni) view() engine.FlowNodeInstance {
	in := f.inst
	v := engine.FlowNodeInstance{
		FlowNodeInstanceID:         f.id,
		FlowNodeID:                 f.node.ID,
		FlowNodeName:               f.node.Name,
		FlowNodeLane:               f.node.Lane,
		FlowNodeType:               f.node.Type,
		PreviousFlowNodeInstanceID: f.prevID,
		State:                      f.state.String(),
		ProcessDefinitionID:        in.model.proc.DefinitionID,
		ProcessModelID:             in.model.proc.ID,
		ProcessModelName:           in.model.proc.Name,
		ProcessInstanceID:          in.id,
		CorrelationID:              in.correlationID,
		StartToken:                 f.startToken,
		EndToken:                   f.endToken,
		OwnerID:                    in.ownerID,
		Error:                      f.errJSON,
		StartedAt:                  isoPtr(f.startedAt),
		FinishedAt:                 isoPtr(f.finishedAt),
	}
	if f.node.EventDef != bpmn.DefNone {
		v.EventType = eventTypeName(f.node.EventDef)
	}
	if f.node.Kind == bpmn.KindUserTask {
		v.ActualOwnerID = f.owner
		v.FinishedByUserID = f.finishedBy
		fields := f.node.FormFields
		if fields == nil {
			fields = []engine.FormField{}
		}
		v.UserTaskConfig = &engine.UserTaskConfig{
			FormFields:      fields,
			CustomForm:      f.node.CustomForm,
			Description:     f.node.Description,
			FinishedMessage: f.node.FinishedMessage,
		}
	}
	return v
}

func eventTypeName(d bpmn.EventDef) string {
	switch d {
	case bpmn.DefMessage:
		return "messageEvent"
	case bpmn.DefSignal:
		return "signalEvent"
	case bpmn.DefTimer:
		return "timerEvent"
	case bpmn.DefError:
		return "errorEvent"
	case bpmn.DefTerminate:
		return "terminateEvent"
	}
	return ""
}

type taskState uint8

const (
	taskPending taskState = iota
	taskFinished
	taskExpired
	taskCanceled
)

// extTask is one external task. It is linked into its topic's queue while
// it can be fetched, and its lock expiry sits in the timer heap while locked.
type extTask struct {
	id         string
	f          *fni
	payload    json.RawMessage
	workerID   string
	lockExp    time.Time
	state      taskState
	createdAt  time.Time
	finishedAt time.Time
	prev, next *extTask
	queued     bool
	tm         timerItem
}

func (t *extTask) topic() string { return t.f.node.Topic }

func (t *extTask) view() engine.ExternalTask {
	in := t.f.inst
	created := t.createdAt
	v := engine.ExternalTask{
		ID:                  t.id,
		WorkerID:            t.workerID,
		Topic:               t.f.node.Topic,
		IsSingleTry:         t.f.node.IsSingleTry,
		FlowNodeInstanceID:  t.f.id,
		CorrelationID:       in.correlationID,
		ProcessDefinitionID: in.model.proc.DefinitionID,
		ProcessModelID:      in.model.proc.ID,
		ProcessInstanceID:   in.id,
		OwnerID:             in.ownerID,
		Payload:             t.payload,
		LockExpirationTime:  t.lockExp,
		State:               engine.TaskStatePending,
		CreatedAt:           &created,
	}
	switch t.state {
	case taskFinished, taskCanceled:
		v.State = engine.TaskStateFinished
	case taskExpired:
		v.State = engine.TaskStateExpired
	}
	return v
}

// topicQueue holds the fetchable tasks of one topic (intrusive FIFO list) and
// the long polls waiting for it.
type topicQueue struct {
	head, tail *extTask
	n          int
	waiters    []*fetchWaiter
}

func (q *topicQueue) push(t *extTask) {
	if t.queued {
		return
	}
	t.queued = true
	t.prev, t.next = q.tail, nil
	if q.tail != nil {
		q.tail.next = t
	} else {
		q.head = t
	}
	q.tail = t
	q.n++
}

func (q *topicQueue) remove(t *extTask) {
	if !t.queued {
		return
	}
	if t.prev != nil {
		t.prev.next = t.next
	} else {
		q.head = t.next
	}
	if t.next != nil {
		t.next.prev = t.prev
	} else {
		q.tail = t.prev
	}
	t.prev, t.next, t.queued = nil, nil, false
	q.n--
}

type fetchWaiter struct {
	workerID string
	topics   []string
	filter   *regexp2.Regexp
	max      int
	lockDur  time.Duration
	got      []engine.ExternalTask
	done     bool
	ch       chan struct{} // buffered 1
}

// sub is a waiting message or signal catcher: a catch event / receive task
// (bnd == nil) or a boundary event bnd on the activity f.
type sub struct {
	f   *fni
	bnd *bpmn.Node
}

type timerKind uint8

const (
	tmLock timerKind = iota
	tmCatch
	tmBoundary
)

type timerItem struct {
	at   time.Time
	idx  int // index in the heap; -1 when not in it
	kind timerKind
	task *extTask
	f    *fni
	bnd  *bpmn.Node
}

type timerHeap []*timerItem

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx = i
	h[j].idx = j
}
func (h *timerHeap) Push(x any) {
	it := x.(*timerItem)
	it.idx = len(*h)
	*h = append(*h, it)
}
func (h *timerHeap) Pop() any {
	old := *h
	n := len(old)
	it := old[n-1]
	old[n-1] = nil
	it.idx = -1
	*h = old[:n-1]
	return it
}

func (e *Emulator) schedule(it *timerItem) {
	if it.idx >= 0 && it.idx < len(e.timers) && e.timers[it.idx] == it {
		heap.Fix(&e.timers, it.idx)
		return
	}
	heap.Push(&e.timers, it)
}

func (e *Emulator) unschedule(it *timerItem) {
	if it.idx >= 0 && it.idx < len(e.timers) && e.timers[it.idx] == it {
		heap.Remove(&e.timers, it.idx)
	}
	it.idx = -1
}

// armTimer points the single timer at the earliest heap entry. Call with mu held.
func (e *Emulator) armTimer() {
	if e.closed {
		return
	}
	if len(e.timers) == 0 {
		return
	}
	at := e.timers[0].at
	if at.Equal(e.timerAt) {
		return
	}
	e.timerAt = at
	d := time.Until(at)
	if d < 0 {
		d = 0
	}
	if e.timer == nil {
		e.timer = time.AfterFunc(d, e.onTimer)
		return
	}
	e.timer.Reset(d)
}

func (e *Emulator) onTimer() {
	e.mu.Lock()
	e.timerAt = time.Time{}
	if !e.closed {
		e.advance(time.Now())
	}
	e.unlock()
}

// unlock re-arms the timer and releases mu.
func (e *Emulator) unlock() {
	e.armTimer()
	e.mu.Unlock()
}

// advance fires every timer that is due at now. Call with mu held.
func (e *Emulator) advance(now time.Time) {
	for len(e.timers) > 0 && !e.timers[0].at.After(now) {
		it := heap.Pop(&e.timers).(*timerItem)
		switch it.kind {
		case tmLock:
			e.lockExpired(it.task, now)
		case tmCatch:
			f := it.f
			if f.state == fniSuspended && f.inst.state == instRunning {
				e.completeActivity(f, f.startToken, now)
			}
		case tmBoundary:
			e.fireBoundary(it.f, it.bnd, nil, now)
		}
	}
}
