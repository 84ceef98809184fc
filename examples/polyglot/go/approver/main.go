// Command approver finishes the waiting user tasks of the approval model by
// the seed's rules (approval.go): it lists them over pe.usertask.list and
// finishes each over pe.usertask.finish, whenever pe.event.user_task_waiting
// arrives and every -poll interval (engine events are hints, not a log).
// Plain nats.go requests: the service needs no SDK.
//
// Run against `bridge dev`: go run ./examples/polyglot/go/approver
// (NATS_URL or -nats, default nats://127.0.0.1:4222)
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/events"
)

func main() {
	url := os.Getenv("NATS_URL")
	if url == "" {
		url = nats.DefaultURL
	}
	flag.StringVar(&url, "nats", url, "NATS URL (env NATS_URL)")
	model := flag.String("model", "approval", "process model whose user tasks to finish")
	poll := flag.Duration("poll", 2*time.Second, "list waiting user tasks at least this often")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	nc, err := nats.Connect(url, nats.Name("pe-bridge-example-go-approver"), nats.MaxReconnects(-1))
	if err != nil {
		fmt.Fprintln(os.Stderr, "approver:", err)
		os.Exit(1)
	}
	defer nc.Close()

	wake := make(chan struct{}, 1)
	sub, err := nc.Subscribe(events.EventPrefix+"user_task_waiting", func(*nats.Msg) {
		select {
		case wake <- struct{}{}:
		default:
		}
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "approver:", err)
		os.Exit(1)
	}
	defer sub.Unsubscribe()
	fmt.Printf("approver: finishing waiting user tasks of %s on %s\n", *model, nc.ConnectedUrlRedacted())
	t := time.NewTicker(*poll)
	defer t.Stop()
	for {
		if err := approveWaiting(ctx, nc, *model); err != nil && ctx.Err() == nil {
			fmt.Fprintln(os.Stderr, "approver:", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-t.C:
		}
	}
}

type userTask struct {
	UserTaskInstanceID string          `json:"userTaskInstanceId"`
	FlowNodeID         string          `json:"flowNodeId"`
	ProcessInstanceID  string          `json:"processInstanceId"`
	Token              json.RawMessage `json:"token"`
}

func approveWaiting(ctx context.Context, nc *nats.Conn, model string) error {
	var list struct {
		UserTasks []userTask `json:"userTasks"`
	}
	if err := call(ctx, nc, events.SubjectUserTaskList, map[string]any{"processModelId": model, "state": "suspended"}, &list); err != nil {
		return err
	}
	for _, ut := range list.UserTasks {
		result := Decide(ut.Token)
		if err := call(ctx, nc, events.SubjectUserTaskFinish, map[string]any{"userTaskInstanceId": ut.UserTaskInstanceID, "result": result}, nil); err != nil {
			fmt.Fprintf(os.Stderr, "approver: finishing %s: %v\n", ut.UserTaskInstanceID, err)
			continue
		}
		b, _ := json.Marshal(result)
		fmt.Printf("approver: finished user task %s (%s) of process %s: %s\n", ut.UserTaskInstanceID, ut.FlowNodeID, ut.ProcessInstanceID, b)
	}
	return nil
}

// call sends a service request and decodes the reply; a service error
// (headers Nats-Service-Error-Code and Nats-Service-Error) becomes an error.
func call(ctx context.Context, nc *nats.Conn, subject string, req, reply any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	msg, err := nc.RequestWithContext(ctx, subject, body)
	if err != nil {
		return fmt.Errorf("%s: %w", subject, err)
	}
	if code := msg.Header.Get("Nats-Service-Error-Code"); code != "" {
		return fmt.Errorf("%s: error %s: %s", subject, code, msg.Header.Get("Nats-Service-Error"))
	}
	if reply == nil {
		return nil
	}
	return json.Unmarshal(msg.Data, reply)
}
