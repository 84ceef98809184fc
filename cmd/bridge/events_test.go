package main

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pe-bridge/pe-bridge/bridge/forwarder"
	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/engine/emulator"
	"github.com/pe-bridge/pe-bridge/events"
	"github.com/pe-bridge/pe-bridge/examples/models"
)

// Two `bridge run` replicas with --events-stream and --events-lease: the
// stream is created, and each instance's process_started and process_ended
// are stored exactly once (one replica publishes), also on a plain
// subscription.
func TestRunEventsStreamAndLease(t *testing.T) {
	emu, engineURL := testEngine(t, emulator.Config{})
	ns := testNATS(t)
	nc := connect(t, ns.ClientURL())
	sub, err := nc.QueueSubscribe("pe.task.SampleExternalTask", "h", func(m *nats.Msg) { _ = m.Respond([]byte(`{}`)) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	plain := make(chan *nats.Msg, 1024)
	psub, err := nc.ChanSubscribe(events.EventPrefix+">", plain)
	if err != nil {
		t.Fatal(err)
	}
	defer psub.Unsubscribe()
	var ps []*proc
	for range 2 {
		p := startBridge(t, nil, "run", "--engine-url", engineURL, "--nats-url", ns.ClientURL(),
			"--events-stream", "PE_EVENTS", "--events-lease", "pe_leases", "--events", "process_started,process_ended",
			"--topic-refresh", "5s", "--long-poll-timeout", "1s")
		p.waitLine("bridge ready", 20*time.Second)
		ps = append(ps, p)
	}
	// The lease holder's start gap marks that events flow.
	select {
	case m := <-plain:
		if m.Subject != events.EventPrefix+forwarder.GapEvent {
			t.Fatalf("first event on %s, want the start gap", m.Subject)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no start gap from the lease holder")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var ids []string
	for range 20 {
		resp, err := emu.Start(ctx, engine.ProcessStartRequest{ProcessModelID: "hello_world", ReturnOn: engine.ReturnOnFinished})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, resp.ProcessInstanceID)
	}
	want := map[string]bool{}
	for _, pi := range ids {
		want[forwarder.EventID("process_started", engine.EventMessage{ProcessInstanceID: pi})] = true
		want[forwarder.EventID("process_ended", engine.EventMessage{ProcessInstanceID: pi})] = true
	}
	// count reads until every wanted id is in (bounded by 30s without one:
	// a loss), then for a second more (a copy still in flight would be a
	// duplicate). A fixed quiet time alone ended early under load.
	count := func(next func(wait time.Duration) (string, bool)) map[string]int {
		got := map[string]int{}
		for {
			wait := time.Second
			if len(got) < len(want) {
				wait = 30 * time.Second
			}
			id, ok := next(wait)
			if !ok {
				return got
			}
			if want[id] {
				got[id]++
			}
		}
	}
	onPlain := count(func(wait time.Duration) (string, bool) {
		select {
		case m := <-plain:
			return m.Header.Get(events.HeaderID), true
		case <-time.After(wait):
			return "", false
		}
	})
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	c, err := js.OrderedConsumer(ctx, "PE_EVENTS", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("the stream: %v", err)
	}
	inStream := count(func(wait time.Duration) (string, bool) {
		m, err := c.Next(jetstream.FetchMaxWait(wait))
		if errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, nats.ErrTimeout) {
			return "", false
		}
		if err != nil {
			t.Fatal(err)
		}
		return m.Headers().Get(forwarder.HeaderMsgID), true
	})
	for what, got := range map[string]map[string]int{"plain subscription": onPlain, "stream": inStream} {
		for id := range want {
			if got[id] != 1 {
				t.Errorf("%s: %s seen %d times, want once", what, id, got[id])
			}
		}
	}
	for _, p := range ps {
		p.signal(syscall.SIGTERM)
		if code := p.wait(30 * time.Second); code != 0 {
			t.Fatalf("exit %d", code)
		}
	}
}

// lateTasks answers every task of topic LateTopic (models.Late) on nc and
// reports when each arrived.
func lateTasks(t *testing.T, nc *nats.Conn) <-chan time.Time {
	t.Helper()
	tasks := make(chan time.Time, 4)
	sub, err := nc.Subscribe("pe.task.LateTopic", func(m *nats.Msg) {
		tasks <- time.Now()
		_ = m.Respond([]byte(`{}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return tasks
}

// deployLateModel deploys models.Late, starts it and wants its first task on
// tasks (the time a handler received it) within 2 s of the deployment; it
// returns the started instance's id.
func deployLateModel(t *testing.T, emu *emulator.Emulator, tasks <-chan time.Time) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	deployed := time.Now()
	if _, err := emu.Deploy([]byte(models.Late)); err != nil {
		t.Fatal(err)
	}
	res, err := emu.Start(ctx, engine.ProcessStartRequest{ProcessModelID: "late"})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case at := <-tasks:
		t.Logf("first task of the model deployed after start on NATS %s after the deployment", at.Sub(deployed).Round(time.Millisecond))
		if d := at.Sub(deployed); d > 2*time.Second {
			t.Fatalf("first task after %s, want within 2s", d)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no task of the model deployed after start within 2s")
	}
	return res.ProcessInstanceID
}

// A model deployed after the bridge started has its first task on NATS
// within 2 s: the process_deployed event makes the pump re-read the topics
// at once (the periodic refresh is set to an hour here, so only the event
// can do it; before, the first task came 12-26 s later).
func TestRunDeployedModelServedWithin2s(t *testing.T) {
	emu, engineURL := testEngine(t, emulator.Config{})
	ns := testNATS(t)
	nc := connect(t, ns.ClientURL())
	tasks := lateTasks(t, nc)
	p := startBridge(t, nil, "run", "--engine-url", engineURL, "--nats-url", ns.ClientURL(), "--topic-refresh", "1h", "--long-poll-timeout", "1s")
	p.waitLine("bridge ready", 20*time.Second) // ready: the event feed is connected too
	deployLateModel(t, emu, tasks)
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// With --no-events nothing is published on pe.event.>, yet a model deployed
// after the start is served at once: the engine event feed still runs for
// process_deployed and external_task_created only.
func TestRunNoEventsDeployedModelServedWithin2s(t *testing.T) {
	emu, engineURL := testEngine(t, emulator.Config{})
	ns := testNATS(t)
	nc := connect(t, ns.ClientURL())
	tasks := lateTasks(t, nc)
	evs := make(chan *nats.Msg, 64)
	esub, err := nc.ChanSubscribe(events.EventPrefix+">", evs)
	if err != nil {
		t.Fatal(err)
	}
	defer esub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	p := startBridge(t, nil, "run", "--engine-url", engineURL, "--nats-url", ns.ClientURL(), "--no-events", "--topic-refresh", "1h", "--long-poll-timeout", "1s")
	p.waitLine("bridge ready", 20*time.Second)
	p.waitErr("forwarder: receiving engine events over Socket.IO", 20*time.Second)
	pi := deployLateModel(t, emu, tasks)
	eventually(t, 20*time.Second, func() error { return allFinished(emu, []string{pi}) })
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	// The bridge's connection is closed: whatever it published has reached
	// the server; one round trip delivers it to this subscription.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-evs:
		t.Fatalf("--no-events published on %s: %s", m.Subject, m.Data)
	default:
	}
}
