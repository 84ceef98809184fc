package service

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/events"
	"github.com/pe-bridge/pe-bridge/internal/testutil"
)

var allSubjects = []string{
	events.SubjectProcessStart, events.SubjectProcessTerminate, events.SubjectProcessGet, events.SubjectProcessQuery,
	events.SubjectUserTaskList, events.SubjectUserTaskGet, events.SubjectUserTaskReserve,
	events.SubjectUserTaskCancelReserve, events.SubjectUserTaskFinish, events.SubjectMessageTrigger,
	events.SubjectSignalTrigger,
}

// validBodies is one well-formed request per subject.
var validBodies = map[string]string{
	events.SubjectProcessStart:          `{"processModelId":"m"}`,
	events.SubjectProcessTerminate:      `{"processInstanceId":"p"}`,
	events.SubjectProcessGet:            `{"processInstanceId":"p"}`,
	events.SubjectProcessQuery:          `{"processModelId":"m"}`,
	events.SubjectUserTaskList:          `{"processModelId":"m"}`,
	events.SubjectUserTaskGet:           `{"userTaskInstanceId":"u"}`,
	events.SubjectUserTaskReserve:       `{"userTaskInstanceId":"u","actualOwnerId":"o"}`,
	events.SubjectUserTaskCancelReserve: `{"userTaskInstanceId":"u"}`,
	events.SubjectUserTaskFinish:        `{"userTaskInstanceId":"u","result":{"a":1}}`,
	events.SubjectMessageTrigger:        `{"name":"n"}`,
	events.SubjectSignalTrigger:         `{"name":"n"}`,
}

func TestInfoPingStats(t *testing.T) {
	nc := runNATS(t)
	startService(t, nc, &fakeEngine{}, Config{Version: "1.2.3"}, nil)

	var info micro.Info
	ok(t, request(t, nc, "$SRV.INFO."+events.ServiceName, nil, nil), &info)
	if info.Name != events.ServiceName || info.Version != "1.2.3" || info.Description == "" {
		t.Fatalf("info identity: %+v", info)
	}
	var got []string
	for _, ep := range info.Endpoints {
		got = append(got, ep.Subject)
		if ep.QueueGroup != DefaultQueueGroup {
			t.Errorf("endpoint %s queue group %q", ep.Subject, ep.QueueGroup)
		}
		if ep.Metadata["description"] == "" {
			t.Errorf("endpoint %s without description", ep.Subject)
		}
	}
	slices.Sort(got)
	want := slices.Clone(allSubjects)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("endpoints\n got %v\nwant %v", got, want)
	}

	var ping micro.Ping
	ok(t, request(t, nc, "$SRV.PING."+events.ServiceName, nil, nil), &ping)
	if ping.Name != events.ServiceName || ping.ID != info.ID {
		t.Fatalf("ping %+v", ping)
	}

	fails(t, request(t, nc, events.SubjectUserTaskGet, `{}`, nil), 400, "userTaskInstanceId")
	var stats micro.Stats
	ok(t, request(t, nc, "$SRV.STATS."+events.ServiceName, nil, nil), &stats)
	for _, ep := range stats.Endpoints {
		if ep.Subject != events.SubjectUserTaskGet {
			continue
		}
		if ep.NumRequests != 1 || ep.NumErrors != 1 || !strings.HasPrefix(ep.LastError, "400 ") || ep.ProcessingTime <= 0 {
			t.Fatalf("stats %+v", ep)
		}
		return
	}
	t.Fatal("usertask.get missing from stats")
}

func TestBadInput(t *testing.T) {
	nc := runNATS(t)
	startService(t, nc, &fakeEngine{}, Config{}, nil)

	type tc struct {
		subject, body, field string
	}
	var cases []tc
	for _, s := range allSubjects {
		cases = append(cases,
			tc{s, `{"processModelId":`, ""},
			tc{s, `not json`, ""},
			tc{s, `[1,2]`, ""},
			tc{s, `"x"`, ""},
			tc{s, `{"bogus":1}`, "bogus"},
			tc{s, `{} {}`, ""},
		)
	}
	cases = append(cases,
		tc{events.SubjectProcessStart, ``, "processModelId"},
		tc{events.SubjectProcessStart, `{"processModelId":7}`, "processModelId"},
		tc{events.SubjectProcessStart, `{"processModelId":"m","returnOn":"later"}`, "returnOn"},
		tc{events.SubjectProcessStart, `{"processModelId":"m","returnOn":4}`, "returnOn"},
		tc{events.SubjectProcessStart, `{"processModelId":"m","returnOn":true}`, "returnOn"},
		tc{events.SubjectProcessStart, `{"processModelId":"m","returnOn":"end_event"}`, "endEventId"},
		tc{events.SubjectProcessStart, `{"processModelId":"m","endEventId":"e"}`, "endEventId"},
		tc{events.SubjectProcessStart, `{"processModelId":"m","timeout":"soon"}`, "timeout"},
		tc{events.SubjectProcessStart, `{"processModelId":"m","timeout":-5}`, "timeout"},
		tc{events.SubjectProcessStart, `{"processModelId":"m","timeout":"100h"}`, "timeout"},
		tc{events.SubjectProcessStart, `{"processModelId":"m","timeout":[1]}`, "timeout"},
		tc{events.SubjectProcessStart, `{"processModelId":"m","startEventId":{}}`, "startEventId"},
		tc{events.SubjectProcessTerminate, `{}`, "processInstanceId"},
		tc{events.SubjectProcessTerminate, `{"processInstanceId":1}`, "processInstanceId"},
		tc{events.SubjectProcessGet, `{"processInstanceId":""}`, "processInstanceId"},
		tc{events.SubjectProcessQuery, `{"state":"sleeping"}`, "state"},
		tc{events.SubjectProcessQuery, `{"offset":-1}`, "offset"},
		tc{events.SubjectProcessQuery, `{"limit":"ten"}`, "limit"},
		tc{events.SubjectUserTaskList, `{"state":"waiting"}`, "state"},
		tc{events.SubjectUserTaskList, `{"limit":-1}`, "limit"},
		tc{events.SubjectUserTaskList, `{"offset":1.5}`, "offset"},
		tc{events.SubjectUserTaskList, `{"actualOwnerId":false}`, "actualOwnerId"},
		tc{events.SubjectUserTaskGet, `{}`, "userTaskInstanceId"},
		tc{events.SubjectUserTaskReserve, `{"userTaskInstanceId":"u"}`, "actualOwnerId"},
		tc{events.SubjectUserTaskReserve, `{"actualOwnerId":"o"}`, "userTaskInstanceId"},
		tc{events.SubjectUserTaskReserve, `{"userTaskInstanceId":"u","actualOwnerId":["o"]}`, "actualOwnerId"},
		tc{events.SubjectUserTaskCancelReserve, `{"userTaskInstanceId":null}`, "userTaskInstanceId"},
		tc{events.SubjectUserTaskFinish, `{"result":{}}`, "userTaskInstanceId"},
		tc{events.SubjectUserTaskFinish, `{"userTaskInstanceId":"u","result":[1]}`, "result"},
		tc{events.SubjectUserTaskFinish, `{"userTaskInstanceId":"u","result":"yes"}`, "result"},
		tc{events.SubjectMessageTrigger, `{"payload":{}}`, "name"},
		tc{events.SubjectSignalTrigger, `{"name":3}`, "name"},
	)
	for _, c := range cases {
		t.Run(c.subject+" "+c.body, func(t *testing.T) {
			fails(t, request(t, nc, c.subject, c.body, nil), 400, c.field)
		})
	}
}

func TestOversizeRequest(t *testing.T) {
	nc := runNATS(t)
	startService(t, nc, &fakeEngine{}, Config{MaxRequestBytes: 100}, nil)
	big := fmt.Sprintf(`{"processModelId":"m","initialToken":%q}`, strings.Repeat("x", 200))
	fails(t, request(t, nc, events.SubjectProcessStart, big, nil), 413, "")
}

func TestEngineErrorsMapped(t *testing.T) {
	nc := runNATS(t)
	var current atomic.Pointer[error]
	dyn := func() error { return *current.Load() }
	eng := &fakeEngine{
		start: func(context.Context, engine.ProcessStartRequest) (engine.ProcessStartResponse, error) {
			return engine.ProcessStartResponse{}, dyn()
		},
		query: func(context.Context, engine.ProcessInstanceQuery) (engine.ProcessInstanceList, error) {
			return engine.ProcessInstanceList{}, dyn()
		},
		terminate: func(context.Context, string) error { return dyn() },
		tasks: func(context.Context, engine.FlowNodeInstanceQuery) (engine.FlowNodeInstanceList, error) {
			return engine.FlowNodeInstanceList{}, dyn()
		},
		reserve: func(context.Context, string, string) error { return dyn() },
		cancel:  func(context.Context, string) error { return dyn() },
		finish:  func(context.Context, string, json.RawMessage) error { return dyn() },
		message: func(context.Context, string, json.RawMessage, string) error { return dyn() },
		signal:  func(context.Context, string, json.RawMessage, string) error { return dyn() },
	}
	startService(t, nc, eng, Config{}, nil)

	engErr := func(status int) error {
		return &engine.Error{Status: status, Op: "X", Body: engine.NewBaseError(status, "engine says no", nil)}
	}
	cases := []struct {
		name string
		err  error
		code int
	}{
		{"400", engErr(400), 400},
		{"401", engErr(401), 401},
		{"403", engErr(403), 403},
		{"404", engErr(404), 404},
		{"409", engErr(409), 409},
		{"410", engErr(410), 409},
		{"423", engErr(423), 409},
		{"422", engErr(422), 400},
		{"500", engErr(500), 503},
		{"502", engErr(502), 503},
		{"429", engErr(429), 503},
		{"504", engErr(504), 504},
		{"transport", &engine.TransportError{Op: "X", Err: errBoom}, 503},
		{"deadline", fmt.Errorf("engine: X: %w", context.DeadlineExceeded), 504},
		{"other", errBoom, 500},
	}
	for _, c := range cases {
		current.Store(&c.err)
		for _, s := range allSubjects {
			msg := request(t, nc, s, validBodies[s], nil)
			e := fails(t, msg, c.code, "")
			if c.code < 500 && c.err != errBoom && !strings.Contains(e.Message, "engine says no") && c.name != "deadline" {
				t.Errorf("%s %s: engine message lost: %q", c.name, s, e.Message)
			}
			if strings.Contains(e.Message, "boom") {
				t.Errorf("%s %s: internal error text leaked: %q", c.name, s, e.Message)
			}
		}
	}
}

func TestHappyPathsWithFake(t *testing.T) {
	nc := runNATS(t)
	now := time.Now().UTC().Truncate(time.Second)
	var got struct {
		start                   engine.ProcessStartRequest
		terminated, cancelled   string
		reservedID, reservedFor string
		finishedID              string
		finishResult            json.RawMessage
		msg, sig                [3]string
		pq                      engine.ProcessInstanceQuery
		tq                      engine.FlowNodeInstanceQuery
	}
	eng := &fakeEngine{
		start: func(_ context.Context, r engine.ProcessStartRequest) (engine.ProcessStartResponse, error) {
			got.start = r
			res := engine.ProcessStartResponse{ProcessInstanceID: "pi-9", CorrelationID: r.CorrelationID}
			if r.ReturnOn != engine.ReturnOnCreated {
				res.EndEventID, res.TokenPayload = "end", json.RawMessage(`{"done":true}`)
			}
			return res, nil
		},
		query: func(_ context.Context, q engine.ProcessInstanceQuery) (engine.ProcessInstanceList, error) {
			got.pq = q
			return engine.ProcessInstanceList{ProcessInstances: []engine.ProcessInstance{
				{ProcessInstanceID: "p", ProcessModelID: "m", State: "running"}}, TotalCount: 1}, nil
		},
		terminate: func(_ context.Context, id string) error { got.terminated = id; return nil },
		tasks: func(_ context.Context, q engine.FlowNodeInstanceQuery) (engine.FlowNodeInstanceList, error) {
			got.tq = q
			return engine.FlowNodeInstanceList{FlowNodeInstances: []engine.FlowNodeInstance{{
				FlowNodeInstanceID: "u", FlowNodeID: "approve", FlowNodeName: "Approve", FlowNodeType: engine.UserTaskFlowNodeType,
				State: "suspended", ProcessModelID: "m", ProcessInstanceID: "p", CorrelationID: "c",
				StartToken: json.RawMessage(`{"amount":5}`), StartedAt: &now, ActualOwnerID: "o",
				UserTaskConfig: &engine.UserTaskConfig{FormFields: []engine.FormField{{ID: "approved", Type: "boolean"}}},
			}}, TotalCount: 1}, nil
		},
		reserve: func(_ context.Context, id, owner string) error {
			got.reservedID, got.reservedFor = id, owner
			return nil
		},
		cancel: func(_ context.Context, id string) error { got.cancelled = id; return nil },
		finish: func(_ context.Context, id string, r json.RawMessage) error {
			got.finishedID, got.finishResult = id, r
			return nil
		},
		message: func(_ context.Context, n string, p json.RawMessage, pi string) error {
			got.msg = [3]string{n, string(p), pi}
			return nil
		},
		signal: func(_ context.Context, n string, p json.RawMessage, pi string) error {
			got.sig = [3]string{n, string(p), pi}
			return nil
		},
	}
	startService(t, nc, eng, Config{}, nil)

	t.Run("start created", func(t *testing.T) {
		var r StartReply
		ok(t, request(t, nc, events.SubjectProcessStart, `{"processModelId":"m","startEventId":"s","initialToken":{"x":1}}`, nil), &r)
		if r.ProcessInstanceID != "pi-9" || r.CorrelationID == "" || r.TokenPayload != nil || r.EndEventID != "" {
			t.Fatalf("reply %+v", r)
		}
		if got.start.ReturnOn != engine.ReturnOnCreated || got.start.StartEventID != "s" || string(got.start.InitialToken) != `{"x":1}` ||
			got.start.CorrelationID != r.CorrelationID {
			t.Fatalf("engine request %+v", got.start)
		}
	})
	for _, c := range []struct {
		body string
		want engine.StartCallbackType
	}{
		{`{"processModelId":"m","returnOn":"finished","correlationId":"c1"}`, engine.ReturnOnFinished},
		{`{"processModelId":"m","returnOn":2,"correlationId":"c1","timeout":1500}`, engine.ReturnOnFinished},
		{`{"processModelId":"m","returnOn":"end_event","endEventId":"end","correlationId":"c1","timeout":"2s"}`, engine.ReturnOnEndEvent},
		{`{"processModelId":"m","returnOn":3,"endEventId":"end","correlationId":"c1"}`, engine.ReturnOnEndEvent},
	} {
		t.Run("start "+c.body, func(t *testing.T) {
			var r StartReply
			ok(t, request(t, nc, events.SubjectProcessStart, c.body, nil), &r)
			if r.CorrelationID != "c1" || r.EndEventID != "end" || string(r.TokenPayload) != `{"done":true}` {
				t.Fatalf("reply %+v", r)
			}
			if got.start.ReturnOn != c.want {
				t.Fatalf("returnOn %d, want %d", got.start.ReturnOn, c.want)
			}
		})
	}
	t.Run("process", func(t *testing.T) {
		var ref ProcessInstanceRef
		ok(t, request(t, nc, events.SubjectProcessTerminate, `{"processInstanceId":"p"}`, nil), &ref)
		if ref.ProcessInstanceID != "p" || got.terminated != "p" {
			t.Fatalf("terminate %+v %q", ref, got.terminated)
		}
		var pi engine.ProcessInstance
		ok(t, request(t, nc, events.SubjectProcessGet, `{"processInstanceId":"p"}`, nil), &pi)
		if pi.ProcessInstanceID != "p" || pi.State != "running" {
			t.Fatalf("get %+v", pi)
		}
		fails(t, request(t, nc, events.SubjectProcessGet, `{"processInstanceId":"other"}`, nil), 404, "")
		var q ProcessQueryReply
		ok(t, request(t, nc, events.SubjectProcessQuery, `{"processModelId":"m","state":"running","offset":1,"limit":5}`, nil), &q)
		if q.TotalCount != 1 || len(q.ProcessInstances) != 1 {
			t.Fatalf("query %+v", q)
		}
		if !slices.Equal(got.pq.ProcessModelID, []string{"m"}) || !slices.Equal(got.pq.State, []string{"running"}) || got.pq.Offset != 1 || got.pq.Limit != 5 {
			t.Fatalf("engine query %+v", got.pq)
		}
	})
	t.Run("user tasks", func(t *testing.T) {
		var l UserTaskListReply
		ok(t, request(t, nc, events.SubjectUserTaskList, `{"processInstanceId":"p","flowNodeId":"approve","limit":3}`, nil), &l)
		if l.TotalCount != 1 || len(l.UserTasks) != 1 {
			t.Fatalf("list %+v", l)
		}
		u := l.UserTasks[0]
		if u.UserTaskInstanceID != "u" || u.FlowNodeID != "approve" || string(u.Token) != `{"amount":5}` ||
			len(u.FormFields) != 1 || u.ActualOwnerID != "o" || u.StartedAt == nil || !u.StartedAt.Equal(now) {
			t.Fatalf("task %+v", u)
		}
		if !slices.Equal(got.tq.State, []string{"suspended"}) || !slices.Equal(got.tq.FlowNodeType, []string{engine.UserTaskFlowNodeType}) ||
			!slices.Equal(got.tq.FlowNodeID, []string{"approve"}) || got.tq.Limit != 3 {
			t.Fatalf("engine query %+v", got.tq)
		}
		ok(t, request(t, nc, events.SubjectUserTaskList, `{"state":"any"}`, nil), &l)
		if got.tq.State != nil {
			t.Fatalf("state any sent %v", got.tq.State)
		}
		// Owner filter is applied by the service.
		ok(t, request(t, nc, events.SubjectUserTaskList, `{"actualOwnerId":"o"}`, nil), &l)
		if len(l.UserTasks) != 1 || l.TotalCount != 1 {
			t.Fatalf("owner o: %+v", l)
		}
		ok(t, request(t, nc, events.SubjectUserTaskList, `{"actualOwnerId":"someone-else"}`, nil), &l)
		if len(l.UserTasks) != 0 || l.TotalCount != 0 || l.UserTasks == nil {
			t.Fatalf("owner someone-else: %+v", l)
		}
		var one UserTask
		ok(t, request(t, nc, events.SubjectUserTaskGet, `{"userTaskInstanceId":"u"}`, nil), &one)
		if one.UserTaskInstanceID != "u" || !slices.Equal(got.tq.FlowNodeInstanceID, []string{"u"}) {
			t.Fatalf("get %+v, query %+v", one, got.tq)
		}
		fails(t, request(t, nc, events.SubjectUserTaskGet, `{"userTaskInstanceId":"nope"}`, nil), 404, "")

		var rr ReserveRequest
		ok(t, request(t, nc, events.SubjectUserTaskReserve, `{"userTaskInstanceId":"u","actualOwnerId":"o"}`, nil), &rr)
		if rr != (ReserveRequest{"u", "o"}) || got.reservedID != "u" || got.reservedFor != "o" {
			t.Fatalf("reserve %+v %+v", rr, got)
		}
		var ref UserTaskRef
		ok(t, request(t, nc, events.SubjectUserTaskCancelReserve, `{"userTaskInstanceId":"u"}`, nil), &ref)
		if ref.UserTaskInstanceID != "u" || got.cancelled != "u" {
			t.Fatalf("cancel %+v", ref)
		}
		ok(t, request(t, nc, events.SubjectUserTaskFinish, `{"userTaskInstanceId":"u","result":{"approved":true}}`, nil), &ref)
		if got.finishedID != "u" || string(got.finishResult) != `{"approved":true}` {
			t.Fatalf("finish %q %s", got.finishedID, got.finishResult)
		}
		ok(t, request(t, nc, events.SubjectUserTaskFinish, `{"userTaskInstanceId":"u"}`, nil), &ref)
		if string(got.finishResult) != `{}` {
			t.Fatalf("finish without result sent %s", got.finishResult)
		}
	})
	t.Run("triggers", func(t *testing.T) {
		var r TriggerReply
		ok(t, request(t, nc, events.SubjectMessageTrigger, `{"name":"m1","payload":{"a":1},"processInstanceId":"p"}`, nil), &r)
		if r.Name != "m1" || got.msg != [3]string{"m1", `{"a":1}`, "p"} {
			t.Fatalf("message %+v %v", r, got.msg)
		}
		ok(t, request(t, nc, events.SubjectSignalTrigger, `{"name":"s1"}`, nil), &r)
		if got.sig != [3]string{"s1", "", ""} {
			t.Fatalf("signal %v", got.sig)
		}
	})
}

type tokenKey struct{}

func TestUserTokenForwardedNotLogged(t *testing.T) {
	nc := runNATS(t)
	var logs testutil.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	seen := make(chan string, 4)
	eng := &fakeEngine{
		reserve: func(ctx context.Context, _, _ string) error {
			tok, _ := ctx.Value(tokenKey{}).(string)
			seen <- tok
			return &engine.Error{Status: 403, Op: "X", Body: engine.NewBaseError(403, "access denied", nil)}
		},
	}
	cfg := Config{WithToken: func(ctx context.Context, tok string) context.Context {
		return context.WithValue(ctx, tokenKey{}, tok)
	}}
	startService(t, nc, eng, cfg, logger)
	body := validBodies[events.SubjectUserTaskReserve]
	const secret = "s3cr3t-user-token"
	for _, h := range []nats.Header{
		{"Authorization": {"Bearer " + secret}},
		{"authorization": {"bearer " + secret}},
		{"Pe-User-Token": {secret}},
	} {
		msg := request(t, nc, events.SubjectUserTaskReserve, body, h)
		fails(t, msg, 403, "")
		if tok := <-seen; tok != secret {
			t.Fatalf("headers %v: engine saw token %q", h, tok)
		}
		if strings.Contains(string(msg.Data), secret) || strings.Contains(fmt.Sprint(msg.Header), secret) {
			t.Fatalf("token echoed: %s %v", msg.Data, msg.Header)
		}
	}
	request(t, nc, events.SubjectUserTaskReserve, body, nil)
	if tok := <-seen; tok != "" {
		t.Fatalf("no header: engine saw token %q", tok)
	}
	fails(t, request(t, nc, events.SubjectUserTaskReserve, body, nats.Header{"Authorization": {"Basic " + secret}}), 401, "Authorization")
	if strings.Contains(logs.String(), secret) {
		t.Fatalf("token in logs:\n%s", logs.String())
	}
}

func TestPanicBecomes500(t *testing.T) {
	nc := runNATS(t)
	eng := &fakeEngine{terminate: func(context.Context, string) error { panic("kaboom") }}
	startService(t, nc, eng, Config{}, nil)
	for range 3 {
		fails(t, request(t, nc, events.SubjectProcessTerminate, validBodies[events.SubjectProcessTerminate], nil), 500, "")
	}
	// Still serving: an unknown instance is a plain 404.
	fails(t, request(t, nc, events.SubjectProcessGet, `{"processInstanceId":"x"}`, nil), 404, "")
}

func TestSlowRequestDoesNotBlockOthers(t *testing.T) {
	nc := runNATS(t)
	release := make(chan struct{})
	entered := make(chan struct{}, 10)
	eng := &fakeEngine{
		start: func(ctx context.Context, r engine.ProcessStartRequest) (engine.ProcessStartResponse, error) {
			if r.ProcessModelID == "slow" {
				entered <- struct{}{}
				select {
				case <-release:
				case <-ctx.Done():
					return engine.ProcessStartResponse{}, ctx.Err()
				}
			}
			return engine.ProcessStartResponse{ProcessInstanceID: "pi", CorrelationID: r.CorrelationID, TokenPayload: json.RawMessage(`1`)}, nil
		},
	}
	startService(t, nc, eng, Config{}, nil)
	// Five slow blocking starts on the same endpoint...
	replies := make(chan *nats.Msg, 5)
	for range 5 {
		inbox := nats.NewInbox()
		sub, err := nc.ChanSubscribe(inbox, replies)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		if err := nc.PublishRequest(events.SubjectProcessStart, inbox, []byte(`{"processModelId":"slow","returnOn":"finished"}`)); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		<-entered
	}
	// ...do not hold up a fast one on the same endpoint, nor other endpoints.
	ok(t, request(t, nc, events.SubjectProcessStart, `{"processModelId":"fast"}`, nil), nil)
	ok(t, request(t, nc, events.SubjectUserTaskList, `{}`, nil), nil)
	close(release)
	for range 5 {
		var r StartReply
		ok(t, <-replies, &r)
		if string(r.TokenPayload) != "1" {
			t.Fatalf("slow reply %+v", r)
		}
	}
}

func TestBlockingStartTimeout(t *testing.T) {
	nc := runNATS(t)
	var corr atomic.Value
	eng := &fakeEngine{
		start: func(ctx context.Context, r engine.ProcessStartRequest) (engine.ProcessStartResponse, error) {
			corr.Store(r.CorrelationID)
			<-ctx.Done()
			return engine.ProcessStartResponse{}, &engine.TransportError{Op: "X", Err: ctx.Err()}
		},
		query: func(_ context.Context, q engine.ProcessInstanceQuery) (engine.ProcessInstanceList, error) {
			if len(q.CorrelationID) != 1 || q.CorrelationID[0] != corr.Load() {
				return engine.ProcessInstanceList{}, fmt.Errorf("unexpected query %+v", q)
			}
			return engine.ProcessInstanceList{ProcessInstances: []engine.ProcessInstance{{ProcessInstanceID: "pi-slow"}}}, nil
		},
	}
	startService(t, nc, eng, Config{}, nil)
	e := fails(t, request(t, nc, events.SubjectProcessStart, `{"processModelId":"m","returnOn":"finished","timeout":"50ms"}`, nil), 504, "")
	if e.ProcessInstanceID != "pi-slow" || e.CorrelationID != corr.Load() {
		t.Fatalf("timeout error %+v", e)
	}
	// Default timeout for blocking starts comes from Config.StartTimeout.
	nc2 := runNATS(t)
	startService(t, nc2, eng, Config{StartTimeout: 30 * time.Millisecond}, nil)
	fails(t, request(t, nc2, events.SubjectProcessStart, `{"processModelId":"m","returnOn":"finished"}`, nil), 504, "")
}

func TestBlockingStartProcessError(t *testing.T) {
	nc := runNATS(t)
	eng := &fakeEngine{
		start: func(context.Context, engine.ProcessStartRequest) (engine.ProcessStartResponse, error) {
			return engine.ProcessStartResponse{}, &engine.Error{Status: 500, Op: "X", Body: engine.NewBaseError(500, "instance failed",
				map[string]any{"bpmnError": map[string]any{"name": "Rejected", "code": "E42", "message": "too much"}})}
		},
		query: func(context.Context, engine.ProcessInstanceQuery) (engine.ProcessInstanceList, error) {
			return engine.ProcessInstanceList{ProcessInstances: []engine.ProcessInstance{{ProcessInstanceID: "pi-err"}}}, nil
		},
	}
	startService(t, nc, eng, Config{}, nil)
	e := fails(t, request(t, nc, events.SubjectProcessStart, `{"processModelId":"m","returnOn":"finished","correlationId":"c"}`, nil), 422, "")
	var b struct{ Code string }
	if err := json.Unmarshal(e.BPMNError, &b); err != nil || b.Code != "E42" || e.ProcessInstanceID != "pi-err" || e.CorrelationID != "c" {
		t.Fatalf("error %+v (%s)", e, e.BPMNError)
	}
}

func TestBusyAndShutdown(t *testing.T) {
	nc := runNATS(t)
	entered := make(chan struct{}, 1)
	eng := &fakeEngine{
		start: func(ctx context.Context, r engine.ProcessStartRequest) (engine.ProcessStartResponse, error) {
			entered <- struct{}{}
			<-ctx.Done() // only the shutdown ends it
			return engine.ProcessStartResponse{}, ctx.Err()
		},
	}
	s, err := New(nc, eng, Config{MaxBlockingStarts: 1, MaxInFlight: 1, ShutdownGrace: 20 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Run(context.Background()) }()
	<-s.Ready()

	inbox := nats.NewInbox()
	replies := make(chan *nats.Msg, 1)
	sub, err := nc.ChanSubscribe(inbox, replies)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	const blocking = `{"processModelId":"m","returnOn":"finished","timeout":"5m"}`
	if err := nc.PublishRequest(events.SubjectProcessStart, inbox, []byte(blocking)); err != nil {
		t.Fatal(err)
	}
	<-entered
	// The blocking starts' limit is full: another one gets 503 with a hint...
	busy := request(t, nc, events.SubjectProcessStart, blocking, nil)
	if e := fails(t, busy, 503, ""); e.RetryAfterMs != DefaultBusyRetryAfter.Milliseconds() || busy.Header.Get(HeaderRetryAfter) != "1" {
		t.Fatalf("busy reply without retry hint: %+v, Retry-After %q", e, busy.Header.Get(HeaderRetryAfter))
	}
	// ...while the other requests have their own limit.
	ok(t, request(t, nc, events.SubjectUserTaskList, `{}`, nil), nil)

	s.Close()
	if err := <-errc; err != nil {
		t.Fatalf("Run: %v", err)
	}
	s.Close() // idempotent
	fails(t, <-replies, 503, "")
	if _, err := nc.Request(events.SubjectUserTaskList, nil, 200*time.Millisecond); err == nil {
		t.Fatal("stopped service still answers")
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{
		{RequestTimeout: -1}, {StartTimeout: -1}, {MaxStartTimeout: -1}, {ShutdownGrace: -1},
		{MaxRequestBytes: -1}, {MaxInFlight: -1}, {MaxBlockingStarts: -1}, {BusyRetryAfter: -1},
		{StartTimeout: time.Hour, MaxStartTimeout: time.Minute}, {RequireUserToken: []string{"everything"}},
	} {
		if c.Validate() == nil {
			t.Errorf("%+v: want error", c)
		}
	}
	if err := (Config{}).Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := New(nil, &fakeEngine{}, Config{}, nil); err == nil {
		t.Fatal("nil conn accepted")
	}
}

// TestOwnerFilterPages: the actualOwnerId filter scans every engine page and
// pages the filtered list itself.
func TestOwnerFilterPages(t *testing.T) {
	nc := runNATS(t)
	const total = 1234
	var calls atomic.Int32
	eng := &fakeEngine{
		tasks: func(_ context.Context, q engine.FlowNodeInstanceQuery) (engine.FlowNodeInstanceList, error) {
			calls.Add(1)
			var out engine.FlowNodeInstanceList
			out.TotalCount = total
			for i := q.Offset; i < total && (q.Limit == 0 || i < q.Offset+q.Limit); i++ {
				owner := ""
				if i%3 == 0 {
					owner = "o"
				}
				out.FlowNodeInstances = append(out.FlowNodeInstances, engine.FlowNodeInstance{
					FlowNodeInstanceID: fmt.Sprint(i), ActualOwnerID: owner, State: "suspended"})
			}
			return out, nil
		},
	}
	startService(t, nc, eng, Config{}, nil)
	var l UserTaskListReply
	ok(t, request(t, nc, events.SubjectUserTaskList, `{"actualOwnerId":"o","offset":10,"limit":5}`, nil), &l)
	if l.TotalCount != 412 || len(l.UserTasks) != 5 || l.UserTasks[0].UserTaskInstanceID != "30" || l.UserTasks[4].UserTaskInstanceID != "42" {
		t.Fatalf("got total %d, %d tasks: %+v", l.TotalCount, len(l.UserTasks), l.UserTasks)
	}
	if n := calls.Load(); n != 3 {
		t.Fatalf("%d engine pages read, want 3", n)
	}
	ok(t, request(t, nc, events.SubjectUserTaskList, `{"actualOwnerId":"o","offset":500}`, nil), &l)
	if l.TotalCount != 412 || len(l.UserTasks) != 0 {
		t.Fatalf("offset past the end: %+v", l)
	}
}
