package service

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natstest "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/engine"
)

// runNATS starts an embedded nats-server on a random port and connects.
func runNATS(t testing.TB) *nats.Conn {
	t.Helper()
	opts := natstest.DefaultTestOptions
	opts.Port = -1
	opts.MaxPayload = 8 << 20
	s := natstest.RunServer(&opts)
	t.Cleanup(s.Shutdown)
	return connect(t, s)
}

func connect(t testing.TB, s *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatalf("connecting to NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// startService runs a service on nc until the test ends.
func startService(t testing.TB, nc *nats.Conn, eng Engine, cfg Config, logger *slog.Logger) *Service {
	t.Helper()
	s, err := New(nc, eng, cfg, logger)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Run(context.Background()) }()
	select {
	case <-s.Ready():
	case err := <-errc:
		t.Fatalf("Run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("service not ready after 10s")
	}
	t.Cleanup(func() {
		s.Close()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return s
}

// request sends body (a string, []byte or a value to marshal) on subject.
func request(t testing.TB, nc *nats.Conn, subject string, body any, hdr nats.Header) *nats.Msg {
	t.Helper()
	var data []byte
	switch b := body.(type) {
	case string:
		data = []byte(b)
	case []byte:
		data = b
	case nil:
	default:
		var err error
		if data, err = json.Marshal(b); err != nil {
			t.Fatalf("marshal: %v", err)
		}
	}
	msg, err := nc.RequestMsg(&nats.Msg{Subject: subject, Data: data, Header: hdr}, 30*time.Second)
	if err != nil {
		t.Fatalf("request %s %s: %v", subject, data, err)
	}
	return msg
}

// ok decodes a success reply into out (may be nil).
func ok(t testing.TB, msg *nats.Msg, out any) {
	t.Helper()
	if code := msg.Header.Get(headerServiceCode); code != "" {
		t.Fatalf("%s: want success, got error %s %q: %s", msg.Subject, code, msg.Header.Get(headerServiceError), msg.Data)
	}
	if out != nil {
		if err := json.Unmarshal(msg.Data, out); err != nil {
			t.Fatalf("decoding reply %s: %v", msg.Data, err)
		}
	}
}

// fails checks an error reply: headers and body agree on code; field (when
// not "-") must match.
func fails(t testing.TB, msg *nats.Msg, code int, field string) *Error {
	t.Helper()
	hc := msg.Header.Get(headerServiceCode)
	if hc != strconv.Itoa(code) {
		t.Fatalf("want error %d, got code header %q (%q), body %s", code, hc, msg.Header.Get(headerServiceError), msg.Data)
	}
	if msg.Header.Get(headerServiceError) == "" {
		t.Fatalf("error reply without %s header", headerServiceError)
	}
	var r ErrorReply
	if err := json.Unmarshal(msg.Data, &r); err != nil || r.Error == nil {
		t.Fatalf("error body %s: %v", msg.Data, err)
	}
	if r.Error.Code != code {
		t.Fatalf("body code %d, header %d", r.Error.Code, code)
	}
	if r.Error.Message == "" {
		t.Fatalf("error body without message: %s", msg.Data)
	}
	if field != "-" && r.Error.Field != field {
		t.Fatalf("want field %q, got %q (%s)", field, r.Error.Field, msg.Data)
	}
	return r.Error
}

// fakeEngine implements Engine with overridable functions; unset ones
// answer with zero values.
type fakeEngine struct {
	start     func(ctx context.Context, req engine.ProcessStartRequest) (engine.ProcessStartResponse, error)
	query     func(ctx context.Context, q engine.ProcessInstanceQuery) (engine.ProcessInstanceList, error)
	terminate func(ctx context.Context, id string) error
	tasks     func(ctx context.Context, q engine.FlowNodeInstanceQuery) (engine.FlowNodeInstanceList, error)
	reserve   func(ctx context.Context, id, owner string) error
	cancel    func(ctx context.Context, id string) error
	finish    func(ctx context.Context, id string, result json.RawMessage) error
	message   func(ctx context.Context, name string, payload json.RawMessage, pi string) error
	signal    func(ctx context.Context, name string, payload json.RawMessage, pi string) error
}

func (f *fakeEngine) StartProcess(ctx context.Context, req engine.ProcessStartRequest) (engine.ProcessStartResponse, error) {
	if f.start == nil {
		return engine.ProcessStartResponse{ProcessInstanceID: "pi-1", CorrelationID: req.CorrelationID}, nil
	}
	return f.start(ctx, req)
}
func (f *fakeEngine) QueryProcessInstances(ctx context.Context, q engine.ProcessInstanceQuery) (engine.ProcessInstanceList, error) {
	if f.query == nil {
		return engine.ProcessInstanceList{}, nil
	}
	return f.query(ctx, q)
}
func (f *fakeEngine) TerminateProcessInstance(ctx context.Context, id string) error {
	if f.terminate == nil {
		return nil
	}
	return f.terminate(ctx, id)
}
func (f *fakeEngine) UserTasks(ctx context.Context, q engine.FlowNodeInstanceQuery) (engine.FlowNodeInstanceList, error) {
	if f.tasks == nil {
		return engine.FlowNodeInstanceList{}, nil
	}
	return f.tasks(ctx, q)
}
func (f *fakeEngine) ReserveUserTask(ctx context.Context, id, owner string) error {
	if f.reserve == nil {
		return nil
	}
	return f.reserve(ctx, id, owner)
}
func (f *fakeEngine) CancelUserTaskReservation(ctx context.Context, id string) error {
	if f.cancel == nil {
		return nil
	}
	return f.cancel(ctx, id)
}
func (f *fakeEngine) FinishUserTask(ctx context.Context, id string, result json.RawMessage) error {
	if f.finish == nil {
		return nil
	}
	return f.finish(ctx, id, result)
}
func (f *fakeEngine) TriggerMessage(ctx context.Context, name string, payload json.RawMessage, pi string) error {
	if f.message == nil {
		return nil
	}
	return f.message(ctx, name, payload, pi)
}
func (f *fakeEngine) TriggerSignal(ctx context.Context, name string, payload json.RawMessage, pi string) error {
	if f.signal == nil {
		return nil
	}
	return f.signal(ctx, name, payload, pi)
}

var errBoom = errors.New("boom")
