package forwarder_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/oauth2"

	"github.com/pe-bridge/pe-bridge/bridge/forwarder"
	"github.com/pe-bridge/pe-bridge/bridge/service"
	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/engine/emulator"
	"github.com/pe-bridge/pe-bridge/events"
	"github.com/pe-bridge/pe-bridge/examples/models"
	"github.com/pe-bridge/pe-bridge/internal/natsserver"
	"github.com/pe-bridge/pe-bridge/internal/testutil"
)

const pollPath = engine.BasePath + "/notifications/long_polling/"

// directModel runs from its start straight to its end: one process_started
// and one process_ended per instance.
const directModel = `<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" id="Definitions_direct" targetNamespace="http://bpmn.io/schema/bpmn">
  <bpmn:process id="direct" isExecutable="true">
    <bpmn:startEvent id="Start"><bpmn:outgoing>F1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:sequenceFlow id="F1" sourceRef="Start" targetRef="End" />
    <bpmn:endEvent id="End"><bpmn:incoming>F1</bpmn:incoming></bpmn:endEvent>
  </bpmn:process>
</bpmn:definitions>`

// engineWorld is the emulator (with the example models and directModel)
// behind a loopback HTTP server; polls gets one value per long poll that
// reaches it, keyed by event name.
type engineWorld struct {
	emu    *emulator.Emulator
	url    string
	client *engine.Client
	polls  sync.Map // event name → chan struct{}
}

func newEngine(t testing.TB, cfg emulator.Config) *engineWorld {
	t.Helper()
	emu, err := emulator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := emu.LoadFS(models.FS); err != nil {
		t.Fatal(err)
	}
	if _, err := emu.Deploy([]byte(directModel)); err != nil {
		t.Fatal(err)
	}
	w := &engineWorld{emu: emu}
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if name, ok := strings.CutPrefix(r.URL.Path, pollPath); ok {
			ch, _ := w.polls.LoadOrStore(name, make(chan struct{}, 1<<16))
			select {
			case ch.(chan struct{}) <- struct{}{}:
			default:
			}
		}
		emu.ServeHTTP(rw, r)
	}))
	t.Cleanup(func() {
		_ = emu.Close()
		srv.Close()
	})
	w.url = srv.URL
	w.client, err = engine.NewClient(srv.URL, engine.ClientConfig{MaxIdleConnsPerHost: 64})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.client.Close() })
	return w
}

func (w *engineWorld) pollCh(name string) chan struct{} {
	ch, _ := w.polls.LoadOrStore(name, make(chan struct{}, 1<<16))
	return ch.(chan struct{})
}

// startNATS runs an embedded nats-server with JetStream and connects to it.
func startNATS(t testing.TB) (*natsserver.Server, *nats.Conn) {
	t.Helper()
	ns, err := natsserver.Start(natsserver.Config{Listen: "127.0.0.1:0", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ns.Close() })
	return ns, connect(t, ns.ClientURL())
}

func connect(t testing.TB, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// counter is a forwarder.Observer that counts.
type counter struct {
	forwarded, dropped, gaps atomic.Int64
}

func (c *counter) EventForwarded(string)       { c.forwarded.Add(1) }
func (c *counter) EventDropped(string, string) { c.dropped.Add(1) }
func (c *counter) Gap()                        { c.gaps.Add(1) }

// fwdOpts configures one forwarder of a test.
type fwdOpts struct {
	poll     bool // long-poll feed instead of Socket.IO
	stream   bool // publish with JetStream acks
	cfg      forwarder.Config
	logger   *slog.Logger
	onPing   func()
	natsConn *nats.Conn // default: the world's connection
}

// runForwarder starts a forwarder against eng publishing on nc; it stops at
// the end of the test (or when stop is called).
func runForwarder(t testing.TB, eng *engineWorld, nc *nats.Conn, o fwdOpts) (f *forwarder.Forwarder, obs *counter, stop func()) {
	t.Helper()
	var feed forwarder.Feed
	var err error
	if o.poll {
		feed, err = forwarder.NewPollFeed(eng.client, forwarder.PollConfig{}, o.logger)
	} else {
		var sf *forwarder.SocketFeed
		sf, err = forwarder.NewSocketFeed(eng.url, engine.DummyTokenSource(), forwarder.SocketConfig{MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, ConnectTimeout: 2 * time.Second}, o.logger)
		if sf != nil && o.onPing != nil {
			sf.SetOnPing(o.onPing)
		}
		feed = sf
	}
	if err != nil {
		t.Fatal(err)
	}
	pub, err := forwarder.NewPublisher(nc, o.stream, nil)
	if err != nil {
		t.Fatal(err)
	}
	obs = &counter{}
	cfg := o.cfg
	if cfg.Source == "" {
		cfg.Source = "test-bridge"
	}
	cfg.Observer = obs
	f, err = forwarder.New(feed, pub, cfg, o.logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("forwarder Run: %v", err)
			}
			if err := pub.Close(); err != nil {
				t.Errorf("publisher Close: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return f, obs, stop
}

// inbox collects CloudEvents from pe.event.> and lets a test wait for one.
type inbox struct {
	ch   chan *nats.Msg
	seen []*nats.Msg
}

func subscribe(t testing.TB, nc *nats.Conn) *inbox {
	t.Helper()
	in := &inbox{ch: make(chan *nats.Msg, 1<<16)}
	sub, err := nc.ChanSubscribe(events.EventPrefix+">", in.ch)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return in
}

// eventWait bounds the wait for one event; events arrive within milliseconds.
const eventWait = 5 * time.Second

// next waits for the first event matching match, keeping the others.
func (in *inbox) next(t testing.TB, what string, match func(*nats.Msg) bool) *nats.Msg {
	t.Helper()
	for i, m := range in.seen {
		if match(m) {
			in.seen = append(in.seen[:i], in.seen[i+1:]...)
			return m
		}
	}
	deadline := time.After(eventWait)
	for {
		select {
		case m := <-in.ch:
			if match(m) {
				return m
			}
			in.seen = append(in.seen, m)
		case <-deadline:
			t.Fatalf("no %s within %s", what, eventWait)
			return nil
		}
	}
}

// expect waits for the CloudEvent of notification name about instance pi
// and checks its attributes.
func (in *inbox) expect(t testing.TB, name, pi string) (*nats.Msg, engine.EventMessage) {
	t.Helper()
	m := in.next(t, name+" of "+pi, func(m *nats.Msg) bool {
		return m.Subject == events.EventPrefix+name && m.Header.Get(events.HeaderPrefix+events.ExtProcessInstanceID) == pi
	})
	checkCloudEvent(t, name, m)
	var em engine.EventMessage
	if err := json.Unmarshal(m.Data, &em); err != nil {
		t.Fatalf("%s body %s: %v", name, m.Data, err)
	}
	if em.ProcessInstanceID != pi {
		t.Fatalf("%s body names instance %q, header %q", name, em.ProcessInstanceID, pi)
	}
	return m, em
}

// gap waits for the next pe.event.gap and returns its reason.
func (in *inbox) gap(t testing.TB) string {
	t.Helper()
	m := in.next(t, "gap event", func(m *nats.Msg) bool { return m.Subject == events.EventPrefix+forwarder.GapEvent })
	if m.Header.Get(events.HeaderType) != events.EventType(forwarder.GapEvent) || m.Header.Get(events.HeaderID) == "" ||
		m.Header.Get(forwarder.HeaderMsgID) != m.Header.Get(events.HeaderID) {
		t.Fatalf("gap headers %v", m.Header)
	}
	var d forwarder.GapData
	if err := json.Unmarshal(m.Data, &d); err != nil {
		t.Fatalf("gap body %s: %v", m.Data, err)
	}
	return d.Reason
}

func checkCloudEvent(t testing.TB, name string, m *nats.Msg) {
	t.Helper()
	h := m.Header
	if h.Get(events.HeaderSpecVersion) != "1.0" || h.Get(events.HeaderType) != events.EventType(name) ||
		h.Get(events.HeaderSource) != "test-bridge" || h.Get(events.HeaderID) == "" ||
		h.Get(forwarder.HeaderMsgID) != h.Get(events.HeaderID) || h.Get(events.HeaderDataContent) != events.ContentTypeJSON ||
		h.Get(events.HeaderSubject) == "" {
		t.Fatalf("%s: headers %v", name, h)
	}
	for k := range h {
		if strings.HasPrefix(strings.ToLower(k), "_watermill") {
			t.Fatalf("%s: Watermill header %s", name, k)
		}
	}
	if _, err := time.Parse(time.RFC3339Nano, h.Get(events.HeaderTime)); err != nil {
		t.Fatalf("%s: ce-time %q: %v", name, h.Get(events.HeaderTime), err)
	}
}

func req(t testing.TB, nc *nats.Conn, subject string, body any, out any) {
	t.Helper()
	data, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := nc.Request(subject, data, 20*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", subject, err)
	}
	if code := msg.Header.Get("Nats-Service-Error-Code"); code != "" {
		t.Fatalf("%s %s: error %s: %s", subject, data, code, msg.Data)
	}
	if out != nil {
		if err := json.Unmarshal(msg.Data, out); err != nil {
			t.Fatalf("%s reply %s: %v", subject, msg.Data, err)
		}
	}
}

// runService serves pe.process.* and pe.usertask.* on nc.
func runService(t testing.TB, nc *nats.Conn, eng *engine.Client) {
	t.Helper()
	svc, err := service.New(nc, eng, service.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("service Run: %v", err)
		}
	})
	select {
	case <-svc.Ready():
	case err := <-done:
		t.Fatalf("service: %v", err)
	}
}

// socketWorld is the common setup: engine, NATS, service, a Socket.IO
// forwarder of the default events, and a subscriber that saw its start gap.
func socketWorld(t *testing.T) (*engineWorld, *nats.Conn, *inbox, *counter, func()) {
	eng := newEngine(t, emulator.Config{})
	_, nc := startNATS(t)
	in := subscribe(t, nc)
	runService(t, nc, eng.client)
	_, obs, stop := runForwarder(t, eng, nc, fwdOpts{})
	if r := in.gap(t); r != forwarder.GapStart {
		t.Fatalf("first gap reason %q, want %q", r, forwarder.GapStart)
	}
	return eng, nc, in, obs, stop
}

// TestUserTaskLifeOverNATS drives a user task only through NATS: the
// waiting event, list, reserve, finish, and the finished event.
func TestUserTaskLifeOverNATS(t *testing.T) {
	_, nc, in, obs, stop := socketWorld(t)

	var started service.StartReply
	req(t, nc, events.SubjectProcessStart, map[string]any{"processModelId": "approval", "initialToken": map[string]any{"amount": 5000}}, &started)
	pi := started.ProcessInstanceID
	in.expect(t, "process_started", pi)

	m, waiting := in.expect(t, "user_task_waiting", pi)
	fni := waiting.FlowNodeInstanceID
	if fni == "" || waiting.FlowNodeID != "manual_approval" || m.Header.Get(events.HeaderSubject) != fni ||
		m.Header.Get(events.HeaderID) != "user_task_waiting/"+fni || m.Header.Get("ce-"+events.ExtFlowNodeInstanceID) != fni ||
		m.Header.Get("ce-"+events.ExtProcessModelID) != "approval" || m.Header.Get("ce-"+events.ExtCorrelationID) != started.CorrelationID ||
		string(waiting.CurrentToken) != `{"amount":5000}` {
		t.Fatalf("user_task_waiting %v %+v", m.Header, waiting)
	}

	var list service.UserTaskListReply
	req(t, nc, events.SubjectUserTaskList, service.UserTaskListRequest{ProcessInstanceID: pi}, &list)
	if len(list.UserTasks) != 1 || list.UserTasks[0].UserTaskInstanceID != fni {
		t.Fatalf("list %+v, want task %s", list, fni)
	}
	req(t, nc, events.SubjectUserTaskReserve, service.ReserveRequest{UserTaskInstanceID: fni, ActualOwnerID: "alice"}, nil)
	in.expect(t, "user_task_reserved", pi)

	req(t, nc, events.SubjectUserTaskFinish, service.FinishRequest{UserTaskInstanceID: fni, Result: json.RawMessage(`{"approved":true}`)}, nil)
	m, finished := in.expect(t, "user_task_finished", pi)
	if m.Header.Get(events.HeaderID) != "user_task_finished/"+fni {
		t.Fatalf("user_task_finished id %q", m.Header.Get(events.HeaderID))
	}
	var result struct{ Approved bool }
	if err := json.Unmarshal(finished.UserTaskResult, &result); err != nil || !result.Approved {
		t.Fatalf("userTaskResult %s (%v)", finished.UserTaskResult, err)
	}
	in.expect(t, "process_ended", pi)
	stop() // the observer is called after each publish: count once all are done
	if n := obs.forwarded.Load(); n != 5 {
		t.Errorf("observer counted %d forwarded events, want 5", n)
	}
}

// TestProcessEventsOverNATS: started, terminated and error events.
func TestProcessEventsOverNATS(t *testing.T) {
	eng, nc, in, _, _ := socketWorld(t)
	var r service.StartReply
	req(t, nc, events.SubjectProcessStart, map[string]any{"processModelId": "signal_catch"}, &r)
	m, _ := in.expect(t, "process_started", r.ProcessInstanceID)
	if m.Header.Get(events.HeaderID) != "process_started/"+r.ProcessInstanceID || m.Header.Get(events.HeaderSubject) != r.ProcessInstanceID {
		t.Fatalf("process_started headers %v", m.Header)
	}
	req(t, nc, events.SubjectProcessTerminate, service.ProcessInstanceRef{ProcessInstanceID: r.ProcessInstanceID}, nil)
	in.expect(t, "process_terminated", r.ProcessInstanceID)

	req(t, nc, events.SubjectProcessStart, map[string]any{"processModelId": "error_boundary", "initialToken": map[string]any{"customer": "c", "amount": 1}}, &r)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tasks, err := eng.client.FetchAndLock(ctx, engine.FetchAndLockRequest{WorkerID: "w", Topics: []string{"CheckCredit"}, MaxTasks: 1,
		LongPollingTimeout: 5 * time.Second, LockDuration: time.Minute})
	if err != nil || len(tasks) != 1 || tasks[0].ProcessInstanceID != r.ProcessInstanceID {
		t.Fatalf("fetch: %+v %v", tasks, err)
	}
	if err := eng.client.HandleError(ctx, tasks[0].ID, "w", engine.ExternalTaskError{ErrorCode: "unhandled"}); err != nil {
		t.Fatal(err)
	}
	in.expect(t, "process_error", r.ProcessInstanceID)
}

// TestReconnectAnnouncesGap: when the engine drops the Socket.IO
// connection, the forwarder reconnects, publishes a reconnect gap, counts
// it, and forwards the events after it.
func TestReconnectAnnouncesGap(t *testing.T) {
	eng, nc, in, obs, _ := socketWorld(t)
	for round := 1; round <= 3; round++ {
		eng.emu.DisconnectSockets()
		if r := in.gap(t); r != forwarder.GapReconnect {
			t.Fatalf("round %d: gap reason %q, want %q", round, r, forwarder.GapReconnect)
		}
		if n := obs.gaps.Load(); n != int64(round) {
			t.Fatalf("round %d: observer counted %d gaps", round, n)
		}
		var r service.StartReply
		req(t, nc, events.SubjectProcessStart, map[string]any{"processModelId": "direct"}, &r)
		in.expect(t, "process_started", r.ProcessInstanceID)
		in.expect(t, "process_ended", r.ProcessInstanceID)
	}
}

// TestSocketIdleThenEvents: after many heartbeat cycles without a single
// event (an idle engine), an instance still gets its events and no gap is
// announced. The Engine.IO ping interval is shortened to 20ms, so 50 pings
// stand for an hour of silence at the engine's 25s interval.
func TestSocketIdleThenEvents(t *testing.T) {
	eng := newEngine(t, emulator.Config{SocketPingInterval: 20 * time.Millisecond})
	_, nc := startNATS(t)
	in := subscribe(t, nc)
	pings := make(chan struct{}, 1024)
	_, obs, _ := runForwarder(t, eng, nc, fwdOpts{onPing: func() {
		select {
		case pings <- struct{}{}:
		default:
		}
	}})
	if r := in.gap(t); r != forwarder.GapStart {
		t.Fatalf("gap %q", r)
	}
	for range 50 {
		select {
		case <-pings:
		case <-time.After(10 * time.Second):
			t.Fatal("no Engine.IO ping within 10s")
		}
	}
	res, err := eng.client.StartProcess(context.Background(), engine.ProcessStartRequest{ProcessModelID: "direct"})
	if err != nil {
		t.Fatal(err)
	}
	in.expect(t, "process_started", res.ProcessInstanceID)
	in.expect(t, "process_ended", res.ProcessInstanceID)
	if n := obs.gaps.Load(); n != 0 {
		t.Fatalf("%d gaps while idle", n)
	}
}

// TestPollIdleThenEvents: the long-poll fallback. The engine ends each poll
// without an event after 10ms (204); that is the normal end of a poll: it is
// re-issued at once, never logged above debug, never a gap. After 30 such
// ends an instance still gets its events.
func TestPollIdleThenEvents(t *testing.T) {
	eng := newEngine(t, emulator.Config{NotificationTimeout: 10 * time.Millisecond})
	_, nc := startNATS(t)
	in := subscribe(t, nc)
	logs := newLevelLog(t)
	_, obs, _ := runForwarder(t, eng, nc, fwdOpts{poll: true, logger: slog.New(logs), cfg: forwarder.Config{Events: []string{"process_started", "process_ended"}}})
	if r := in.gap(t); r != forwarder.GapStart {
		t.Fatalf("gap %q", r)
	}
	for range 30 {
		select {
		case <-eng.pollCh("process_started"):
		case <-time.After(10 * time.Second):
			t.Fatal("no re-poll within 10s: the forwarder backed off after a 204")
		}
	}
	// Between two polls of a name an event is lost (the endpoint keeps no
	// cursor), so this repeats with a new instance if one went missing.
	for attempt := 1; ; attempt++ {
		res, err := eng.client.StartProcess(context.Background(), engine.ProcessStartRequest{ProcessModelID: "direct"})
		if err != nil {
			t.Fatal(err)
		}
		if in.has(t, "process_started", res.ProcessInstanceID) {
			break
		}
		if attempt == 5 {
			t.Fatal("no process_started in 5 attempts")
		}
	}
	if w := logs.atLeast(slog.LevelInfo); len(w) != 0 {
		t.Fatalf("normal poll ends logged at info or above: %v", w)
	}
	if n := obs.gaps.Load(); n != 0 {
		t.Fatalf("%d gaps", n)
	}
}

// has waits briefly for the event of name about pi.
func (in *inbox) has(t testing.TB, name, pi string) bool {
	t.Helper()
	deadline := time.After(time.Second)
	for {
		for _, m := range in.seen {
			if m.Subject == events.EventPrefix+name && m.Header.Get(events.HeaderPrefix+events.ExtProcessInstanceID) == pi {
				return true
			}
		}
		select {
		case m := <-in.ch:
			in.seen = append(in.seen, m)
		case <-deadline:
			return false
		}
	}
}

// levelLog is a slog handler that keeps the messages at each level.
type levelLog struct {
	mu   sync.Mutex
	recs []slog.Record
}

// newLevelLog records what is logged and prints it when the test failed.
func newLevelLog(t testing.TB) *levelLog {
	h := &levelLog{}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, r := range h.recs {
			var b strings.Builder
			r.Attrs(func(a slog.Attr) bool {
				fmt.Fprintf(&b, " %s=%v", a.Key, a.Value.Resolve())
				return true
			})
			t.Logf("log: %s %s %s%s", r.Time.Format("15:04:05.000"), r.Level, r.Message, b.String())
		}
	})
	return h
}

func (h *levelLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *levelLog) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r)
	h.mu.Unlock()
	return nil
}
func (h *levelLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *levelLog) WithGroup(string) slog.Handler      { return h }

func (h *levelLog) atLeast(l slog.Level) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.recs {
		if r.Level >= l {
			out = append(out, fmt.Sprintf("%s %s", r.Level, r.Message))
		}
	}
	return out
}

// TestOnDeployTriggers: a deployment and the first external task of a new
// topic call OnDeploy well within 2s (measured from the deploy call).
func TestOnDeployTriggers(t *testing.T) {
	eng := newEngine(t, emulator.Config{})
	_, nc := startNATS(t)
	in := subscribe(t, nc)
	calls := make(chan time.Time, 16)
	runForwarder(t, eng, nc, fwdOpts{cfg: forwarder.Config{OnDeploy: func() { calls <- time.Now() }}})
	in.gap(t)
	select {
	case <-calls: // the connect's refresh: a deployment may have passed before it
	case <-time.After(5 * time.Second):
		t.Fatal("no OnDeploy for the feed's connect")
	}
	start := time.Now()
	if err := eng.client.Deploy(context.Background(), engine.DeployRequest{XML: []string{models.Late}, OverwriteExisting: true}); err != nil {
		t.Fatal(err)
	}
	select {
	case at := <-calls:
		t.Logf("OnDeploy %s after the deployment", at.Sub(start))
		if at.Sub(start) > 2*time.Second {
			t.Fatalf("OnDeploy after %s", at.Sub(start))
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no OnDeploy within 2s of a deployment")
	}
	if _, err := eng.client.StartProcess(context.Background(), engine.ProcessStartRequest{ProcessModelID: "late"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-calls: // external_task_created for LateTopic, first seen
	case <-time.After(2 * time.Second):
		t.Fatal("no OnDeploy for the first task of a new topic")
	}
}

// TestPublisherCloseKeepsConnection: watermill-nats' Publisher.Close closes
// its NATS connection; the forwarder's must not, the bridge shares it.
func TestPublisherCloseKeepsConnection(t *testing.T) {
	_, nc := startNATS(t)
	for _, js := range []bool{false, true} {
		pub, err := forwarder.NewPublisher(nc, js, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := pub.Close(); err != nil {
			t.Fatal(err)
		}
		if nc.IsClosed() || nc.Flush() != nil {
			t.Fatalf("jetstream=%v: connection closed by the publisher", js)
		}
	}
}

func ExampleEventID() {
	fmt.Println(forwarder.EventID("user_task_waiting", engine.EventMessage{ProcessInstanceID: "p1", FlowNodeInstanceID: "f1"}))
	fmt.Println(forwarder.EventID("process_ended", engine.EventMessage{ProcessInstanceID: "p1"}))
	// Output:
	// user_task_waiting/f1
	// process_ended/p1
}

// refresher hands out a refused token first; Refresh replaces it.
type refresher struct {
	mu        sync.Mutex
	tok       string
	refreshes int
}

func (r *refresher) Token() (*oauth2.Token, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return &oauth2.Token{AccessToken: r.tok}, nil
}

func (r *refresher) Refresh(*oauth2.Token) (*oauth2.Token, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refreshes++
	r.tok = "good"
	return &oauth2.Token{AccessToken: r.tok}, nil
}

// TestSocketRefusedTokenRefreshed: the engine refuses the handshake's
// token; the feed asks its engine.TokenRefresher for a new one and connects.
func TestSocketRefusedTokenRefreshed(t *testing.T) {
	eng := newEngine(t, emulator.Config{DenyAnonymous: true, Verify: func(tok string) (emulator.Identity, error) {
		if tok != "good" {
			return emulator.Identity{}, errors.New("token expired")
		}
		return emulator.Identity{UserID: "bridge", Scopes: []string{emulator.ScopeObserver}}, nil
	}})
	_, nc := startNATS(t)
	in := subscribe(t, nc)
	r := &refresher{tok: "stale"}
	// ConnectTimeout as in runForwarder: a handshake that hangs (see
	// DefaultConnectTimeout) is retried after 2s, not after the default 5s,
	// which is as long as the test waits for the start gap.
	feed, err := forwarder.NewSocketFeed(eng.url, r, forwarder.SocketConfig{MinBackoff: 10 * time.Millisecond, ConnectTimeout: 2 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := forwarder.NewPublisher(nc, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	f, err := forwarder.New(feed, pub, forwarder.Config{Source: "test-bridge"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- f.Run(context.Background()) }()
	defer func() {
		f.Close()
		<-done
	}()
	if g := in.gap(t); g != forwarder.GapStart {
		t.Fatalf("gap %q", g)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.refreshes != 1 {
		t.Fatalf("%d refreshes, want 1", r.refreshes)
	}
}

// TestSocketFallsBackToPolling: where WebSocket upgrades are refused (a
// proxy that does not pass them), the feed connects with HTTP long-polling
// and events still arrive.
func TestSocketFallsBackToPolling(t *testing.T) {
	emu, err := emulator.New(emulator.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := emu.Deploy([]byte(directModel)); err != nil {
		t.Fatal(err)
	}
	var wsRefused atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("transport") == "websocket" {
			wsRefused.Add(1)
			http.Error(rw, "no websockets here", http.StatusBadRequest)
			return
		}
		emu.ServeHTTP(rw, r)
	}))
	t.Cleanup(func() { _ = emu.Close(); srv.Close() })
	client, err := engine.NewClient(srv.URL, engine.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	eng := &engineWorld{emu: emu, url: srv.URL, client: client}
	_, nc := startNATS(t)
	in := subscribe(t, nc)
	runForwarder(t, eng, nc, fwdOpts{logger: slog.New(newLevelLog(t))})
	if r := in.gap(t); r != forwarder.GapStart {
		t.Fatalf("gap %q", r)
	}
	res, err := client.StartProcess(context.Background(), engine.ProcessStartRequest{ProcessModelID: "direct"})
	if err != nil {
		t.Fatal(err)
	}
	in.expect(t, "process_started", res.ProcessInstanceID)
	in.expect(t, "process_ended", res.ProcessInstanceID)
	if wsRefused.Load() == 0 {
		t.Fatal("the feed never tried WebSocket")
	}
}

// TestEventAboveMaxPayload: an engine event above the NATS server's
// max_payload (a big token, which the engine accepts) is dropped at the
// first attempt, not retried for seconds while the queue backs up; the WARN
// names its size and the limit and carries no Watermill stack trace; a
// publish_failed gap precedes the next event, which flows.
func TestEventAboveMaxPayload(t *testing.T) {
	conf := t.TempDir() + "/small.conf"
	if err := os.WriteFile(conf, []byte("max_payload: 65536\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ns, err := natsserver.Start(natsserver.Config{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), ConfigFile: conf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ns.Close() })
	nc := connect(t, ns.ClientURL())
	eng := newEngine(t, emulator.Config{})
	in := subscribe(t, nc)
	logs := newLevelLog(t)
	_, obs, _ := runForwarder(t, eng, nc, fwdOpts{logger: slog.New(logs), cfg: forwarder.Config{Events: []string{"process_started"}}})
	in.gap(t)

	big, err := eng.client.StartProcess(context.Background(), engine.ProcessStartRequest{ProcessModelID: "direct",
		InitialToken: json.RawMessage(`{"big":"` + strings.Repeat("x", 100_000) + `"}`)})
	if err != nil {
		t.Fatal(err)
	}
	small, err := eng.client.StartProcess(context.Background(), engine.ProcessStartRequest{ProcessModelID: "direct"})
	if err != nil {
		t.Fatal(err)
	}
	if r := in.gap(t); r != forwarder.GapPublish {
		t.Fatalf("gap reason %q, want %q", r, forwarder.GapPublish)
	}
	in.expect(t, "process_started", small.ProcessInstanceID)
	// One connection publishes in order: had the big event gone out, it
	// would have arrived before the small one, and be among in.seen.
	for _, m := range in.seen {
		if m.Header.Get(events.HeaderPrefix+events.ExtProcessInstanceID) == big.ProcessInstanceID {
			t.Fatal("the oversized event arrived")
		}
	}
	if d := obs.dropped.Load(); d != 1 {
		t.Fatalf("%d events dropped, want 1", d)
	}
	logs.mu.Lock()
	defer logs.mu.Unlock()
	var warns int
	for _, r := range logs.recs {
		var errText string
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "error" {
				errText = a.Value.Resolve().String()
			}
			return true
		})
		if strings.Contains(r.Message, "publishing event, retrying") {
			t.Errorf("an oversized event was retried: %s %s", r.Message, errText)
		}
		if r.Level >= slog.LevelWarn {
			warns++
			if !strings.Contains(errText, "bytes, above the NATS server's max_payload of 65536 bytes") || strings.Contains(errText, "\n") {
				t.Errorf("WARN %q error %q: want size and limit, one line", r.Message, errText)
			}
		}
	}
	if warns != 1 {
		t.Errorf("%d WARNs, want 1", warns)
	}
}

// nopSink drops what a feed delivers.
type nopSink struct{}

func (nopSink) Event(string, engine.EventMessage, json.RawMessage) {}
func (nopSink) Connected(bool)                                     {}

// TestSocketRefusedSaysWhy: when nothing listens at the engine URL, the WARN
// of the Socket.IO feed names the cause (the Socket.IO client's own message
// is only "fetch read error").
func TestSocketRefusedSaysWhy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	_ = ln.Close() // nothing listens there now: every connection is refused
	logs := newLevelLog(t)
	feed, err := forwarder.NewSocketFeed(url, engine.DummyTokenSource(), forwarder.SocketConfig{MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, ConnectTimeout: 2 * time.Second}, slog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- feed.Run(ctx, []string{"process_started"}, nopSink{}) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	var warn string
	testutil.Eventually(t, 10*time.Second, func() error {
		logs.mu.Lock()
		defer logs.mu.Unlock()
		for _, r := range logs.recs {
			if r.Level >= slog.LevelWarn {
				r.Attrs(func(a slog.Attr) bool {
					if a.Key == "error" {
						warn = a.Value.String()
					}
					return true
				})
				return nil
			}
		}
		return errors.New("no WARN yet")
	})
	if !strings.Contains(warn, "connection refused") {
		t.Fatalf("WARN error %q does not say the connection was refused", warn)
	}
}
