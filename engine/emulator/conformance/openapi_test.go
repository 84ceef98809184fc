package conformance

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pe-bridge/pe-bridge/engine/emulator"
	"github.com/pe-bridge/pe-bridge/examples/models"
)

//go:embed testdata/scenario.bpmn
var scenarioBPMN string

const dummyToken = "ZHVtbXlfdG9rZW4="

// newEmulator starts an emulator with the example models behind a recorder on loopback.
func newEmulator(t testing.TB) (*emulator.Emulator, string, *recorder) {
	t.Helper()
	emu, err := emulator.New(emulator.Config{})
	if err != nil {
		t.Fatalf("emulator.New: %v", err)
	}
	if _, err := emu.LoadFS(models.FS); err != nil {
		t.Fatalf("loading models.FS: %v", err)
	}
	srv, rec := newRecordedServer(t, emu)
	t.Cleanup(func() { _ = emu.Close() }) // runs before srv.Close: releases held long polls
	return emu, srv.URL, rec
}

// driver issues labelled requests against the emulator and checks their status.
type driver struct {
	t    *testing.T
	base string
	hc   *http.Client
}

type call struct {
	step    string
	method  string
	path    string // below /atlas_engine/api/v1, with query
	body    any    // marshalled as JSON unless []byte; nil = no body
	want    []int  // acceptable statuses; empty = any (optional route)
	token   *string
	invalid bool // deliberately violates the spec
}

// send runs c without touching the test (safe from any goroutine).
func (d *driver) send(ctx context.Context, c call) (int, []byte, error) {
	var body io.Reader
	switch b := c.body.(type) {
	case nil:
	case []byte:
		body = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return 0, nil, fmt.Errorf("marshalling body: %w", err)
		}
		body = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctx, c.method, d.base+"/atlas_engine/api/v1"+c.path, body)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	tok := dummyToken
	if c.token != nil {
		tok = *c.token
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	req.Header.Set(hdrStep, c.step)
	if c.invalid {
		req.Header.Set(hdrExpectInvalid, "1")
	}
	resp, err := d.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, data, err
}

// do runs c, checks its status and decodes a JSON answer into out (if non-nil). It returns the status.
func (d *driver) do(c call, out any) int {
	d.t.Helper()
	status, data, err := d.send(context.Background(), c)
	if err != nil {
		d.t.Fatalf("%s: %s %s: %v", c.step, c.method, c.path, err)
	}
	if len(c.want) > 0 && !slices.Contains(c.want, status) {
		d.t.Errorf("%s: %s %s: status %d, want %v; body %s", c.step, c.method, c.path, status, c.want, clip(data))
		return status
	}
	if out != nil && status < 300 {
		if err := json.Unmarshal(data, out); err != nil {
			d.t.Errorf("%s: %s %s: decoding %s: %v", c.step, c.method, c.path, clip(data), err)
		}
	}
	return status
}

func (d *driver) start(step, model string, token any, returnOn int) startResp {
	d.t.Helper()
	var r startResp
	d.do(call{step: step, method: "POST", path: "/process_models/" + model + "/start",
		body: map[string]any{"processModelId": model, "initialToken": token, "returnOn": returnOn}, want: []int{200}}, &r)
	if r.ProcessInstanceID == "" {
		d.t.Fatalf("%s: start of %s returned no processInstanceId", step, model)
	}
	return r
}

func (d *driver) instance(step, id string) processInstance {
	d.t.Helper()
	var list struct {
		ProcessInstances []processInstance `json:"processInstances"`
		TotalCount       int               `json:"totalCount"`
	}
	d.do(call{step: step, method: "GET", path: "/process_instances/query?processInstanceId=" + url.QueryEscape(id) +
		"&includeCount=true&includeXml=false", want: []int{200}}, &list)
	if len(list.ProcessInstances) != 1 || list.TotalCount != 1 {
		d.t.Fatalf("%s: query for instance %s returned %d instances (totalCount %d)", step, id, len(list.ProcessInstances), list.TotalCount)
	}
	return list.ProcessInstances[0]
}

// waitInstance polls until the instance reaches state or the deadline passes.
func (d *driver) waitInstance(step, id, state string) processInstance {
	d.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		pi := d.instance(step, id)
		if pi.State == state {
			return pi
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("%s: instance %s is %q, want %q", step, id, pi.State, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitFlowNode polls GET /flow_node_instances until a suspended instance of flowNodeID exists in pid.
func (d *driver) waitFlowNode(step, pid, query, flowNodeID string) flowNodeInstance {
	d.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var list struct {
			FlowNodeInstances []flowNodeInstance `json:"flowNodeInstances"`
			TotalCount        int                `json:"totalCount"`
		}
		d.do(call{step: step, method: "GET", path: "/flow_node_instances?processInstanceId=" + url.QueryEscape(pid) + query +
			"&includeCount=true", want: []int{200}}, &list)
		for _, f := range list.FlowNodeInstances {
			if f.FlowNodeID == flowNodeID && f.State == "suspended" {
				if list.TotalCount < len(list.FlowNodeInstances) {
					d.t.Errorf("%s: totalCount %d < %d returned", step, list.TotalCount, len(list.FlowNodeInstances))
				}
				return f
			}
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("%s: no suspended %s in instance %s: %+v", step, flowNodeID, pid, list.FlowNodeInstances)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// awaitNotification holds GET /notifications/long_polling/<event> while trigger runs, repeatedly until
// the poll answers (the poll's registration cannot be observed, so every trigger must cause a fresh
// event), and returns the message.
func (d *driver) awaitNotification(event string, trigger func()) map[string]any {
	d.t.Helper()
	type res struct {
		status int
		data   []byte
		err    error
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan res, 1)
	go func() {
		st, data, err := d.send(ctx, call{step: "notification " + event, method: "GET", path: "/notifications/long_polling/" + event})
		ch <- res{st, data, err}
	}()
	defer func() {
		cancel()
		<-ch // the poll goroutine never outlives the test
	}()
	deadline := time.After(5 * time.Second)
	for {
		trigger()
		select {
		case r := <-ch:
			ch <- r // for the deferred receive
			if r.err != nil || r.status != 200 {
				d.t.Errorf("notification %s: status %d, err %v, body %s", event, r.status, r.err, clip(r.data))
				return nil
			}
			var m map[string]any
			if err := json.Unmarshal(r.data, &m); err != nil {
				d.t.Errorf("notification %s: %v", event, err)
			}
			return m
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			d.t.Errorf("notification %s: no answer within 5s", event)
			return nil
		}
	}
}

type startResp struct {
	ProcessInstanceID string          `json:"processInstanceId"`
	CorrelationID     string          `json:"correlationId"`
	EndEventID        string          `json:"endEventId"`
	TokenPayload      json.RawMessage `json:"tokenPayload"`
}

type processInstance struct {
	ProcessInstanceID   string          `json:"processInstanceId"`
	ProcessModelID      string          `json:"processModelId"`
	ProcessDefinitionID string          `json:"processDefinitionId"`
	State               string          `json:"state"`
	EndEventID          string          `json:"endEventId"`
	EndToken            json.RawMessage `json:"endToken"`
	OwnerID             string          `json:"ownerId"`
}

type externalTask struct {
	ID                string          `json:"id"`
	WorkerID          string          `json:"workerId"`
	Topic             string          `json:"topic"`
	ProcessInstanceID string          `json:"processInstanceId"`
	Payload           json.RawMessage `json:"payload"`
	LockExpiration    string          `json:"lockExpirationTime"`
}

func (x externalTask) lockExpiry() time.Time {
	ts, _ := time.Parse(time.RFC3339Nano, x.LockExpiration)
	return ts
}

type flowNodeInstance struct {
	FlowNodeInstanceID string `json:"flowNodeInstanceId"`
	FlowNodeID         string `json:"flowNodeId"`
	State              string `json:"state"`
	ActualOwnerID      string `json:"actualOwnerId"`
}

func jsonEq(t *testing.T, what string, got json.RawMessage, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Errorf("%s: %s is not JSON: %v", what, got, err)
		return
	}
	_ = json.Unmarshal([]byte(want), &w)
	gj, _ := json.Marshal(g)
	wj, _ := json.Marshal(w)
	if !bytes.Equal(gj, wj) {
		t.Errorf("%s: got %s, want %s", what, gj, wj)
	}
}

// TestOpenAPI drives the emulator through a scenario touching every route of the engine API and
// validates every request and response against the (fixed) OpenAPI file.
func TestOpenAPI(t *testing.T) {
	t.Parallel()
	v := newValidator(t)
	_, base, rec := newEmulator(t)
	d := &driver{t: t, base: base, hc: &http.Client{Timeout: 20 * time.Second}}

	runScenario(t, d)

	xs := rec.exchanges()
	served := validateAll(t, v, xs)
	t.Logf("validated %d exchanges, %d operations served", len(xs), len(served))

	// Coverage: every operation the emulator must serve (API.md §6 and the official client's flows)
	// was answered with a valid 2xx; the others are listed.
	var missing, optional []string
	for _, op := range specOperations(t) {
		if served[op] {
			continue
		}
		if requiredOps[op] {
			missing = append(missing, op)
		} else {
			optional = append(optional, op)
		}
	}
	for _, op := range missing {
		t.Errorf("operation never served with a valid 2xx answer: %s", op)
	}
	if len(optional) > 0 {
		t.Logf("optional operations not served (not implemented by the emulator or not triggerable): %s", strings.Join(optional, ", "))
	}
}

// requiredOps are the operations the emulator must serve.
var requiredOps = map[string]bool{
	"GET /info":                                                          true,
	"GET /authority":                                                     true,
	"GET /flow_node_instances":                                           true,
	"POST /messages/{eventName}/trigger":                                 true,
	"POST /signals/{eventName}/trigger":                                  true,
	"PUT /user_tasks/{userTaskInstanceId}/finish":                        true,
	"PUT /user_tasks/{userTaskInstanceId}/reserve":                       true,
	"DELETE /user_tasks/{userTaskInstanceId}/cancel-reservation":         true,
	"GET /external_tasks/deployed_topics":                                true,
	"POST /external_tasks/fetch_and_lock":                                true,
	"PUT /external_tasks/{externalTaskId}/extend_lock":                   true,
	"PUT /external_tasks/{externalTaskId}/error":                         true,
	"PUT /external_tasks/{externalTaskId}/finish":                        true,
	"POST /process_definitions":                                          true,
	"GET /process_models":                                                true,
	"GET /process_models/{processModelId}/":                              true,
	"POST /process_models/{processModelId}/start":                        true,
	"GET /process_instances/query":                                       true,
	"PUT /process_instances/{processInstanceId}/terminate":               true,
	"GET /notifications/long_polling/process_started":                    true,
	"GET /notifications/long_polling/process_ended":                      true,
	"GET /notifications/long_polling/process_terminated":                 true,
	"GET /notifications/long_polling/external_task_created":              true,
	"GET /notifications/long_polling/external_task_locked":               true,
	"GET /notifications/long_polling/user_task_waiting":                  true,
	"GET /notifications/long_polling/user_task_finished":                 true,
	"GET /notifications/long_polling/message_triggered":                  true,
	"GET /notifications/long_polling/signal_triggered":                   true,
	"GET /notifications/long_polling/process_deployed":                   true,
	"GET /notifications/long_polling/process_error":                      true,
	"GET /notifications/long_polling/start_event_finished":               true,
	"GET /notifications/long_polling/end_event_finished":                 true,
	"GET /notifications/long_polling/activity_reached":                   true,
	"GET /notifications/long_polling/activity_finished":                  true,
	"GET /notifications/long_polling/activity_canceled":                  true,
	"GET /notifications/long_polling/intermediate_throw_event_triggered": true,
	"GET /notifications/long_polling/intermediate_catch_event_reached":   true,
	"GET /notifications/long_polling/intermediate_catch_event_finished":  true,
	"GET /notifications/long_polling/boundary_event_triggered":           true,
	"GET /notifications/long_polling/user_task_reserved":                 true,
	"GET /notifications/long_polling/user_task_reservation_canceled":     true,
	"GET /notifications/long_polling/external_task_unlocked":             true,
	"GET /notifications/long_polling/external_task_expired":              true,
}

func specOperations(t *testing.T) []string {
	doc := loadSpec(t)
	var ops []string
	for p, item := range doc.Paths.Map() {
		for m := range item.Operations() {
			ops = append(ops, m+" "+p)
		}
	}
	sort.Strings(ops)
	return ops
}

func runScenario(t *testing.T, d *driver) {
	// --- application info ---
	d.do(call{step: "info", method: "GET", path: "/info", want: []int{200}}, nil)
	var authority string
	d.do(call{step: "authority", method: "GET", path: "/authority", want: []int{200}}, &authority)
	if !strings.HasPrefix(authority, "http") {
		t.Errorf("GET /authority = %q, want a URL string", authority)
	}

	// --- authentication ---
	none, bad := "", "not-a-valid-token"
	d.do(call{step: "no token", method: "GET", path: "/process_models", token: &none, invalid: true, want: []int{401}}, nil)
	d.do(call{step: "authority without token", method: "GET", path: "/authority", token: &none, invalid: true, want: []int{200}}, nil)
	d.do(call{step: "bad token", method: "GET", path: "/process_models", token: &bad, want: []int{401}}, nil)

	// --- deployment ---
	d.awaitNotification("process_deployed", func() {
		d.do(call{step: "deploy scenario (xml string)", method: "POST", path: "/process_definitions",
			body: map[string]any{"xml": scenarioBPMN, "overwriteExisting": true}, want: []int{201}}, nil)
	})
	temp := strings.NewReplacer("conf_direct", "conf_temp", "Definitions_conformance_scenario", "Definitions_conf_temp").Replace(scenarioBPMN)
	temp = keepProcess(temp, "conf_temp")
	temp2 := strings.NewReplacer("conf_temp", "conf_temp2", "Definitions_conf_temp", "Definitions_conf_temp2").Replace(temp)
	d.do(call{step: "deploy temp (xml array)", method: "POST", path: "/process_definitions",
		body: map[string]any{"xml": []string{temp, temp2}, "overwriteExisting": true}, want: []int{201}}, nil)
	d.do(call{step: "deploy without xml", method: "POST", path: "/process_definitions",
		body: map[string]any{"overwriteExisting": true}, invalid: true, want: []int{400}}, nil)
	d.do(call{step: "deploy broken xml", method: "POST", path: "/process_definitions",
		body: map[string]any{"xml": "<bpmn:definitions"}, want: []int{400, 422}}, nil)

	d.do(call{step: "process definitions", method: "GET", path: "/process_definitions?includeXml=false&includeCount=true"}, nil)
	d.do(call{step: "process definition", method: "GET", path: "/process_definitions/Definitions_conformance_scenario?includeXml=true"}, nil)
	d.do(call{step: "unknown process definition", method: "GET", path: "/process_definitions/nope", want: []int{404}}, nil)

	var models struct {
		ProcessModels []struct {
			ProcessModelID string `json:"processModelId"`
		} `json:"processModels"`
		TotalCount int `json:"totalCount"`
	}
	d.do(call{step: "process models", method: "GET", path: "/process_models?includeCount=true", want: []int{200}}, &models)
	var ids []string
	for _, m := range models.ProcessModels {
		ids = append(ids, m.ProcessModelID)
	}
	for _, want := range []string{"hello_world", "approval", "conf_external", "conf_user", "conf_message", "conf_signal", "conf_direct", "conf_single", "conf_throw", "conf_error_end", "conf_temp", "conf_temp2"} {
		if !slices.Contains(ids, want) {
			t.Errorf("GET /process_models lacks %s: %v", want, ids)
		}
	}
	if models.TotalCount != len(models.ProcessModels) {
		t.Errorf("GET /process_models totalCount %d, %d listed", models.TotalCount, len(models.ProcessModels))
	}
	d.do(call{step: "process models paged", method: "GET", path: "/process_models?offset=1&limit=2&includeCount=true", want: []int{200}}, nil)
	d.do(call{step: "process model", method: "GET", path: "/process_models/conf_external/", want: []int{200}}, nil)
	d.do(call{step: "unknown process model", method: "GET", path: "/process_models/nope/", want: []int{404}}, nil)
	d.do(call{step: "process model definition", method: "GET", path: "/process_models/conf_external/process_definition"}, nil)
	d.do(call{step: "disable", method: "POST", path: "/process_models/conf_direct/disable"}, nil)
	d.do(call{step: "enable", method: "POST", path: "/process_models/conf_direct/enable"}, nil)
	var topics []string
	d.do(call{step: "deployed topics", method: "GET", path: "/external_tasks/deployed_topics", want: []int{200}}, &topics)
	for _, want := range []string{"conf_topic", "SampleExternalTask"} {
		if !slices.Contains(topics, want) {
			t.Errorf("deployed_topics lacks %s: %v", want, topics)
		}
	}

	// --- start variants and process notifications ---
	var direct startResp
	msg := d.awaitNotification("process_started", func() { direct = d.start("start returnOn 1", "conf_direct", map[string]any{"x": 1}, 1) })
	if msg != nil && msg["processModelId"] != "conf_direct" {
		t.Errorf("process_started message for %v, want conf_direct", msg["processModelId"])
	}
	d.awaitNotification("process_ended", func() { direct = d.start("start returnOn 1", "conf_direct", map[string]any{"x": 1}, 1) })
	d.awaitNotification("start_event_finished", func() { d.start("start returnOn 1", "conf_direct", map[string]any{"x": 1}, 1) })
	d.awaitNotification("end_event_finished", func() { d.start("start returnOn 1", "conf_direct", map[string]any{"x": 1}, 1) })
	r2 := d.start("start returnOn 2", "conf_direct", map[string]any{"x": 2}, 2)
	if r2.EndEventID != "conf_direct_end" {
		t.Errorf("returnOn 2: endEventId %q, want conf_direct_end", r2.EndEventID)
	}
	jsonEq(t, "returnOn 2 tokenPayload", r2.TokenPayload, `{"x":2}`)
	var r3 startResp
	d.do(call{step: "start returnOn 3 (literal :process_model_id)", method: "POST", path: "/process_models/:process_model_id/start",
		body: map[string]any{"processModelId": "conf_direct", "initialToken": map[string]any{"x": 3}, "returnOn": 3,
			"endEventId": "conf_direct_end", "correlationId": "conf-corr"}, want: []int{200}}, &r3)
	if r3.EndEventID != "conf_direct_end" || r3.CorrelationID != "conf-corr" {
		t.Errorf("returnOn 3: %+v", r3)
	}
	// API.md §1.4: an instance ending at an error end event answers a waiting start with an error whose
	// additionalInformation.bpmnError carries the BPMN error.
	var bpmnErrBody struct {
		AdditionalInformation struct {
			BpmnError struct {
				Name, Code, Message string
			} `json:"bpmnError"`
		} `json:"additionalInformation"`
	}
	st, data, err := d.send(context.Background(), call{step: "start returnOn 2 (error end event)", method: "POST", path: "/process_models/conf_error_end/start",
		body: map[string]any{"processModelId": "conf_error_end", "returnOn": 2}})
	switch {
	case err != nil:
		t.Errorf("start of conf_error_end: %v", err)
	case st < 400:
		t.Errorf("start returnOn 2 of an instance ending at an error end event: status %d, want an error; body %s", st, clip(data))
	default:
		_ = json.Unmarshal(data, &bpmnErrBody)
		if be := bpmnErrBody.AdditionalInformation.BpmnError; be.Code != "conf_code" || be.Name != "ConformanceError" {
			t.Errorf("error end event: additionalInformation.bpmnError = %+v, want code conf_code, name ConformanceError; body %s", be, clip(data))
		}
	}
	d.do(call{step: "start unknown model", method: "POST", path: "/process_models/nope/start",
		body: map[string]any{"processModelId": "nope", "returnOn": 1}, want: []int{404}}, nil)
	d.do(call{step: "start without body", method: "POST", path: "/process_models/conf_direct/start", invalid: true}, nil)
	_ = direct

	// --- external tasks: lock, extend, finish ---
	var pidOK string
	d.awaitNotification("external_task_created", func() {
		pidOK = d.start("start external", "conf_external", map[string]any{"order": 1}, 1).ProcessInstanceID
	})
	var tasks []externalTask
	fetch := func(step string, body map[string]any) []externalTask {
		var ts []externalTask
		d.do(call{step: step, method: "POST", path: "/external_tasks/fetch_and_lock", body: body, want: []int{200}}, &ts)
		return ts
	}
	first := true
	lockMsg := d.awaitNotification("external_task_locked", func() {
		if !first { // every trigger must lock a fresh task
			d.start("start external (lock)", "conf_external", map[string]any{"order": 0}, 1)
		}
		first = false
		fetchedAt := time.Now()
		ts := fetch("fetch_and_lock (string topic)", map[string]any{
			"workerId": "w1", "topicName": "conf_topic", "maxTasks": 100, "longPollingTimeout": 1000, "lockDuration": 10000})
		for _, tk := range ts {
			if until := tk.lockExpiry().Sub(fetchedAt); until < 9*time.Second || until > 11*time.Second {
				t.Errorf("task %s: lockExpirationTime %s is %s after the fetch, want ~lockDuration 10s", tk.ID, tk.LockExpiration, until)
			}
		}
		tasks = append(tasks, ts...)
	})
	if lockMsg != nil && lockMsg["workerId"] != "w1" {
		t.Errorf("external_task_locked workerId = %v", lockMsg["workerId"])
	}
	var mine *externalTask
	for i := range tasks {
		if tasks[i].WorkerID != "w1" || tasks[i].Topic != "conf_topic" {
			t.Errorf("locked task %+v: wrong worker/topic", tasks[i])
		}
		if tasks[i].ProcessInstanceID == pidOK {
			mine = &tasks[i]
		}
	}
	if mine == nil {
		t.Fatalf("fetch_and_lock did not return the task of instance %s: %+v", pidOK, tasks)
	}
	jsonEq(t, "external task payload", mine.Payload, `{"order":1}`)
	tid := url.PathEscape(mine.ID)
	d.do(call{step: "extend_lock", method: "PUT", path: "/external_tasks/" + tid + "/extend_lock",
		body: map[string]any{"workerId": "w1", "additionalDuration": 5000}, want: []int{204}}, nil)
	d.do(call{step: "extend_lock by another worker", method: "PUT", path: "/external_tasks/" + tid + "/extend_lock",
		body: map[string]any{"workerId": "w2", "additionalDuration": 5000}, want: []int{423}}, nil)
	d.do(call{step: "finish by another worker", method: "PUT", path: "/external_tasks/" + tid + "/finish",
		body: map[string]any{"workerId": "w2", "result": map[string]any{}}, want: []int{423}}, nil)
	d.do(call{step: "extend_lock without workerId", method: "PUT", path: "/external_tasks/" + tid + "/extend_lock",
		body: map[string]any{"additionalDuration": 5000}, invalid: true, want: []int{400}}, nil)
	d.do(call{step: "finish", method: "PUT", path: "/external_tasks/" + tid + "/finish",
		body: map[string]any{"workerId": "w1", "result": map[string]any{"ok": true}}, want: []int{204}}, nil)
	d.do(call{step: "finish twice", method: "PUT", path: "/external_tasks/" + tid + "/finish",
		body: map[string]any{"workerId": "w1", "result": map[string]any{"ok": true}}, want: []int{409}}, nil)
	d.do(call{step: "extend_lock finished", method: "PUT", path: "/external_tasks/" + tid + "/extend_lock",
		body: map[string]any{"workerId": "w1", "additionalDuration": 5000}, want: []int{409}}, nil)
	d.do(call{step: "extend_lock unknown", method: "PUT", path: "/external_tasks/nope/extend_lock",
		body: map[string]any{"workerId": "w1", "additionalDuration": 5000}, want: []int{404}}, nil)
	pi := d.waitInstance("finished after finish", pidOK, "finished")
	jsonEq(t, "end token after finish", pi.EndToken, `{"ok":true}`)
	if pi.EndEventID != "conf_external_end" {
		t.Errorf("endEventId %q, want conf_external_end", pi.EndEventID)
	}
	// Finish the other tasks the notification triggers created, so nothing is left locked.
	for _, tk := range tasks {
		if tk.ID != mine.ID {
			d.do(call{step: "finish extra", method: "PUT", path: "/external_tasks/" + url.PathEscape(tk.ID) + "/finish",
				body: map[string]any{"workerId": "w1", "result": map[string]any{"extra": true}}, want: []int{204}}, nil)
		}
	}

	// --- external tasks: BPMN error caught by the boundary event ---
	pidErr := d.start("start external (error)", "conf_external", map[string]any{"order": 2}, 1).ProcessInstanceID
	errTasks := fetch("fetch_and_lock (topic array + payloadFilter)", map[string]any{
		"workerId": "w3", "topicName": []string{"conf_topic", "conf_other"}, "maxTasks": 1, "longPollingTimeout": 1000,
		"lockDuration": 10000, "payloadFilter": `/"order":2/`})
	if len(errTasks) != 1 || errTasks[0].ProcessInstanceID != pidErr {
		t.Fatalf("fetch_and_lock with payloadFilter: got %+v, want the task of %s", errTasks, pidErr)
	}
	d.do(call{step: "error", method: "PUT", path: "/external_tasks/" + url.PathEscape(errTasks[0].ID) + "/error",
		body: map[string]any{"workerId": "w3", "error": map[string]any{"errorCode": "conf_code", "errorMessage": "boom",
			"errorDetails": "Error: boom\n    at handler (worker.js:1:1)"}}, want: []int{204}}, nil)
	pe := d.waitInstance("finished via boundary", pidErr, "finished")
	if pe.EndEventID != "conf_external_error_end" {
		t.Errorf("after /error with a matching errorCode: endEventId %q, want conf_external_error_end", pe.EndEventID)
	}
	d.do(call{step: "error without error", method: "PUT", path: "/external_tasks/" + url.PathEscape(errTasks[0].ID) + "/error",
		body: map[string]any{"workerId": "w3"}, invalid: true, want: []int{400, 409}}, nil)
	held := time.Now()
	empty := fetch("fetch_and_lock (nothing available)", map[string]any{
		"workerId": "w4", "topicName": "conf_nothing", "maxTasks": 1, "longPollingTimeout": 300, "lockDuration": 1000})
	if el := time.Since(held); len(empty) != 0 || el < 250*time.Millisecond || el > 3*time.Second {
		t.Errorf("fetch_and_lock on an empty topic with longPollingTimeout 300: %+v after %s, want [] after ~300ms", empty, el)
	}
	// A held fetch wakes up when a task for its topic is created.
	woke := make(chan []externalTask, 1)
	heldAt := time.Now()
	go func() {
		var ts []externalTask
		st, data, err := d.send(context.Background(), call{step: "fetch_and_lock (held, woken)", method: "POST", path: "/external_tasks/fetch_and_lock",
			body: map[string]any{"workerId": "w9", "topicName": "conf_wake", "maxTasks": 5, "longPollingTimeout": 8000, "lockDuration": 10000}})
		if err == nil && st == 200 {
			_ = json.Unmarshal(data, &ts)
		}
		woke <- ts
	}()
	wakeDef := `<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:camunda="http://camunda.org/schema/1.0/bpmn" id="Definitions_conf_wake">
  <bpmn:process id="conf_wake_model" isExecutable="true">
    <bpmn:startEvent id="w_start"><bpmn:outgoing>w_f1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:sequenceFlow id="w_f1" sourceRef="w_start" targetRef="w_task" />
    <bpmn:serviceTask id="w_task" camunda:type="external" camunda:topic="conf_wake"><bpmn:incoming>w_f1</bpmn:incoming><bpmn:outgoing>w_f2</bpmn:outgoing></bpmn:serviceTask>
    <bpmn:sequenceFlow id="w_f2" sourceRef="w_task" targetRef="w_end" />
    <bpmn:endEvent id="w_end"><bpmn:incoming>w_f2</bpmn:incoming></bpmn:endEvent>
  </bpmn:process>
</bpmn:definitions>`
	d.do(call{step: "deploy wake model", method: "POST", path: "/process_definitions", body: map[string]any{"xml": wakeDef, "overwriteExisting": true}, want: []int{201}}, nil)
	wakePID := d.start("start wake", "conf_wake_model", map[string]any{"wake": true}, 1).ProcessInstanceID
	select {
	case ts := <-woke:
		if len(ts) != 1 || ts[0].ProcessInstanceID != wakePID {
			t.Errorf("held fetch_and_lock woke with %+v, want the task of %s", ts, wakePID)
		}
		if el := time.Since(heldAt); el > 4*time.Second {
			t.Errorf("held fetch_and_lock answered after %s: not woken by the new task", el)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("held fetch_and_lock never answered")
	}
	// maxTasks caps a batch; the rest stays available.
	for i := 0; i < 3; i++ {
		d.start("start wake (maxTasks)", "conf_wake_model", map[string]any{"i": i}, 1)
	}
	wakeFetch := map[string]any{"workerId": "w9", "topicName": "conf_wake", "maxTasks": 2, "longPollingTimeout": 1000, "lockDuration": 10000}
	if b1, b2 := fetch("fetch_and_lock (maxTasks 2 of 3)", wakeFetch), fetch("fetch_and_lock (the remaining 1)", wakeFetch); len(b1) != 2 || len(b2) != 1 {
		t.Errorf("three tasks fetched with maxTasks 2: batches of %d and %d, want 2 and 1", len(b1), len(b2))
	}
	d.do(call{step: "fetch_and_lock without workerId", method: "POST", path: "/external_tasks/fetch_and_lock",
		body:    map[string]any{"topicName": "conf_topic", "maxTasks": 1, "longPollingTimeout": 100, "lockDuration": 1000},
		invalid: true, want: []int{400}}, nil)

	// --- user tasks ---
	var pidUser string
	d.awaitNotification("user_task_waiting", func() {
		pidUser = d.start("start user", "conf_user", map[string]any{"amount": 7}, 1).ProcessInstanceID
	})
	ut := d.waitFlowNode("user task query", pidUser, "&state=suspended&flowNodeType=bpmn%3AUserTask", "conf_user_task")
	uid := url.PathEscape(ut.FlowNodeInstanceID)
	d.do(call{step: "user task query with list", method: "GET", path: "/flow_node_instances?state=running,suspended&flowNodeType=bpmn%3AUserTask&processModelId=conf_user&includeCount=true", want: []int{200}}, nil)
	d.do(call{step: "reserve", method: "PUT", path: "/user_tasks/" + uid + "/reserve", body: map[string]any{"actualOwnerId": "u1"}, want: []int{204}}, nil)
	if got := d.waitFlowNode("reserved", pidUser, "&flowNodeType=bpmn%3AUserTask", "conf_user_task"); got.ActualOwnerID != "u1" {
		t.Errorf("actualOwnerId after reserve = %q, want u1", got.ActualOwnerID)
	}
	d.do(call{step: "reserve without owner", method: "PUT", path: "/user_tasks/" + uid + "/reserve", body: map[string]any{}, invalid: true, want: []int{400}}, nil)
	d.do(call{step: "cancel reservation", method: "DELETE", path: "/user_tasks/" + uid + "/cancel-reservation", want: []int{204}}, nil)
	if got := d.waitFlowNode("unreserved", pidUser, "&flowNodeType=bpmn%3AUserTask", "conf_user_task"); got.ActualOwnerID != "" {
		t.Errorf("actualOwnerId after cancel-reservation = %q, want none", got.ActualOwnerID)
	}
	d.do(call{step: "finish user task", method: "PUT", path: "/user_tasks/" + uid + "/finish",
		body: map[string]any{"approved": true, "comment": "fine"}, want: []int{204}}, nil)
	pu := d.waitInstance("user instance finished", pidUser, "finished")
	jsonEq(t, "user task end token", pu.EndToken, `{"approved":true,"comment":"fine"}`)
	d.awaitNotification("user_task_finished", func() {
		p := d.start("start user (notification)", "conf_user", map[string]any{}, 1).ProcessInstanceID
		f := d.waitFlowNode("user task (notification)", p, "&flowNodeType=bpmn%3AUserTask", "conf_user_task")
		d.do(call{step: "finish user task (notification)", method: "PUT", path: "/user_tasks/" + url.PathEscape(f.FlowNodeInstanceID) + "/finish",
			body: map[string]any{"approved": false}, want: []int{204}}, nil)
	})
	d.awaitNotification("user_task_reserved", func() {
		d.do(call{step: "reserve (notification)", method: "PUT", path: "/user_tasks/" + uid2(d, "conf_user") + "/reserve",
			body: map[string]any{"actualOwnerId": "u9"}, want: []int{204}}, nil)
	})
	d.do(call{step: "finish user task twice", method: "PUT", path: "/user_tasks/" + uid + "/finish", body: map[string]any{}, want: []int{409}}, nil)
	d.do(call{step: "reserve unknown", method: "PUT", path: "/user_tasks/nope/reserve", body: map[string]any{"actualOwnerId": "u1"}, want: []int{404}}, nil)

	// --- messages and signals ---
	pidMsg := d.start("start message", "conf_message", map[string]any{"m": 0}, 1).ProcessInstanceID
	d.waitFlowNode("message catch waiting", pidMsg, "", "conf_message_catch")
	d.do(call{step: "trigger message (client spelling)", method: "POST",
		path: "/messages/conf_message/trigger?process_instance_id=" + url.QueryEscape(pidMsg), body: map[string]any{"m": 1}, want: []int{204}}, nil)
	d.waitInstance("message instance finished", pidMsg, "finished")
	d.awaitNotification("message_triggered", func() {
		p := d.start("start message (notification)", "conf_message", map[string]any{}, 1).ProcessInstanceID
		d.waitFlowNode("message catch waiting (notification)", p, "", "conf_message_catch")
		d.do(call{step: "trigger message (notification)", method: "POST",
			path: "/messages/conf_message/trigger?process_instance_id=" + url.QueryEscape(p), body: map[string]any{"m": 1}, want: []int{204}}, nil)
	})
	pidMsg2 := d.start("start message 2", "conf_message", map[string]any{"m": 0}, 1).ProcessInstanceID
	d.waitFlowNode("message catch waiting 2", pidMsg2, "", "conf_message_catch")
	d.do(call{step: "trigger message (spec spelling, PY body)", method: "POST",
		path: "/messages/conf_message/trigger?processInstanceId=" + url.QueryEscape(pidMsg2), body: map[string]any{"payload": map[string]any{"m": 2}}, want: []int{204}}, nil)
	d.waitInstance("message instance 2 finished", pidMsg2, "finished")
	d.do(call{step: "trigger message without body", method: "POST", path: "/messages/conf_nobody_listens/trigger", want: []int{204}}, nil)

	pidSig := d.start("start signal", "conf_signal", map[string]any{"s": 0}, 1).ProcessInstanceID
	d.waitFlowNode("signal catch waiting", pidSig, "", "conf_signal_catch")
	d.do(call{step: "trigger signal", method: "POST", path: "/signals/conf_signal/trigger", body: map[string]any{"s": 1}, want: []int{204}}, nil)
	d.waitInstance("signal instance finished", pidSig, "finished")
	d.awaitNotification("signal_triggered", func() {
		p := d.start("start signal (notification)", "conf_signal", map[string]any{}, 1).ProcessInstanceID
		d.waitFlowNode("signal catch waiting (notification)", p, "", "conf_signal_catch")
		d.do(call{step: "trigger signal (notification)", method: "POST", path: "/signals/conf_signal/trigger?process_instance_id=" + url.QueryEscape(p),
			body: map[string]any{"s": 1}, want: []int{204}}, nil)
	})
	d.do(call{step: "events query", method: "GET", path: "/flow_node_instances?eventType=messageEvent,signalEvent,timerEvent&includeCount=true", want: []int{200}}, nil)

	// --- process instances ---
	d.do(call{step: "instances by state", method: "GET", path: "/process_instances/query?state=finished&processModelId=conf_direct&offset=1&limit=2&includeCount=true&includeXml=false", want: []int{200}}, nil)
	d.do(call{step: "instances by ids", method: "GET", path: "/process_instances/query?processInstanceId=" + url.QueryEscape(pidOK) + "," + url.QueryEscape(pidErr) + "&includeCount=true", want: []int{200}}, nil)
	d.do(call{step: "instance process model", method: "GET", path: "/process_instances/" + url.PathEscape(pidOK) + "/process_model"}, nil)
	d.do(call{step: "instance process definition", method: "GET", path: "/process_instances/" + url.PathEscape(pidOK) + "/process_definition"}, nil)
	var pidTerm string
	d.awaitNotification("process_terminated", func() {
		pidTerm = d.start("start to terminate", "conf_user", map[string]any{}, 1).ProcessInstanceID
		d.do(call{step: "terminate", method: "PUT", path: "/process_instances/" + url.PathEscape(pidTerm) + "/terminate", body: map[string]any{}, want: []int{204}}, nil)
	})
	d.waitInstance("terminated", pidTerm, "terminated")
	d.do(call{step: "terminate unknown", method: "PUT", path: "/process_instances/nope/terminate", body: map[string]any{}, want: []int{404}}, nil)
	d.do(call{step: "change owner", method: "POST", path: "/process_instances/" + url.PathEscape(pidOK) + "/change_owner", body: map[string]any{"newOwner": map[string]any{"token": dummyToken, "userId": "u2"}}}, nil)

	// Instances in state error (no boundary matches the errorCode) can be retried.
	var pidFail string
	d.awaitNotification("process_error", func() {
		pidFail = d.start("start external (unmatched error)", "conf_external", map[string]any{"order": 3}, 1).ProcessInstanceID
		for _, tk := range fetch("fetch_and_lock (for unmatched error)", map[string]any{
			"workerId": "w5", "topicName": "conf_topic", "maxTasks": 10, "longPollingTimeout": 1000, "lockDuration": 10000}) {
			d.do(call{step: "error (unmatched)", method: "PUT", path: "/external_tasks/" + url.PathEscape(tk.ID) + "/error",
				body: map[string]any{"workerId": "w5", "error": map[string]any{"errorCode": "nobody_catches_this"}}, want: []int{204}}, nil)
		}
	})
	d.waitInstance("error state", pidFail, "error")
	d.do(call{step: "retry", method: "PUT", path: "/process_instances/" + url.PathEscape(pidFail) + "/retry",
		body: map[string]any{"newStartToken": map[string]any{"order": 4}}}, nil)

	// --- the remaining notifications the emulator emits; every trigger causes a fresh event ---
	d.awaitNotification("activity_reached", func() { d.start("start (activity_reached)", "conf_user", map[string]any{}, 1) })
	d.awaitNotification("activity_finished", func() {
		d.do(call{step: "finish user task (activity_finished)", method: "PUT", path: "/user_tasks/" + uid2(d, "conf_user") + "/finish",
			body: map[string]any{"approved": true}, want: []int{204}}, nil)
	})
	d.awaitNotification("intermediate_throw_event_triggered", func() { d.start("start throw", "conf_throw", map[string]any{}, 1) })
	d.awaitNotification("intermediate_catch_event_reached", func() { d.start("start catch", "conf_message", map[string]any{}, 1) })
	d.awaitNotification("intermediate_catch_event_finished", func() {
		p := d.start("start catch (finish)", "conf_message", map[string]any{}, 1).ProcessInstanceID
		d.waitFlowNode("catch waiting (finish)", p, "", "conf_message_catch")
		d.do(call{step: "trigger message (catch finished)", method: "POST", path: "/messages/conf_message/trigger?process_instance_id=" + url.QueryEscape(p),
			body: map[string]any{}, want: []int{204}}, nil)
	})
	d.awaitNotification("activity_canceled", func() {
		p := d.start("start to cancel", "conf_user", map[string]any{}, 1).ProcessInstanceID
		d.waitFlowNode("user task to cancel", p, "&flowNodeType=bpmn%3AUserTask", "conf_user_task")
		d.do(call{step: "terminate (activity canceled)", method: "PUT", path: "/process_instances/" + url.PathEscape(p) + "/terminate", body: map[string]any{}, want: []int{204}}, nil)
	})
	d.awaitNotification("boundary_event_triggered", func() {
		d.start("start external (boundary)", "conf_external", map[string]any{"order": 9}, 1)
		for _, tk := range fetch("fetch_and_lock (boundary)", map[string]any{
			"workerId": "w6", "topicName": "conf_topic", "maxTasks": 10, "longPollingTimeout": 1000, "lockDuration": 10000}) {
			d.do(call{step: "error (boundary)", method: "PUT", path: "/external_tasks/" + url.PathEscape(tk.ID) + "/error",
				body: map[string]any{"workerId": "w6", "error": map[string]any{"errorCode": "conf_code"}}, want: []int{204}}, nil)
		}
	})
	d.awaitNotification("user_task_reservation_canceled", func() {
		u := uid2(d, "conf_user")
		d.do(call{step: "reserve (cancel notification)", method: "PUT", path: "/user_tasks/" + u + "/reserve", body: map[string]any{"actualOwnerId": "u8"}, want: []int{204}}, nil)
		d.do(call{step: "cancel reservation (notification)", method: "DELETE", path: "/user_tasks/" + u + "/cancel-reservation", want: []int{204}}, nil)
	})
	unlocked := d.awaitNotification("external_task_unlocked", func() {
		d.start("start external (unlock)", "conf_external", map[string]any{"order": 10}, 1)
		fetch("fetch_and_lock (short lock)", map[string]any{
			"workerId": "w7", "topicName": "conf_topic", "maxTasks": 1, "longPollingTimeout": 1000, "lockDuration": 30})
	})
	if id, _ := unlocked["externalTaskId"].(string); id != "" {
		// API.md §3.3/§6: after its own lock expired, and nobody re-locked the task, a worker may still finish it.
		d.do(call{step: "late finish after lock expiry", method: "PUT", path: "/external_tasks/" + url.PathEscape(id) + "/finish",
			body: map[string]any{"workerId": "w7", "result": map[string]any{"late": true}}, want: []int{204}}, nil)
	} else if unlocked != nil {
		t.Errorf("external_task_unlocked message without externalTaskId: %v", unlocked)
	}
	expired := d.awaitNotification("external_task_expired", func() {
		d.start("start single-try", "conf_single", map[string]any{}, 1)
		fetch("fetch_and_lock (single-try, short lock)", map[string]any{
			"workerId": "w8", "topicName": "conf_single_topic", "maxTasks": 1, "longPollingTimeout": 1000, "lockDuration": 30})
	})
	if id, _ := expired["externalTaskId"].(string); id != "" {
		// API.md §3.2: an expired single-try task is gone (409) and its instance fails.
		d.do(call{step: "finish after single-try expiry", method: "PUT", path: "/external_tasks/" + url.PathEscape(id) + "/finish",
			body: map[string]any{"workerId": "w8", "result": map[string]any{}}, want: []int{409}}, nil)
		if pid, _ := expired["processInstanceId"].(string); pid != "" {
			d.waitInstance("single-try instance fails", pid, "error")
		}
		if expired["isSingleTry"] != true {
			t.Errorf("external_task_expired isSingleTry = %v", expired["isSingleTry"])
		}
	} else if expired != nil {
		t.Errorf("external_task_expired message without externalTaskId: %v", expired)
	}

	d.do(call{step: "delete instances", method: "DELETE", path: "/process_instances?process_instance_ids=" + url.QueryEscape(pidMsg) + ";" + url.QueryEscape(pidMsg2) + "&delete_all_related_data=true"}, nil)
	d.do(call{step: "deleted instances are gone", method: "GET", path: "/process_instances/query?processInstanceId=" + url.QueryEscape(pidMsg) + "&includeCount=true", want: []int{200}}, nil)

	// --- deletions of models and definitions ---
	d.do(call{step: "delete process model", method: "DELETE", path: "/process_models/conf_temp?delete_all_related_data=true"}, nil)
	d.do(call{step: "delete process definition", method: "DELETE", path: "/process_definitions/Definitions_conf_temp2"}, nil)

	// --- routes of the engine API that the emulator may or may not serve ---
	for _, c := range []call{
		{step: "correlations", method: "GET", path: "/correlations"},
		{step: "correlation", method: "GET", path: "/correlations/conf-corr"},
		{step: "cronjob enable", method: "POST", path: "/cronjobs/process_models/conf_direct/flow_node/conf_direct_start/enable"},
		{step: "cronjob disable", method: "POST", path: "/cronjobs/process_models/conf_direct/flow_node/conf_direct_start/disable"},
		{step: "data objects", method: "GET", path: "/data_object_instances/query"},
		{step: "empty activity", method: "PUT", path: "/empty_activities/nope/finish", body: map[string]any{}},
		{step: "untyped task", method: "PUT", path: "/untyped_tasks/nope/finish", body: map[string]any{}},
		{step: "manual task", method: "PUT", path: "/manual_tasks/nope/finish", body: map[string]any{}},
	} {
		d.do(c, nil)
	}
}

// keepProcess returns the BPMN document with only the process whose id is id (and no message,
// signal or error definitions).
func keepProcess(doc, id string) string {
	var out strings.Builder
	rest := doc
	for {
		i := strings.Index(rest, "<bpmn:process ")
		if i < 0 {
			break
		}
		j := strings.Index(rest[i:], "</bpmn:process>")
		if j < 0 {
			break
		}
		block := rest[i : i+j+len("</bpmn:process>")]
		out.WriteString(rest[:i])
		if strings.Contains(block, fmt.Sprintf(`id="%s"`, id)) {
			out.WriteString(block)
		}
		rest = rest[i+j+len("</bpmn:process>"):]
	}
	out.WriteString(rest)
	s := out.String()
	var kept []string
	for _, line := range strings.Split(s, "\n") {
		l := strings.TrimSpace(line)
		if strings.HasPrefix(l, "<bpmn:message ") || strings.HasPrefix(l, "<bpmn:signal ") || strings.HasPrefix(l, "<bpmn:error ") {
			continue
		}
		kept = append(kept, line)
	}
	return strings.Join(kept, "\n")
}

// uid2 returns the flowNodeInstanceId of a fresh suspended user task of model.
func uid2(d *driver, model string) string {
	p := d.start("start user ("+model+")", model, map[string]any{}, 1).ProcessInstanceID
	return url.PathEscape(d.waitFlowNode("user task ("+model+")", p, "&flowNodeType=bpmn%3AUserTask", "conf_user_task").FlowNodeInstanceID)
}
