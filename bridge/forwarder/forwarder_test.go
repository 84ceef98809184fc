package forwarder

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/events"
)

type notifierFunc func(ctx context.Context, event string) (engine.EventMessage, error)

func (f notifierFunc) WaitForNotification(ctx context.Context, event string) (engine.EventMessage, error) {
	return f(ctx, event)
}

type publisherFunc func(*nats.Msg) error

func (f publisherFunc) PublishMsg(m *nats.Msg) error { return f(m) }

var errBoom = errors.New("boom")

func TestEventEncoding(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 123, time.UTC)
	m := engine.EventMessage{
		CorrelationID: "c", ProcessDefinitionID: "d", ProcessModelID: "approval", ProcessInstanceID: "pi",
		FlowNodeID: "manual_approval", FlowNodeInstanceID: "fni", CurrentToken: json.RawMessage(`{"amount":5000}`),
	}
	ev, err := Event("user_task_waiting", "test-source", m, now)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := Message(events.EventPrefix+"user_task_waiting", ev)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		events.HeaderSpecVersion: "1.0",
		events.HeaderID:          "user_task_waiting/fni",
		events.HeaderType:        "io.pebridge.event.user_task_waiting.v1",
		events.HeaderSource:      "test-source",
		events.HeaderSubject:     "fni",
		events.HeaderTime:        now.Format(time.RFC3339Nano),
		events.HeaderPrefix + events.ExtProcessInstanceID:  "pi",
		events.HeaderPrefix + events.ExtProcessModelID:     "approval",
		events.HeaderPrefix + events.ExtCorrelationID:      "c",
		events.HeaderPrefix + events.ExtFlowNodeInstanceID: "fni",
		events.HeaderDataContent:                           events.ContentTypeJSON,
		HeaderMsgID:                                        "user_task_waiting/fni",
	}
	for k, v := range want {
		if got := msg.Header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if len(msg.Header) != len(want) {
		t.Errorf("headers %v, want exactly %d", msg.Header, len(want))
	}
	if msg.Subject != "pe.event.user_task_waiting" {
		t.Errorf("subject %q", msg.Subject)
	}
	var back engine.EventMessage
	if err := json.Unmarshal(msg.Data, &back); err != nil || back.FlowNodeInstanceID != "fni" || string(back.CurrentToken) != `{"amount":5000}` {
		t.Fatalf("body %s (%v)", msg.Data, err)
	}

	// Process events: subject and id from the instance; no empty extensions.
	pm := engine.EventMessage{ProcessModelID: "hello_world", ProcessInstanceID: "pi2", CurrentToken: json.RawMessage(`{}`)}
	ev, err = Event("process_ended", DefaultSource, pm, now)
	if err != nil {
		t.Fatal(err)
	}
	if ev.ID() != "process_ended/pi2" || ev.Subject() != "pi2" {
		t.Fatalf("id %q subject %q", ev.ID(), ev.Subject())
	}
	if _, ok := ev.Extensions()[events.ExtFlowNodeInstanceID]; ok {
		t.Fatal("empty flownodeinstanceid extension set")
	}
	// Repeatable events get fresh ids.
	a, _ := Event("user_task_reserved", DefaultSource, m, now)
	b, _ := Event("user_task_reserved", DefaultSource, m, now)
	if a.ID() == b.ID() || a.ID() == "" {
		t.Fatalf("user_task_reserved ids %q %q", a.ID(), b.ID())
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{
		{Events: []string{""}}, {Events: []string{"a.b"}}, {Events: []string{"x", "x"}}, {Events: []string{"a*"}},
		{MinBackoff: -1}, {MaxBackoff: -1}, {PollTimeout: -1}, {MinBackoff: time.Second, MaxBackoff: time.Millisecond},
	} {
		if c.Validate() == nil {
			t.Errorf("%+v: want error", c)
		}
	}
	if err := (Config{Events: []string{"user_task_waiting", "process-x_1"}}).Validate(); err != nil {
		t.Fatal(err)
	}
	n := notifierFunc(func(context.Context, string) (engine.EventMessage, error) { return engine.EventMessage{}, nil })
	if _, err := New(nil, publisherFunc(nil), Config{}, nil); err == nil {
		t.Fatal("nil notifier accepted")
	}
	if _, err := New(n, nil, Config{}, nil); err == nil {
		t.Fatal("nil publisher accepted")
	}
	f, err := New(n, publisherFunc(func(*nats.Msg) error { return nil }), Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Events(); len(got) != len(DefaultEvents) {
		t.Fatalf("default events %v", got)
	}
	f.Close() // before Run: no-op
}

// TestBackoff checks the waits after engine errors: doubling from
// MinBackoff up to MaxBackoff, ±20 % jitter, reset after a success.
func TestBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var (
			mu    sync.Mutex
			calls []time.Time
		)
		const failures = 7
		reached := make(chan struct{})
		n := notifierFunc(func(ctx context.Context, _ string) (engine.EventMessage, error) {
			mu.Lock()
			calls = append(calls, time.Now())
			k := len(calls)
			mu.Unlock()
			switch {
			case k <= failures:
				return engine.EventMessage{}, errBoom
			case k == failures+1: // a success resets the backoff
				return engine.EventMessage{ProcessInstanceID: "pi"}, nil
			case k == failures+2:
				return engine.EventMessage{}, errBoom
			case k == failures+3:
				close(reached)
			}
			<-ctx.Done()
			return engine.EventMessage{}, ctx.Err()
		})
		published := 0
		pub := publisherFunc(func(*nats.Msg) error { published++; return nil })
		f, err := New(n, pub, Config{Events: []string{"process_started"}, MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}, nil)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error)
		go func() { done <- f.Run(context.Background()) }()
		<-reached
		f.Close()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		want := []time.Duration{100, 200, 400, 800, 1000, 1000, 1000} // ms, after failures 1..7
		for i, w := range want {
			got := calls[i+1].Sub(calls[i])
			lo, hi := w*time.Millisecond*8/10, w*time.Millisecond*12/10
			if got < lo || got > hi {
				t.Errorf("wait %d: %s, want %s ± 20%%", i+1, got, w*time.Millisecond)
			}
		}
		if d := calls[failures+1].Sub(calls[failures]); d != 0 {
			t.Errorf("re-poll after an event waited %s", d)
		}
		if d := calls[failures+2].Sub(calls[failures+1]); d < 80*time.Millisecond || d > 120*time.Millisecond {
			t.Errorf("backoff after success not reset: %s", d)
		}
		if published != 1 {
			t.Errorf("published %d events, want 1", published)
		}
	})
}

// TestPollTimeoutAndSkips: a poll cut by PollTimeout is re-issued at once;
// empty answers and failed publishes do not stop the loop.
func TestPollTimeoutAndSkips(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var (
			mu    sync.Mutex
			calls []time.Time
		)
		reached := make(chan struct{})
		n := notifierFunc(func(ctx context.Context, _ string) (engine.EventMessage, error) {
			mu.Lock()
			calls = append(calls, time.Now())
			k := len(calls)
			mu.Unlock()
			switch k {
			case 1, 2: // the engine holds the poll longer than PollTimeout
				<-ctx.Done()
				return engine.EventMessage{}, ctx.Err()
			case 3: // 204: nothing happened
				return engine.EventMessage{}, nil
			case 4, 5:
				return engine.EventMessage{ProcessInstanceID: "pi"}, nil
			}
			if k == 6 {
				close(reached)
			}
			<-ctx.Done()
			return engine.EventMessage{}, ctx.Err()
		})
		var published int
		pub := publisherFunc(func(*nats.Msg) error {
			published++
			if published == 1 {
				return errBoom
			}
			return nil
		})
		f, err := New(n, pub, Config{Events: []string{"process_ended"}, PollTimeout: time.Minute}, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- f.Run(ctx) }()
		<-reached
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if d := calls[1].Sub(calls[0]); d != time.Minute {
			t.Errorf("second poll after %s, want exactly the poll timeout", d)
		}
		if d := calls[2].Sub(calls[1]); d != time.Minute {
			t.Errorf("third poll after %s", d)
		}
		if d := calls[5].Sub(calls[2]); d != 0 {
			t.Errorf("polls after empty answers and publish errors waited %s", d)
		}
		if published != 2 {
			t.Errorf("publish called %d times, want 2", published)
		}
	})
}

// TestRunCancelsPollsAtOnce: Close returns while every poll is blocked.
func TestRunCancelsPollsAtOnce(t *testing.T) {
	var started sync.WaitGroup
	started.Add(len(DefaultEvents))
	n := notifierFunc(func(ctx context.Context, _ string) (engine.EventMessage, error) {
		started.Done()
		<-ctx.Done()
		return engine.EventMessage{}, ctx.Err()
	})
	f, err := New(n, publisherFunc(func(*nats.Msg) error { return nil }), Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- f.Run(context.Background()) }()
	started.Wait()
	f.Close()
	f.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := f.Run(context.Background()); err == nil {
		t.Fatal("second Run accepted")
	}
}
