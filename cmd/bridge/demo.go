package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/events"
)

const (
	demoTopic = "SampleExternalTask"
	demoModel = "hello_world"
)

// runDemo is `bridge dev --demo`: a sample handler on the demo topic, a
// hello_world start every second through the service, and one line per step
// of the round trip as NATS shows it. It owns nc and closes it on return.
func runDemo(ctx context.Context, nc *nats.Conn, ready <-chan struct{}, out io.Writer, logger *slog.Logger) error {
	defer nc.Close()
	var mu sync.Mutex
	handled := map[string]string{} // flow node instance id -> task id
	var subs []*nats.Subscription
	defer func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}()
	subject, err := events.TaskSubject(demoTopic)
	if err != nil {
		return err
	}
	sub, err := nc.QueueSubscribe(subject, events.DefaultQueueGroup, func(m *nats.Msg) {
		id := m.Header.Get(events.HeaderID)
		pid := m.Header.Get(events.HeaderPrefix + events.ExtProcessInstanceID)
		fni := m.Header.Get(events.HeaderPrefix + events.ExtFlowNodeInstanceID)
		fmt.Fprintf(out, "demo: task published on %s: id=%s instance=%s\n", m.Subject, id, pid)
		var token map[string]any
		_ = json.Unmarshal(m.Data, &token)
		result, _ := json.Marshal(map[string]any{
			"greeting":  "Hello from the pe-bridge demo handler",
			"handledAt": time.Now().UTC().Format(time.RFC3339Nano),
		})
		mu.Lock()
		handled[fni] = id
		mu.Unlock()
		if err := m.Respond(result); err != nil {
			logger.Warn("replying", "task_id", id, "error", err)
			return
		}
		fmt.Fprintf(out, "demo: task handled: id=%s result=%s\n", id, result)
	})
	if err != nil {
		return fmt.Errorf("demo: subscribing to %s: %w", subject, err)
	}
	subs = append(subs, sub)

	sub, err = nc.Subscribe(events.EventPrefix+"activity_finished", func(m *nats.Msg) {
		var ev engine.EventMessage
		if json.Unmarshal(m.Data, &ev) != nil {
			return
		}
		mu.Lock()
		id, ok := handled[ev.FlowNodeInstanceID]
		delete(handled, ev.FlowNodeInstanceID)
		mu.Unlock()
		if ok {
			fmt.Fprintf(out, "demo: task finished: id=%s instance=%s\n", id, ev.ProcessInstanceID)
		}
	})
	if err != nil {
		return fmt.Errorf("demo: subscribing to events: %w", err)
	}
	subs = append(subs, sub)
	sub, err = nc.Subscribe(events.EventPrefix+"process_ended", func(m *nats.Msg) {
		var ev engine.EventMessage
		if json.Unmarshal(m.Data, &ev) != nil || ev.ProcessModelID != demoModel {
			return
		}
		fmt.Fprintf(out, "demo: process ended: instance=%s token=%s\n", ev.ProcessInstanceID, compact(ev.CurrentToken))
	})
	if err != nil {
		return fmt.Errorf("demo: subscribing to events: %w", err)
	}
	subs = append(subs, sub)
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("demo: flushing subscriptions: %w", err)
	}
	select {
	case <-ready: // the service answers pe.process.start
	case <-ctx.Done():
		return nil
	}
	fmt.Fprintf(out, "demo: handler listening on %s; starting %s every second\n", subject, demoModel)

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	n := 0
	for {
		n++
		startDemoInstance(ctx, nc, n, out, logger)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func startDemoInstance(ctx context.Context, nc *nats.Conn, n int, out io.Writer, logger *slog.Logger) {
	req, _ := json.Marshal(map[string]any{
		"processModelId": demoModel,
		"returnOn":       "created",
		"initialToken":   map[string]any{"run": n},
	})
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	msg, err := nc.RequestWithContext(rctx, events.SubjectProcessStart, req)
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			logger.Warn("starting "+demoModel+" (will try again)", "error", err)
		}
		return
	}
	if code := msg.Header.Get("Nats-Service-Error-Code"); code != "" {
		logger.Warn("starting "+demoModel, "code", code, "error", msg.Header.Get("Nats-Service-Error"))
		return
	}
	var resp struct {
		ProcessInstanceID string `json:"processInstanceId"`
	}
	_ = json.Unmarshal(msg.Data, &resp)
	fmt.Fprintf(out, "demo: started %s instance=%s\n", demoModel, resp.ProcessInstanceID)
}

func compact(b json.RawMessage) string {
	if len(b) == 0 {
		return "null"
	}
	var v any
	if json.Unmarshal(b, &v) != nil {
		return string(b)
	}
	c, _ := json.Marshal(v)
	return string(c)
}
