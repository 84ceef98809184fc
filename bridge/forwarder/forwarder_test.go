package forwarder

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/pe-bridge/pe-bridge/bridge/forwarder/watermillce"
	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/events"
)

type notifierFunc func(ctx context.Context, event string) (engine.EventMessage, error)

func (f notifierFunc) WaitForNotification(ctx context.Context, event string) (engine.EventMessage, error) {
	return f(ctx, event)
}

var errBoom = errors.New("boom")

// recPub is a message.Publisher that records what it was given; fail, when
// set, decides per call whether the publish fails.
type recPub struct {
	mu   sync.Mutex
	msgs []recMsg
	fail func(n int) bool
	n    int
}

type recMsg struct {
	topic string
	msg   *message.Message
}

func (p *recPub) Publish(topic string, msgs ...*message.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	if p.fail != nil && p.fail(p.n) {
		return errBoom
	}
	for _, m := range msgs {
		p.msgs = append(p.msgs, recMsg{topic, m})
	}
	return nil
}

func (p *recPub) Close() error { return nil }

func (p *recPub) topics() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, m := range p.msgs {
		out = append(out, m.topic)
	}
	return out
}

func TestEventEncoding(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 123, time.UTC)
	m := engine.EventMessage{
		CorrelationID: "c", ProcessDefinitionID: "d", ProcessModelID: "approval", ProcessInstanceID: "pi",
		FlowNodeID: "manual_approval", FlowNodeInstanceID: "fni", CurrentToken: json.RawMessage(`{"amount":5000}`),
	}
	ev, err := Event("user_task_waiting", "test-source", m, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := watermillce.Marshaler{}.Marshal(events.EventPrefix+"user_task_waiting", watermillce.Message(ev))
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
		t.Errorf("headers %v, want exactly %d (no Watermill headers)", msg.Header, len(want))
	}
	if msg.Subject != "pe.event.user_task_waiting" {
		t.Errorf("subject %q", msg.Subject)
	}
	var back engine.EventMessage
	if err := json.Unmarshal(msg.Data, &back); err != nil || back.FlowNodeInstanceID != "fni" || string(back.CurrentToken) != `{"amount":5000}` {
		t.Fatalf("body %s (%v)", msg.Data, err)
	}
	// The marshaler's own round trip: the same event comes back, UUID = ce-id.
	wm, err := watermillce.Marshaler{}.Unmarshal(msg)
	if err != nil || wm.UUID != "user_task_waiting/fni" || wm.Metadata.Get(events.ExtProcessModelID) != "approval" ||
		wm.Metadata.Get(watermillce.MetaType) != "io.pebridge.event.user_task_waiting.v1" || string(wm.Payload) != string(msg.Data) {
		t.Fatalf("unmarshal: %+v %v", wm, err)
	}

	// Process events: subject and id from the instance; no empty extensions;
	// the engine's own body is kept as it came.
	pm := engine.EventMessage{ProcessModelID: "hello_world", ProcessInstanceID: "pi2", CurrentToken: json.RawMessage(`{}`)}
	ev, err = Event("process_ended", DefaultSource, pm, json.RawMessage(`{"processInstanceId":"pi2","extra":1}`), now)
	if err != nil {
		t.Fatal(err)
	}
	if ev.ID != "process_ended/pi2" || ev.Subject != "pi2" || string(ev.Data) != `{"processInstanceId":"pi2","extra":1}` {
		t.Fatalf("id %q subject %q data %s", ev.ID, ev.Subject, ev.Data)
	}
	if ev.Ext(events.ExtFlowNodeInstanceID) != "" || len(ev.Extensions) != 2 {
		t.Fatalf("extensions %v", ev.Extensions)
	}
	// Repeatable events get fresh ids.
	a, _ := Event("user_task_reserved", DefaultSource, m, nil, now)
	b, _ := Event("user_task_reserved", DefaultSource, m, nil, now)
	if a.ID == b.ID || a.ID == "" {
		t.Fatalf("user_task_reserved ids %q %q", a.ID, b.ID)
	}
	// Structured mode through the same codec.
	sm, err := watermillce.Marshaler{Mode: events.Structured}.Marshal("s", watermillce.Message(a))
	if err != nil || !events.IsStructured(events.Header(sm.Header)) || sm.Header.Get(HeaderMsgID) != a.ID {
		t.Fatalf("structured: %v %v", sm.Header, err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{
		{Events: []string{""}}, {Events: []string{"a.b"}}, {Events: []string{"x", "x"}}, {Events: []string{"a*"}},
		{Events: []string{"gap"}}, {QueueSize: -1}, {PublishAttempts: -1},
	} {
		if c.Validate() == nil {
			t.Errorf("%+v: want error", c)
		}
	}
	for _, c := range []PollConfig{{MinBackoff: -1}, {MaxBackoff: -1}, {PollTimeout: -1}, {MinBackoff: time.Second, MaxBackoff: time.Millisecond}} {
		if c.Validate() == nil {
			t.Errorf("%+v: want error", c)
		}
	}
	if err := (Config{Events: []string{"user_task_waiting", "process-x_1"}}).Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := New(nil, &recPub{}, Config{}, nil); err == nil {
		t.Fatal("nil feed accepted")
	}
	if _, err := New(feedFunc(nil), nil, Config{}, nil); err == nil {
		t.Fatal("nil publisher accepted")
	}
	if _, err := NewPollFeed(nil, PollConfig{}, nil); err == nil {
		t.Fatal("nil notifier accepted")
	}
	if _, err := NewSocketFeed("localhost:1", engine.DummyTokenSource(), SocketConfig{}, nil); err == nil {
		t.Fatal("URL without scheme accepted")
	}
	if _, err := NewSocketFeed("http://localhost:1", nil, SocketConfig{}, nil); err == nil {
		t.Fatal("nil token source accepted")
	}
	f, err := New(feedFunc(nil), &recPub{}, Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Events(); len(got) != len(DefaultEvents) {
		t.Fatalf("default events %v", got)
	}
	f.Close() // before Run: no-op
}

// recSink records what a feed delivers.
type recSink struct {
	mu        sync.Mutex
	events    []string
	connected []bool
}

func (s *recSink) Event(name string, m engine.EventMessage, body json.RawMessage) {
	s.mu.Lock()
	s.events = append(s.events, name+":"+m.ProcessInstanceID)
	s.mu.Unlock()
}

func (s *recSink) Connected(first bool) {
	s.mu.Lock()
	s.connected = append(s.connected, first)
	s.mu.Unlock()
}

// levelRecorder is a slog handler that keeps the level of every record.
type levelRecorder struct {
	mu     sync.Mutex
	levels []slog.Level
	msgs   []string
}

func (h *levelRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *levelRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.levels = append(h.levels, r.Level)
	h.msgs = append(h.msgs, r.Message)
	h.mu.Unlock()
	return nil
}
func (h *levelRecorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *levelRecorder) WithGroup(string) slog.Handler      { return h }

func (h *levelRecorder) above(l slog.Level) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for i, lv := range h.levels {
		if lv >= l {
			out = append(out, h.msgs[i])
		}
	}
	return out
}

// TestPollBackoff checks the waits after engine errors: doubling from
// MinBackoff up to MaxBackoff, ±20 % jitter, reset after a success, one
// Connected(false) after the outage; retries log at debug only.
func TestPollBackoff(t *testing.T) {
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
		logs := &levelRecorder{}
		p, err := NewPollFeed(n, PollConfig{MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}, slog.New(logs))
		if err != nil {
			t.Fatal(err)
		}
		sink := &recSink{}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- p.Run(ctx, []string{"process_started"}, sink) }()
		<-reached
		cancel()
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
		if len(sink.events) != 1 || len(sink.connected) != 2 || !sink.connected[0] || sink.connected[1] {
			t.Errorf("events %v connected %v, want 1 event, Connected(true) then one Connected(false)", sink.events, sink.connected)
		}
		if w := logs.above(slog.LevelInfo); len(w) != 0 {
			t.Errorf("retries logged above debug: %v", w)
		}
	})
}

// TestPollEndsAreNormal: a 204 (engine.ErrNoNotification), an empty answer
// and a poll cut by PollTimeout are all re-issued at once, with no warning
// and no gap.
func TestPollEndsAreNormal(t *testing.T) {
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
			case 3, 4, 5: // 204: nothing happened
				return engine.EventMessage{}, engine.ErrNoNotification
			case 6: // empty body
				return engine.EventMessage{}, nil
			case 7, 8:
				return engine.EventMessage{ProcessInstanceID: "pi"}, nil
			}
			if k == 9 {
				close(reached)
			}
			<-ctx.Done()
			return engine.EventMessage{}, ctx.Err()
		})
		logs := &levelRecorder{}
		p, err := NewPollFeed(n, PollConfig{PollTimeout: time.Minute}, slog.New(logs))
		if err != nil {
			t.Fatal(err)
		}
		sink := &recSink{}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- p.Run(ctx, []string{"process_ended"}, sink) }()
		<-reached
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if d := calls[1].Sub(calls[0]); d != time.Minute {
			t.Errorf("second poll after %s, want exactly the poll timeout", d)
		}
		if d := calls[8].Sub(calls[2]); d != 0 {
			t.Errorf("polls after 204s and empty answers waited %s", d)
		}
		if len(sink.events) != 2 || len(sink.connected) != 1 {
			t.Errorf("events %v connected %v", sink.events, sink.connected)
		}
		if w := logs.above(slog.LevelDebug + 1); len(w) != 0 {
			t.Errorf("normal poll ends logged: %v", w)
		}
	})
}

// feedFunc is a Feed from a function.
type feedFunc func(ctx context.Context, names []string, sink Sink) error

func (f feedFunc) Run(ctx context.Context, names []string, sink Sink) error {
	return f(ctx, names, sink)
}

// countObserver counts the observer calls.
type countObserver struct {
	mu                 sync.Mutex
	forwarded, dropped int
	gaps               int
}

func (o *countObserver) EventForwarded(string) { o.mu.Lock(); o.forwarded++; o.mu.Unlock() }
func (o *countObserver) EventDropped(string, string) {
	o.mu.Lock()
	o.dropped++
	o.mu.Unlock()
}
func (o *countObserver) Gap() { o.mu.Lock(); o.gaps++; o.mu.Unlock() }

// seqLeader answers Leading() from a script, one value per call (the
// forwarder asks once per queued item), then the last value.
type seqLeader struct {
	mu  sync.Mutex
	seq []bool
}

func (l *seqLeader) Leading() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	v := l.seq[0]
	if len(l.seq) > 1 {
		l.seq = l.seq[1:]
	}
	return v
}

// runScript runs a forwarder over a feed that plays script, then stops.
func runScript(t *testing.T, cfg Config, pub *recPub, script func(s Sink)) *countObserver {
	t.Helper()
	obs := &countObserver{}
	cfg.Observer = obs
	feed := feedFunc(func(ctx context.Context, names []string, s Sink) error {
		script(s)
		return nil // the feed ends: Run publishes the queue and returns
	})
	f, err := New(feed, pub, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	return obs
}

func pm(pi string) engine.EventMessage { return engine.EventMessage{ProcessInstanceID: pi} }

// TestGapAnnouncements: a start gap first, a reconnect gap before the
// events after it, counted by the observer; gaps and events in order.
func TestGapAnnouncements(t *testing.T) {
	pub := &recPub{}
	obs := runScript(t, Config{Events: []string{"process_started"}}, pub, func(s Sink) {
		s.Connected(true)
		s.Event("process_started", pm("a"), nil)
		s.Event("user_task_waiting", pm("x"), nil) // not forwarded
		s.Connected(false)
		s.Event("process_started", pm("b"), nil)
	})
	want := []string{"pe.event.gap", "pe.event.process_started", "pe.event.gap", "pe.event.process_started"}
	if got := pub.topics(); !equal(got, want) {
		t.Fatalf("published %v, want %v", got, want)
	}
	var d GapData
	_ = json.Unmarshal(pub.msgs[0].msg.Payload, &d)
	if d.Reason != GapStart {
		t.Errorf("first gap %q", d.Reason)
	}
	_ = json.Unmarshal(pub.msgs[2].msg.Payload, &d)
	if d.Reason != GapReconnect || pub.msgs[2].msg.Metadata.Get(watermillce.MetaType) != events.EventType(GapEvent) {
		t.Errorf("second gap %q %v", d.Reason, pub.msgs[2].msg.Metadata)
	}
	if obs.gaps != 1 || obs.forwarded != 2 {
		t.Errorf("observer gaps %d forwarded %d", obs.gaps, obs.forwarded)
	}
}

// TestPublishFailure: a publish is retried with the same id; one that keeps
// failing is dropped, counted, and a publish_failed gap precedes the next
// event.
func TestPublishFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pub := &recPub{fail: func(n int) bool { return n == 2 || (n >= 4 && n <= 6) }}
		obs := runScript(t, Config{Events: []string{"process_started"}, PublishAttempts: 3}, pub, func(s Sink) {
			s.Connected(true)                        // call 1
			s.Event("process_started", pm("a"), nil) // call 2 fails, 3 ok
			s.Event("process_started", pm("b"), nil) // calls 4-6 fail: dropped
			s.Event("process_started", pm("c"), nil) // gap (7), event (8)
		})
		want := []string{"pe.event.gap", "pe.event.process_started", "pe.event.gap", "pe.event.process_started"}
		if got := pub.topics(); !equal(got, want) {
			t.Fatalf("published %v, want %v", got, want)
		}
		if pub.msgs[1].msg.UUID != "process_started/a" || pub.msgs[3].msg.UUID != "process_started/c" {
			t.Errorf("ids %s %s", pub.msgs[1].msg.UUID, pub.msgs[3].msg.UUID)
		}
		var d GapData
		_ = json.Unmarshal(pub.msgs[2].msg.Payload, &d)
		if d.Reason != GapPublish || obs.dropped != 1 || obs.forwarded != 2 {
			t.Errorf("gap %q dropped %d forwarded %d", d.Reason, obs.dropped, obs.forwarded)
		}
	})
}

// TestLeaderGates: only the lease holder publishes; taking the lease over
// announces a takeover gap.
func TestLeaderGates(t *testing.T) {
	pub := &recPub{}
	l := &seqLeader{seq: []bool{false, false, true}}
	obs := runScript(t, Config{Events: []string{"process_started"}, Leader: l}, pub, func(s Sink) {
		s.Connected(true)                        // follower
		s.Event("process_started", pm("a"), nil) // follower: not published
		s.Event("process_started", pm("b"), nil) // leader from here
		s.Event("process_started", pm("c"), nil)
	})
	want := []string{"pe.event.gap", "pe.event.process_started", "pe.event.process_started"}
	if got := pub.topics(); !equal(got, want) {
		t.Fatalf("published %v, want %v", got, want)
	}
	var d GapData
	_ = json.Unmarshal(pub.msgs[0].msg.Payload, &d)
	if d.Reason != GapTakeover || obs.gaps != 1 {
		t.Errorf("gap %q, observer gaps %d", d.Reason, obs.gaps)
	}
}

// TestOnDeploy: process_deployed, external_task_created for a new topic and
// every (re)connect of the feed call OnDeploy; a known topic does not; both
// events are received for it without being forwarded.
func TestOnDeploy(t *testing.T) {
	calls := make(chan struct{}, 16)
	var names []string
	release := make(chan struct{})
	feed := feedFunc(func(ctx context.Context, n []string, s Sink) error {
		names = n
		s.Connected(true) // a deployment may have passed before: refresh
		<-calls
		s.Event("process_deployed", engine.EventMessage{ProcessDefinitionID: "d"}, nil)
		<-calls
		s.Event("external_task_created", engine.EventMessage{Topic: "A", ExternalTaskID: "1"}, nil)
		<-calls
		s.Event("external_task_created", engine.EventMessage{Topic: "A", ExternalTaskID: "2"}, nil)
		s.Event("external_task_created", engine.EventMessage{Topic: "B", ExternalTaskID: "3"}, nil)
		<-calls
		s.Connected(false) // and inside the gap of a reconnect
		<-calls
		close(release)
		<-ctx.Done()
		return nil
	})
	pub := &recPub{}
	f, err := New(feed, pub, Config{Events: []string{"process_started"}, OnDeploy: func() { calls <- struct{}{} }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.Run(ctx) }()
	<-release
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(calls) != 0 {
		t.Errorf("%d extra OnDeploy calls (known topic A refreshed again)", len(calls))
	}
	if !equal(names, []string{"process_started", "process_deployed", "external_task_created"}) {
		t.Errorf("subscribed %v", names)
	}
	if got := pub.topics(); !equal(got, []string{"pe.event.gap", "pe.event.gap"}) {
		t.Errorf("published %v", got)
	}
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
	p, err := NewPollFeed(n, PollConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f, err := New(p, &recPub{}, Config{}, nil)
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

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// switchLeader is a Leader that announces its acquisitions, as Lease does.
type switchLeader struct {
	mu       sync.Mutex
	leading  bool
	acquired chan struct{}
}

func (l *switchLeader) Leading() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.leading
}

func (l *switchLeader) Acquired() <-chan struct{} { return l.acquired }

func (l *switchLeader) take() {
	l.mu.Lock()
	l.leading = true
	l.mu.Unlock()
	l.acquired <- struct{}{}
}

// TestGapAnnouncedWhenLeaseTaken: a replica that connected while another
// held the lease, and then takes it over while the engine is quiet,
// announces the gap at once rather than with the next engine event (a
// consumer waiting for the gap before it starts work would wait forever).
func TestGapAnnouncedWhenLeaseTaken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pub := &recPub{}
		obs := &countObserver{}
		l := &switchLeader{acquired: make(chan struct{}, 1)}
		feed := feedFunc(func(ctx context.Context, names []string, s Sink) error {
			s.Connected(true) // handled while a follower: nothing published
			<-ctx.Done()
			return nil
		})
		f, err := New(feed, pub, Config{Events: []string{"process_started"}, Leader: l, Observer: obs}, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- f.Run(ctx) }()
		synctest.Wait()
		if got := pub.topics(); len(got) != 0 {
			t.Fatalf("a follower published %v", got)
		}
		l.take()
		synctest.Wait()
		if got := pub.topics(); !equal(got, []string{"pe.event.gap"}) {
			t.Fatalf("after taking the lease published %v, want the gap at once", got)
		}
		var d GapData
		_ = json.Unmarshal(pub.msgs[0].msg.Payload, &d)
		if d.Reason != GapTakeover || obs.gaps != 1 {
			t.Errorf("gap %q, observer gaps %d", d.Reason, obs.gaps)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}
