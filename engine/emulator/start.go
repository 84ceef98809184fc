package emulator

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/engine/emulator/bpmn"
)

func (e *Emulator) start(ctx context.Context, req engine.ProcessStartRequest, id Identity, root bool) (engine.ProcessStartResponse, error) {
	var resp engine.ProcessStartResponse
	if req.ReturnOn == 0 {
		req.ReturnOn = engine.ReturnOnCreated
	}
	if req.ReturnOn < 1 || req.ReturnOn > 3 {
		return resp, apiError(400, fmt.Sprintf("returnOn must be 1, 2 or 3, got %d.", req.ReturnOn), nil)
	}
	if req.ReturnOn == engine.ReturnOnEndEvent && req.EndEventID == "" {
		return resp, apiError(400, "endEventId is required when returnOn is 3.", nil)
	}
	if req.ProcessModelID == "" {
		return resp, apiError(400, "processModelId is required.", nil)
	}
	token := req.InitialToken
	if len(token) == 0 {
		token = json.RawMessage("{}")
	} else if !json.Valid(token) {
		return resp, apiError(400, "initialToken is not valid JSON.", nil)
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return resp, apiError(503, "The engine emulator is shutting down.", nil)
	}
	m := e.models[req.ProcessModelID]
	if m == nil {
		e.mu.Unlock()
		return resp, apiError(404, fmt.Sprintf("Process model with ID '%s' not found.", req.ProcessModelID), map[string]string{"processModelId": req.ProcessModelID})
	}
	if !m.proc.IsExecutable {
		e.mu.Unlock()
		return resp, apiError(400, fmt.Sprintf("Process model '%s' is not executable.", req.ProcessModelID), nil)
	}
	var startNode *bpmn.Node
	if req.StartEventID != "" {
		n := m.proc.ByID[req.StartEventID]
		if n == nil || n.Kind != bpmn.KindStartEvent {
			e.mu.Unlock()
			return resp, apiError(404, fmt.Sprintf("Start event '%s' not found in process model '%s'.", req.StartEventID, req.ProcessModelID), nil)
		}
		startNode = n
	} else {
		for _, n := range m.proc.StartEvents {
			if n.EventDef == bpmn.DefNone {
				startNode = n
				break
			}
		}
		if startNode == nil {
			startNode = m.proc.StartEvents[0]
		}
	}
	if req.ReturnOn == engine.ReturnOnEndEvent {
		if n := m.proc.ByID[req.EndEventID]; n == nil || n.Kind != bpmn.KindEndEvent {
			e.mu.Unlock()
			return resp, apiError(404, fmt.Sprintf("End event '%s' not found in process model '%s'.", req.EndEventID, req.ProcessModelID), nil)
		}
	}
	corr := req.CorrelationID
	if corr == "" {
		corr = e.newID()
	}
	var w *startWaiter
	if req.ReturnOn != engine.ReturnOnCreated {
		w = &startWaiter{returnOn: req.ReturnOn, endEventID: req.EndEventID, ch: make(chan startResult, 1)}
	}
	now := time.Now()
	e.advance(now)
	in := e.startInstance(m, startNode, corr, compactJSON(token), id, root, req.ParentProcessInstanceID, w, now)
	resp.ProcessInstanceID, resp.CorrelationID = in.id, in.correlationID
	e.unlock()
	if w == nil {
		return resp, nil
	}
	var res startResult
	select {
	case res = <-w.ch:
	case <-ctx.Done():
		e.mu.Lock()
		w.done = true
		e.mu.Unlock()
		return resp, ctx.Err()
	case <-e.closing:
		return resp, apiError(503, "The engine emulator is shutting down.", nil)
	}
	if res.err != nil {
		return resp, res.err
	}
	resp.EndEventID = res.endEventID
	resp.TokenPayload = res.token
	if resp.TokenPayload == nil {
		resp.TokenPayload = nullJSON
	}
	return resp, nil
}
