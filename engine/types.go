package engine

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// BasePath is the prefix of every engine REST route ([V] API.md §1.1).
const BasePath = "/atlas_engine/api/v1"

// DummyToken is base64("dummy_token"), accepted by engines that run with
// anonymous root access ([V] API.md §1.2). Use it only in development.
const DummyToken = "ZHVtbXlfdG9rZW4="

// DummyUserID is the identity the dummy token stands for.
const DummyUserID = "dummy_token"

// External task states ([V] API.md §2.1).
const (
	TaskStatePending  = "pending"
	TaskStateFinished = "finished"
	TaskStateExpired  = "expired"
)

// ExternalTask is one external task as fetch_and_lock returns it.
type ExternalTask struct {
	ID                     string          `json:"id"`
	WorkerID               string          `json:"workerId"`
	Topic                  string          `json:"topic"`
	IsSingleTry            bool            `json:"isSingleTry"`
	FlowNodeInstanceID     string          `json:"flowNodeInstanceId"`
	CorrelationID          string          `json:"correlationId"`
	ProcessDefinitionID    string          `json:"processDefinitionId"`
	ProcessModelID         string          `json:"processModelId,omitempty"`
	EmbeddedProcessModelID string          `json:"embeddedProcessModelId,omitempty"`
	ProcessInstanceID      string          `json:"processInstanceId"`
	OwnerID                string          `json:"ownerId"`
	Payload                json.RawMessage `json:"payload"`
	LockExpirationTime     time.Time       `json:"lockExpirationTime"`
	State                  string          `json:"state"`
	CreatedAt              *time.Time      `json:"createdAt,omitempty"`
	FinishedAt             *time.Time      `json:"finishedAt,omitempty"`
	Result                 json.RawMessage `json:"result,omitempty"`
	Error                  json.RawMessage `json:"error,omitempty"`
}

// FetchAndLockRequest is the body of POST /external_tasks/fetch_and_lock.
// TopicName is a string or a list of strings on the wire; the client always
// sends a list when it holds more than one topic.
type FetchAndLockRequest struct {
	WorkerID string   `json:"workerId"`
	Topics   []string `json:"-"`
	MaxTasks int      `json:"maxTasks"`
	// LongPollingTimeout and LockDuration are in milliseconds on the wire.
	LongPollingTimeout time.Duration `json:"-"`
	LockDuration       time.Duration `json:"-"`
	// PayloadFilter is a JS regular expression literal such as /x/i; empty means none.
	PayloadFilter string `json:"-"`
}

type fetchAndLockWire struct {
	WorkerID           string          `json:"workerId"`
	TopicName          json.RawMessage `json:"topicName"`
	MaxTasks           int             `json:"maxTasks"`
	LongPollingTimeout int64           `json:"longPollingTimeout"`
	LockDuration       int64           `json:"lockDuration"`
	PayloadFilter      string          `json:"payloadFilter,omitempty"`
}

// MarshalJSON encodes the request as the engine expects it (durations in ms,
// topicName as a string for one topic and an array for several).
func (r FetchAndLockRequest) MarshalJSON() ([]byte, error) {
	var topic any = r.Topics
	if len(r.Topics) == 1 {
		topic = r.Topics[0]
	}
	tn, err := json.Marshal(topic)
	if err != nil {
		return nil, err
	}
	return json.Marshal(fetchAndLockWire{
		WorkerID:           r.WorkerID,
		TopicName:          tn,
		MaxTasks:           r.MaxTasks,
		LongPollingTimeout: r.LongPollingTimeout.Milliseconds(),
		LockDuration:       r.LockDuration.Milliseconds(),
		PayloadFilter:      r.PayloadFilter,
	})
}

// UnmarshalJSON decodes the wire form; topicName may be a string or an array.
func (r *FetchAndLockRequest) UnmarshalJSON(b []byte) error {
	var w fetchAndLockWire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*r = FetchAndLockRequest{
		WorkerID:           w.WorkerID,
		MaxTasks:           w.MaxTasks,
		LongPollingTimeout: time.Duration(w.LongPollingTimeout) * time.Millisecond,
		LockDuration:       time.Duration(w.LockDuration) * time.Millisecond,
		PayloadFilter:      w.PayloadFilter,
	}
	if len(w.TopicName) == 0 || string(w.TopicName) == "null" {
		return nil
	}
	if w.TopicName[0] == '"' {
		var s string
		if err := json.Unmarshal(w.TopicName, &s); err != nil {
			return err
		}
		r.Topics = []string{s}
		return nil
	}
	return json.Unmarshal(w.TopicName, &r.Topics)
}

// ExtendLockRequest is the body of PUT /external_tasks/{id}/extend_lock.
// AdditionalDuration is in milliseconds.
type ExtendLockRequest struct {
	WorkerID           string `json:"workerId"`
	AdditionalDuration int64  `json:"additionalDuration"`
}

// FinishRequest is the body of PUT /external_tasks/{id}/finish.
type FinishRequest struct {
	WorkerID string          `json:"workerId"`
	Result   json.RawMessage `json:"result,omitempty"`
}

// ExternalTaskError is the BPMN error a worker raises on a task.
type ExternalTaskError struct {
	ErrorCode    string          `json:"errorCode"`
	ErrorMessage string          `json:"errorMessage,omitempty"`
	ErrorDetails json.RawMessage `json:"errorDetails,omitempty"`
}

// ErrorRequest is the body of PUT /external_tasks/{id}/error.
type ErrorRequest struct {
	WorkerID string            `json:"workerId"`
	Error    ExternalTaskError `json:"error"`
}

// StartCallbackType is the returnOn of a process start ([V] API.md §2.2).
type StartCallbackType int

const (
	ReturnOnCreated  StartCallbackType = 1 // CallbackOnProcessInstanceCreated
	ReturnOnFinished StartCallbackType = 2 // CallbackOnProcessInstanceFinished
	ReturnOnEndEvent StartCallbackType = 3 // CallbackOnEndEventReached
)

// ProcessStartRequest is the body of POST /process_models/{id}/start.
type ProcessStartRequest struct {
	ProcessModelID          string            `json:"processModelId"`
	StartEventID            string            `json:"startEventId,omitempty"`
	CorrelationID           string            `json:"correlationId,omitempty"`
	InitialToken            json.RawMessage   `json:"initialToken,omitempty"`
	ReturnOn                StartCallbackType `json:"returnOn,omitempty"`
	EndEventID              string            `json:"endEventId,omitempty"`
	ParentProcessInstanceID string            `json:"parentProcessInstanceId,omitempty"`
}

// ProcessStartResponse is the answer of a process start.
type ProcessStartResponse struct {
	ProcessInstanceID string          `json:"processInstanceId"`
	CorrelationID     string          `json:"correlationId"`
	EndEventID        string          `json:"endEventId,omitempty"`
	TokenPayload      json.RawMessage `json:"tokenPayload,omitempty"`
}

// FlowNodeRef is a view-model element of a process model.
type FlowNodeRef struct {
	ID               string            `json:"id"`
	Name             string            `json:"name,omitempty"`
	FlowNodeType     string            `json:"flowNodeType"`
	ProcessModelID   string            `json:"processModelId"`
	ProcessModelName string            `json:"processModelName,omitempty"`
	CustomProperties map[string]string `json:"customProperties"`
	Documentation    []string          `json:"documentation,omitempty"`
	ErrorName        string            `json:"errorName,omitempty"`
	ErrorCode        string            `json:"errorCode,omitempty"`
	ErrorMessage     string            `json:"errorMessage,omitempty"`
}

// ProcessModel is one deployed process model.
type ProcessModel struct {
	ProcessDefinitionID string            `json:"processDefinitionId"`
	ProcessModelID      string            `json:"processModelId"`
	ProcessModelName    string            `json:"processModelName,omitempty"`
	Version             string            `json:"version,omitempty"`
	IsExecutable        bool              `json:"isExecutable"`
	IsSingleton         bool              `json:"isSingleton"`
	CustomProperties    map[string]string `json:"customProperties,omitempty"`
	StartEvents         []FlowNodeRef     `json:"startEvents"`
	EndEvents           []FlowNodeRef     `json:"endEvents"`
	FlowNodes           []FlowNodeRef     `json:"flowNodes"`
}

// ProcessModelList is the answer of GET /process_models.
type ProcessModelList struct {
	ProcessModels []ProcessModel `json:"processModels"`
	TotalCount    int            `json:"totalCount"`
}

// Process instance states.
const (
	InstanceRunning    = "running"
	InstanceFinished   = "finished"
	InstanceError      = "error"
	InstanceTerminated = "terminated"
)

// ProcessInstance is one process instance as the query returns it.
type ProcessInstance struct {
	ProcessInstanceID       string          `json:"processInstanceId"`
	CorrelationID           string          `json:"correlationId"`
	ProcessDefinitionID     string          `json:"processDefinitionId"`
	ProcessModelID          string          `json:"processModelId"`
	ProcessModelName        string          `json:"processModelName,omitempty"`
	ParentProcessInstanceID string          `json:"parentProcessInstanceId,omitempty"`
	Hash                    string          `json:"hash"`
	State                   string          `json:"state"`
	Error                   json.RawMessage `json:"error"`
	OwnerID                 string          `json:"ownerId"`
	StartedByRootAccess     bool            `json:"startedByRootAccessToken"`
	CreatedAt               *time.Time      `json:"createdAt,omitempty"`
	FinishedAt              *time.Time      `json:"finishedAt,omitempty"`
	TerminatedByUserID      string          `json:"terminatedByUserId,omitempty"`
	StartEventID            string          `json:"startEventId,omitempty"`
	StartToken              json.RawMessage `json:"startToken,omitempty"`
	EndEventID              string          `json:"endEventId,omitempty"`
	EndToken                json.RawMessage `json:"endToken,omitempty"`
}

// ProcessInstanceList is the answer of GET /process_instances/query.
type ProcessInstanceList struct {
	ProcessInstances []ProcessInstance `json:"processInstances"`
	TotalCount       int               `json:"totalCount"`
}

// ProcessInstanceQuery filters GET /process_instances/query. Empty fields are
// not sent. Several values of one field are joined with ",".
type ProcessInstanceQuery struct {
	ProcessInstanceID []string
	ProcessModelID    []string
	CorrelationID     []string
	State             []string
	Offset, Limit     int
}

// Flow node instance states ([V] API.md §2.4).
const (
	FlowNodeRunning    = "running"
	FlowNodeSuspended  = "suspended"
	FlowNodeFinished   = "finished"
	FlowNodeTerminated = "terminated"
	FlowNodeError      = "error"
	FlowNodeCanceled   = "canceled"
)

// UserTaskFlowNodeType is the flowNodeType of user tasks.
const UserTaskFlowNodeType = "bpmn:UserTask"

// FormFieldEnumValue is one value of an enum form field.
type FormFieldEnumValue struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// FormField is one form field of a user task.
type FormField struct {
	ID               string               `json:"id"`
	Label            string               `json:"label,omitempty"`
	Type             string               `json:"type"`
	DefaultValue     string               `json:"defaultValue,omitempty"`
	CustomForm       string               `json:"customForm,omitempty"`
	ParsedCustomForm json.RawMessage      `json:"parsedCustomForm,omitempty"`
	EnumValues       []FormFieldEnumValue `json:"enumValues,omitempty"`
}

// UserTaskConfig is the evaluated configuration of a user task.
type UserTaskConfig struct {
	FormFields      []FormField `json:"formFields"`
	CustomForm      string      `json:"customForm,omitempty"`
	Description     string      `json:"description,omitempty"`
	FinishedMessage string      `json:"finishedMessage,omitempty"`
	AssignedUserIDs []string    `json:"assignedUserIds,omitempty"`
}

// FlowNodeInstance is one flow node instance; user tasks carry the
// user-task fields as well ([V] API.md §2.4).
type FlowNodeInstance struct {
	FlowNodeInstanceID         string          `json:"flowNodeInstanceId"`
	FlowNodeID                 string          `json:"flowNodeId"`
	FlowNodeName               string          `json:"flowNodeName,omitempty"`
	FlowNodeLane               string          `json:"flowNodeLane,omitempty"`
	FlowNodeType               string          `json:"flowNodeType"`
	EventType                  string          `json:"eventType,omitempty"`
	PreviousFlowNodeInstanceID string          `json:"previousFlowNodeInstanceId,omitempty"`
	State                      string          `json:"state"`
	ProcessDefinitionID        string          `json:"processDefinitionId"`
	ProcessModelID             string          `json:"processModelId"`
	ProcessModelName           string          `json:"processModelName,omitempty"`
	ProcessInstanceID          string          `json:"processInstanceId"`
	CorrelationID              string          `json:"correlationId"`
	StartToken                 json.RawMessage `json:"startToken,omitempty"`
	EndToken                   json.RawMessage `json:"endToken,omitempty"`
	OwnerID                    string          `json:"ownerId"`
	Error                      json.RawMessage `json:"error,omitempty"`
	StartedAt                  *time.Time      `json:"startedAt,omitempty"`
	FinishedAt                 *time.Time      `json:"finishedAt,omitempty"`
	// User-task fields.
	ActualOwnerID    string          `json:"actualOwnerId,omitempty"`
	FinishedByUserID string          `json:"finishedByUserId,omitempty"`
	AssignedUserIDs  []string        `json:"assignedUserIds,omitempty"`
	UserTaskConfig   *UserTaskConfig `json:"userTaskConfig,omitempty"`
}

// FlowNodeInstanceList is the answer of GET /flow_node_instances.
type FlowNodeInstanceList struct {
	FlowNodeInstances []FlowNodeInstance `json:"flowNodeInstances"`
	TotalCount        int                `json:"totalCount"`
}

// FlowNodeInstanceQuery filters GET /flow_node_instances. Empty fields are not
// sent; several values of one field are joined with ",".
type FlowNodeInstanceQuery struct {
	FlowNodeInstanceID []string
	FlowNodeID         []string
	FlowNodeType       []string
	ProcessModelID     []string
	ProcessInstanceID  []string
	CorrelationID      []string
	State              []string
	OwnerID            []string
	Offset, Limit      int
}

// ReserveUserTaskRequest is the body of PUT /user_tasks/{id}/reserve.
type ReserveUserTaskRequest struct {
	ActualOwnerID string `json:"actualOwnerId"`
}

// DeployRequest is the body of POST /process_definitions.
type DeployRequest struct {
	XML               []string `json:"-"`
	OverwriteExisting bool     `json:"overwriteExisting"`
}

type deployWire struct {
	XML               json.RawMessage `json:"xml"`
	OverwriteExisting bool            `json:"overwriteExisting"`
}

// MarshalJSON sends xml as a string for one definition, else as an array.
func (d DeployRequest) MarshalJSON() ([]byte, error) {
	var x any = d.XML
	if len(d.XML) == 1 {
		x = d.XML[0]
	}
	xb, err := json.Marshal(x)
	if err != nil {
		return nil, err
	}
	return json.Marshal(deployWire{XML: xb, OverwriteExisting: d.OverwriteExisting})
}

// UnmarshalJSON accepts xml as a string or an array of strings.
func (d *DeployRequest) UnmarshalJSON(b []byte) error {
	var w deployWire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*d = DeployRequest{OverwriteExisting: w.OverwriteExisting}
	if len(w.XML) == 0 || string(w.XML) == "null" {
		return nil
	}
	if w.XML[0] == '"' {
		var s string
		if err := json.Unmarshal(w.XML, &s); err != nil {
			return err
		}
		d.XML = []string{s}
		return nil
	}
	return json.Unmarshal(w.XML, &d.XML)
}

// EventMessage is the payload of an engine notification ([V] API.md §2.7).
// processDefinitionId is a string in most events and a string or an array
// of strings in process_deployed / process_undeployed: decoding accepts
// both, ProcessDefinitionID then holds the first and ProcessDefinitionIDs
// all of them (ProcessDefinitionIDs is not encoded: an EventMessage encodes
// processDefinitionId as the string ProcessDefinitionID).
type EventMessage struct {
	CorrelationID              string          `json:"correlationId"`
	ProcessDefinitionID        string          `json:"processDefinitionId"`
	ProcessDefinitionIDs       []string        `json:"-"`
	ProcessModelID             string          `json:"processModelId"`
	ProcessModelName           string          `json:"processModelName,omitempty"`
	ProcessInstanceID          string          `json:"processInstanceId"`
	ParentProcessInstanceID    string          `json:"parentProcessInstanceId,omitempty"`
	OwnerID                    string          `json:"ownerId"`
	CurrentToken               json.RawMessage `json:"currentToken"`
	FlowNodeID                 string          `json:"flowNodeId,omitempty"`
	FlowNodeName               string          `json:"flowNodeName,omitempty"`
	FlowNodeLane               string          `json:"flowNodeLane,omitempty"`
	FlowNodeType               string          `json:"flowNodeType,omitempty"`
	FlowNodeInstanceID         string          `json:"flowNodeInstanceId,omitempty"`
	PreviousFlowNodeInstanceID string          `json:"previousFlowNodeInstanceId,omitempty"`
	EventType                  string          `json:"eventType,omitempty"`
	EventName                  string          `json:"eventName,omitempty"`
	// External-task events.
	ExternalTaskID     string     `json:"externalTaskId,omitempty"`
	Topic              string     `json:"topic,omitempty"`
	IsSingleTry        *bool      `json:"isSingleTry,omitempty"`
	WorkerID           string     `json:"workerId,omitempty"`
	LockExpirationTime *time.Time `json:"lockExpirationTime,omitempty"`
	// user_task_finished.
	UserTaskResult json.RawMessage `json:"userTaskResult,omitempty"`
}

// UnmarshalJSON decodes an EventMessage whose processDefinitionId is a
// string, an array of strings or null.
func (m *EventMessage) UnmarshalJSON(b []byte) error {
	type plain EventMessage
	var v struct {
		plain
		ProcessDefinitionID json.RawMessage `json:"processDefinitionId"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*m = EventMessage(v.plain)
	m.ProcessDefinitionID, m.ProcessDefinitionIDs = "", nil
	raw := bytes.TrimSpace(v.ProcessDefinitionID)
	switch {
	case len(raw) == 0 || string(raw) == "null":
	case raw[0] == '[':
		if err := json.Unmarshal(raw, &m.ProcessDefinitionIDs); err != nil {
			return fmt.Errorf("engine: processDefinitionId: %w", err)
		}
		if len(m.ProcessDefinitionIDs) > 0 {
			m.ProcessDefinitionID = m.ProcessDefinitionIDs[0]
		}
	default:
		if err := json.Unmarshal(raw, &m.ProcessDefinitionID); err != nil {
			return fmt.Errorf("engine: processDefinitionId: %w", err)
		}
		m.ProcessDefinitionIDs = []string{m.ProcessDefinitionID}
	}
	return nil
}

// ApplicationInfo is the answer of GET /info.
type ApplicationInfo struct {
	ID                       string          `json:"id,omitempty"`
	Name                     string          `json:"name"`
	PackageName              string          `json:"packageName"`
	Version                  string          `json:"version"`
	AuthorityURL             string          `json:"authorityUrl"`
	AllowAnonymousRootAccess bool            `json:"allowAnonymousRootAccess"`
	LoadedExtensions         []ExtensionInfo `json:"loadedExtensions"`
	ExtraInfo                map[string]any  `json:"extraInfo"`
}

// ExtensionInfo names one loaded engine extension.
type ExtensionInfo struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// Notification event names the bridge forwards by default, and the full set
// the engine offers under /notifications/long_polling/<event> ([V] API.md §2.7).
var NotificationEvents = []string{
	"process_started", "process_starting", "process_resumed", "process_ended", "process_terminated",
	"process_error", "process_owner_changed", "process_instances_deleted", "process_deployed",
	"process_undeployed", "process_is_executable_changed", "external_task_created", "external_task_locked",
	"external_task_unlocked", "external_task_expired", "activity_reached", "activity_finished",
	"activity_canceled", "user_task_waiting", "user_task_finished", "user_task_reserved",
	"user_task_reservation_canceled", "manual_task_waiting", "manual_task_finished",
	"empty_activity_waiting", "empty_activity_finished", "untyped_task_waiting", "untyped_task_finished",
	"boundary_event_waiting", "boundary_event_triggered", "boundary_event_finished",
	"intermediate_throw_event_triggered", "intermediate_catch_event_reached",
	"intermediate_catch_event_finished", "flow_node_event_retry_sending", "message_triggered",
	"signal_triggered", "start_event_finished", "end_event_finished",
	"process_instance_metadata_changed", "correlation_metadata_changed",
}
