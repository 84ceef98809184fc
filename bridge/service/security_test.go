package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natstest "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/engine/emulator"
	"github.com/pe-bridge/pe-bridge/events"
	"github.com/pe-bridge/pe-bridge/internal/testutil"
)

// countingEngine is a fakeEngine whose every call is counted.
func countingEngine(calls *atomic.Int64) *fakeEngine {
	n := func() { calls.Add(1) }
	return &fakeEngine{
		start: func(_ context.Context, r engine.ProcessStartRequest) (engine.ProcessStartResponse, error) {
			n()
			return engine.ProcessStartResponse{ProcessInstanceID: "pi", CorrelationID: r.CorrelationID}, nil
		},
		query: func(context.Context, engine.ProcessInstanceQuery) (engine.ProcessInstanceList, error) {
			n()
			return engine.ProcessInstanceList{ProcessInstances: []engine.ProcessInstance{{ProcessInstanceID: "p"}}}, nil
		},
		terminate: func(context.Context, string) error { n(); return nil },
		tasks: func(context.Context, engine.FlowNodeInstanceQuery) (engine.FlowNodeInstanceList, error) {
			n()
			return engine.FlowNodeInstanceList{FlowNodeInstances: []engine.FlowNodeInstance{{FlowNodeInstanceID: "u"}}}, nil
		},
		reserve: func(context.Context, string, string) error { n(); return nil },
		cancel:  func(context.Context, string) error { n(); return nil },
		finish:  func(context.Context, string, json.RawMessage) error { n(); return nil },
		message: func(context.Context, string, json.RawMessage, string) error { n(); return nil },
		signal:  func(context.Context, string, json.RawMessage, string) error { n(); return nil },
	}
}

// groupOf is the endpoint group of a service subject.
func groupOf(subject string) string {
	switch {
	case strings.HasPrefix(subject, "pe.process."):
		return GroupProcess
	case strings.HasPrefix(subject, "pe.usertask."):
		return GroupUserTask
	}
	return GroupTrigger
}

// TestUserTokenRequired: with a group's token required, a request without
// one gets 401 before any engine call; other groups still run as the
// bridge; a blank or malformed token is a 401 on every endpoint, never a
// fallback to the bridge's identity.
func TestUserTokenRequired(t *testing.T) {
	nc := runNATS(t)
	var calls atomic.Int64
	var seen atomic.Pointer[string]
	cfg := Config{RequireUserToken: []string{GroupUserTask, GroupTrigger}, WithToken: func(ctx context.Context, tok string) context.Context {
		seen.Store(&tok)
		return ctx
	}}
	startService(t, nc, countingEngine(&calls), cfg, nil)

	for _, subj := range allSubjects {
		calls.Store(0)
		msg := request(t, nc, subj, validBodies[subj], nil)
		if groupOf(subj) == GroupProcess {
			ok(t, msg, nil)
			continue
		}
		fails(t, msg, 401, HeaderUserToken)
		if n := calls.Load(); n != 0 {
			t.Fatalf("%s without a token: %d engine calls", subj, n)
		}
		ok(t, request(t, nc, subj, validBodies[subj], nats.Header{HeaderUserToken: {"eyJhbGciOi.eyJzdWIi.c2ln"}}), nil)
		if p := seen.Load(); p == nil || *p != "eyJhbGciOi.eyJzdWIi.c2ln" {
			t.Fatalf("%s: token not forwarded", subj)
		}
	}

	bad := []struct {
		name  string
		hdr   nats.Header
		field string
	}{
		{"blank user token", nats.Header{HeaderUserToken: {""}}, HeaderUserToken},
		{"spaces user token", nats.Header{HeaderUserToken: {"   "}}, HeaderUserToken},
		{"tab user token", nats.Header{HeaderUserToken: {"\t"}}, HeaderUserToken},
		{"user token with a space", nats.Header{HeaderUserToken: {"abc def"}}, HeaderUserToken},
		{"user token with a control char", nats.Header{HeaderUserToken: {"abc\x01def"}}, HeaderUserToken},
		{"user token not token68", nats.Header{HeaderUserToken: {"ab=c"}}, HeaderUserToken},
		{"user token non-ASCII", nats.Header{HeaderUserToken: {"tökén"}}, HeaderUserToken},
		{"two user tokens", nats.Header{HeaderUserToken: {"a", "b"}}, HeaderUserToken},
		{"lower-case header, spaces", nats.Header{"pe-user-token": {"  "}}, HeaderUserToken},
		{"blank user token beside a good Authorization", nats.Header{HeaderUserToken: {" "}, HeaderAuthorization: {"Bearer good"}}, HeaderUserToken},
		{"blank Authorization", nats.Header{HeaderAuthorization: {""}}, HeaderAuthorization},
		{"Bearer without token", nats.Header{HeaderAuthorization: {"Bearer"}}, HeaderAuthorization},
		{"Bearer and spaces", nats.Header{HeaderAuthorization: {"Bearer    "}}, HeaderAuthorization},
		{"Basic", nats.Header{HeaderAuthorization: {"Basic dXNlcjpwdw=="}}, HeaderAuthorization},
		{"Bearer two words", nats.Header{HeaderAuthorization: {"Bearer a b"}}, HeaderAuthorization},
		{"too long", nats.Header{HeaderUserToken: {strings.Repeat("a", maxTokenBytes+1)}}, HeaderUserToken},
	}
	for _, subj := range allSubjects {
		for _, c := range bad {
			calls.Store(0)
			fails(t, request(t, nc, subj, validBodies[subj], c.hdr), 401, c.field)
			if n := calls.Load(); n != 0 {
				t.Fatalf("%s, %s: %d engine calls", subj, c.name, n)
			}
		}
	}
}

// TestIDsArePathSafe: an id that becomes an engine URL path segment is
// refused with a 400 naming it before any engine call when it is ".",
// "..", empty, holds '/', '\' or a control character, or is over-long; the
// other ids are refused for control characters and length.
func TestIDsArePathSafe(t *testing.T) {
	nc := runNATS(t)
	var calls atomic.Int64
	startService(t, nc, countingEngine(&calls), Config{}, nil)

	pathBad := []string{".", "..", "", "a/b", "../x", `a\b`, "a\x00b", "a\nb", "a\x7f", "a\u0085b", strings.Repeat("x", maxIDBytes+1)}
	otherBad := []string{"a\x00b", "a\tb", "\u009b", strings.Repeat("x", maxIDBytes+1)}
	cases := []struct {
		subject, field string
		base           map[string]any
		path           bool
	}{
		{events.SubjectProcessStart, "processModelId", map[string]any{}, true},
		{events.SubjectProcessStart, "correlationId", map[string]any{"processModelId": "m"}, false},
		{events.SubjectProcessStart, "startEventId", map[string]any{"processModelId": "m"}, false},
		{events.SubjectProcessTerminate, "processInstanceId", map[string]any{}, true},
		{events.SubjectProcessGet, "processInstanceId", map[string]any{}, true},
		{events.SubjectProcessQuery, "processModelId", map[string]any{}, false},
		{events.SubjectUserTaskList, "flowNodeId", map[string]any{}, false},
		{events.SubjectUserTaskList, "actualOwnerId", map[string]any{}, false},
		{events.SubjectUserTaskGet, "userTaskInstanceId", map[string]any{}, true},
		{events.SubjectUserTaskReserve, "userTaskInstanceId", map[string]any{"actualOwnerId": "o"}, true},
		{events.SubjectUserTaskReserve, "actualOwnerId", map[string]any{"userTaskInstanceId": "u"}, false},
		{events.SubjectUserTaskCancelReserve, "userTaskInstanceId", map[string]any{}, true},
		{events.SubjectUserTaskFinish, "userTaskInstanceId", map[string]any{}, true},
		{events.SubjectMessageTrigger, "name", map[string]any{}, true},
		{events.SubjectMessageTrigger, "processInstanceId", map[string]any{"name": "n"}, false},
		{events.SubjectSignalTrigger, "name", map[string]any{}, true},
	}
	for _, c := range cases {
		values := otherBad
		if c.path {
			values = pathBad
		}
		for _, v := range values {
			body := map[string]any{c.field: v}
			for k, bv := range c.base {
				body[k] = bv
			}
			calls.Store(0)
			e := fails(t, request(t, nc, c.subject, body, nil), 400, c.field)
			if !strings.Contains(e.Message, c.field) {
				t.Errorf("%s %s=%q: message %q does not name the field", c.subject, c.field, v, e.Message)
			}
			if n := calls.Load(); n != 0 {
				t.Fatalf("%s %s=%q reached the engine (%d calls)", c.subject, c.field, v, n)
			}
		}
	}
	// Ordinary ids pass.
	ok(t, request(t, nc, events.SubjectProcessTerminate, `{"processInstanceId":"8f6e1c2a-0b7d-4c55-9d0e-3a1b2c3d4e5f"}`, nil), nil)
	ok(t, request(t, nc, events.SubjectProcessStart, `{"processModelId":"Invoice.Approval_v2-ä"}`, nil), nil)
}

func TestDuplicateKeysRefused(t *testing.T) {
	nc := runNATS(t)
	var calls atomic.Int64
	startService(t, nc, countingEngine(&calls), Config{}, nil)
	for _, c := range []struct{ subject, body, field string }{
		{events.SubjectProcessStart, `{"processModelId":"a","processModelId":"b"}`, "processModelId"},
		{events.SubjectProcessStart, `{"processModelId":"m","initialToken":{"a":1,"b":{"c":2,"c":3}}}`, "initialToken.b.c"},
		{events.SubjectUserTaskFinish, `{"userTaskInstanceId":"u","result":{"x":[1,{"k":1,"k":2}]}}`, "result.x[1].k"},
		{events.SubjectUserTaskReserve, `{"userTaskInstanceId":"u","actualOwnerId":"o","actualOwnerId":"admin"}`, "actualOwnerId"},
		{events.SubjectMessageTrigger, `{"name":"n","payload":{"p":1},"payload":{"p":2}}`, "payload"},
	} {
		calls.Store(0)
		fails(t, request(t, nc, c.subject, c.body, nil), 400, c.field)
		if n := calls.Load(); n != 0 {
			t.Fatalf("%s: %d engine calls", c.body, n)
		}
	}
	// The same name in different objects is no duplicate.
	ok(t, request(t, nc, events.SubjectProcessStart, `{"processModelId":"m","initialToken":{"processModelId":"x","l":[{"a":1},{"a":2}]}}`, nil), nil)
}

// TestBlockingStartsDoNotStarveOthers: with the default limits, 10,000
// blocking starts pending at once: those beyond Config.MaxBlockingStarts get
// 503 with a retry hint at once, and 20 of 20 pe.usertask.list requests
// sent meanwhile answer 2xx.
func TestBlockingStartsDoNotStarveOthers(t *testing.T) {
	nc := runNATS(t)
	release := make(chan struct{})
	var entered atomic.Int64
	eng := &fakeEngine{
		start: func(ctx context.Context, r engine.ProcessStartRequest) (engine.ProcessStartResponse, error) {
			entered.Add(1)
			select {
			case <-release:
			case <-ctx.Done():
				return engine.ProcessStartResponse{}, ctx.Err()
			}
			return engine.ProcessStartResponse{ProcessInstanceID: "pi", CorrelationID: r.CorrelationID}, nil
		},
	}
	startService(t, nc, eng, Config{}, nil)
	const starts = 10000

	var mu sync.Mutex
	codes := map[string]int{}
	retryHints := 0
	inbox := nats.NewInbox()
	sub, err := nc.Subscribe(inbox+".*", func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		code := m.Header.Get(headerServiceCode)
		codes[code]++
		if code == "503" && m.Header.Get(HeaderRetryAfter) != "" && strings.Contains(string(m.Data), `"retryAfterMs"`) {
			retryHints++
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"processModelId":"m","returnOn":"finished","timeout":"5m"}`)
	for i := range starts {
		if err := nc.PublishRequest(events.SubjectProcessStart, fmt.Sprintf("%s.%d", inbox, i), body); err != nil {
			t.Fatal(err)
		}
	}
	rejected := starts - DefaultMaxBlockingStarts
	testutil.Eventually(t, 30*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if got := entered.Load(); got != DefaultMaxBlockingStarts || codes["503"] != rejected {
			return fmt.Errorf("%d starts at the engine, %d rejected, want %d and %d", got, codes["503"], DefaultMaxBlockingStarts, rejected)
		}
		return nil
	})
	mu.Lock()
	hints := retryHints
	mu.Unlock()
	if hints != rejected {
		t.Fatalf("%d of %d rejected starts carry a retry hint", hints, rejected)
	}

	var wg sync.WaitGroup
	var listed atomic.Int64
	for range 20 {
		wg.Go(func() {
			msg, err := nc.Request(events.SubjectUserTaskList, []byte(`{}`), 10*time.Second)
			if err == nil && msg.Header.Get(headerServiceCode) == "" {
				listed.Add(1)
			}
		})
	}
	wg.Wait()
	if n := listed.Load(); n != 20 {
		t.Fatalf("with %d blocking starts pending, %d of 20 pe.usertask.list answered 2xx", starts, n)
	}
	t.Logf("with %d blocking starts pending: %d held, %d got 503 with a retry hint, 20 of 20 pe.usertask.list answered 2xx",
		starts, DefaultMaxBlockingStarts, rejected)
	close(release)
	testutil.Eventually(t, 30*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if codes[""] != DefaultMaxBlockingStarts {
			return fmt.Errorf("%d blocking starts answered 2xx, want %d", codes[""], DefaultMaxBlockingStarts)
		}
		return nil
	})
}

type recorder struct {
	mu       sync.Mutex
	requests []string // "endpoint code"
	spans    []string // "endpoint traceparent code"
}

func (r *recorder) Request(endpoint string, code int, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if d <= 0 {
		code = -1
	}
	r.requests = append(r.requests, fmt.Sprintf("%s %d", endpoint, code))
}

type spanKey struct{}

func (r *recorder) StartRequest(ctx context.Context, endpoint string, h nats.Header) (context.Context, func(int)) {
	tp := h.Get("traceparent")
	var once atomic.Bool
	return context.WithValue(ctx, spanKey{}, endpoint), func(code int) {
		if once.Swap(true) {
			panic("span ended twice")
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		r.spans = append(r.spans, fmt.Sprintf("%s %s %d", endpoint, tp, code))
	}
}

func (r *recorder) snapshot() ([]string, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.requests...), append([]string(nil), r.spans...)
}

// TestObserverAndTracer: one Observer.Request per answered request with
// its endpoint and code, and one span per request that carries the request
// headers and reaches the engine calls.
func TestObserverAndTracer(t *testing.T) {
	nc := runNATS(t)
	var rec recorder
	spanInEngine := make(chan any, 1)
	eng := &fakeEngine{terminate: func(ctx context.Context, _ string) error {
		spanInEngine <- ctx.Value(spanKey{})
		return nil
	}}
	startService(t, nc, eng, Config{Observer: &rec, Tracer: &rec, MaxRequestBytes: 64, RequireUserToken: []string{GroupTrigger}}, nil)
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ok(t, request(t, nc, events.SubjectProcessTerminate, `{"processInstanceId":"p"}`, nats.Header{"traceparent": {tp}}), nil)
	if got := <-spanInEngine; got != "process_terminate" {
		t.Fatalf("engine call context carries span %v", got)
	}
	fails(t, request(t, nc, events.SubjectUserTaskGet, `{}`, nil), 400, "userTaskInstanceId")
	fails(t, request(t, nc, events.SubjectProcessStart, strings.Repeat(" ", 65), nil), 413, "")
	fails(t, request(t, nc, events.SubjectSignalTrigger, `{"name":"s"}`, nil), 401, HeaderUserToken)

	want := []string{"process_terminate 200", "usertask_get 400", "process_start 413", "signal_trigger 401"}
	wantSpans := []string{"process_terminate " + tp + " 200", "usertask_get  400", "process_start  413", "signal_trigger  401"}
	// Replies are sent before they are accounted for: wait for the last
	// one, in any order (a request may be accounted for after the next).
	slices.Sort(want)
	slices.Sort(wantSpans)
	testutil.Eventually(t, 5*time.Second, func() error {
		reqs, spans := rec.snapshot()
		slices.Sort(reqs)
		slices.Sort(spans)
		if fmt.Sprint(reqs) != fmt.Sprint(want) || fmt.Sprint(spans) != fmt.Sprint(wantSpans) {
			return fmt.Errorf("observed %q, spans %q", reqs, spans)
		}
		return nil
	})
}

// TestRunRefusedSubscription: a connection the server does not allow to
// join the service's queue group fails Run with an error naming the
// subject, instead of a service that never answers.
func TestRunRefusedSubscription(t *testing.T) {
	opts := natstest.DefaultTestOptions
	opts.Port = -1
	opts.Users = []*server.User{{Username: "u", Password: "p", Permissions: &server.Permissions{
		Subscribe: &server.SubjectPermission{Allow: []string{"pe.> other-group", "$SRV.>"}},
	}}}
	srv := natstest.RunServer(&opts)
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo("u", "p"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	s, err := New(nc, &fakeEngine{}, Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Run(context.Background())
	if err == nil || !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), "subscribing to pe.") {
		t.Fatalf("Run: %v, want a permissions error naming the subject", err)
	}
}

// TestUserTokenRequiredWithEmulator: against the engine emulator, a request
// without a token ran as the bridge (200) where a read-only user gets 403;
// with RequireUserToken it is a 401 and the engine never sees it.
func TestUserTokenRequiredWithEmulator(t *testing.T) {
	verify := func(tok string) (emulator.Identity, error) {
		if tok == "reader-token" {
			return emulator.Identity{UserID: "reader", Scopes: []string{emulator.ScopeRead}}, nil
		}
		return emulator.Identity{}, errors.New("unknown token")
	}
	reader := nats.Header{HeaderUserToken: {"reader-token"}}
	start := `{"processModelId":"hello_world"}`
	open := newEnv(t, emulator.Config{Verify: verify}, Config{})
	ok(t, request(t, open.nc, events.SubjectProcessStart, start, nil), nil) // the bridge's identity
	fails(t, request(t, open.nc, events.SubjectProcessStart, start, reader), 403, "")

	e := newEnv(t, emulator.Config{Verify: verify}, Config{RequireUserToken: Groups})
	before := e.emu.Stats()
	fails(t, request(t, e.nc, events.SubjectProcessStart, start, nil), 401, HeaderUserToken)
	fails(t, request(t, e.nc, events.SubjectUserTaskList, `{}`, nil), 401, HeaderUserToken)
	fails(t, request(t, e.nc, events.SubjectProcessStart, start, nats.Header{HeaderUserToken: {"   "}}), 401, HeaderUserToken)
	if after := e.emu.Stats(); after.InstancesStarted != before.InstancesStarted {
		t.Fatalf("instances started without a token: %d", after.InstancesStarted-before.InstancesStarted)
	}
	fails(t, request(t, e.nc, events.SubjectProcessStart, start, reader), 403, "")
	ok(t, request(t, e.nc, events.SubjectUserTaskList, `{}`, reader), nil)
}
