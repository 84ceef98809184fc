package emulator

import (
	"context"
	"encoding/json"
	"time"

	"github.com/pe-bridge/pe-bridge/engine"
)

// wants reports whether anyone waits for event name: a long poll of it or
// a connected Socket.IO client. Call with mu held.
func (e *Emulator) wants(name string) bool { return len(e.notify[name]) > 0 || e.sio.active() }

// emitMsg hands m to every long poll waiting for name and queues it for
// every connected Socket.IO client. Events no long poll waits for are
// dropped from the REST side, as with the engine's long-polling endpoint.
// Call with mu held.
func (e *Emulator) emitMsg(name string, m engine.EventMessage) {
	if len(m.CurrentToken) == 0 || string(m.CurrentToken) == "null" {
		m.CurrentToken = json.RawMessage("{}") // the schema types currentToken as an object
	}
	if e.sio.active() {
		e.sio.enqueue(name, m)
	}
	for _, ch := range e.notify[name] {
		select {
		case ch <- m:
		default:
		}
	}
	delete(e.notify, name)
}

func (e *Emulator) instMsg(in *instance, tok json.RawMessage) engine.EventMessage {
	return engine.EventMessage{
		CorrelationID:           in.correlationID,
		ProcessDefinitionID:     in.model.proc.DefinitionID,
		ProcessModelID:          in.model.proc.ID,
		ProcessModelName:        in.model.proc.Name,
		ProcessInstanceID:       in.id,
		ParentProcessInstanceID: in.parentID,
		OwnerID:                 in.ownerID,
		CurrentToken:            tok,
	}
}

func (e *Emulator) fniMsg(f *fni, tok json.RawMessage) engine.EventMessage {
	m := e.instMsg(f.inst, tok)
	m.FlowNodeID = f.node.ID
	m.FlowNodeName = f.node.Name
	m.FlowNodeLane = f.node.Lane
	m.FlowNodeType = f.node.Type
	m.FlowNodeInstanceID = f.id
	m.PreviousFlowNodeInstanceID = f.prevID
	m.EventType = eventTypeName(f.node.EventDef)
	return m
}

// waitEvent blocks until the next event name, ctx is done, the emulator
// closes or NotificationTimeout passes. ok is false without an event.
func (e *Emulator) waitEvent(ctx context.Context, name string) (engine.EventMessage, bool) {
	ch := make(chan engine.EventMessage, 1)
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return engine.EventMessage{}, false
	}
	e.notify[name] = append(e.notify[name], ch)
	e.mu.Unlock()
	timer := time.NewTimer(e.cfg.NotificationTimeout)
	defer timer.Stop()
	select {
	case m := <-ch:
		return m, true
	case <-ctx.Done():
	case <-timer.C:
	case <-e.closing:
	}
	e.mu.Lock()
	list := e.notify[name]
	for i, c := range list {
		if c == ch {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(e.notify, name)
	} else {
		e.notify[name] = list
	}
	e.mu.Unlock()
	select {
	case m := <-ch: // the event arrived while we gave up
		return m, true
	default:
	}
	return engine.EventMessage{}, false
}
