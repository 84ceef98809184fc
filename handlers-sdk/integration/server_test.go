package integration_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natstest "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/events"
	handler "github.com/pe-bridge/pe-bridge/handlers-sdk"
	"github.com/pe-bridge/pe-bridge/handlers-sdk/handlertest"
)

const wait = 10 * time.Second

func runNATS(t *testing.T) *server.Server {
	t.Helper()
	opts := natstest.DefaultTestOptions
	opts.Port = -1
	s := natstest.RunServer(&opts)
	t.Cleanup(s.Shutdown)
	return s
}

func connect(t *testing.T, s *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// serve starts a Server on its own connection and drains it at cleanup.
func serve(t *testing.T, s *server.Server, topic string, h handler.Handler, opts ...handler.Option) *handler.Server {
	t.Helper()
	srv, err := handler.NewServer(connect(t, s), topic, h, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

// request plays the bridge: it publishes a binary-mode task event with a reply
// subject and decodes the reply with events.DecodeReply.
func request(t *testing.T, nc *nats.Conn, task handlertest.Task) handlertest.Reply {
	t.Helper()
	msg, err := handlertest.NewMsg(task)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := nc.RequestMsg(msg, wait)
	if err != nil {
		t.Fatalf("request %s: %v", msg.Subject, err)
	}
	r, err := handlertest.DecodeMsg(resp)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

type order struct {
	Amount   float64 `json:"amount"`
	Customer string  `json:"customer"`
}

func TestServeOutcomes(t *testing.T) {
	s := runNATS(t)
	bridge := connect(t, s)
	serve(t, s, "orders", handler.TaskFunc(func(ctx context.Context, o order, task *handler.Task) (any, error) {
		switch o.Customer {
		case "bpmn":
			return nil, handler.BPMNError("credit_denied", "no credit", map[string]any{"limit": 10})
		case "retry":
			return nil, handler.Failure(errors.New("crm down"), handler.RetryAfter(5*time.Second))
		case "plain":
			return nil, errors.New("plain error")
		case "panic":
			panic("boom in handler")
		case "nil":
			return nil, nil
		case "marker":
			return map[string]any{"$pe": "looks like an envelope"}, nil
		}
		return map[string]any{"some": "result", "amount": o.Amount, "task": task.ID,
			"pi": task.ProcessInstanceID, "topic": task.Topic, "single": task.SingleTry}, nil
	}))

	t.Run("success", func(t *testing.T) {
		r := request(t, bridge, handlertest.Task{ID: "t-1", Topic: "orders", ProcessInstanceID: "pi-1", SingleTry: true,
			Payload: order{Amount: 12.5, Customer: "x"}})
		if r.Kind != events.KindSuccess {
			t.Fatalf("kind %v, body %s", r.Kind, r.Body)
		}
		var got map[string]any
		if err := r.DecodeResult(&got); err != nil {
			t.Fatal(err)
		}
		want := map[string]any{"some": "result", "amount": 12.5, "task": "t-1", "pi": "pi-1", "topic": "orders", "single": true}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("result %v, want %v", got, want)
		}
	})
	t.Run("structured", func(t *testing.T) {
		r := request(t, bridge, handlertest.Task{ID: "t-s", Topic: "orders", Structured: true, Payload: order{Amount: 3}})
		var got map[string]any
		if err := r.DecodeResult(&got); err != nil {
			t.Fatal(err)
		}
		if got["task"] != "t-s" || got["amount"] != 3.0 {
			t.Fatalf("result %v", got)
		}
	})
	t.Run("no result", func(t *testing.T) {
		r := request(t, bridge, handlertest.Task{Topic: "orders", Payload: order{Customer: "nil"}})
		if r.Kind != events.KindSuccess || r.Result != nil || len(r.Body) != 0 {
			t.Fatalf("reply %+v", r)
		}
	})
	t.Run("result with $pe member is wrapped", func(t *testing.T) {
		r := request(t, bridge, handlertest.Task{Topic: "orders", Payload: order{Customer: "marker"}})
		if r.Kind != events.KindSuccess || string(r.Result) != `{"$pe":"looks like an envelope"}` {
			t.Fatalf("reply %+v body %s", r, r.Body)
		}
	})
	t.Run("bpmn error", func(t *testing.T) {
		r := request(t, bridge, handlertest.Task{Topic: "orders", Payload: order{Customer: "bpmn"}})
		if r.Kind != events.KindBPMNError || r.Code != "credit_denied" || r.Message != "no credit" || string(r.Details) != `{"limit":10}` {
			t.Fatalf("reply %+v body %s", r, r.Body)
		}
		if r.Outcome != events.MarkerBPMNError {
			t.Fatalf("Pe-Outcome %q", r.Outcome)
		}
	})
	t.Run("failure with retry-after", func(t *testing.T) {
		r := request(t, bridge, handlertest.Task{Topic: "orders", Payload: order{Customer: "retry"}})
		if r.Kind != events.KindFailure || r.RetryAfter != 5*time.Second || !strings.Contains(r.Message, "crm down") {
			t.Fatalf("reply %+v body %s", r, r.Body)
		}
	})
	t.Run("plain error", func(t *testing.T) {
		r := request(t, bridge, handlertest.Task{Topic: "orders", Payload: order{Customer: "plain"}})
		if r.Kind != events.KindFailure || r.RetryAfter != 0 || r.Message != "plain error" {
			t.Fatalf("reply %+v body %s", r, r.Body)
		}
	})
	t.Run("panic", func(t *testing.T) {
		r := request(t, bridge, handlertest.Task{Topic: "orders", Payload: order{Customer: "panic"}})
		if r.Kind != events.KindFailure || !strings.Contains(r.Message, "boom in handler") {
			t.Fatalf("reply %+v body %s", r, r.Body)
		}
	})
	t.Run("payload of the wrong type", func(t *testing.T) {
		r := request(t, bridge, handlertest.Task{Topic: "orders", Payload: json.RawMessage(`{"amount":"many"}`)})
		if r.Kind != events.KindFailure || !strings.Contains(r.Message, "decoding payload") {
			t.Fatalf("reply %+v body %s", r, r.Body)
		}
	})
	t.Run("event without id", func(t *testing.T) {
		msg := nats.NewMsg("pe.task.orders")
		msg.Header.Set(events.HeaderSpecVersion, events.SpecVersion)
		msg.Header.Set(events.HeaderType, events.TypeTask)
		msg.Header.Set(events.HeaderSource, "test")
		msg.Data = []byte(`{}`)
		resp, err := bridge.RequestMsg(msg, wait)
		if err != nil {
			t.Fatal(err)
		}
		r, err := handlertest.DecodeMsg(resp)
		if err != nil || r.Kind != events.KindFailure || !strings.Contains(r.Message, "id is empty") {
			t.Fatalf("reply %+v, %v", r, err)
		}
	})
}

func TestTopicMapping(t *testing.T) {
	s := runNATS(t)
	bridge := connect(t, s)
	const topic = "billing.invoice created"
	serve(t, s, topic, handler.HandlerFunc(func(ctx context.Context, task *handler.Task) (any, error) {
		return task.Topic, nil
	}))
	msg, err := handlertest.NewMsg(handlertest.Task{Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	if msg.Subject != "pe.task.billing%2Einvoice%20created" {
		t.Fatalf("subject %q", msg.Subject)
	}
	if r := request(t, bridge, handlertest.Task{Topic: topic}); string(r.Result) != `"billing.invoice created"` {
		t.Fatalf("result %s", r.Result)
	}
}

func TestCancelEventCancelsContext(t *testing.T) {
	s := runNATS(t)
	bridge := connect(t, s)
	started := make(chan string, 2)
	causes := make(chan error, 2)
	serve(t, s, "slow", handler.HandlerFunc(func(ctx context.Context, task *handler.Task) (any, error) {
		started <- task.ID
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return nil, ctx.Err()
	}))
	replies := make(chan *nats.Msg, 2)
	inbox := nats.NewInbox()
	sub, err := bridge.ChanSubscribe(inbox, replies)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	for _, id := range []string{"keep", "drop"} {
		msg, _ := handlertest.NewMsg(handlertest.Task{ID: id, Topic: "slow"})
		msg.Reply = inbox
		if err := bridge.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		select {
		case <-started:
		case <-time.After(wait):
			t.Fatal("handler not started")
		}
	}
	cm, err := handlertest.NewCancelMsg("slow", "drop", "terminated")
	if err != nil {
		t.Fatal(err)
	}
	if err := bridge.PublishMsg(cm); err != nil {
		t.Fatal(err)
	}
	select {
	case cause := <-causes:
		if !errors.Is(cause, handler.ErrTaskCancelled) {
			t.Fatalf("cause %v", cause)
		}
	case <-time.After(wait):
		t.Fatal("cancel event did not cancel the handler's context")
	}
	select {
	case r := <-replies:
		if events.HeaderGet(r.Header, events.OutcomeHeader) != events.MarkerFailure {
			t.Fatalf("reply to a cancelled task: %s %s", events.HeaderGet(r.Header, events.OutcomeHeader), r.Data)
		}
	case <-time.After(wait):
		t.Fatal("no reply")
	}
	// The other task is still running: only the cancelled id was hit.
	select {
	case c := <-causes:
		t.Fatalf("task keep was cancelled too: %v", c)
	default:
	}
}

func TestCancelBeforeStart(t *testing.T) {
	// A cancel event for a task that waits for a concurrency slot makes the
	// task start with a cancelled context.
	s := runNATS(t)
	bridge := connect(t, s)
	release := make(chan struct{})
	started := make(chan string, 4)
	causes := make(chan error, 4)
	logs := make(chan string, 16)
	serve(t, s, "queue", handler.HandlerFunc(func(ctx context.Context, task *handler.Task) (any, error) {
		started <- task.ID
		if task.ID == "first" {
			<-release
			return nil, nil
		}
		causes <- context.Cause(ctx)
		return nil, nil
	}), handler.WithConcurrency(1), handler.WithLogger(slog.New(chanHandler(logs))))
	inbox := nats.NewInbox()
	replies := make(chan *nats.Msg, 4)
	sub, _ := bridge.ChanSubscribe(inbox, replies)
	defer sub.Unsubscribe()
	first, _ := handlertest.NewMsg(handlertest.Task{ID: "first", Topic: "queue"})
	first.Reply = inbox
	_ = bridge.PublishMsg(first)
	if id := <-started; id != "first" {
		t.Fatalf("started %s", id)
	}
	cm, _ := handlertest.NewCancelMsg("queue", "second", "")
	_ = bridge.PublishMsg(cm)
	for msg := range logs { // wait until the server processed the cancel event
		if strings.Contains(msg, "cancel event") {
			break
		}
	}
	second, _ := handlertest.NewMsg(handlertest.Task{ID: "second", Topic: "queue"})
	second.Reply = inbox
	_ = bridge.PublishMsg(second)
	_ = bridge.Flush()
	close(release)
	select {
	case c := <-causes:
		if !errors.Is(c, handler.ErrTaskCancelled) {
			t.Fatalf("second task started with cause %v", c)
		}
	case <-time.After(wait):
		t.Fatal("second task not run")
	}
}

// chanHandler is a slog.Handler that sends each record's message to ch.
type chanHandler chan string

func (h chanHandler) Enabled(context.Context, slog.Level) bool      { return true }
func (h chanHandler) Handle(_ context.Context, r slog.Record) error { h <- r.Message; return nil }
func (h chanHandler) WithAttrs([]slog.Attr) slog.Handler            { return h }
func (h chanHandler) WithGroup(string) slog.Handler                 { return h }

func TestConcurrencyLimit(t *testing.T) {
	s := runNATS(t)
	bridge := connect(t, s)
	const limit, tasks = 3, 12
	var running, peak atomic.Int32
	started := make(chan struct{}, tasks)
	release := make(chan struct{})
	srv := serve(t, s, "limited", handler.HandlerFunc(func(ctx context.Context, task *handler.Task) (any, error) {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		started <- struct{}{}
		<-release
		running.Add(-1)
		return task.ID, nil
	}), handler.WithConcurrency(limit))
	inbox := nats.NewInbox()
	replies := make(chan *nats.Msg, tasks)
	sub, _ := bridge.ChanSubscribe(inbox, replies)
	defer sub.Unsubscribe()
	for i := range tasks {
		msg, _ := handlertest.NewMsg(handlertest.Task{ID: fmt.Sprint("t", i), Topic: "limited"})
		msg.Reply = inbox
		if err := bridge.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
	}
	for range limit {
		<-started
	}
	if n := srv.InFlight(); n != limit {
		t.Fatalf("in flight %d, want %d", n, limit)
	}
	// Let one finish at a time; the peak must never exceed the limit.
	for i := range tasks {
		release <- struct{}{}
		select {
		case <-replies:
		case <-time.After(wait):
			t.Fatalf("reply %d missing", i)
		}
	}
	if p := peak.Load(); p != limit {
		t.Fatalf("peak concurrency %d, want %d", p, limit)
	}
}

func TestQueueGroupSharesLoad(t *testing.T) {
	s := runNATS(t)
	bridge := connect(t, s)
	var a, b atomic.Int32
	serve(t, s, "shared", handler.HandlerFunc(func(context.Context, *handler.Task) (any, error) { a.Add(1); return "a", nil }))
	serve(t, s, "shared", handler.HandlerFunc(func(context.Context, *handler.Task) (any, error) { b.Add(1); return "b", nil }))
	const n = 40
	for i := range n {
		request(t, bridge, handlertest.Task{ID: fmt.Sprint("q", i), Topic: "shared"})
	}
	if a.Load()+b.Load() != n {
		t.Fatalf("handled %d+%d, want %d in total (each task exactly once)", a.Load(), b.Load(), n)
	}
	if a.Load() == 0 || b.Load() == 0 {
		t.Fatalf("load not shared: %d / %d", a.Load(), b.Load())
	}
}

func TestDrainWaitsForInFlight(t *testing.T) {
	s := runNATS(t)
	bridge := connect(t, s)
	started := make(chan struct{})
	release := make(chan struct{})
	var finished atomic.Bool
	srv := serve(t, s, "drain", handler.HandlerFunc(func(ctx context.Context, task *handler.Task) (any, error) {
		close(started)
		<-release
		finished.Store(true)
		return "done", nil
	}))
	inbox := nats.NewInbox()
	replies := make(chan *nats.Msg, 1)
	sub, _ := bridge.ChanSubscribe(inbox, replies)
	defer sub.Unsubscribe()
	msg, _ := handlertest.NewMsg(handlertest.Task{Topic: "drain"})
	msg.Reply = inbox
	_ = bridge.PublishMsg(msg)
	<-started
	drained := make(chan error, 1)
	go func() { drained <- srv.Drain(context.Background()) }()
	select {
	case err := <-drained:
		t.Fatalf("drain returned while a task was in flight: %v", err)
	default:
	}
	close(release)
	select {
	case err := <-drained:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(wait):
		t.Fatal("drain did not return")
	}
	if !finished.Load() {
		t.Fatal("drain returned before the handler finished")
	}
	select {
	case r := <-replies:
		if string(r.Data) != `"done"` {
			t.Fatalf("reply %s", r.Data)
		}
	case <-time.After(wait):
		t.Fatal("no reply after drain")
	}
	// After the drain no task reaches the server: the request finds no responder.
	m2, _ := handlertest.NewMsg(handlertest.Task{ID: "late", Topic: "drain"})
	if _, err := bridge.RequestMsg(m2, time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("request after drain: %v, want no responders", err)
	}
}

func TestDrainTimeoutCancels(t *testing.T) {
	s := runNATS(t)
	bridge := connect(t, s)
	started := make(chan struct{})
	cause := make(chan error, 1)
	srv := serve(t, s, "stuck", handler.HandlerFunc(func(ctx context.Context, task *handler.Task) (any, error) {
		close(started)
		<-ctx.Done()
		cause <- context.Cause(ctx)
		return nil, ctx.Err()
	}), handler.WithDrainTimeout(50*time.Millisecond))
	msg, _ := handlertest.NewMsg(handlertest.Task{Topic: "stuck"})
	msg.Reply = nats.NewInbox()
	_ = bridge.PublishMsg(msg)
	<-started
	err := srv.Drain(context.Background())
	if !errors.Is(err, handler.ErrDrainTimeout) {
		t.Fatalf("drain: %v, want ErrDrainTimeout", err)
	}
	if c := <-cause; !errors.Is(c, handler.ErrDrainTimeout) {
		t.Fatalf("cause %v", c)
	}
	if err2 := srv.Drain(context.Background()); err2 != err {
		t.Fatalf("second drain %v", err2)
	}
	if err3 := srv.Close(); err3 != err {
		t.Fatalf("close after drain: %v", err3)
	}
}

func TestServeReturnsOnCancel(t *testing.T) {
	s := runNATS(t)
	bridge := connect(t, s)
	nc := connect(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		done <- handler.Serve(ctx, nc, "serve", handler.PayloadFunc(func(ctx context.Context, p map[string]any) (any, error) {
			return map[string]any{"echo": p}, nil
		}))
	}()
	// Poll until the subscription is in place (no sleeps).
	deadline := time.Now().Add(wait)
	for {
		msg, _ := handlertest.NewMsg(handlertest.Task{Topic: "serve", Payload: map[string]any{"x": 1}})
		resp, err := bridge.RequestMsg(msg, wait)
		if err == nil {
			if string(resp.Data) != `{"echo":{"x":1}}` {
				t.Fatalf("reply %s", resp.Data)
			}
			break
		}
		if !errors.Is(err, nats.ErrNoResponders) || time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
	cancel()
	wg.Wait()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

func TestServeReturnsWhenConnectionCloses(t *testing.T) {
	s := runNATS(t)
	nc := connect(t, s)
	done := make(chan error, 1)
	go func() {
		done <- handler.Serve(context.Background(), nc, "closing", handler.HandlerFunc(func(context.Context, *handler.Task) (any, error) { return nil, nil }))
	}()
	// Wait until Serve answers, then close the connection under it.
	bridge := connect(t, s)
	deadline := time.Now().Add(wait)
	for {
		msg, _ := handlertest.NewMsg(handlertest.Task{Topic: "closing"})
		if _, err := bridge.RequestMsg(msg, wait); err == nil {
			break
		} else if !errors.Is(err, nats.ErrNoResponders) || time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
	nc.Close()
	select {
	case err := <-done:
		if !errors.Is(err, handler.ErrClosed) {
			t.Fatalf("Serve: %v, want ErrClosed", err)
		}
	case <-time.After(wait):
		t.Fatal("Serve did not return after the connection closed")
	}
}

func TestOptionErrors(t *testing.T) {
	s := runNATS(t)
	nc := connect(t, s)
	h := handler.HandlerFunc(func(context.Context, *handler.Task) (any, error) { return nil, nil })
	for name, opt := range map[string]handler.Option{
		"concurrency 0":  handler.WithConcurrency(0),
		"empty group":    handler.WithQueueGroup(""),
		"drain timeout0": handler.WithDrainTimeout(0),
	} {
		if _, err := handler.NewServer(nc, "t", h, opt); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := handler.NewServer(nc, "", h); !errors.Is(err, events.ErrInvalidTopic) {
		t.Errorf("empty topic: %v", err)
	}
	if _, err := handler.NewServer(nc, "t", nil); err == nil {
		t.Error("nil handler accepted")
	}
	srv, err := handler.NewServer(nc, "t", h, handler.WithConcurrency(1), handler.WithQueueGroup("g"),
		handler.WithLogger(nil), handler.WithDrainTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
}
