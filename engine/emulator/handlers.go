package emulator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/engine/emulator/bpmn"
)

// Version is reported by GET /info.
const Version = "0.1.0-emulator"

func (e *Emulator) hInfo(w http.ResponseWriter, r *http.Request, _ []string, _ Identity) {
	writeJSON(w, 200, engine.ApplicationInfo{
		ID:                       "pe-bridge-emulator",
		Name:                     "5Minds Engine",
		PackageName:              "@5minds/processcube_engine",
		Version:                  Version,
		AuthorityURL:             e.cfg.AuthorityURL,
		AllowAnonymousRootAccess: !e.cfg.DenyAnonymous,
		LoadedExtensions:         []engine.ExtensionInfo{},
		ExtraInfo:                map[string]any{"emulator": true, "description": "pe-bridge engine emulator for development and tests; not a ProcessCube engine"},
	})
}

func (e *Emulator) hAuthority(w http.ResponseWriter, r *http.Request, _ []string, _ Identity) {
	writeJSON(w, 200, e.cfg.AuthorityURL)
}

func (e *Emulator) hDeployedTopics(w http.ResponseWriter, r *http.Request, _ []string, _ Identity) {
	e.mu.Lock()
	set := map[string]bool{}
	for _, m := range e.modelList {
		for _, n := range m.proc.Nodes {
			if n.External {
				set[n.Topic] = true
			}
		}
	}
	e.mu.Unlock()
	out := make([]string, 0, len(set))
	for t := range set {
		out = append(out, t)
	}
	sort.Strings(out)
	writeJSON(w, 200, out)
}

func (e *Emulator) hFetchAndLock(w http.ResponseWriter, r *http.Request, _ []string, _ Identity) {
	b, err := readBody(r)
	if err != nil {
		writeError(w, err)
		return
	}
	req, err := decodeFetch(b, e.cfg.MaxLongPoll)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, e.fetchAndLock(r.Context(), req))
}

// taskCall serves the PUT /external_tasks/{id}/<op> routes: decode the
// body, apply it to the task as worker, answer 204.
func taskCall[T any](decode func([]byte) (string, T, *engine.Error), apply func(id, worker string, v T) error) func(http.ResponseWriter, *http.Request, []string, Identity) {
	return func(w http.ResponseWriter, r *http.Request, p []string, _ Identity) {
		b, berr := readBody(r)
		if berr != nil {
			writeError(w, berr)
			return
		}
		worker, v, derr := decode(b)
		if derr != nil {
			writeError(w, derr)
			return
		}
		if err := apply(p[0], worker, v); err != nil {
			writeError(w, err)
			return
		}
		writeNoContent(w)
	}
}

func (e *Emulator) modelView(m *model) engine.ProcessModel {
	p := m.proc
	ref := func(n *bpmn.Node) engine.FlowNodeRef {
		props := n.Properties
		if props == nil {
			props = map[string]string{}
		}
		r := engine.FlowNodeRef{
			ID: n.ID, Name: n.Name, FlowNodeType: n.Type, ProcessModelID: p.ID, ProcessModelName: p.Name,
			CustomProperties: props, Documentation: n.Documentation,
		}
		if n.Kind == bpmn.KindEndEvent && n.Error != nil {
			r.ErrorName, r.ErrorCode, r.ErrorMessage = n.Error.Name, n.Error.Code, n.Error.Message
		}
		return r
	}
	v := engine.ProcessModel{
		ProcessDefinitionID: p.DefinitionID,
		ProcessModelID:      p.ID,
		ProcessModelName:    p.Name,
		IsExecutable:        p.IsExecutable,
		StartEvents:         []engine.FlowNodeRef{},
		EndEvents:           []engine.FlowNodeRef{},
		FlowNodes:           []engine.FlowNodeRef{},
	}
	for _, n := range p.StartEvents {
		v.StartEvents = append(v.StartEvents, ref(n))
	}
	for _, n := range p.EndEvents {
		v.EndEvents = append(v.EndEvents, ref(n))
	}
	for _, n := range p.Nodes {
		v.FlowNodes = append(v.FlowNodes, ref(n))
	}
	return v
}

func pageParams(q url.Values) (offset, limit int, err *engine.Error) {
	parse := func(name string) (int, *engine.Error) {
		s := q.Get(name)
		if s == "" {
			return 0, nil
		}
		n, perr := strconv.Atoi(s)
		if perr != nil || n < 0 {
			return 0, apiError(400, fmt.Sprintf("Query parameter '%s' must be a non-negative integer.", name), map[string]string{"field": name})
		}
		return n, nil
	}
	if offset, err = parse("offset"); err != nil {
		return
	}
	limit, err = parse("limit")
	return
}

func page[T any](all []T, offset, limit int) []T {
	if offset >= len(all) {
		return []T{}
	}
	all = all[offset:]
	if limit > 0 && limit < len(all) {
		all = all[:limit]
	}
	return all
}

func (e *Emulator) hProcessModels(w http.ResponseWriter, r *http.Request, _ []string, _ Identity) {
	offset, limit, err := pageParams(r.URL.Query())
	if err != nil {
		writeError(w, err)
		return
	}
	e.mu.Lock()
	all := make([]engine.ProcessModel, 0, len(e.modelList))
	for _, m := range e.modelList {
		all = append(all, e.modelView(m))
	}
	e.mu.Unlock()
	writeJSON(w, 200, engine.ProcessModelList{ProcessModels: page(all, offset, limit), TotalCount: len(all)})
}

func (e *Emulator) hProcessModel(w http.ResponseWriter, r *http.Request, p []string, _ Identity) {
	e.mu.Lock()
	m := e.models[p[0]]
	var v engine.ProcessModel
	if m != nil {
		v = e.modelView(m)
	}
	e.mu.Unlock()
	if m == nil {
		writeError(w, apiError(404, fmt.Sprintf("Process model with ID '%s' not found.", p[0]), map[string]string{"processModelId": p[0]}))
		return
	}
	writeJSON(w, 200, v)
}

func (e *Emulator) hStart(w http.ResponseWriter, r *http.Request, p []string, id Identity) {
	b, err := readBody(r)
	if err != nil {
		writeError(w, err)
		return
	}
	req, err := decodeStart(b, p[0])
	if err != nil {
		writeError(w, err)
		return
	}
	resp, serr := e.start(r.Context(), req, id, isRoot(id))
	if serr != nil {
		if r.Context().Err() != nil {
			return // client gone
		}
		writeError(w, serr)
		return
	}
	writeJSON(w, 200, resp)
}

func (e *Emulator) hDeploy(w http.ResponseWriter, r *http.Request, _ []string, _ Identity) {
	b, err := readBody(r)
	if err != nil {
		writeError(w, err)
		return
	}
	req, err := decodeDeploy(b)
	if err != nil {
		writeError(w, err)
		return
	}
	docs := make([][]byte, len(req.XML))
	for i, x := range req.XML {
		docs[i] = []byte(x)
	}
	if _, derr := e.deploy(docs, req.OverwriteExisting); derr != nil {
		var ee *bpmn.ElementError
		var ce *conflictError
		switch {
		case errors.As(derr, &ee):
			writeError(w, apiError(400, "Invalid BPMN: "+ee.Error(), map[string]string{"elementId": ee.ElementID, "reason": ee.Reason}))
		case errors.As(derr, &ce):
			writeError(w, apiError(409, ce.msg, nil))
		default:
			writeError(w, apiError(400, derr.Error(), nil))
		}
		return
	}
	w.WriteHeader(http.StatusCreated)
}

// listParam returns the comma-split values of a query parameter (nil = no filter).
func listParam(q url.Values, name string) []string {
	vals := q[name]
	if len(vals) == 0 {
		return nil
	}
	var out []string
	for _, v := range vals {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}

func matches(vals []string, v string) bool { return vals == nil || slices.Contains(vals, v) }

func (e *Emulator) hInstanceQuery(w http.ResponseWriter, r *http.Request, _ []string, _ Identity) {
	q := r.URL.Query()
	offset, limit, err := pageParams(q)
	if err != nil {
		writeError(w, err)
		return
	}
	ids, models, corrs := listParam(q, "processInstanceId"), listParam(q, "processModelId"), listParam(q, "correlationId")
	states, owners, defs := listParam(q, "state"), listParam(q, "ownerId"), listParam(q, "processDefinitionId")
	starts, ends, parents := listParam(q, "startEventId"), listParam(q, "endEventId"), listParam(q, "parentProcessInstanceId")
	e.mu.Lock()
	var all []engine.ProcessInstance
	consider := e.instList
	if len(ids) > 0 && len(ids) < 64 {
		consider = nil
		for _, id := range ids {
			if in, ok := e.instances[id]; ok {
				consider = append(consider, in)
			}
		}
	}
	for _, in := range consider {
		if matches(ids, in.id) && matches(models, in.model.proc.ID) && matches(corrs, in.correlationID) &&
			matches(states, in.state.String()) && matches(owners, in.ownerID) && matches(defs, in.model.proc.DefinitionID) &&
			matches(starts, in.startEventID) && matches(ends, in.endEventID) && matches(parents, in.parentID) {
			all = append(all, in.view())
		}
	}
	e.mu.Unlock()
	if all == nil {
		all = []engine.ProcessInstance{}
	}
	writeJSON(w, 200, engine.ProcessInstanceList{ProcessInstances: page(all, offset, limit), TotalCount: len(all)})
}

func (e *Emulator) hTerminate(w http.ResponseWriter, r *http.Request, p []string, id Identity) {
	e.mu.Lock()
	defer e.unlock()
	in, ok := e.instances[p[0]]
	if !ok {
		writeError(w, apiError(404, fmt.Sprintf("Process instance with ID '%s' not found.", p[0]), map[string]string{"processInstanceId": p[0]}))
		return
	}
	if in.state != instRunning {
		writeError(w, apiError(409, fmt.Sprintf("Process instance with ID '%s' is not running (state %s).", p[0], in.state), map[string]string{"processInstanceId": p[0]}))
		return
	}
	now := time.Now()
	e.advance(now)
	e.terminateInstance(in, id.UserID, now)
	writeNoContent(w)
}

func (e *Emulator) hFlowNodeInstances(w http.ResponseWriter, r *http.Request, _ []string, _ Identity) {
	q := r.URL.Query()
	offset, limit, err := pageParams(q)
	if err != nil {
		writeError(w, err)
		return
	}
	fniIDs, nodeIDs, names, lanes := listParam(q, "flowNodeInstanceId"), listParam(q, "flowNodeId"), listParam(q, "flowNodeName"), listParam(q, "flowNodeLane")
	types, evTypes, corrs, defs := listParam(q, "flowNodeType"), listParam(q, "eventType"), listParam(q, "correlationId"), listParam(q, "processDefinitionId")
	models, modelNames, insts, owners := listParam(q, "processModelId"), listParam(q, "processModelName"), listParam(q, "processInstanceId"), listParam(q, "ownerId")
	states, prevs, parents := listParam(q, "state"), listParam(q, "previousFlowNodeInstanceId"), listParam(q, "parentProcessInstanceId")
	e.mu.Lock()
	consider := e.fniList
	if len(types) == 1 && types[0] == engine.UserTaskFlowNodeType {
		consider = e.userFNIs
	}
	if len(fniIDs) > 0 && len(fniIDs) < 64 {
		consider = nil
		for _, id := range fniIDs {
			if f, ok := e.fnis[id]; ok {
				consider = append(consider, f)
			}
		}
	}
	var all []engine.FlowNodeInstance
	for _, f := range consider {
		in := f.inst
		if matches(fniIDs, f.id) && matches(nodeIDs, f.node.ID) && matches(names, f.node.Name) && matches(lanes, f.node.Lane) &&
			matches(types, f.node.Type) && matches(evTypes, eventTypeName(f.node.EventDef)) && matches(corrs, in.correlationID) &&
			matches(defs, in.model.proc.DefinitionID) && matches(models, in.model.proc.ID) && matches(modelNames, in.model.proc.Name) &&
			matches(insts, in.id) && matches(owners, in.ownerID) && matches(states, f.state.String()) && matches(prevs, f.prevID) &&
			matches(parents, in.parentID) {
			all = append(all, f.view())
		}
	}
	e.mu.Unlock()
	if all == nil {
		all = []engine.FlowNodeInstance{}
	}
	writeJSON(w, 200, engine.FlowNodeInstanceList{FlowNodeInstances: page(all, offset, limit), TotalCount: len(all)})
}

// userTask looks up a suspended user task; 404 unknown, 409 not suspended.
func (e *Emulator) userTask(id string) (*fni, *engine.Error) {
	f, ok := e.fnis[id]
	if !ok || f.node.Kind != bpmn.KindUserTask {
		return nil, apiError(404, fmt.Sprintf("User Task with ID '%s' not found.", id), map[string]string{"userTaskInstanceId": id})
	}
	if f.state != fniSuspended || f.inst.state != instRunning {
		return nil, apiError(409, fmt.Sprintf("User Task with ID '%s' is not waiting (state %s).", id, f.state), map[string]string{"userTaskInstanceId": id})
	}
	return f, nil
}

func (e *Emulator) hReserve(w http.ResponseWriter, r *http.Request, p []string, _ Identity) {
	b, err := readBody(r)
	if err != nil {
		writeError(w, err)
		return
	}
	var body struct {
		ActualOwnerID *string `json:"actualOwnerId"`
	}
	if err := decodeJSON(b, &body); err != nil {
		writeError(w, err)
		return
	}
	if body.ActualOwnerID == nil || *body.ActualOwnerID == "" {
		writeError(w, apiError(400, "Field 'actualOwnerId' is required.", map[string]string{"field": "actualOwnerId"}))
		return
	}
	e.mu.Lock()
	defer e.unlock()
	f, err := e.userTask(p[0])
	if err != nil {
		writeError(w, err)
		return
	}
	if f.owner != "" && f.owner != *body.ActualOwnerID {
		writeError(w, apiError(409, fmt.Sprintf("User Task with ID '%s' is already reserved by '%s'.", p[0], f.owner), map[string]string{"userTaskInstanceId": p[0]}))
		return
	}
	f.owner = *body.ActualOwnerID
	if e.wants("user_task_reserved") {
		e.emitMsg("user_task_reserved", e.fniMsg(f, f.startToken))
	}
	writeNoContent(w)
}

func (e *Emulator) hCancelReservation(w http.ResponseWriter, r *http.Request, p []string, _ Identity) {
	e.mu.Lock()
	defer e.unlock()
	f, err := e.userTask(p[0])
	if err != nil {
		writeError(w, err)
		return
	}
	f.owner = ""
	if e.wants("user_task_reservation_canceled") {
		e.emitMsg("user_task_reservation_canceled", e.fniMsg(f, f.startToken))
	}
	writeNoContent(w)
}

func (e *Emulator) hUserTaskFinish(w http.ResponseWriter, r *http.Request, p []string, id Identity) {
	b, err := readBody(r)
	if err != nil {
		writeError(w, err)
		return
	}
	b = bytes.TrimSpace(b)
	result := json.RawMessage("{}")
	if len(b) > 0 {
		var obj map[string]json.RawMessage
		if uerr := json.Unmarshal(b, &obj); uerr != nil {
			writeError(w, apiError(400, "The user task result must be a JSON object keyed by form field id.", nil))
			return
		}
		if obj != nil {
			result = compactJSON(b)
		}
	}
	e.mu.Lock()
	defer e.unlock()
	now := time.Now()
	e.advance(now)
	f, ferr := e.userTask(p[0])
	if ferr != nil {
		writeError(w, ferr)
		return
	}
	if !isRoot(id) && f.owner != "" && f.owner != id.UserID {
		writeError(w, apiError(403, fmt.Sprintf("User Task with ID '%s' is reserved by another user.", p[0]), map[string]string{"userTaskInstanceId": p[0]}))
		return
	}
	f.finishedBy = id.UserID
	if e.wants("user_task_finished") {
		m := e.fniMsg(f, result)
		m.UserTaskResult = result
		e.emitMsg("user_task_finished", m)
	}
	e.completeActivity(f, result, now)
	writeNoContent(w)
}

func (e *Emulator) hMessage(w http.ResponseWriter, r *http.Request, p []string, _ Identity) {
	e.trigger(w, r, p[0], false)
}

func (e *Emulator) hSignal(w http.ResponseWriter, r *http.Request, p []string, _ Identity) {
	e.trigger(w, r, p[0], true)
}

func (e *Emulator) trigger(w http.ResponseWriter, r *http.Request, name string, signal bool) {
	b, err := readBody(r)
	if err != nil {
		writeError(w, err)
		return
	}
	payload, err := decodeTrigger(b)
	if err != nil {
		writeError(w, err)
		return
	}
	q := r.URL.Query()
	instID := q.Get("process_instance_id")
	if instID == "" {
		instID = q.Get("processInstanceId")
	}
	e.mu.Lock()
	defer e.unlock()
	now := time.Now()
	e.advance(now)
	var in *instance
	if instID != "" {
		var ok bool
		if in, ok = e.instances[instID]; !ok {
			writeError(w, apiError(404, fmt.Sprintf("Process instance with ID '%s' not found.", instID), map[string]string{"processInstanceId": instID}))
			return
		}
	}
	ev := "message_triggered"
	if signal {
		ev = "signal_triggered"
	}
	if e.wants(ev) {
		var m engine.EventMessage
		if in != nil {
			m = e.instMsg(in, payload)
		} else {
			m = engine.EventMessage{CurrentToken: payload}
		}
		m.EventName = name
		if signal {
			m.EventType = "signalEvent"
		} else {
			m.EventType = "messageEvent"
		}
		e.emitMsg(ev, m)
	}
	e.deliver(name, signal, payload, instID, now)
	writeNoContent(w)
}

var knownEvents = func() map[string]bool {
	m := map[string]bool{}
	for _, n := range engine.NotificationEvents {
		m[n] = true
	}
	return m
}()

func (e *Emulator) hNotification(w http.ResponseWriter, r *http.Request, p []string, _ Identity) {
	if !knownEvents[p[0]] {
		writeError(w, apiError(404, fmt.Sprintf("Unknown notification '%s'.", p[0]), map[string]string{"event": p[0]}))
		return
	}
	m, ok := e.waitEvent(r.Context(), p[0])
	if !ok {
		writeNoContent(w)
		return
	}
	writeJSON(w, 200, m)
}

func (e *Emulator) hEnable(on bool) func(http.ResponseWriter, *http.Request, []string, Identity) {
	return func(w http.ResponseWriter, r *http.Request, p []string, _ Identity) {
		e.mu.Lock()
		defer e.unlock()
		m := e.models[p[0]]
		if m == nil {
			writeError(w, apiError(404, fmt.Sprintf("Process model with ID '%s' not found.", p[0]), map[string]string{"processModelId": p[0]}))
			return
		}
		if m.proc.IsExecutable != on {
			m.proc.IsExecutable = on
			if e.wants("process_is_executable_changed") {
				e.emitMsg("process_is_executable_changed", engine.EventMessage{ProcessDefinitionID: m.proc.DefinitionID, ProcessModelID: m.proc.ID, ProcessModelName: m.proc.Name})
			}
		}
		writeNoContent(w)
	}
}

func (e *Emulator) hDeleteModel(w http.ResponseWriter, r *http.Request, p []string, _ Identity) {
	e.mu.Lock()
	defer e.unlock()
	m := e.models[p[0]]
	if m == nil {
		writeError(w, apiError(404, fmt.Sprintf("Process model with ID '%s' not found.", p[0]), map[string]string{"processModelId": p[0]}))
		return
	}
	delete(e.models, p[0])
	for i, x := range e.modelList {
		if x == m {
			e.modelList = append(e.modelList[:i], e.modelList[i+1:]...)
			break
		}
	}
	if e.wants("process_undeployed") {
		e.emitMsg("process_undeployed", engine.EventMessage{ProcessDefinitionID: m.proc.DefinitionID, ProcessModelID: m.proc.ID, ProcessModelName: m.proc.Name})
	}
	writeNoContent(w)
}

// hWaitingTaskFinish finishes a waiting manual or untyped task; its token
// passes through unchanged.
func (e *Emulator) hWaitingTaskFinish(kind bpmn.Kind, what string) func(http.ResponseWriter, *http.Request, []string, Identity) {
	return func(w http.ResponseWriter, r *http.Request, p []string, id Identity) {
		if _, err := readBody(r); err != nil {
			writeError(w, err)
			return
		}
		e.mu.Lock()
		defer e.unlock()
		now := time.Now()
		e.advance(now)
		f, ok := e.fnis[p[0]]
		if !ok || f.node.Kind != kind {
			writeError(w, apiError(404, fmt.Sprintf("%s with ID '%s' not found.", what, p[0]), map[string]string{"flowNodeInstanceId": p[0]}))
			return
		}
		if f.state != fniSuspended || f.inst.state != instRunning {
			writeError(w, apiError(409, fmt.Sprintf("%s with ID '%s' is not waiting (state %s).", what, p[0], f.state), map[string]string{"flowNodeInstanceId": p[0]}))
			return
		}
		f.finishedBy = id.UserID
		for _, ev := range finishedEvents(kind) {
			if e.wants(ev) {
				e.emitMsg(ev, e.fniMsg(f, f.startToken))
			}
		}
		e.completeActivity(f, f.startToken, now)
		writeNoContent(w)
	}
}

// hTimerTrigger fires the timer of a waiting timer catch event now.
func (e *Emulator) hTimerTrigger(w http.ResponseWriter, r *http.Request, p []string, _ Identity) {
	if _, err := readBody(r); err != nil {
		writeError(w, err)
		return
	}
	e.mu.Lock()
	defer e.unlock()
	now := time.Now()
	e.advance(now)
	f, ok := e.fnis[p[0]]
	if !ok || f.node.Kind != bpmn.KindCatchEvent || f.node.EventDef != bpmn.DefTimer {
		writeError(w, apiError(404, fmt.Sprintf("Timer event with flow node instance ID '%s' not found.", p[0]), map[string]string{"flowNodeInstanceId": p[0]}))
		return
	}
	if f.state != fniSuspended || f.inst.state != instRunning {
		writeError(w, apiError(409, fmt.Sprintf("Timer event '%s' is not waiting (state %s).", p[0], f.state), map[string]string{"flowNodeInstanceId": p[0]}))
		return
	}
	e.completeActivity(f, f.startToken, now)
	writeNoContent(w)
}
