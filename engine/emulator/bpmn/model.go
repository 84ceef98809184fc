package bpmn

import (
	"time"

	"github.com/pe-bridge/pe-bridge/engine"
)

// Kind is the execution behaviour of a flow node.
type Kind uint8

// Flow node kinds the emulator executes.
const (
	KindStartEvent Kind = iota + 1
	KindEndEvent
	KindServiceTask // external when Node.External, else a pass-through
	KindUserTask
	KindTask        // sendTask, businessRuleTask: pass-through
	KindManualTask  // waits for PUT /manual_tasks/{id}/finish
	KindUntypedTask // bpmn:task: waits for PUT /untyped_tasks/{id}/finish
	KindScriptTask  // evaluates Node.Script
	KindReceiveTask
	KindExclusiveGateway
	KindParallelGateway
	KindCatchEvent // intermediateCatchEvent
	KindThrowEvent // intermediateThrowEvent
	KindBoundaryEvent
)

// EventDef is the event definition of an event node.
type EventDef uint8

// Event definitions the emulator understands.
const (
	DefNone EventDef = iota
	DefMessage
	DefSignal
	DefTimer
	DefError
	DefTerminate
)

// Definitions is one parsed BPMN file.
type Definitions struct {
	ID        string // the definitions id, reported as processDefinitionId
	Processes []*Process
}

// Process is one executable process (processModelId = ID).
type Process struct {
	ID           string
	Name         string
	IsExecutable bool
	DefinitionID string
	Nodes        []*Node // document order
	ByID         map[string]*Node
	StartEvents  []*Node
	EndEvents    []*Node
	Flows        []*Flow
}

// Error is a <bpmn:error> definition.
type Error struct {
	ID, Name, Code, Message string
}

// Flow is a sequence flow.
type Flow struct {
	ID        string
	Name      string
	Source    *Node
	Target    *Node
	Condition string // JS expression; "" = unconditional
}

// Timer is a timer event definition.
type Timer struct {
	Type     string        // "duration" or "date"
	Value    string        // raw ISO-8601 text
	Duration time.Duration // for Type "duration"
	Date     time.Time     // for Type "date"
}

// Node is one flow node.
type Node struct {
	ID            string
	Name          string
	Type          string // engine flowNodeType, e.g. "bpmn:ServiceTask"
	Kind          Kind
	Lane          string
	Documentation []string
	Properties    map[string]string // camunda:properties
	Incoming      []*Flow
	Outgoing      []*Flow
	Default       *Flow

	// Events.
	EventDef       EventDef
	MessageName    string
	SignalName     string
	Error          *Error // error end / error boundary; nil on a boundary = catch all
	Timer          *Timer
	AttachedTo     *Node
	CancelActivity bool    // boundary events; true = interrupting
	Boundaries     []*Node // boundary events attached to this activity

	// Service tasks.
	External    bool
	Topic       string
	Payload     string // JS expression of the payload property; "" = current token
	IsSingleTry bool

	// User tasks.
	FormFields      []engine.FormField
	CustomForm      string
	Description     string
	FinishedMessage string
	AssignUserIDs   string // raw engine.assignUserIds expression

	// Script tasks.
	Script string
}

// IsActivity reports whether boundary events may attach to n.
func (n *Node) IsActivity() bool {
	switch n.Kind {
	case KindServiceTask, KindUserTask, KindTask, KindScriptTask, KindReceiveTask, KindManualTask, KindUntypedTask:
		return true
	}
	return false
}

// Waits reports whether the node suspends the token until something happens.
func (n *Node) Waits() bool {
	switch n.Kind {
	case KindUserTask, KindReceiveTask, KindManualTask, KindUntypedTask:
		return true
	case KindServiceTask:
		return n.External
	case KindCatchEvent:
		return n.EventDef == DefMessage || n.EventDef == DefSignal || n.EventDef == DefTimer
	}
	return false
}
