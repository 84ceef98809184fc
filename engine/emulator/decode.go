package emulator

import (
	"bytes"
	"encoding/json"
	"math"
	"time"

	"github.com/pe-bridge/pe-bridge/engine"
)

// Defaults for fetch_and_lock fields a client leaves out: the official
// TypeScript worker's defaults ([V] API.md §3.9).
const (
	defaultMaxTasks     = 10
	defaultLongPollMS   = 10000
	defaultLockDuration = 30000
)

// decodeFetch validates a fetch_and_lock body.
func decodeFetch(b []byte, maxPoll time.Duration) (*fetchRequest, *engine.Error) {
	var wire struct {
		WorkerID           *string         `json:"workerId"`
		TopicName          json.RawMessage `json:"topicName"`
		MaxTasks           *float64        `json:"maxTasks"`
		LongPollingTimeout *float64        `json:"longPollingTimeout"`
		LockDuration       *float64        `json:"lockDuration"`
		PayloadFilter      *string         `json:"payloadFilter"`
	}
	if err := decodeJSON(b, &wire); err != nil {
		return nil, err
	}
	if wire.WorkerID == nil || *wire.WorkerID == "" {
		return nil, apiError(400, "Field 'workerId' is required.", map[string]string{"field": "workerId"})
	}
	r := &fetchRequest{workerID: *wire.WorkerID, max: defaultMaxTasks}
	tn := bytes.TrimSpace(wire.TopicName)
	switch {
	case len(tn) == 0 || string(tn) == "null":
		return nil, apiError(400, "Field 'topicName' is required.", map[string]string{"field": "topicName"})
	case tn[0] == '"':
		var s string
		if err := json.Unmarshal(tn, &s); err != nil || s == "" {
			return nil, apiError(400, "Field 'topicName' must be a non-empty string or an array of strings.", map[string]string{"field": "topicName"})
		}
		r.topics = []string{s}
	case tn[0] == '[':
		var list []string
		if err := json.Unmarshal(tn, &list); err != nil || len(list) == 0 {
			return nil, apiError(400, "Field 'topicName' must be a non-empty string or an array of strings.", map[string]string{"field": "topicName"})
		}
		seen := map[string]bool{}
		for _, s := range list {
			if s == "" {
				return nil, apiError(400, "Field 'topicName' contains an empty topic.", map[string]string{"field": "topicName"})
			}
			if !seen[s] {
				seen[s] = true
				r.topics = append(r.topics, s)
			}
		}
	default:
		return nil, apiError(400, "Field 'topicName' must be a non-empty string or an array of strings.", map[string]string{"field": "topicName"})
	}
	num := func(field string, p *float64, def float64) (float64, *engine.Error) {
		if p == nil {
			return def, nil
		}
		v := *p
		if math.IsNaN(v) || math.IsInf(v, 0) || v > 1e12 || v < -1e12 {
			return 0, apiError(400, "Field '"+field+"' is out of range.", map[string]string{"field": field})
		}
		return v, nil
	}
	mt, err := num("maxTasks", wire.MaxTasks, defaultMaxTasks)
	if err != nil {
		return nil, err
	}
	r.max = int(mt) // <= 0: no limit ([L])
	lp, err := num("longPollingTimeout", wire.LongPollingTimeout, defaultLongPollMS)
	if err != nil {
		return nil, err
	}
	if lp < 0 {
		return nil, apiError(400, "Field 'longPollingTimeout' must not be negative.", map[string]string{"field": "longPollingTimeout"})
	}
	r.timeout = time.Duration(lp * float64(time.Millisecond))
	if r.timeout > maxPoll {
		r.timeout = maxPoll
	}
	ld, err := num("lockDuration", wire.LockDuration, defaultLockDuration)
	if err != nil {
		return nil, err
	}
	if ld <= 0 {
		return nil, apiError(400, "Field 'lockDuration' must be greater than 0.", map[string]string{"field": "lockDuration"})
	}
	r.lockDur = time.Duration(ld * float64(time.Millisecond))
	if wire.PayloadFilter != nil && *wire.PayloadFilter != "" {
		re, ferr := compileFilter(*wire.PayloadFilter)
		if ferr != nil {
			return nil, apiError(400, ferr.Error(), map[string]string{"field": "payloadFilter"})
		}
		r.filter = re
	}
	return r, nil
}

func requireWorker(p *string) (string, *engine.Error) {
	if p == nil || *p == "" {
		return "", apiError(400, "Field 'workerId' is required.", map[string]string{"field": "workerId"})
	}
	return *p, nil
}

// decodeExtend validates an extend_lock body.
func decodeExtend(b []byte) (string, time.Duration, *engine.Error) {
	var wire struct {
		WorkerID           *string  `json:"workerId"`
		AdditionalDuration *float64 `json:"additionalDuration"`
	}
	if err := decodeJSON(b, &wire); err != nil {
		return "", 0, err
	}
	w, err := requireWorker(wire.WorkerID)
	if err != nil {
		return "", 0, err
	}
	if wire.AdditionalDuration == nil {
		return "", 0, apiError(400, "Field 'additionalDuration' is required.", map[string]string{"field": "additionalDuration"})
	}
	d := *wire.AdditionalDuration
	if d <= 0 || d > 1e12 {
		return "", 0, apiError(400, "Field 'additionalDuration' must be a positive number of milliseconds.", map[string]string{"field": "additionalDuration"})
	}
	return w, time.Duration(d * float64(time.Millisecond)), nil
}

// decodeFinish validates a finish body.
func decodeFinish(b []byte) (string, json.RawMessage, *engine.Error) {
	var wire struct {
		WorkerID *string         `json:"workerId"`
		Result   json.RawMessage `json:"result"`
	}
	if err := decodeJSON(b, &wire); err != nil {
		return "", nil, err
	}
	w, err := requireWorker(wire.WorkerID)
	if err != nil {
		return "", nil, err
	}
	return w, compactJSON(wire.Result), nil
}

// decodeTaskError validates an error body.
func decodeTaskError(b []byte) (string, engine.ExternalTaskError, *engine.Error) {
	var wire struct {
		WorkerID *string `json:"workerId"`
		Error    *struct {
			ErrorCode    *string         `json:"errorCode"`
			ErrorMessage json.RawMessage `json:"errorMessage"`
			ErrorDetails json.RawMessage `json:"errorDetails"`
		} `json:"error"`
	}
	var te engine.ExternalTaskError
	if err := decodeJSON(b, &wire); err != nil {
		return "", te, err
	}
	w, err := requireWorker(wire.WorkerID)
	if err != nil {
		return "", te, err
	}
	if wire.Error == nil {
		return "", te, apiError(400, "Field 'error' is required.", map[string]string{"field": "error"})
	}
	if wire.Error.ErrorCode == nil || *wire.Error.ErrorCode == "" {
		return "", te, apiError(400, "Field 'error.errorCode' is required.", map[string]string{"field": "error.errorCode"})
	}
	te.ErrorCode = *wire.Error.ErrorCode
	if m := bytes.TrimSpace(wire.Error.ErrorMessage); len(m) > 0 && string(m) != "null" {
		var s string
		if json.Unmarshal(m, &s) == nil {
			te.ErrorMessage = s
		} else {
			te.ErrorMessage = string(m)
		}
	}
	if d := bytes.TrimSpace(wire.Error.ErrorDetails); len(d) > 0 && string(d) != "null" {
		te.ErrorDetails = compactJSON(d)
	}
	return w, te, nil
}

// decodeStart validates a start body; pathID is the path parameter.
func decodeStart(b []byte, pathID string) (engine.ProcessStartRequest, *engine.Error) {
	var req engine.ProcessStartRequest
	if len(bytes.TrimSpace(b)) == 0 {
		b = []byte("{}")
	}
	if err := decodeJSON(b, &req); err != nil {
		return req, err
	}
	if pathID != "" && pathID != ":process_model_id" {
		req.ProcessModelID = pathID
	}
	if req.ProcessModelID == "" {
		return req, apiError(400, "Field 'processModelId' is required.", map[string]string{"field": "processModelId"})
	}
	if t := bytes.TrimSpace(req.InitialToken); string(t) == "null" {
		req.InitialToken = nil
	}
	return req, nil
}

// decodeDeploy validates a process_definitions body.
func decodeDeploy(b []byte) (engine.DeployRequest, *engine.Error) {
	var req engine.DeployRequest
	if err := decodeJSON(b, &req); err != nil {
		return req, err
	}
	if len(req.XML) == 0 {
		return req, apiError(400, "Field 'xml' is required (a string or an array of strings).", map[string]string{"field": "xml"})
	}
	return req, nil
}

// decodeTrigger returns the payload of a message/signal trigger: the body
// itself, or body.payload when the body is an object whose only key is
// "payload" (the Python client's and the OpenAPI file's form).
func decodeTrigger(b []byte) (json.RawMessage, *engine.Error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return nil, nil
	}
	if !json.Valid(b) {
		var v any
		return nil, jsonError(json.Unmarshal(b, &v))
	}
	if b[0] == '{' {
		var m map[string]json.RawMessage
		if json.Unmarshal(b, &m) == nil && len(m) == 1 {
			if p, ok := m["payload"]; ok {
				return compactJSON(p), nil
			}
		}
	}
	return compactJSON(b), nil
}
