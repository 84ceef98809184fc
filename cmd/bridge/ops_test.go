package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/pe-bridge/pe-bridge/engine/authority"
	"github.com/pe-bridge/pe-bridge/engine/emulator"
	"github.com/pe-bridge/pe-bridge/examples/models"
)

// httpAddr is the health and metrics address a bridge printed.
func (p *proc) httpAddr() string {
	p.t.Helper()
	line := p.waitLine("health and metrics on http://", 20*time.Second)
	return strings.Fields(field(line, "http://"))[0]
}

// waitErr waits until a stderr line contains substr and returns it.
func (p *proc) waitErr(substr string, timeout time.Duration) string {
	p.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		for _, l := range p.stderr {
			if strings.Contains(l, substr) {
				p.mu.Unlock()
				return l
			}
		}
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-p.done:
			p.mu.Lock()
			all := strings.Join(p.stderr, "\n")
			p.mu.Unlock()
			if i := strings.Index(all, substr); i >= 0 {
				return all[i:]
			}
			p.t.Fatalf("bridge exited without a stderr line with %q", substr)
		case <-deadline.C:
			p.t.Fatalf("no stderr line with %q within %s", substr, timeout)
		}
	}
}

func get(t *testing.T, url string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

// A running bridge answers its probes and serves metrics that pass
// promlint; bridge probe reports readiness with its exit code.
func TestRunHealthReadinessMetrics(t *testing.T) {
	_, engineURL := testEngine(t, emulator.Config{})
	ns := testNATS(t)
	nc := connect(t, ns.ClientURL())
	sub, err := nc.Subscribe("pe.task.SampleExternalTask", func(m *nats.Msg) { _ = m.Respond([]byte(`{"ok":true}`)) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	p := startBridge(t, nil, "run", "--engine-url", engineURL, "--nats-url", ns.ClientURL())
	addr := p.httpAddr()
	if code, ct, body := get(t, "http://"+addr+"/healthz"); code != 200 || ct != "application/json" || !strings.Contains(body, `"ok"`) {
		t.Fatalf("/healthz: %d %s %s", code, ct, body)
	}
	p.waitLine("bridge ready", 20*time.Second)
	code, _, body := get(t, "http://"+addr+"/readyz")
	var rb readyBody
	if err := json.Unmarshal([]byte(body), &rb); err != nil || code != 200 || rb.Status != "ready" || len(rb.Failed) != 0 {
		t.Fatalf("/readyz after bridge ready: %d %s", code, body)
	}
	for _, c := range checkOrder {
		if rb.Checks[c] != "ok" {
			t.Errorf("/readyz check %s = %q", c, rb.Checks[c])
		}
	}
	out, err := exec.Command(binary, "probe", "--http-addr", addr).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"ready"`) {
		t.Fatalf("bridge probe: %v: %s", err, out)
	}

	// Through the service: a blocking start waits for the task's handler.
	if reply, err := nc.Request("pe.process.start", []byte(`{"processModelId":"hello_world","returnOn":"finished"}`), 30*time.Second); err != nil ||
		reply.Header.Get("Nats-Service-Error-Code") != "" {
		t.Fatalf("pe.process.start: %v %v", err, reply)
	}
	// The engine ended the instance before the bridge read the answer to
	// its finish call: wait for the bridge to have counted it.
	const finished = `pe_bridge_tasks_settled_total{outcome="finished",topic="SampleExternalTask"} 1`
	var metrics string
	eventually(t, 10*time.Second, func() error {
		code, ct, body := get(t, "http://"+addr+"/metrics")
		if code != 200 || !strings.HasPrefix(ct, "text/plain") {
			t.Fatalf("/metrics: %d %s", code, ct)
		}
		metrics = body
		for _, want := range []string{finished, `pe_bridge_events_forwarded_total{event="process_ended"} 1`} {
			if !strings.Contains(body, want) {
				return fmt.Errorf("no %s yet", want)
			}
		}
		return nil
	})
	problems, err := promlint.New(strings.NewReader(metrics)).Lint()
	if err != nil {
		t.Fatalf("promlint: %v", err)
	}
	for _, pr := range problems {
		t.Errorf("promlint: %s: %s", pr.Metric, pr.Text)
	}
	for _, want := range []string{
		`pe_bridge_build_info{version="v0.0.0-test"} 1`,
		`pe_bridge_nats_connected 1`,
		`pe_bridge_nats_reconnects_total 0`,
		`pe_bridge_ready{check="all"} 1`,
		`pe_bridge_engine_request_duration_seconds_count{method="POST",route="/external_tasks/fetch_and_lock",status_class="2xx"}`,
		`pe_bridge_engine_request_duration_seconds_count{method="GET",route="/info",status_class="2xx"} 1`,
		`pe_bridge_engine_request_duration_seconds_count{method="PUT",route="/external_tasks/{id}/finish",status_class="2xx"} 1`,
		`pe_bridge_tasks_fetched_total{topic="SampleExternalTask"} 1`,
		`pe_bridge_tasks_published_total{topic="SampleExternalTask"} 1`,
		`pe_bridge_handler_duration_seconds_count{topic="SampleExternalTask"} 1`,
		`pe_bridge_task_window_size{topic="SampleExternalTask"} 100`,
		`pe_bridge_service_requests_total{code="200",endpoint="process_start"} 1`,
		`go_goroutines `,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if out, err := exec.Command(binary, "probe", "--http-addr", addr).CombinedOutput(); err == nil {
		t.Fatalf("bridge probe of a stopped bridge succeeded: %s", out)
	}
}

// An engine URL that answers, but not as an engine: an ERROR naming the URL,
// the status and the content type (not the HTML), /readyz 503 naming the
// engine check, no "bridge ready", and a clean exit on SIGTERM.
func TestRunEngineURLNotAnEngine(t *testing.T) {
	html := newHTTPServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, "<html><body>Welcome to nginx SECRET-PAGE</body></html>")
	}))
	ns := testNATS(t)
	p := startBridge(t, nil, "run", "--engine-url", html, "--nats-url", ns.ClientURL())
	addr := p.httpAddr()
	line := p.waitErr("does not answer as a ProcessCube engine", 20*time.Second)
	for _, want := range []string{html + "/atlas_engine/api/v1/info", "status=200", "text/html", "level=ERROR"} {
		if !strings.Contains(line, want) {
			t.Errorf("log line %q lacks %q", line, want)
		}
	}
	code, _, body := get(t, "http://"+addr+"/readyz")
	var rb readyBody
	if err := json.Unmarshal([]byte(body), &rb); err != nil || code != 503 || rb.Status != "not ready" ||
		strings.Join(rb.Failed, ",") != "engine,topics,service,events" || !strings.Contains(rb.Checks[checkEngine], "text/html") {
		t.Fatalf("/readyz: %d %s", code, body)
	}
	if code, _, _ := get(t, "http://"+addr+"/healthz"); code != 200 {
		t.Fatalf("/healthz %d while not ready", code)
	}
	if code, _, _ := get(t, "http://"+addr+"/metrics"); code != 200 {
		t.Fatalf("/metrics %d while not ready", code)
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	all := p.output(false) + p.output(true)
	if strings.Contains(p.output(false), "bridge ready") || strings.Contains(all, "SECRET-PAGE") {
		t.Fatalf("ready printed or HTML logged:\n%s", all)
	}
}

// An engine URL where nothing listens (U3): one WARN naming the refused
// connection, /readyz 503 naming the engine, no "bridge ready", a clean
// exit on SIGTERM.
func TestRunEngineUnreachableAtStart(t *testing.T) {
	engineURL := "http://" + freeAddr(t)
	ns := testNATS(t)
	p := startBridge(t, nil, "run", "--engine-url", engineURL, "--nats-url", ns.ClientURL())
	addr := p.httpAddr()
	line := p.waitErr("engine unreachable", 20*time.Second)
	for _, want := range []string{"level=WARN", "path=/atlas_engine/api/v1/info", "connection refused"} {
		if !strings.Contains(line, want) {
			t.Errorf("log line %q lacks %q", line, want)
		}
	}
	eventually(t, 10*time.Second, func() error {
		if code, _, body := get(t, "http://"+addr+"/readyz"); code != 503 || !strings.Contains(body, `"engine"`) {
			return fmt.Errorf("/readyz with the engine unreachable: %d %s", code, body)
		}
		return nil
	})
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if strings.Contains(p.output(false), "bridge ready") {
		t.Fatalf("ready printed with the engine unreachable:\n%s", p.output(false))
	}
	if n := strings.Count(p.output(true), "engine unreachable"); n != 1 {
		t.Errorf("%d 'engine unreachable' lines, want 1:\n%s", n, p.output(true))
	}
}

// A taken port exits 2 at once, naming the flag to change.
func TestRunPortTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := ln.Addr().String()
	_, engineURL := testEngine(t, emulator.Config{})
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"run", "--engine-url", engineURL, "--nats-listen", taken}, "--nats-listen"},
		{[]string{"run", "--engine-url", engineURL, "--nats-listen", "127.0.0.1:0", "--http-addr", taken}, "--http-addr"},
		{[]string{"dev", "--nats-listen", taken, "--engine-addr", "127.0.0.1:0"}, "--nats-listen"},
		{[]string{"dev", "--nats-listen", "127.0.0.1:0", "--engine-addr", taken}, "--engine-addr"},
		{[]string{"dev", "--nats-listen", "127.0.0.1:0", "--engine-addr", "127.0.0.1:0", "--http-addr", taken}, "--http-addr"},
	} {
		p := startBridge(t, nil, tc.args...)
		if code := p.wait(10 * time.Second); code != 2 {
			t.Errorf("%v: exit %d, want 2", tc.args, code)
		}
		if stderr := p.output(true); !strings.Contains(stderr, tc.flag) || !strings.Contains(stderr, taken) {
			t.Errorf("%v: stderr %q does not name %s and %s", tc.args, stderr, tc.flag, taken)
		}
	}
}

// A bad OTEL_* value is a startup error naming the variable (exit 2).
func TestRunBadOTELValue(t *testing.T) {
	_, engineURL := testEngine(t, emulator.Config{})
	for bad, env := range map[string][]string{
		"OTEL_TRACES_EXPORTER":        {"OTEL_TRACES_EXPORTER=zipkin"},
		"OTEL_TRACES_SAMPLER":         {"OTEL_TRACES_EXPORTER=otlp", "OTEL_TRACES_SAMPLER=sometimes"},
		"OTEL_EXPORTER_OTLP_ENDPOINT": {"OTEL_EXPORTER_OTLP_ENDPOINT=collector:4318"},
		"OTEL_EXPORTER_OTLP_PROTOCOL": {"OTEL_TRACES_EXPORTER=otlp", "OTEL_EXPORTER_OTLP_PROTOCOL=http/json"},
	} {
		p := startBridge(t, env, "run", "--engine-url", engineURL, "--nats-listen", "127.0.0.1:0")
		if code := p.wait(10 * time.Second); code != 2 {
			t.Errorf("%v: exit %d, want 2", env, code)
		}
		if stderr := p.output(true); !strings.Contains(stderr, bad) {
			t.Errorf("%v: stderr %q does not name %s", env, stderr, bad)
		}
	}
}

// With --client-id and the authority not answering, the bridge waits (not
// ready, one WARN) instead of exiting; a refused client exits 1.
func TestRunWaitsForTheAuthority(t *testing.T) {
	_, engineURL := testEngine(t, emulator.Config{})
	closed := "http://" + freeAddr(t)
	p := startBridge(t, nil, "run", "--engine-url", engineURL, "--nats-listen", "127.0.0.1:0",
		"--client-id", "worker", "--client-secret", "s3cret-do-not-log", "--authority-url", closed)
	addr := p.httpAddr()
	p.waitErr("cannot get an engine token yet", 20*time.Second)
	code, _, body := get(t, "http://"+addr+"/readyz")
	if code != 503 || !strings.Contains(body, "no engine token yet") {
		t.Fatalf("/readyz: %d %s", code, body)
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if strings.Contains(p.output(true)+p.output(false), "s3cret-do-not-log") {
		t.Fatal("the secret was printed")
	}

	auth, err := authority.New(authority.Config{Clients: []authority.Client{{ID: "worker", Secret: "right", Scopes: []string{emulator.ScopeETW}}}})
	if err != nil {
		t.Fatal(err)
	}
	authSrv := newHTTPServer(t, auth)
	auth.SetIssuer(authSrv)
	p = startBridge(t, nil, "run", "--engine-url", engineURL, "--nats-listen", "127.0.0.1:0",
		"--client-id", "worker", "--client-secret", "wrong", "--authority-url", authSrv, "--scopes", emulator.ScopeETW)
	if code := p.wait(30 * time.Second); code != 1 {
		t.Fatalf("refused client: exit %d, want 1", code)
	}
	if !strings.Contains(p.output(true), `getting an engine token for client "worker"`) {
		t.Fatalf("stderr %s", p.output(true))
	}
}

// An engine outage while running: /readyz 503 naming the engine, one WARN
// naming a real path when it starts, one INFO when it ends, ready again.
func TestRunEngineOutage(t *testing.T) {
	emu, err := emulator.New(emulator.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := emu.LoadFS(models.FS); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	var down atomic.Bool
	engineURL := newHTTPServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		emu.ServeHTTP(w, r)
	}))
	ns := testNATS(t)
	p := startBridge(t, nil, "run", "--engine-url", engineURL, "--nats-url", ns.ClientURL(), "--long-poll-timeout", "1s")
	addr := p.httpAddr()
	p.waitLine("bridge ready", 20*time.Second)
	down.Store(true)
	line := p.waitErr("engine unreachable", 20*time.Second)
	if !strings.Contains(line, "level=WARN") || !strings.Contains(line, "path=/atlas_engine/api/v1/") || strings.Contains(line, "{") {
		t.Errorf("outage line %q: want a WARN naming the real path", line)
	}
	eventually(t, 10*time.Second, func() error {
		if code, _, body := get(t, "http://"+addr+"/readyz"); code != 503 || !strings.Contains(body, `"failed":["engine"]`) {
			return fmt.Errorf("/readyz during the outage: %d %s", code, body)
		}
		return nil
	})
	down.Store(false)
	p.waitErr("engine reachable again", 20*time.Second)
	eventually(t, 10*time.Second, func() error {
		if code, _, body := get(t, "http://"+addr+"/readyz"); code != 200 {
			return fmt.Errorf("/readyz after the outage: %d %s", code, body)
		}
		return nil
	})
	if n := strings.Count(p.output(true), "engine unreachable"); n != 1 {
		t.Errorf("%d 'engine unreachable' lines, want 1", n)
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// OTEL_EXPORTER_OTLP_ENDPOINT turns tracing on: the binary exports the
// task's spans over OTLP/HTTP.
func TestRunExportsTracesOverOTLP(t *testing.T) {
	var posts atomic.Int32
	collector := newHTTPServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Method == http.MethodPost && r.URL.Path == "/v1/traces" && r.Header.Get("Content-Type") == "application/x-protobuf" && len(b) > 0 {
			posts.Add(1)
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	_, engineURL := testEngine(t, emulator.Config{})
	ns := testNATS(t)
	nc := connect(t, ns.ClientURL())
	sub, err := nc.Subscribe("pe.task.SampleExternalTask", func(m *nats.Msg) { _ = m.Respond([]byte(`{}`)) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	p := startBridge(t, []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + collector, "OTEL_BSP_SCHEDULE_DELAY=50"},
		"run", "--engine-url", engineURL, "--nats-url", ns.ClientURL())
	p.waitLine("bridge ready", 20*time.Second)
	p.waitErr("tracing on", time.Second)
	if _, err := nc.Request("pe.process.start", []byte(`{"processModelId":"hello_world","returnOn":"finished"}`), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		if posts.Load() == 0 {
			return fmt.Errorf("no spans exported yet")
		}
		return nil
	})
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}
