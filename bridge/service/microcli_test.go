package service

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/events"
	"github.com/pe-bridge/pe-bridge/internal/testutil"
)

// TestMicroStatsWithNATSCLI: `nats micro stats pe-bridge` shows the real
// requests, errors and processing times, also of requests answered from the
// service's own goroutines.
func TestMicroStatsWithNATSCLI(t *testing.T) {
	cli := testutil.NATSCLI(t)
	nc := runNATS(t)
	const slow = 300 * time.Millisecond
	eng := &fakeEngine{
		// usertask.get waits for its request timeout: a 504 after >= slow.
		tasks: func(ctx context.Context, _ engine.FlowNodeInstanceQuery) (engine.FlowNodeInstanceList, error) {
			<-ctx.Done()
			return engine.FlowNodeInstanceList{}, ctx.Err()
		},
	}
	startService(t, nc, eng, Config{RequestTimeout: slow}, nil)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			fails(t, request(t, nc, events.SubjectUserTaskGet, `{"userTaskInstanceId":"u"}`, nil), 504, "")
		})
	}
	for range 3 {
		ok(t, request(t, nc, events.SubjectProcessTerminate, `{"processInstanceId":"p"}`, nil), nil)
	}
	fails(t, request(t, nc, events.SubjectProcessTerminate, `{}`, nil), 400, "processInstanceId")
	wg.Wait()

	cmd := exec.Command(cli, "--server", nc.ConnectedUrl(), "micro", "stats", events.ServiceName, "--json")
	home := t.TempDir() // no nats contexts of the machine
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+home, "NATS_CONTEXT=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	var stats []micro.Stats
	if err := json.Unmarshal(out, &stats); err != nil {
		var one micro.Stats
		if err1 := json.Unmarshal(out, &one); err1 != nil {
			t.Fatalf("decoding %s: %v", out, err)
		}
		stats = []micro.Stats{one}
	}
	if len(stats) != 1 {
		t.Fatalf("%d instances in %s", len(stats), out)
	}
	got := map[string]*micro.EndpointStats{}
	for _, ep := range stats[0].Endpoints {
		got[ep.Name] = ep
	}
	if g := got["usertask_get"]; g == nil || g.NumRequests != 4 || g.NumErrors != 4 || !strings.HasPrefix(g.LastError, "504 ") ||
		g.AverageProcessingTime < slow || g.ProcessingTime < 4*slow {
		t.Fatalf("usertask_get stats %+v, want 4 requests, 4 errors, average >= %s", g, slow)
	}
	if g := got["process_terminate"]; g == nil || g.NumRequests != 4 || g.NumErrors != 1 || !strings.HasPrefix(g.LastError, "400 ") {
		t.Fatalf("process_terminate stats %+v, want 4 requests, 1 error", g)
	}
	t.Logf("nats micro stats: usertask_get %d requests, %d errors, average %s; process_terminate %d requests, %d errors",
		got["usertask_get"].NumRequests, got["usertask_get"].NumErrors, got["usertask_get"].AverageProcessingTime,
		got["process_terminate"].NumRequests, got["process_terminate"].NumErrors)

	// ls and info see the service and its endpoints too.
	for _, args := range [][]string{{"micro", "ls", "--json"}, {"micro", "info", events.ServiceName, "--json"}} {
		cmd := exec.Command(cli, append([]string{"--server", nc.ConnectedUrl()}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+home, "NATS_CONTEXT=")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), events.ServiceName) {
			t.Fatalf("nats %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		if args[1] == "info" && !strings.Contains(string(out), events.SubjectProcessStart) {
			t.Fatalf("nats micro info lacks the endpoints:\n%s", out)
		}
	}
}
