package service

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

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
	if path, dup := duplicateKey(trimmed); dup {
		return badRequest(path, "member %q appears more than once", truncate(path, 128))
	}
	return nil
}

// duplicateKey finds the first object member, at any depth, whose name
// appears twice in its object (encoding/json silently keeps the last one,
// so a check that reads the first would be fooled). data is valid JSON.
// The path names the member with dots, array elements as [i].
func duplicateKey(data []byte) (string, bool) {
	var stack []*jsonFrame
	// value marks the start of a value in the innermost container.
	value := func() {
		if len(stack) == 0 {
			return
		}
		top := stack[len(stack)-1]
		if top.object {
			top.wantKey = true
		} else {
			top.name = "[" + strconv.Itoa(top.index) + "]"
			top.index++
		}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err != nil {
			return "", false
		}
		if len(stack) > 0 {
			if top := stack[len(stack)-1]; top.object && top.wantKey {
				if k, ok := tok.(string); ok {
					top.name, top.wantKey = k, false
					if top.keys[k] {
						return jsonPath(stack), true
					}
					top.keys[k] = true
					continue
				}
			}
		}
		switch tok {
		case json.Delim('{'):
			value()
			stack = append(stack, &jsonFrame{object: true, wantKey: true, keys: map[string]bool{}})
		case json.Delim('['):
			value()
			stack = append(stack, &jsonFrame{})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		default:
			value()
		}
	}
}

type jsonFrame struct {
	object  bool
	wantKey bool            // object: the next token is a member name
	keys    map[string]bool // object: names seen
	name    string          // the current member's name or element's [i]
	index   int             // array: elements seen
}

func jsonPath(stack []*jsonFrame) string {
	var b strings.Builder
	for _, f := range stack {
		if f.object && b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(f.name)
	}
	return b.String()
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

// maxIDBytes bounds every id in a request.
const maxIDBytes = 256

// pathID checks a required id that becomes a path segment of an engine URL
// (url.PathEscape keeps "." and ".."): not empty, not "." or "..", no '/' or
// '\\', and what idChars checks.
func pathID(field, v string) *Error {
	switch {
	case v == "":
		return badRequest(field, "%s is required", field)
	case v == "." || v == "..":
		return badRequest(field, "%s must not be %q", field, v)
	case strings.ContainsAny(v, "/\\"):
		return badRequest(field, "%s must not contain '/' or '\\'", field)
	}
	return idChars(field, v)
}

// optionalID checks an id that may be absent: when given, what idChars
// checks.
func optionalID(field, v string) *Error {
	if v == "" {
		return nil
	}
	return idChars(field, v)
}

// idChars refuses ids longer than maxIDBytes, invalid UTF-8 and control
// characters.
func idChars(field, v string) *Error {
	if len(v) > maxIDBytes {
		return badRequest(field, "%s is longer than %d bytes", field, maxIDBytes)
	}
	if !utf8.ValidString(v) {
		return badRequest(field, "%s is not valid UTF-8", field)
	}
	for _, r := range v {
		if unicode.IsControl(r) {
			return badRequest(field, "%s must not contain control characters", field)
		}
	}
	return nil
}

// ids runs checks in order and returns the first error.
func ids(checks ...*Error) *Error {
	for _, e := range checks {
		if e != nil {
			return e
		}
	}
	return nil
}

// isBlockingStart reports whether a pe.process.start body asks for a
// blocking start (returnOn finished or end_event). Malformed bodies are not
// blocking; the endpoint refuses them.
func isBlockingStart(data []byte) bool {
	var r struct {
		ReturnOn json.RawMessage `json:"returnOn"`
	}
	if json.Unmarshal(data, &r) != nil {
		return false
	}
	ro, e := parseReturnOn(r.ReturnOn)
	return e == nil && ro != engine.ReturnOnCreated
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
	if e := ids(pathID("processModelId", r.ProcessModelID), optionalID("startEventId", r.StartEventID),
		optionalID("correlationId", r.CorrelationID), optionalID("endEventId", r.EndEventID)); e != nil {
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
	return r, pathID("processInstanceId", r.ProcessInstanceID)
}

func decodeProcessQuery(data []byte) (ProcessQueryRequest, *Error) {
	var r ProcessQueryRequest
	if e := decode(data, &r); e != nil {
		return r, e
	}
	if e := ids(optionalID("processModelId", r.ProcessModelID), optionalID("processInstanceId", r.ProcessInstanceID),
		optionalID("correlationId", r.CorrelationID)); e != nil {
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
	if e := ids(optionalID("processModelId", r.ProcessModelID), optionalID("processInstanceId", r.ProcessInstanceID),
		optionalID("correlationId", r.CorrelationID), optionalID("flowNodeId", r.FlowNodeID),
		optionalID("actualOwnerId", r.ActualOwnerID)); e != nil {
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
	return r, pathID("userTaskInstanceId", r.UserTaskInstanceID)
}

func decodeReserve(data []byte) (ReserveRequest, *Error) {
	var r ReserveRequest
	if e := decode(data, &r); e != nil {
		return r, e
	}
	if e := pathID("userTaskInstanceId", r.UserTaskInstanceID); e != nil {
		return r, e
	}
	if e := required("actualOwnerId", r.ActualOwnerID); e != nil {
		return r, e
	}
	return r, idChars("actualOwnerId", r.ActualOwnerID)
}

func decodeFinish(data []byte) (FinishRequest, *Error) {
	var r FinishRequest
	if e := decode(data, &r); e != nil {
		return r, e
	}
	if e := pathID("userTaskInstanceId", r.UserTaskInstanceID); e != nil {
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
	return r, ids(pathID("name", r.Name), optionalID("processInstanceId", r.ProcessInstanceID))
}
