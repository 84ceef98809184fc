package emulator

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/pe-bridge/pe-bridge/engine"
)

func TestAuth(t *testing.T) {
	verify := func(tok string) (Identity, error) {
		switch tok {
		case "etw":
			return Identity{UserID: "worker", Scopes: []string{ScopeETW}}, nil
		case "reader":
			return Identity{UserID: "reader", Scopes: []string{ScopeRead}}, nil
		case "observer":
			return Identity{UserID: "obs", Scopes: []string{ScopeObserver}}, nil
		case "writer":
			return Identity{UserID: "writer", Scopes: []string{ScopeWrite, ScopeRead}}, nil
		case "old":
			return Identity{}, errors.New("token expired")
		}
		return Identity{}, errors.New("unknown token")
	}
	h := newHarness(t, Config{Verify: verify})
	auth := func(v string) map[string]string { return map[string]string{"Authorization": v} }

	t.Run("missing header is 401", func(t *testing.T) {
		st, b := h.raw("GET", "/process_models", nil, auth(""))
		checkError(t, 401, st, b)
	})
	t.Run("not bearer is 401", func(t *testing.T) {
		st, b := h.raw("GET", "/process_models", nil, auth("Basic abc"))
		checkError(t, 401, st, b)
	})
	t.Run("invalid token is 401", func(t *testing.T) {
		st, b := h.raw("GET", "/process_models", nil, auth("Bearer nope"))
		be := checkError(t, 401, st, b)
		if be.ErrorClassName != "UnauthorizedError" {
			t.Fatalf("class %s", be.ErrorClassName)
		}
	})
	t.Run("expired token message says expired", func(t *testing.T) {
		st, b := h.raw("GET", "/process_models", nil, auth("Bearer old"))
		be := checkError(t, 401, st, b)
		if !strings.Contains(be.Message, "expired") {
			t.Fatalf("message %q", be.Message)
		}
	})
	t.Run("dummy token has every scope", func(t *testing.T) {
		st, _ := h.raw("GET", "/process_models", nil, auth("Bearer "+engine.DummyToken))
		if st != 200 {
			t.Fatalf("status %d", st)
		}
	})
	t.Run("scopes", func(t *testing.T) {
		cases := []struct {
			tok, method, path string
			body              string
			want              int
		}{
			{"etw", "POST", "/external_tasks/fetch_and_lock", `{"workerId":"w","topicName":"x","longPollingTimeout":0}`, 200},
			{"etw", "GET", "/external_tasks/deployed_topics", "", 200},
			{"reader", "POST", "/external_tasks/fetch_and_lock", `{"workerId":"w","topicName":"x","longPollingTimeout":0}`, 403},
			{"etw", "GET", "/process_models", "", 403},
			{"reader", "GET", "/process_models", "", 200},
			{"reader", "POST", "/process_models/hello_world/start", `{}`, 403},
			{"writer", "POST", "/process_models/hello_world/start", `{}`, 200},
			{"etw", "GET", "/info", "", 200},
			{"etw", "GET", "/authority", "", 200},
			{"etw", "GET", "/notifications/long_polling/process_started", "", 403},
			{"reader", "GET", "/process_instances/query", "", 200},
			{"reader", "PUT", "/process_instances/x/terminate", `{}`, 403},
		}
		for _, c := range cases {
			st, b := h.raw(c.method, c.path, []byte(c.body), auth("Bearer "+c.tok))
			if st != c.want {
				t.Errorf("%s %s %s: status %d, want %d (%s)", c.tok, c.method, c.path, st, c.want, b)
			}
			if c.want == 403 {
				if be := checkError(t, 403, st, b); be.ErrorClassName != "ForbiddenError" {
					t.Errorf("class %s", be.ErrorClassName)
				}
			}
		}
	})
	t.Run("started instance is owned by the token user", func(t *testing.T) {
		st, b := h.raw("POST", "/process_models/hello_world/start", []byte(`{}`), auth("Bearer writer"))
		if st != 200 {
			t.Fatalf("status %d %s", st, b)
		}
		var resp engine.ProcessStartResponse
		_ = json.Unmarshal(b, &resp)
		if pi := h.instance(resp.ProcessInstanceID); pi.OwnerID != "writer" || pi.StartedByRootAccess {
			t.Fatalf("owner %q root %v", pi.OwnerID, pi.StartedByRootAccess)
		}
	})
}

func TestDenyAnonymous(t *testing.T) {
	h := newHarness(t, Config{DenyAnonymous: true, Verify: func(string) (Identity, error) { return Identity{}, errors.New("no") }})
	h.wantError(401, "GET", "/process_models", nil)
	// Authority discovery works before a client has a token, as the official
	// client needs (it asks with the dummy token).
	for _, path := range []string{"/authority", "/info"} {
		for _, hdr := range []string{"", "Bearer " + engine.DummyToken, "Bearer nope"} {
			if st, b := h.raw("GET", path, nil, map[string]string{"Authorization": hdr}); st != 200 {
				t.Errorf("GET %s with %q: status %d (%s)", path, hdr, st, b)
			}
		}
	}
	if _, err := New(Config{DenyAnonymous: true}); err == nil {
		t.Fatal("DenyAnonymous without Verify must be rejected")
	}
}

func TestAuthorityAndInfo(t *testing.T) {
	h := newHarness(t, Config{AuthorityURL: "http://auth.example:11560/"})
	var s string
	h.must(200, "GET", "/authority", nil, &s)
	if s != "http://auth.example:11560/" {
		t.Fatalf("authority %q", s)
	}
	var info engine.ApplicationInfo
	h.must(200, "GET", "/info", nil, &info)
	if info.AuthorityURL != s || !info.AllowAnonymousRootAccess || info.Name == "" || info.PackageName != "@5minds/processcube_engine" {
		t.Fatalf("info %+v", info)
	}
	def := newHarness(t, Config{})
	def.must(200, "GET", "/authority", nil, &s)
	if s != "http://localhost:11560/" {
		t.Fatalf("default authority %q", s)
	}
}

func TestRoutingErrors(t *testing.T) {
	h := newHarness(t, Config{})
	h.wantError(404, "GET", "/nope", nil)
	h.wantError(404, "GET", "/external_tasks/x/y/z", nil)
	st, b := h.raw("GET", "/../../etc", nil, nil)
	checkError(t, 404, st, b)
	be := h.wantError(405, "GET", "/external_tasks/fetch_and_lock", nil)
	if be.ErrorClassName != "MethodNotAllowedError" {
		t.Fatalf("class %s", be.ErrorClassName)
	}
	// GET / answers without a token (healthchecks); other paths outside the base path are 404.
	root, err := h.srv.Client().Get(h.srv.URL + "/")
	if err != nil || root.StatusCode != 200 {
		t.Fatalf("GET /: %v %v", root, err)
	}
	root.Body.Close()
	req, _ := h.srv.Client().Get(h.srv.URL + "/other")
	if req.StatusCode != 404 {
		t.Fatalf("status %d", req.StatusCode)
	}
	req.Body.Close()
}

func TestBadInput(t *testing.T) {
	h := newHarness(t, Config{MaxBodyBytes: 1024})
	fl := "/external_tasks/fetch_and_lock"
	h.wantError(400, "POST", fl, `{"workerId":`)
	h.wantError(400, "POST", fl, `[]`)
	h.wantError(400, "POST", fl, ``)
	h.wantError(400, "POST", fl, `{"topicName":"x"}`)
	h.wantError(400, "POST", fl, `{"workerId":"w"}`)
	h.wantError(400, "POST", fl, `{"workerId":"w","topicName":[]}`)
	h.wantError(400, "POST", fl, `{"workerId":"w","topicName":5}`)
	h.wantError(400, "POST", fl, `{"workerId":"w","topicName":"x","lockDuration":0}`)
	h.wantError(400, "POST", fl, `{"workerId":"w","topicName":"x","longPollingTimeout":-1}`)
	h.wantError(400, "POST", fl, `{"workerId":"w","topicName":"x","payloadFilter":"/(/"}`)
	be := h.wantError(400, "POST", fl, `{"workerId":"w","topicName":"x","maxTasks":"ten"}`)
	if !strings.Contains(be.Message, "maxTasks") {
		t.Fatalf("message %q does not name the field", be.Message)
	}
	be = h.wantError(400, "PUT", "/external_tasks/x/extend_lock", `{"workerId":"w","additionalDuration":"soon"}`)
	if !strings.Contains(be.Message, "additionalDuration") {
		t.Fatalf("message %q does not name the field", be.Message)
	}
	h.wantError(400, "PUT", "/external_tasks/x/extend_lock", `{"workerId":"w"}`)
	h.wantError(400, "PUT", "/external_tasks/x/finish", `{"result":{}}`)
	h.wantError(400, "PUT", "/external_tasks/x/error", `{"workerId":"w"}`)
	h.wantError(400, "PUT", "/external_tasks/x/error", `{"workerId":"w","error":{"errorMessage":"m"}}`)
	be = h.wantError(400, "POST", "/process_models/hello_world/start", `{"returnOn":"now"}`)
	if !strings.Contains(be.Message, "returnOn") {
		t.Fatalf("message %q does not name the field", be.Message)
	}
	h.wantError(400, "POST", "/process_models/hello_world/start", `{"returnOn":7}`)
	h.wantError(400, "POST", "/process_models/hello_world/start", `{"returnOn":3}`)
	h.wantError(400, "GET", "/process_instances/query?limit=x", nil)
	h.wantError(400, "PUT", "/user_tasks/x/reserve", `{}`)
	h.wantError(400, "PUT", "/user_tasks/x/finish", `[1,2]`)
	h.wantError(400, "POST", "/messages/m/trigger", `{"a":`)
	h.wantError(400, "POST", "/process_definitions", `{"xml":5}`)
	h.wantError(400, "POST", "/process_definitions", `{}`)
	big := `{"workerId":"w","topicName":"` + strings.Repeat("x", 2000) + `"}`
	be = h.wantError(413, "POST", fl, big)
	if be.ErrorClassName != engine.ClassForStatus(413) {
		t.Fatalf("class %s", be.ErrorClassName)
	}
	// Chunked body without Content-Length is cut by MaxBytesReader.
	st, b := h.raw("PUT", "/user_tasks/x/finish", []byte(`{"a":"`+strings.Repeat("y", 2000)+`"}`), map[string]string{"Authorization": "Bearer " + engine.DummyToken, "Transfer-Encoding": "chunked"})
	if st != 413 && st != 400 {
		t.Fatalf("chunked oversize: %d %s", st, b)
	}
}

func TestDeploy(t *testing.T) {
	h := newHarness(t, Config{})
	xml, err := os.ReadFile("../../examples/models/hello_world.bpmn")
	if err != nil {
		t.Fatal(err)
	}
	renamed := strings.ReplaceAll(string(xml), `id="hello_world"`, `id="hello_again"`)
	renamed = strings.ReplaceAll(renamed, `processRef="hello_world"`, `processRef="hello_again"`)
	renamed = strings.ReplaceAll(renamed, `SampleExternalTask`, `AgainTopic`)
	st, b := h.do("POST", "/process_definitions", map[string]any{"xml": renamed, "overwriteExisting": true})
	if st != 201 {
		t.Fatalf("deploy: %d %s", st, b)
	}
	var pm engine.ProcessModel
	h.must(200, "GET", "/process_models/hello_again", nil, &pm)
	h.must(200, "GET", "/process_models/hello_again/", nil, &pm)
	if pm.ProcessModelID != "hello_again" || len(pm.StartEvents) != 1 || pm.StartEvents[0].ID != "the_start_event" || len(pm.FlowNodes) != 3 {
		t.Fatalf("model %+v", pm)
	}
	var topics []string
	h.must(200, "GET", "/external_tasks/deployed_topics", nil, &topics)
	if !slicesContain(topics, "AgainTopic") || !slicesContain(topics, "SampleExternalTask") {
		t.Fatalf("topics %v", topics)
	}
	h.wantError(409, "POST", "/process_definitions", map[string]any{"xml": []string{renamed}, "overwriteExisting": false})
	bad := strings.Replace(renamed, `targetRef="the_end_event"`, `targetRef="nowhere"`, 1)
	be := h.wantError(400, "POST", "/process_definitions", map[string]any{"xml": bad, "overwriteExisting": true})
	if !strings.Contains(be.Message, "Flow_task_to_end") || !strings.Contains(be.Message, "nowhere") {
		t.Fatalf("message %q does not name the element and reason", be.Message)
	}
	h.wantError(400, "POST", "/process_definitions", map[string]any{"xml": "<not-bpmn/>"})
	h.wantError(404, "GET", "/process_models/missing", nil)
	var list engine.ProcessModelList
	h.must(200, "GET", "/process_models?includeCount=true", nil, &list)
	if list.TotalCount != len(list.ProcessModels) || list.TotalCount < 10 {
		t.Fatalf("list total %d len %d", list.TotalCount, len(list.ProcessModels))
	}
	h.must(200, "GET", "/process_models?offset=1&limit=2", nil, &list)
	if len(list.ProcessModels) != 2 {
		t.Fatalf("paged len %d", len(list.ProcessModels))
	}
	ids, err := h.e.Deploy([]byte(renamed))
	if err != nil || len(ids) != 1 || ids[0] != "hello_again" {
		t.Fatalf("Deploy %v %v", ids, err)
	}
}

func slicesContain(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
