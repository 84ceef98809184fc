package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/oauth2"
)

type seen struct {
	method, path, query string
	header              http.Header
	body                []byte
}

// stubEngine records the last request and answers with respond.
type stubEngine struct {
	mu      sync.Mutex
	last    seen
	respond func(w http.ResponseWriter, r *http.Request)
}

func (s *stubEngine) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.last = seen{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Clone(), b}
	respond := s.respond
	s.mu.Unlock()
	if respond == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	respond(w, r)
}

func (s *stubEngine) get() seen {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

func (s *stubEngine) set(f func(w http.ResponseWriter, r *http.Request)) {
	s.mu.Lock()
	s.respond = f
	s.mu.Unlock()
}

func newStub(t *testing.T, cfg ClientConfig) (*Client, *stubEngine) {
	t.Helper()
	st := &stubEngine{}
	srv := httptest.NewServer(st)
	t.Cleanup(srv.Close)
	c, err := NewClient(srv.URL+"/", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, st
}

func jsonAnswer(status int, body string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

func TestNewClientValidatesURL(t *testing.T) {
	for _, u := range []string{"", "localhost:8000", "ftp://x", "http://", "http://u:p@host", "http://h/?q=1", "::"} {
		if _, err := NewClient(u, ClientConfig{}); err == nil {
			t.Errorf("NewClient(%q): no error", u)
		} else if strings.Contains(err.Error(), ":p@") {
			t.Errorf("NewClient(%q): error leaks password: %v", u, err)
		}
	}
	if _, err := NewClient("http://h", ClientConfig{RequestTimeout: -1}); err == nil {
		t.Error("negative timeout accepted")
	}
	c, err := NewClient("http://engine:8000/", ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if want := "http://engine:8000/atlas_engine/api/v1"; c.base != want {
		t.Errorf("base = %q, want %q", c.base, want)
	}
	for i := 0; i < 2; i++ {
		if err := c.Close(); err != nil {
			t.Errorf("Close #%d: %v (not idempotent)", i+1, err)
		}
	}
}

// TestRequests checks method, escaped path, query string and body of every call.
func TestRequests(t *testing.T) {
	ctx := t.Context()
	c, st := newStub(t, ClientConfig{UserAgent: "ua-test"})
	res := json.RawMessage(`{"a":1}`)
	tests := []struct {
		name                string
		call                func() error
		method, path, query string
		body                string // "" = no check; "-" = empty
	}{
		{"deployed topics", func() error { _, err := c.DeployedTopics(ctx); return err },
			"GET", "/atlas_engine/api/v1/external_tasks/deployed_topics", "", "-"},
		{"fetch and lock one topic", func() error {
			_, err := c.FetchAndLock(ctx, FetchAndLockRequest{WorkerID: "w", Topics: []string{"t1"}, MaxTasks: 5,
				LongPollingTimeout: 2 * time.Second, LockDuration: 30 * time.Second})
			return err
		}, "POST", "/atlas_engine/api/v1/external_tasks/fetch_and_lock", "",
			`{"workerId":"w","topicName":"t1","maxTasks":5,"longPollingTimeout":2000,"lockDuration":30000}`},
		{"fetch and lock topics", func() error {
			_, err := c.FetchAndLock(ctx, FetchAndLockRequest{WorkerID: "w", Topics: []string{"a", "b"}, MaxTasks: 1, PayloadFilter: "/x/i"})
			return err
		}, "POST", "/atlas_engine/api/v1/external_tasks/fetch_and_lock", "",
			`{"workerId":"w","topicName":["a","b"],"maxTasks":1,"longPollingTimeout":0,"lockDuration":0,"payloadFilter":"/x/i"}`},
		{"extend lock", func() error { return c.ExtendLock(ctx, "t/1 ?", "w", 1500*time.Millisecond) },
			"PUT", "/atlas_engine/api/v1/external_tasks/t%2F1%20%3F/extend_lock", "", `{"workerId":"w","additionalDuration":1500}`},
		{"finish", func() error { return c.FinishTask(ctx, "t1", "w", res) },
			"PUT", "/atlas_engine/api/v1/external_tasks/t1/finish", "", `{"workerId":"w","result":{"a":1}}`},
		{"finish without result", func() error { return c.FinishTask(ctx, "t1", "w", nil) },
			"PUT", "/atlas_engine/api/v1/external_tasks/t1/finish", "", `{"workerId":"w"}`},
		{"error", func() error {
			return c.HandleError(ctx, "t1", "w", ExternalTaskError{ErrorCode: "E1", ErrorMessage: "m", ErrorDetails: res})
		}, "PUT", "/atlas_engine/api/v1/external_tasks/t1/error", "",
			`{"workerId":"w","error":{"errorCode":"E1","errorMessage":"m","errorDetails":{"a":1}}}`},
		{"process models", func() error { _, err := c.ProcessModels(ctx, 0, 0); return err },
			"GET", "/atlas_engine/api/v1/process_models", "includeCount=true", "-"},
		{"process models paged", func() error { _, err := c.ProcessModels(ctx, 10, 5); return err },
			"GET", "/atlas_engine/api/v1/process_models", "offset=10&limit=5&includeCount=true", "-"},
		{"process model", func() error { _, err := c.ProcessModel(ctx, "m 1"); return err },
			"GET", "/atlas_engine/api/v1/process_models/m%201/", "", "-"},
		{"start", func() error {
			_, err := c.StartProcess(ctx, ProcessStartRequest{ProcessModelID: "m1", StartEventID: "s", InitialToken: res, ReturnOn: ReturnOnCreated})
			return err
		}, "POST", "/atlas_engine/api/v1/process_models/m1/start", "",
			`{"processModelId":"m1","startEventId":"s","initialToken":{"a":1},"returnOn":1}`},
		{"query instances", func() error {
			_, err := c.QueryProcessInstances(ctx, ProcessInstanceQuery{ProcessModelID: []string{"m1"}, State: []string{"running", "error"}, Limit: 3})
			return err
		}, "GET", "/atlas_engine/api/v1/process_instances/query", "processModelId=m1&state=running,error&limit=3&includeCount=true", "-"},
		{"terminate", func() error { return c.TerminateProcessInstance(ctx, "pi1") },
			"PUT", "/atlas_engine/api/v1/process_instances/pi1/terminate", "", `{}`},
		{"flow nodes", func() error {
			_, err := c.QueryFlowNodeInstances(ctx, FlowNodeInstanceQuery{ProcessInstanceID: []string{"p,1", "p2"}, FlowNodeID: []string{"n"}})
			return err
		}, "GET", "/atlas_engine/api/v1/flow_node_instances", "flowNodeId=n&processInstanceId=p%2C1,p2&includeCount=true", "-"},
		{"user tasks", func() error {
			_, err := c.UserTasks(ctx, FlowNodeInstanceQuery{ProcessInstanceID: []string{"pi1"}, State: []string{"suspended"}, FlowNodeType: []string{"x"}})
			return err
		}, "GET", "/atlas_engine/api/v1/flow_node_instances", "processInstanceId=pi1&state=suspended&flowNodeType=bpmn%3AUserTask&includeCount=true", "-"},
		{"reserve", func() error { return c.ReserveUserTask(ctx, "u1", "me") },
			"PUT", "/atlas_engine/api/v1/user_tasks/u1/reserve", "", `{"actualOwnerId":"me"}`},
		{"cancel reservation", func() error { return c.CancelUserTaskReservation(ctx, "u1") },
			"DELETE", "/atlas_engine/api/v1/user_tasks/u1/cancel-reservation", "", "-"},
		{"finish user task", func() error { return c.FinishUserTask(ctx, "u1", res) },
			"PUT", "/atlas_engine/api/v1/user_tasks/u1/finish", "", `{"a":1}`},
		{"finish user task empty", func() error { return c.FinishUserTask(ctx, "u1", nil) },
			"PUT", "/atlas_engine/api/v1/user_tasks/u1/finish", "", `{}`},
		{"message", func() error { return c.TriggerMessage(ctx, "my msg", res, "pi 1") },
			"POST", "/atlas_engine/api/v1/messages/my%20msg/trigger", "process_instance_id=pi%201", `{"a":1}`},
		{"signal", func() error { return c.TriggerSignal(ctx, "sig", nil, "") },
			"POST", "/atlas_engine/api/v1/signals/sig/trigger", "", `{}`},
		{"deploy", func() error { return c.Deploy(ctx, DeployRequest{XML: []string{"<x/>"}, OverwriteExisting: true}) },
			"POST", "/atlas_engine/api/v1/process_definitions", "", `{"xml":"<x/>","overwriteExisting":true}`},
		{"notification", func() error {
			_, err := c.WaitForNotification(ctx, "user_task_waiting")
			if errors.Is(err, ErrNoNotification) {
				return nil
			}
			return err
		},
			"GET", "/atlas_engine/api/v1/notifications/long_polling/user_task_waiting", "", "-"},
		{"info", func() error { _, err := c.Info(ctx); return err },
			"GET", "/atlas_engine/api/v1/info", "", "-"},
		{"authority", func() error { _, err := c.Authority(ctx); return err },
			"GET", "/atlas_engine/api/v1/authority", "", "-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); err != nil {
				t.Fatalf("call: %v", err)
			}
			got := st.get()
			if got.method != tt.method || got.path != tt.path || got.query != tt.query {
				t.Errorf("got %s %s ?%s, want %s %s ?%s", got.method, got.path, got.query, tt.method, tt.path, tt.query)
			}
			switch tt.body {
			case "":
			case "-":
				if len(got.body) != 0 {
					t.Errorf("body = %s, want none", got.body)
				}
			default:
				if !jsonEqual(got.body, []byte(tt.body)) {
					t.Errorf("body = %s\nwant   %s", got.body, tt.body)
				}
			}
			if a := got.header.Get("Authorization"); a != "Bearer "+DummyToken {
				t.Errorf("Authorization = %q", a)
			}
			if ct := got.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			if ua := got.header.Get("User-Agent"); ua != "ua-test" {
				t.Errorf("User-Agent = %q", ua)
			}
		})
	}
}

// jsonEqual compares two JSON texts by value (key order and escaping aside).
func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return bytes.Equal(xb, yb)
}

func TestInvalidArguments(t *testing.T) {
	ctx := t.Context()
	c, st := newStub(t, ClientConfig{})
	st.set(func(w http.ResponseWriter, r *http.Request) { t.Errorf("unexpected request %s %s", r.Method, r.URL) })
	for name, err := range map[string]error{
		"fetch no topic":  func() error { _, err := c.FetchAndLock(ctx, FetchAndLockRequest{WorkerID: "w"}); return err }(),
		"start no model":  func() error { _, err := c.StartProcess(ctx, ProcessStartRequest{}); return err }(),
		"bad json result": c.FinishUserTask(ctx, "u", json.RawMessage(`{`)),
		"bad json finish": c.FinishTask(ctx, "t", "w", json.RawMessage(`nope`)),
		"empty message":   c.TriggerMessage(ctx, "", nil, ""),
		"deploy nothing":  c.Deploy(ctx, DeployRequest{}),
		"no event":        func() error { _, err := c.WaitForNotification(ctx, ""); return err }(),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestDecodesAnswers(t *testing.T) {
	ctx := t.Context()
	c, st := newStub(t, ClientConfig{})

	st.set(jsonAnswer(200, `[{"id":"t1","workerId":"w","topic":"a","isSingleTry":true,"payload":{"x":[1,2]},
		"lockExpirationTime":"2026-11-21T12:00:30.000Z","state":"pending","processInstanceId":"pi"}]`))
	tasks, err := c.FetchAndLock(ctx, FetchAndLockRequest{WorkerID: "w", Topics: []string{"a"}})
	if err != nil || len(tasks) != 1 || tasks[0].ID != "t1" || !tasks[0].IsSingleTry || string(tasks[0].Payload) != `{"x":[1,2]}` ||
		!tasks[0].LockExpirationTime.Equal(time.Date(2026, 11, 21, 12, 0, 30, 0, time.UTC)) {
		t.Fatalf("FetchAndLock = %+v, %v", tasks, err)
	}
	st.set(jsonAnswer(200, `[]`))
	if tasks, err = c.FetchAndLock(ctx, FetchAndLockRequest{WorkerID: "w", Topics: []string{"a"}}); err != nil || tasks == nil || len(tasks) != 0 {
		t.Fatalf("empty FetchAndLock = %#v, %v", tasks, err)
	}
	st.set(jsonAnswer(200, `"http://localhost:11560/"`))
	if a, err := c.Authority(ctx); err != nil || a != "http://localhost:11560/" {
		t.Fatalf("Authority = %q, %v", a, err)
	}
	st.set(jsonAnswer(200, `{"processInstanceId":"pi","correlationId":"c","endEventId":"e","tokenPayload":{"k":"v"}}`))
	if r, err := c.StartProcess(ctx, ProcessStartRequest{ProcessModelID: "m", ReturnOn: ReturnOnFinished}); err != nil ||
		r.ProcessInstanceID != "pi" || r.EndEventID != "e" || string(r.TokenPayload) != `{"k":"v"}` {
		t.Fatalf("StartProcess = %+v, %v", r, err)
	}
	st.set(jsonAnswer(200, `{"flowNodeInstances":[{"flowNodeInstanceId":"u1","flowNodeType":"bpmn:UserTask","state":"suspended",
		"userTaskConfig":{"formFields":[{"id":"f","type":"string"}]}}],"totalCount":1}`))
	if l, err := c.UserTasks(ctx, FlowNodeInstanceQuery{}); err != nil || l.TotalCount != 1 || l.FlowNodeInstances[0].UserTaskConfig.FormFields[0].ID != "f" {
		t.Fatalf("UserTasks = %+v, %v", l, err)
	}
	st.set(jsonAnswer(200, `{"name":"5Minds Engine","packageName":"@5minds/processcube_engine","allowAnonymousRootAccess":true}`))
	if i, err := c.Info(ctx); err != nil || i.Name != "5Minds Engine" || !i.AllowAnonymousRootAccess {
		t.Fatalf("Info = %+v, %v", i, err)
	}
	st.set(jsonAnswer(201, `{"whatever":true}`))
	if err := c.Deploy(ctx, DeployRequest{XML: []string{"<a/>", "<b/>"}}); err != nil {
		t.Fatal(err)
	}
	if b := st.get().body; !jsonEqual(b, []byte(`{"xml":["<a/>","<b/>"],"overwriteExisting":false}`)) {
		t.Errorf("deploy body %s", b)
	}
	st.set(jsonAnswer(200, `{not json`))
	if _, err := c.Info(ctx); err == nil || IsTemporary(err) || !strings.Contains(err.Error(), "GET /info") {
		t.Errorf("bad JSON: %v", err)
	}
}

func TestErrorStatuses(t *testing.T) {
	ctx := t.Context()
	c, st := newStub(t, ClientConfig{})
	tests := []struct {
		status   int
		sentinel error
		temp     bool
	}{
		{400, ErrBadRequest, false}, {401, ErrUnauthorized, false}, {403, ErrForbidden, false},
		{404, ErrNotFound, false}, {409, ErrGone, false}, {410, ErrGone, false}, {423, ErrLockLost, false},
		{429, nil, true}, {500, nil, true}, {502, nil, true}, {503, nil, true},
	}
	for _, tt := range tests {
		be := NewBaseError(tt.status, "boom "+http.StatusText(tt.status), map[string]string{"externalTaskId": "t/1"})
		b, _ := json.Marshal(be)
		st.set(jsonAnswer(tt.status, string(b)))
		err := c.FinishTask(ctx, "t/1", "w", nil)
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("%d: %T %v, want *Error", tt.status, err, err)
		}
		if e.Status != tt.status || e.Op != "PUT /external_tasks/{id}/finish" || e.Body.ErrorClassName != ClassForStatus(tt.status) ||
			e.Body.Message != be.Message || string(e.Body.AdditionalInformation) != `{"externalTaskId":"t/1"}` {
			t.Errorf("%d: %+v", tt.status, e)
		}
		if tt.sentinel != nil && !errors.Is(err, tt.sentinel) {
			t.Errorf("%d: not %v", tt.status, tt.sentinel)
		}
		if IsTemporary(err) != tt.temp {
			t.Errorf("%d: IsTemporary = %v", tt.status, !tt.temp)
		}
		if !strings.HasPrefix(err.Error(), "engine: PUT /external_tasks/{id}/finish: ") {
			t.Errorf("%d: message %q", tt.status, err)
		}
	}
}

func TestNonEngineErrorBody(t *testing.T) {
	ctx := t.Context()
	const secret = "s3cr3t-bearer-token-value"
	c, st := newStub(t, ClientConfig{TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: secret})})
	html := "<html>bad gateway; you sent Authorization: Bearer " + secret + strings.Repeat("x", 4000) + "</html>"
	st.set(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(502)
		_, _ = io.WriteString(w, html)
	})
	err := c.ExtendLock(ctx, "t", "w", time.Second)
	var e *Error
	if !errors.As(err, &e) || e.Status != 502 || e.Body.ErrorClassName != "BadGatewayError" || e.Body.Code != 502 {
		t.Fatalf("err = %#v", err)
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("error leaks the token: %v", err)
	}
	if !strings.HasPrefix(e.Body.Message, "<html>bad gateway") || len(e.Body.Message) > maxRawMessage+10 {
		t.Errorf("message = %q (len %d)", e.Body.Message, len(e.Body.Message))
	}
	if !IsTemporary(err) {
		t.Error("502 not temporary")
	}
	st.set(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(404) })
	if err := c.ExtendLock(ctx, "t", "w", time.Second); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "no message") {
		t.Errorf("empty 404: %v", err)
	}
}

func TestDroppedConnection(t *testing.T) {
	c, st := newStub(t, ClientConfig{})
	st.set(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	})
	err := c.FinishTask(t.Context(), "t", "w", nil)
	var te *TransportError
	if !errors.As(err, &te) || !IsTemporary(err) || te.Op != "PUT /external_tasks/{id}/finish" {
		t.Fatalf("err = %T %v", err, err)
	}
	if strings.Contains(err.Error(), DummyToken) {
		t.Errorf("leaks token: %v", err)
	}
}

func TestConnectionRefused(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	u := srv.URL
	srv.Close()
	c, err := NewClient(u, ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Info(t.Context())
	var te *TransportError
	if !errors.As(err, &te) || !IsTemporary(err) {
		t.Fatalf("err = %T %v", err, err)
	}
}

func TestCallerCancel(t *testing.T) {
	c, st := newStub(t, ClientConfig{})
	entered := make(chan struct{})
	st.set(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done()
	})
	ctx, cancel := context.WithCancel(t.Context())
	go func() { <-entered; cancel() }()
	_, err := c.FetchAndLock(ctx, FetchAndLockRequest{WorkerID: "w", Topics: []string{"a"}, LongPollingTimeout: time.Hour})
	var te *TransportError
	if !errors.Is(err, context.Canceled) || errors.As(err, &te) || IsTemporary(err) {
		t.Fatalf("err = %T %v", err, err)
	}
}

// memClient returns a client whose requests go to h in memory (for synctest).
func memClient(t *testing.T, h http.Handler, cfg ClientConfig) *Client {
	t.Helper()
	cfg.HTTPClient = &http.Client{Transport: HandlerTransport{"engine.test": h}}
	c, err := NewClient("http://engine.test", cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// sleepThen answers after d unless the request is cancelled first.
func sleepThen(d time.Duration, status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
		jsonAnswer(status, body)(w, r)
	}
}

func TestTimeouts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		// Plain call: bounded by RequestTimeout, reported as a temporary transport error.
		c := memClient(t, sleepThen(time.Hour, 200, `{}`), ClientConfig{RequestTimeout: 2 * time.Second})
		start := time.Now()
		_, err := c.Info(ctx)
		var te *TransportError
		if !errors.As(err, &te) || !IsTemporary(err) || errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Info err = %T %v", err, err)
		}
		if d := time.Since(start); d != 2*time.Second {
			t.Errorf("timed out after %v", d)
		}

		// Long poll: the engine answers [] after LongPollingTimeout, later than RequestTimeout.
		c = memClient(t, sleepThen(10*time.Second, 200, `[]`), ClientConfig{RequestTimeout: 2 * time.Second})
		tasks, err := c.FetchAndLock(ctx, FetchAndLockRequest{WorkerID: "w", Topics: []string{"a"}, LongPollingTimeout: 10 * time.Second})
		if err != nil || len(tasks) != 0 {
			t.Fatalf("long poll = %v, %v", tasks, err)
		}
		// ... but a poll that hangs past LongPollingTimeout + RequestTimeout times out.
		c = memClient(t, sleepThen(13*time.Second, 200, `[]`), ClientConfig{RequestTimeout: 2 * time.Second})
		start = time.Now()
		_, err = c.FetchAndLock(ctx, FetchAndLockRequest{WorkerID: "w", Topics: []string{"a"}, LongPollingTimeout: 10 * time.Second})
		if !errors.As(err, &te) || time.Since(start) != 12*time.Second {
			t.Fatalf("hung long poll: %v after %v", err, time.Since(start))
		}

		// Blocking start and notifications wait as long as ctx allows.
		c = memClient(t, sleepThen(time.Hour, 200, `{"processInstanceId":"p"}`), ClientConfig{RequestTimeout: time.Second})
		if r, err := c.StartProcess(ctx, ProcessStartRequest{ProcessModelID: "m", ReturnOn: ReturnOnEndEvent, EndEventID: "e"}); err != nil || r.ProcessInstanceID != "p" {
			t.Fatalf("blocking start = %+v, %v", r, err)
		}
		if _, err := c.StartProcess(ctx, ProcessStartRequest{ProcessModelID: "m", ReturnOn: ReturnOnCreated}); !errors.As(err, &te) {
			t.Fatalf("non-blocking start err = %v", err)
		}
		c = memClient(t, sleepThen(time.Hour, 200, `{"processInstanceId":"p","flowNodeId":"f"}`), ClientConfig{RequestTimeout: time.Second})
		if m, err := c.WaitForNotification(ctx, "activity_reached"); err != nil || m.FlowNodeID != "f" {
			t.Fatalf("notification = %+v, %v", m, err)
		}
		// The caller's deadline is not temporary and not a TransportError.
		dctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		_, err = c.WaitForNotification(dctx, "activity_reached")
		if !errors.Is(err, context.DeadlineExceeded) || errors.As(err, &te) || IsTemporary(err) {
			t.Fatalf("caller deadline err = %T %v (temporary %v)", err, err, IsTemporary(err))
		}
	})
}

// refresher is a TokenRefresher handing out tok-1, tok-2, ...
type refresher struct {
	n         atomic.Int32
	refreshes atomic.Int32
	cur       atomic.Pointer[oauth2.Token]
}

func newRefresher() *refresher {
	r := &refresher{}
	r.cur.Store(&oauth2.Token{AccessToken: "tok-1"})
	r.n.Store(1)
	return r
}

func (r *refresher) Token() (*oauth2.Token, error) { return r.cur.Load(), nil }

func (r *refresher) Refresh(stale *oauth2.Token) (*oauth2.Token, error) {
	r.refreshes.Add(1)
	t := &oauth2.Token{AccessToken: "tok-" + string(rune('0'+r.n.Add(1)))}
	r.cur.Store(t)
	return t, nil
}

func TestExpiredTokenRefresh(t *testing.T) {
	ctx := t.Context()
	rf := newRefresher()
	c, st := newStub(t, ClientConfig{TokenSource: rf})
	var mu sync.Mutex
	var auths []string
	// Accept only tok-2; say "expired" to anything else.
	st.set(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auths = append(auths, r.Header.Get("Authorization"))
		mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer tok-2" {
			b, _ := json.Marshal(NewBaseError(401, "Token has expired", nil))
			jsonAnswer(401, string(b))(w, r)
			return
		}
		w.WriteHeader(204)
	})
	if err := c.FinishTask(ctx, "t", "w", json.RawMessage(`{"r":1}`)); err != nil {
		t.Fatal(err)
	}
	if rf.refreshes.Load() != 1 || len(auths) != 2 || auths[0] != "Bearer tok-1" || auths[1] != "Bearer tok-2" {
		t.Fatalf("refreshes %d, auths %v", rf.refreshes.Load(), auths)
	}
	if b := st.get().body; string(b) != `{"workerId":"w","result":{"r":1}}` {
		t.Errorf("retried body %s", b)
	}
	// Only one retry: a token rejected again is reported.
	auths = nil
	rf.cur.Store(&oauth2.Token{AccessToken: "tok-x"})
	rf.n.Store(5) // next refresh yields tok-6, also rejected
	if err := c.FinishTask(ctx, "t", "w", nil); !errors.Is(err, ErrUnauthorized) || len(auths) != 2 {
		t.Fatalf("err %v after %d attempts", err, len(auths))
	}
	// A 401 without "expired" is not retried.
	st.set(jsonAnswer(401, `{"errorClassName":"UnauthorizedError","code":401,"message":"no such token"}`))
	before := rf.refreshes.Load()
	if err := c.FinishTask(ctx, "t", "w", nil); !errors.Is(err, ErrUnauthorized) || rf.refreshes.Load() != before {
		t.Fatalf("err %v, refreshes %d", err, rf.refreshes.Load()-before)
	}
	// A per-call token is sent as is and never refreshed.
	st.set(jsonAnswer(401, `{"errorClassName":"UnauthorizedError","code":401,"message":"expired"}`))
	if err := c.FinishTask(WithToken(ctx, "user-token"), "t", "w", nil); !errors.Is(err, ErrUnauthorized) || rf.refreshes.Load() != before {
		t.Fatalf("WithToken: %v", err)
	}
	if a := st.get().header.Get("Authorization"); a != "Bearer user-token" {
		t.Errorf("WithToken sent %q", a)
	}
	// A static source cannot refresh: the 401 is returned.
	c2, st2 := newStub(t, ClientConfig{})
	st2.set(jsonAnswer(401, `{"errorClassName":"UnauthorizedError","code":401,"message":"expired"}`))
	if err := c2.ExtendLock(ctx, "t", "w", time.Second); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("static: %v", err)
	}
}

type failingSource struct{ err error }

func (f failingSource) Token() (*oauth2.Token, error) { return nil, f.err }

func TestTokenSourceErrors(t *testing.T) {
	ctx := t.Context()
	c, _ := newStub(t, ClientConfig{TokenSource: failingSource{errors.New("dial tcp: refused")}})
	if err := c.FinishTask(ctx, "t", "w", nil); !IsTemporary(err) {
		t.Errorf("network token failure not temporary: %v", err)
	}
	re := &oauth2.RetrieveError{Response: &http.Response{StatusCode: 401}, ErrorCode: "invalid_client"}
	c, _ = newStub(t, ClientConfig{TokenSource: failingSource{re}})
	err := c.FinishTask(ctx, "t", "w", nil)
	var got *oauth2.RetrieveError
	if IsTemporary(err) || !errors.As(err, &got) {
		t.Errorf("invalid_client: %v (temporary %v)", err, IsTemporary(err))
	}
	c, _ = newStub(t, ClientConfig{TokenSource: oauth2.StaticTokenSource(&oauth2.Token{})})
	if err := c.FinishTask(ctx, "t", "w", nil); err == nil {
		t.Error("empty token accepted")
	}
}

func TestEncodeURIComponent(t *testing.T) {
	for in, want := range map[string]string{
		"abc-_.!~*'()":  "abc-_.!~*'()",
		"bpmn:UserTask": "bpmn%3AUserTask",
		"a b,c/d?e&f=g": "a%20b%2Cc%2Fd%3Fe%26f%3Dg",
		"ä":             "%C3%A4",
		"":              "",
	} {
		if got := encodeURIComponent(in); got != want {
			t.Errorf("encodeURIComponent(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestResponseTooLarge(t *testing.T) {
	c, st := newStub(t, ClientConfig{})
	c.maxBody = 1 << 20
	st.set(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		_, _ = w.Write([]byte(`"`))
		_, _ = io.Copy(w, io.LimitReader(zeros{}, 2<<20))
	})
	if _, err := c.Authority(t.Context()); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("err = %v", err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	return len(p), nil
}

func FuzzDecodeError(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `null`, `[]`, `"str"`, `<html>`, `{"code":"x"}`, `{"errorClassName":1}`,
		`{"errorClassName":"NotFoundError","code":404,"message":"External Task with ID 'abc' not found.","callStack":"x","additionalInformation":{"externalTaskId":"abc"},"errorType":"Error","fatal":false,"isEngineError":true,"name":"NotFoundError"}`,
		`{"message":"` + strings.Repeat("é", 600) + `"}`, "\xff\xfe{",
	} {
		f.Add(404, []byte(s), "secret-token")
	}
	f.Fuzz(func(t *testing.T, status int, body []byte, secret string) {
		e := decodeError("GET /x", status, body, secret)
		if e == nil || e.Status != status || e.Body.ErrorClassName == "" {
			t.Fatalf("decodeError = %+v", e)
		}
		_ = e.Error()
		_ = errors.Is(e, ErrGone)
		_ = IsTemporary(e)
		if len(secret) >= 8 && !strings.ContainsAny(secret, "[]") && strings.Contains(e.Body.Message, secret) {
			t.Fatalf("secret kept in %q", e.Body.Message)
		}
		if !bytes.HasPrefix(body, []byte("{")) && len(e.Body.Message) > maxRawMessage+len("…") {
			t.Fatalf("raw message not truncated: %d bytes", len(e.Body.Message))
		}
	})
}

func BenchmarkFinishTaskStub(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	c, err := NewClient(srv.URL, ClientConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	res := json.RawMessage(`{"ok":true,"n":42}`)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := c.FinishTask(context.Background(), "task-1", "worker-1", res); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// TestHandBuiltBodies checks the bodies FinishTask and ExtendLock build by
// appending against what encoding/json makes of the same request.
func TestHandBuiltBodies(t *testing.T) {
	for _, s := range []string{"", "w", "pe-bridge-host-a1b2c3", `q"uote`, `back\slash`, "<&>", "tab\there", "ünï", "\x7f", "\u2028"} {
		want, _ := json.Marshal(s)
		if got := appendJSONString([]byte("x"), s); string(got) != "x"+string(want) {
			t.Errorf("appendJSONString(%q) = %s, want x%s", s, got, want)
		}
	}
	ctx := t.Context()
	c, st := newStub(t, ClientConfig{})
	st.set(jsonAnswer(http.StatusNoContent, ""))
	for _, tc := range []struct {
		worker string
		result json.RawMessage
	}{
		{"w", json.RawMessage(" { \"a\" : [1, 2] ,\"h\":\"<b>\" }\n")},
		{`odd "worker" <id>`, json.RawMessage(`null`)},
		{"w", json.RawMessage{}},
		{"w", nil},
	} {
		if err := c.FinishTask(ctx, "t", tc.worker, tc.result); err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(FinishRequest{WorkerID: tc.worker, Result: tc.result})
		if got := st.get().body; !json.Valid(got) || !jsonEqual(got, want) {
			t.Errorf("finish body %s, want %s", got, want)
		}
		if err := c.ExtendLock(ctx, "t", tc.worker, 2500*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		want, _ = json.Marshal(ExtendLockRequest{WorkerID: tc.worker, AdditionalDuration: 2500})
		if got := st.get().body; string(got) != string(want) {
			t.Errorf("extend body %s, want %s", got, want)
		}
	}
}

func TestMaxIdleConnsPerHost(t *testing.T) {
	for _, tc := range []struct{ set, want int }{{0, DefaultMaxIdleConnsPerHost}, {300, 300}} {
		c, err := NewClient("http://engine:8000", ClientConfig{MaxIdleConnsPerHost: tc.set})
		if err != nil {
			t.Fatal(err)
		}
		if got := c.hc.Transport.(*http.Transport).MaxIdleConnsPerHost; got != tc.want {
			t.Errorf("MaxIdleConnsPerHost %d: transport keeps %d, want %d", tc.set, got, tc.want)
		}
	}
	if _, err := NewClient("http://engine:8000", ClientConfig{MaxIdleConnsPerHost: -1}); err == nil {
		t.Error("negative MaxIdleConnsPerHost accepted")
	}
}
