package service

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"strings"
	"time"

	"github.com/pe-bridge/pe-bridge/engine"
)

// Request and reply shapes of the service endpoints. doc.go lists them for
// humans; field names are part of wire contract v1 and must stay stable.

// StartRequest is the body of pe.process.start.
type StartRequest struct {
	ProcessModelID string          `json:"processModelId"`
	StartEventID   string          `json:"startEventId,omitempty"`
	CorrelationID  string          `json:"correlationId,omitempty"`
	InitialToken   json.RawMessage `json:"initialToken,omitempty"`
	// ReturnOn is "created" (default), "finished", "end_event", or the
	// engine's number 1, 2, 3.
	ReturnOn json.RawMessage `json:"returnOn,omitempty"`
	// EndEventID is required with returnOn "end_event" and refused otherwise.
	EndEventID string `json:"endEventId,omitempty"`
	// Timeout is a Go duration string ("30s", "2m") or a number of
	// milliseconds.
	Timeout json.RawMessage `json:"timeout,omitempty"`
}

// StartReply is the reply of pe.process.start.
type StartReply struct {
	ProcessInstanceID string          `json:"processInstanceId"`
	CorrelationID     string          `json:"correlationId"`
	EndEventID        string          `json:"endEventId,omitempty"`
	TokenPayload      json.RawMessage `json:"tokenPayload,omitempty"`
}

// ProcessInstanceRef is the body of pe.process.get and pe.process.terminate,
// and the reply of pe.process.terminate.
type ProcessInstanceRef struct {
	ProcessInstanceID string `json:"processInstanceId"`
}

// ProcessQueryRequest is the body of pe.process.query. Empty filters match
// everything; limit 0 means the engine's default (no limit).
type ProcessQueryRequest struct {
	ProcessModelID    string `json:"processModelId,omitempty"`
	ProcessInstanceID string `json:"processInstanceId,omitempty"`
	CorrelationID     string `json:"correlationId,omitempty"`
	State             string `json:"state,omitempty"` // running | finished | error | terminated
	Offset            int    `json:"offset,omitempty"`
	Limit             int    `json:"limit,omitempty"`
}

// ProcessQueryReply is the reply of pe.process.query; pe.process.get replies
// with one engine.ProcessInstance.
type ProcessQueryReply struct {
	ProcessInstances []engine.ProcessInstance `json:"processInstances"`
	TotalCount       int                      `json:"totalCount"`
}

// UserTaskListRequest is the body of pe.usertask.list.
type UserTaskListRequest struct {
	ProcessModelID    string `json:"processModelId,omitempty"`
	ProcessInstanceID string `json:"processInstanceId,omitempty"`
	CorrelationID     string `json:"correlationId,omitempty"`
	FlowNodeID        string `json:"flowNodeId,omitempty"`
	// State defaults to "suspended" (waiting tasks); "any" lifts the filter.
	State string `json:"state,omitempty"`
	// ActualOwnerID keeps only tasks reserved by this owner.
	ActualOwnerID string `json:"actualOwnerId,omitempty"`
	Offset        int    `json:"offset,omitempty"`
	Limit         int    `json:"limit,omitempty"`
}

// UserTask is one user task in replies.
type UserTask struct {
	UserTaskInstanceID string             `json:"userTaskInstanceId"` // = the engine's flowNodeInstanceId
	FlowNodeID         string             `json:"flowNodeId"`
	FlowNodeName       string             `json:"flowNodeName,omitempty"`
	FlowNodeLane       string             `json:"flowNodeLane,omitempty"`
	ProcessModelID     string             `json:"processModelId"`
	ProcessInstanceID  string             `json:"processInstanceId"`
	CorrelationID      string             `json:"correlationId"`
	State              string             `json:"state"`
	Token              json.RawMessage    `json:"token,omitempty"` // the engine's startToken: the form's input data
	FormFields         []engine.FormField `json:"formFields"`
	Description        string             `json:"description,omitempty"`
	ActualOwnerID      string             `json:"actualOwnerId,omitempty"` // set while reserved
	AssignedUserIDs    []string           `json:"assignedUserIds,omitempty"`
	FinishedByUserID   string             `json:"finishedByUserId,omitempty"`
	Result             json.RawMessage    `json:"result,omitempty"` // the engine's endToken, once finished
	StartedAt          *time.Time         `json:"startedAt,omitempty"`
	FinishedAt         *time.Time         `json:"finishedAt,omitempty"`
}

// UserTaskListReply is the reply of pe.usertask.list.
type UserTaskListReply struct {
	UserTasks  []UserTask `json:"userTasks"`
	TotalCount int        `json:"totalCount"`
}

// UserTaskRef is the body of pe.usertask.get and
// pe.usertask.cancel_reservation, and the reply of cancel_reservation and
// finish.
type UserTaskRef struct {
	UserTaskInstanceID string `json:"userTaskInstanceId"`
}

// ReserveRequest is the body and the reply of pe.usertask.reserve.
type ReserveRequest struct {
	UserTaskInstanceID string `json:"userTaskInstanceId"`
	ActualOwnerID      string `json:"actualOwnerId"`
}

// FinishRequest is the body of pe.usertask.finish. Result, a JSON object
// keyed by form field id, becomes the task's result; absent means {}.
type FinishRequest struct {
	UserTaskInstanceID string          `json:"userTaskInstanceId"`
	Result             json.RawMessage `json:"result,omitempty"`
}

// TriggerRequest is the body of pe.message.trigger and pe.signal.trigger.
type TriggerRequest struct {
	Name              string          `json:"name"`
	Payload           json.RawMessage `json:"payload,omitempty"`
	ProcessInstanceID string          `json:"processInstanceId,omitempty"`
}

// TriggerReply is the reply of the trigger endpoints.
type TriggerReply struct {
	Name              string `json:"name"`
	ProcessInstanceID string `json:"processInstanceId,omitempty"`
}

// decode reads one JSON object into v. An empty body counts as {}. Unknown
// members, type mismatches and trailing data are 400s naming the member.
func decode(data []byte, v any) *Error {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		trimmed = []byte("{}")
	}
	if trimmed[0] != '{' {
		if !json.Valid(trimmed) {
			return badRequest("", "request is not valid JSON")
		}
		return badRequest("", "request must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest("", "request is not valid JSON: data after the object")
	}
	return nil
}

func decodeError(err error) *Error {
	var ute *json.UnmarshalTypeError
	if errors.As(err, &ute) {
		return badRequest(ute.Field, "%s must be %s, not %s", fieldName(ute.Field), typeName(ute.Type.Kind().String()), ute.Value)
	}
	if msg := err.Error(); strings.HasPrefix(msg, "json: unknown field ") {
		f := strings.Trim(strings.TrimPrefix(msg, "json: unknown field "), `"`)
		return badRequest(f, "unknown member %q", f)
	}
	return badRequest("", "request is not valid JSON")
}

func fieldName(f string) string {
	if f == "" {
		return "value"
	}
	return f
}

func typeName(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "an integer"
	case "float32", "float64":
		return "a number"
	case "bool":
		return "a boolean"
	case "slice":
		return "an array"
	case "map", "struct":
		return "an object"
	}
	return "of another type"
}

func required(field, value string) *Error {
	if value == "" {
		return badRequest(field, "%s is required", field)
	}
	return nil
}

func paging(offset, limit int) *Error {
	if offset < 0 {
		return badRequest("offset", "offset must not be negative")
	}
	if limit < 0 {
		return badRequest("limit", "limit must not be negative")
	}
	return nil
}

// isNull reports whether raw is absent or JSON null.
func isNull(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || string(t) == "null"
}

// startCall is a validated process start.
type startCall struct {
	req engine.ProcessStartRequest
	// timeout is the caller's timeout; 0 means the configured default.
	timeout time.Duration
}

func (c startCall) blocking() bool { return c.req.ReturnOn != engine.ReturnOnCreated }

// decodeStart validates a pe.process.start body. maxTimeout bounds the
// caller's timeout (0 = unbounded).
func decodeStart(data []byte, maxTimeout time.Duration) (startCall, *Error) {
	var r StartRequest
	if e := decode(data, &r); e != nil {
		return startCall{}, e
	}
	if e := required("processModelId", r.ProcessModelID); e != nil {
		return startCall{}, e
	}
	ro, e := parseReturnOn(r.ReturnOn)
	if e != nil {
		return startCall{}, e
	}
	switch {
	case ro == engine.ReturnOnEndEvent && r.EndEventID == "":
		return startCall{}, badRequest("endEventId", `endEventId is required with returnOn "end_event"`)
	case ro != engine.ReturnOnEndEvent && r.EndEventID != "":
		return startCall{}, badRequest("endEventId", `endEventId is only allowed with returnOn "end_event"`)
	}
	timeout, e := parseTimeout(r.Timeout, maxTimeout)
	if e != nil {
		return startCall{}, e
	}
	c := startCall{
		req: engine.ProcessStartRequest{
			ProcessModelID: r.ProcessModelID,
			StartEventID:   r.StartEventID,
			CorrelationID:  r.CorrelationID,
			ReturnOn:       ro,
			EndEventID:     r.EndEventID,
		},
		timeout: timeout,
	}
	if !isNull(r.InitialToken) {
		c.req.InitialToken = r.InitialToken
	}
	return c, nil
}

func parseReturnOn(raw json.RawMessage) (engine.StartCallbackType, *Error) {
	if isNull(raw) {
		return engine.ReturnOnCreated, nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return 0, badRequest("returnOn", "returnOn is not valid JSON")
	}
	switch x := v.(type) {
	case string:
		switch x {
		case "created":
			return engine.ReturnOnCreated, nil
		case "finished":
			return engine.ReturnOnFinished, nil
		case "end_event":
			return engine.ReturnOnEndEvent, nil
		}
		return 0, badRequest("returnOn", `returnOn %q is unknown (want "created", "finished" or "end_event")`, truncate(x, 64))
	case float64:
		switch x {
		case 1, 2, 3:
			return engine.StartCallbackType(x), nil
		}
		return 0, badRequest("returnOn", "returnOn %v is unknown (want 1, 2 or 3)", x)
	}
	return 0, badRequest("returnOn", `returnOn must be a string ("created", "finished", "end_event") or 1, 2, 3`)
}

func parseTimeout(raw json.RawMessage, max time.Duration) (time.Duration, *Error) {
	if isNull(raw) {
		return 0, nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return 0, badRequest("timeout", "timeout is not valid JSON")
	}
	var d time.Duration
	switch x := v.(type) {
	case string:
		p, err := time.ParseDuration(x)
		if err != nil {
			return 0, badRequest("timeout", `timeout %q is not a duration (like "30s" or "2m")`, truncate(x, 64))
		}
		d = p
	case float64:
		if x > float64(math.MaxInt64/int64(time.Millisecond)) {
			return 0, badRequest("timeout", "timeout %v ms is too long", x)
		}
		d = time.Duration(x * float64(time.Millisecond))
	default:
		return 0, badRequest("timeout", `timeout must be a duration string ("30s") or a number of milliseconds`)
	}
	if d <= 0 {
		return 0, badRequest("timeout", "timeout must be positive")
	}
	if max > 0 && d > max {
		return 0, badRequest("timeout", "timeout %s is longer than the maximum %s", d, max)
	}
	return d, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

var processStates = map[string]bool{
	engine.InstanceRunning: true, engine.InstanceFinished: true, engine.InstanceError: true, engine.InstanceTerminated: true,
}

var flowNodeStates = map[string]bool{
	engine.FlowNodeRunning: true, engine.FlowNodeSuspended: true, engine.FlowNodeFinished: true,
	engine.FlowNodeTerminated: true, engine.FlowNodeError: true, engine.FlowNodeCanceled: true,
}

func decodeProcessRef(data []byte) (ProcessInstanceRef, *Error) {
	var r ProcessInstanceRef
	if e := decode(data, &r); e != nil {
		return r, e
	}
	return r, required("processInstanceId", r.ProcessInstanceID)
}

func decodeProcessQuery(data []byte) (ProcessQueryRequest, *Error) {
	var r ProcessQueryRequest
	if e := decode(data, &r); e != nil {
		return r, e
	}
	if r.State != "" && !processStates[r.State] {
		return r, badRequest("state", "state %q is unknown (want running, finished, error or terminated)", truncate(r.State, 64))
	}
	return r, paging(r.Offset, r.Limit)
}

func decodeUserTaskList(data []byte) (UserTaskListRequest, *Error) {
	var r UserTaskListRequest
	if e := decode(data, &r); e != nil {
		return r, e
	}
	if r.State == "" {
		r.State = engine.FlowNodeSuspended
	}
	if r.State != "any" && !flowNodeStates[r.State] {
		return r, badRequest("state", "state %q is unknown (want suspended, running, finished, terminated, error, canceled or any)", truncate(r.State, 64))
	}
	return r, paging(r.Offset, r.Limit)
}

func decodeUserTaskRef(data []byte) (UserTaskRef, *Error) {
	var r UserTaskRef
	if e := decode(data, &r); e != nil {
		return r, e
	}
	return r, required("userTaskInstanceId", r.UserTaskInstanceID)
}

func decodeReserve(data []byte) (ReserveRequest, *Error) {
	var r ReserveRequest
	if e := decode(data, &r); e != nil {
		return r, e
	}
	if e := required("userTaskInstanceId", r.UserTaskInstanceID); e != nil {
		return r, e
	}
	return r, required("actualOwnerId", r.ActualOwnerID)
}

func decodeFinish(data []byte) (FinishRequest, *Error) {
	var r FinishRequest
	if e := decode(data, &r); e != nil {
		return r, e
	}
	if e := required("userTaskInstanceId", r.UserTaskInstanceID); e != nil {
		return r, e
	}
	if isNull(r.Result) {
		r.Result = json.RawMessage("{}")
		return r, nil
	}
	if t := bytes.TrimSpace(r.Result); t[0] != '{' {
		return r, badRequest("result", "result must be a JSON object keyed by form field id")
	}
	return r, nil
}

func decodeTrigger(data []byte) (TriggerRequest, *Error) {
	var r TriggerRequest
	if e := decode(data, &r); e != nil {
		return r, e
	}
	if isNull(r.Payload) {
		r.Payload = nil
	}
	return r, required("name", r.Name)
}
