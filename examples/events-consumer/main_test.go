package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pe-bridge/pe-bridge/bridge/forwarder"
	"github.com/pe-bridge/pe-bridge/bridge/service"
	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/engine/emulator"
	"github.com/pe-bridge/pe-bridge/events"
	"github.com/pe-bridge/pe-bridge/examples/models"
	"github.com/pe-bridge/pe-bridge/internal/natsserver"
	"github.com/pe-bridge/pe-bridge/internal/testutil"
)

const stream = "PE_EVENTS"

// devSetup is what `bridge dev --events-stream PE_EVENTS` runs, in process:
// the engine emulator with the example models, an embedded nats-server with
// JetStream, the request/reply service and the event forwarder (Socket.IO
// feed, JetStream publisher, the stream).
func devSetup(t *testing.T, logs *testutil.Buffer) (natsURL string, nc *nats.Conn, eng *engine.Client) {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	emu, err := emulator.New(emulator.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := emu.LoadFS(models.FS); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(emu)
	t.Cleanup(func() { _ = emu.Close(); srv.Close() })
	eng, err = engine.NewClient(srv.URL, engine.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close() })

	ns, err := natsserver.Start(natsserver.Config{Listen: "127.0.0.1:0", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ns.Close() })
	nc, err = nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := forwarder.EnsureStream(context.Background(), js, forwarder.StreamConfig{Name: stream}); err != nil {
		t.Fatal(err)
	}
	svc, err := service.New(nc, eng, service.Config{}, logger.With("component", "service"))
	if err != nil {
		t.Fatal(err)
	}
	feed, err := forwarder.NewSocketFeed(srv.URL, eng.Tokens(), forwarder.SocketConfig{}, logger.With("component", "feed"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := forwarder.NewPublisher(nc, true, logger.With("component", "publisher"))
	if err != nil {
		t.Fatal(err)
	}
	fwd, err := forwarder.New(feed, pub, forwarder.Config{}, logger.With("component", "forwarder"))
	if err != nil {
		t.Fatal(err)
	}
	gaps := make(chan *nats.Msg, 4)
	gsub, err := nc.ChanSubscribe(events.EventPrefix+forwarder.GapEvent, gaps)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = svc.Run(ctx) })
	wg.Go(func() { _ = fwd.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	select {
	case <-svc.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("service not ready")
	}
	select {
	case <-gaps: // the forwarder is connected to the engine
	case <-time.After(10 * time.Second):
		t.Fatal("forwarder did not connect")
	}
	_ = gsub.Unsubscribe()
	return ns.ClientURL(), nc, eng
}

// TestConsumerFinishesUserTasks runs the consumer against the dev setup:
// every manual_approval task is finished once, approved or rejected by the
// amount; a duplicate of an event (same ce-id) is handled once; an event it
// cannot handle ends in the poison queue after the retries.
func TestConsumerFinishesUserTasks(t *testing.T) {
	logs := &testutil.Buffer{}
	natsURL, nc, eng := devSetup(t, logs)

	finishes := make(chan *nats.Msg, 64) // every pe.usertask.finish request the consumer sends
	fsub, err := nc.ChanSubscribe(events.SubjectUserTaskFinish, finishes)
	if err != nil {
		t.Fatal(err)
	}
	defer fsub.Unsubscribe()
	poisoned := make(chan *nats.Msg, 4)
	psub, err := nc.ChanSubscribe("events-consumer.poison", poisoned)
	if err != nil {
		t.Fatal(err)
	}
	defer psub.Unsubscribe()
	finished := make(chan *nats.Msg, 64)
	usub, err := nc.ChanSubscribe(events.EventPrefix+"user_task_finished", finished)
	if err != nil {
		t.Fatal(err)
	}
	defer usub.Unsubscribe()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{NATSURL: natsURL, Stream: stream, Durable: "events-consumer", ApproveUpTo: 10000,
			PoisonSubject: "events-consumer.poison", Retries: 2, RetryInterval: 10 * time.Millisecond, DedupWindow: time.Minute,
			Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("component", "consumer")})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	want := map[string]bool{} // process instance → approved
	for _, amount := range []float64{5000, 20000, 9999} {
		tok, _ := json.Marshal(map[string]any{"amount": amount})
		res, err := eng.StartProcess(context.Background(), engine.ProcessStartRequest{ProcessModelID: "approval", InitialToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		want[res.ProcessInstanceID] = amount <= 10000
	}
	// One deadline for all three (a loaded CI machine runs every package at
	// once); the logs of every part say where an event stopped.
	deadline := time.After(60 * time.Second)
	for len(want) > 0 {
		select {
		case m := <-finished:
			pi := m.Header.Get(events.HeaderPrefix + events.ExtProcessInstanceID)
			approved, ok := want[pi]
			if !ok {
				continue
			}
			var ev struct {
				UserTaskResult struct{ Approved bool } `json:"userTaskResult"`
			}
			if err := json.Unmarshal(m.Data, &ev); err != nil || ev.UserTaskResult.Approved != approved {
				t.Fatalf("instance %s: result %s, want approved=%v", pi, m.Data, approved)
			}
			delete(want, pi)
		case <-deadline:
			t.Fatalf("user tasks not finished by the consumer within 60s: %v\nlogs:\n%s", want, logs)
		}
	}
	countFinishes := func() map[string]int {
		n := map[string]int{}
		for {
			select {
			case m := <-finishes:
				var r struct{ UserTaskInstanceID string }
				_ = json.Unmarshal(m.Data, &r)
				n[r.UserTaskInstanceID]++
			case <-time.After(300 * time.Millisecond):
				return n
			}
		}
	}
	seen := countFinishes()
	if len(seen) != 3 {
		t.Fatalf("finish requests %v, want one for each of 3 tasks", seen)
	}

	// A copy of a delivered event, stored again under another Nats-Msg-Id
	// (as a replay from elsewhere would be), carries the same ce-id: the
	// consumer's de-duplication drops it.
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	orig, err := s.GetLastMsgForSubject(context.Background(), events.EventPrefix+"user_task_waiting")
	if err != nil {
		t.Fatal(err)
	}
	dup := nats.NewMsg(orig.Subject)
	dup.Data = orig.Data
	for k, v := range orig.Header {
		dup.Header[k] = v
	}
	dup.Header.Set(forwarder.HeaderMsgID, "replay-"+orig.Header.Get(events.HeaderID))
	if _, err := js.PublishMsg(context.Background(), dup); err != nil {
		t.Fatal(err)
	}
	// An event the consumer cannot act on (no amount) goes to the poison
	// queue after the retries.
	bad := nats.NewMsg(events.EventPrefix + "user_task_waiting")
	bad.Data = []byte(`{"flowNodeId":"manual_approval","flowNodeInstanceId":"fni-bad","processInstanceId":"pi-bad","currentToken":{}}`)
	ev := &events.Event{ID: "user_task_waiting/fni-bad", Source: "test", Type: events.EventType("user_task_waiting"), Data: bad.Data}
	if _, err := events.Encode(ev, events.Binary, events.Header(bad.Header)); err != nil {
		t.Fatal(err)
	}
	bad.Header.Set(forwarder.HeaderMsgID, ev.ID)
	if _, err := js.PublishMsg(context.Background(), bad); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-poisoned:
		wm, err := (&wmnats.NATSMarshaler{}).Unmarshal(m)
		if err != nil || wm.UUID != ev.ID || wm.Metadata.Get("reason_poisoned") == "" {
			t.Fatalf("poison message %+v (%v)", wm, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nothing in the poison queue")
	}
	if again := countFinishes(); len(again) != 0 {
		t.Fatalf("the duplicate was handled again: %v", again)
	}
}
