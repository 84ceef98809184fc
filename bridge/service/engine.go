package service

import (
	"context"
	"encoding/json"

	"github.com/pe-bridge/pe-bridge/engine"
)

// ProcessStarter starts process instances (POST /process_models/{id}/start).
// With ReturnOn 2 or 3 the call blocks until the instance reached its end.
type ProcessStarter interface {
	StartProcess(ctx context.Context, req engine.ProcessStartRequest) (engine.ProcessStartResponse, error)
}

// ProcessInstances queries and terminates process instances.
type ProcessInstances interface {
	QueryProcessInstances(ctx context.Context, q engine.ProcessInstanceQuery) (engine.ProcessInstanceList, error)
	TerminateProcessInstance(ctx context.Context, processInstanceID string) error
}

// UserTasks lists and works user tasks. UserTasks is the flow node instance
// query; the service always sets FlowNodeType to bpmn:UserTask.
type UserTasks interface {
	UserTasks(ctx context.Context, q engine.FlowNodeInstanceQuery) (engine.FlowNodeInstanceList, error)
	ReserveUserTask(ctx context.Context, userTaskInstanceID, actualOwnerID string) error
	CancelUserTaskReservation(ctx context.Context, userTaskInstanceID string) error
	FinishUserTask(ctx context.Context, userTaskInstanceID string, result json.RawMessage) error
}

// Triggers sends BPMN messages and signals. processInstanceID may be empty
// (all waiting instances).
type Triggers interface {
	TriggerMessage(ctx context.Context, name string, payload json.RawMessage, processInstanceID string) error
	TriggerSignal(ctx context.Context, name string, payload json.RawMessage, processInstanceID string) error
}

// Engine is everything the service needs from the engine client
// (*engine.Client satisfies it).
type Engine interface {
	ProcessStarter
	ProcessInstances
	UserTasks
	Triggers
}
