package conformance

import (
	"net/http"
	"strings"
	"testing"
)

// TestValidatorCatchesMismatches proves the validation has teeth: known-wrong exchanges must be
// reported, a known-good one must pass.
func TestValidatorCatchesMismatches(t *testing.T) {
	t.Parallel()
	v := newValidator(t)
	auth := http.Header{"Authorization": {"Bearer " + dummyToken}, "Content-Type": {"application/json"}}
	jsonHdr := http.Header{"Content-Type": {"application/json"}}
	task := `{"id":"t1","workerId":"w","topic":"x","isSingleTry":false,"flowNodeInstanceId":"f","correlationId":"c",` +
		`"processDefinitionId":"d","processInstanceId":"p","ownerId":"o","payload":{},"lockExpirationTime":"2026-01-01T00:00:00Z","state":"pending"}`
	fetchBody := `{"workerId":"w","topicName":"x","maxTasks":1,"longPollingTimeout":10,"lockDuration":10}`
	cases := []struct {
		name    string
		x       exchange
		wantBad string // substring of a reported problem; "" = must pass
	}{
		{"good fetch_and_lock", exchange{method: "POST", target: "/atlas_engine/api/v1/external_tasks/fetch_and_lock", reqHeader: auth,
			reqBody: []byte(fetchBody), status: 200, respHeader: jsonHdr, respBody: []byte("[" + task + "]")}, ""},
		{"fetch_and_lock answering 204 as documented", exchange{method: "POST", target: "/atlas_engine/api/v1/external_tasks/fetch_and_lock", reqHeader: auth,
			reqBody: []byte(fetchBody), status: 204, respHeader: http.Header{}}, "response invalid"},
		{"external task without id", exchange{method: "POST", target: "/atlas_engine/api/v1/external_tasks/fetch_and_lock", reqHeader: auth,
			reqBody: []byte(fetchBody), status: 200, respHeader: jsonHdr, respBody: []byte("[" + strings.Replace(task, `"id":"t1",`, "", 1) + "]")}, "response invalid"},
		{"error body with the documented bpmnError property", exchange{method: "PUT", target: "/atlas_engine/api/v1/external_tasks/t1/error", reqHeader: auth,
			reqBody: []byte(`{"workerId":"w","bpmnError":{"errorCode":"x"}}`), status: 204, respHeader: http.Header{}}, "request invalid"},
		{"missing bearer token", exchange{method: "GET", target: "/atlas_engine/api/v1/info", reqHeader: jsonHdr, status: 401,
			respHeader: jsonHdr, respBody: []byte(`{"errorClassName":"UnauthorizedError","code":401,"message":"no","callStack":"","fatal":false,"errorType":"Error","isEngineError":true,"name":"UnauthorizedError"}`)}, "request invalid"},
		{"error code differs from status", exchange{method: "PUT", target: "/atlas_engine/api/v1/external_tasks/t1/finish", reqHeader: auth,
			reqBody: []byte(`{"workerId":"w","result":{}}`), status: 409, respHeader: jsonHdr,
			respBody: []byte(`{"errorClassName":"GoneError","code":410,"message":"gone","callStack":"","fatal":false,"errorType":"Error","isEngineError":true,"name":"GoneError"}`)}, "!= HTTP status"},
		{"error body not a BaseError", exchange{method: "PUT", target: "/atlas_engine/api/v1/external_tasks/t1/finish", reqHeader: auth,
			reqBody: []byte(`{"workerId":"w","result":{}}`), status: 404, respHeader: jsonHdr, respBody: []byte(`{"error":"not found"}`)}, "lacks errorClassName"},
		{"204 with a body", exchange{method: "PUT", target: "/atlas_engine/api/v1/external_tasks/t1/finish", reqHeader: auth,
			reqBody: []byte(`{"workerId":"w","result":{}}`), status: 204, respHeader: jsonHdr, respBody: []byte(`{}`)}, "204 with a body"},
		{"start with returnOn 4", exchange{method: "POST", target: "/atlas_engine/api/v1/process_models/m/start", reqHeader: auth,
			reqBody: []byte(`{"processModelId":"m","returnOn":4}`), status: 200, respHeader: jsonHdr,
			respBody: []byte(`{"processInstanceId":"p","correlationId":"c"}`)}, "request invalid"},
		{"good start with returnOn 2", exchange{method: "POST", target: "/atlas_engine/api/v1/process_models/m/start", reqHeader: auth,
			reqBody: []byte(`{"processModelId":"m","returnOn":2}`), status: 200, respHeader: jsonHdr,
			respBody: []byte(`{"processInstanceId":"p","correlationId":"c","endEventId":"e","tokenPayload":{}}`)}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			vd := v.check(&c.x)
			all := strings.Join(vd.problems, "\n")
			switch {
			case c.wantBad == "" && len(vd.problems) > 0:
				t.Errorf("valid exchange reported: %s", all)
			case c.wantBad != "" && !strings.Contains(all, c.wantBad):
				t.Errorf("want a problem containing %q, got %q", c.wantBad, all)
			}
		})
	}
}
