package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"

	"github.com/pe-bridge/pe-bridge/bridge"
	"github.com/pe-bridge/pe-bridge/bridge/forwarder"
	"github.com/pe-bridge/pe-bridge/bridge/service"
	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/engine/emulator"
	"github.com/pe-bridge/pe-bridge/internal/config"
)

func runInProcess(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestVersion(t *testing.T) {
	out, err := exec.Command(binary, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "v0.0.0-test") || !strings.Contains(string(out), "go1.") {
		t.Fatalf("version output %q lacks the ldflags version or the Go version", out)
	}
	code, stdout, _ := runInProcess("version")
	if code != 0 || !strings.Contains(stdout, "pe-bridge ") {
		t.Fatalf("in-process version: %d %q", code, stdout)
	}
}

func TestHelpTellsTheTruth(t *testing.T) {
	cases := map[string][]string{
		"run":      {"--engine-url", "PE_ENGINE_URL", "--nats-url", "PE_NATS_URL", "(default 30s)", "--client-secret-file", "--nats-tls-ca", "--topics", "--content-mode", "(default binary)", "--events", "--no-service", "--log-format", "--config", "--http-addr", "(default 127.0.0.1:8080)", "PE_HTTP_ADDR"},
		"dev":      {"--demo", "--nats-listen", "(default 127.0.0.1:4222)", "--engine-addr", "(default 127.0.0.1:8000)", "emulator", "PE_DEMO", "--http-addr"},
		"probe":    {"/readyz", "--http-addr", "--live", "PE_HTTP_ADDR"},
		"emulator": {"EMULATOR", "development and tests", "--addr", "--models", "--authority", "--fault-error-rate", "--fault-path", "--fault-stall-rate", "--fault-answer-delay", "--fault-after-effect-rate", "--fault-status", "--fault-seed", "not the ProcessCube engine"},
	}
	for cmd, wants := range cases {
		code, stdout, stderr := runInProcess(cmd, "--help")
		if code != 0 {
			t.Errorf("%s --help: exit %d, stderr %s", cmd, code, stderr)
		}
		for _, w := range wants {
			if !strings.Contains(stdout, w) {
				t.Errorf("%s --help lacks %q", cmd, w)
			}
		}
	}
	code, stdout, _ := runInProcess("help")
	if code != 0 || !strings.Contains(stdout, "PE_ENGINE_URL") {
		t.Errorf("top help: %d %q", code, stdout)
	}
	if code, _, _ := runInProcess("frobnicate"); code != 2 {
		t.Errorf("unknown command exit %d, want 2", code)
	}
}

func TestInvalidConfigExit2NamesFlag(t *testing.T) {
	cases := []struct {
		args []string
		env  []string
		flag string
	}{
		{[]string{"run"}, nil, "--engine-url"},
		{[]string{"run", "--engine-url", "http://127.0.0.1:1", "--lock-duration", "10ms"}, nil, "--lock-duration"},
		{[]string{"run", "--engine-url", "http://127.0.0.1:1", "--window", "x"}, nil, "window"},
		{[]string{"run", "--engine-url", "http://127.0.0.1:1"}, []string{"PE_CONTENT_MODE=xml"}, "--content-mode"},
		{[]string{"run", "--engine-url", "http://127.0.0.1:1", "--no-such-flag"}, nil, "no-such-flag"},
		{[]string{"dev", "--engine-addr", "nonsense"}, nil, "--engine-addr"},
		{[]string{"dev", "--demo", "--no-service"}, nil, "--no-service"},
		{[]string{"emulator", "--fault-error-rate", "2"}, nil, "--fault-error-rate"},
		{[]string{"emulator", "--fault-stall-rate", "-0.1"}, nil, "--fault-stall-rate"},
		{[]string{"emulator", "--fault-after-effect-rate", "1.5"}, nil, "--fault-after-effect-rate"},
		{[]string{"emulator", "--fault-answer-delay", "-1s"}, nil, "--fault-answer-delay"},
		{[]string{"emulator", "--fault-error-rate", "0.1", "--fault-status", "200"}, nil, "--fault-status"},
		{[]string{"emulator", "--fault-path", "extend_lock"}, nil, "--fault-path"},
	}
	for _, c := range cases {
		cmd := exec.Command(binary, c.args...)
		cmd.Env = append(cmd.Environ(), c.env...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		if code := cmd.ProcessState.ExitCode(); code != 2 {
			t.Errorf("%v %v: exit %d (%v), want 2; stderr: %s", c.env, c.args, code, err, stderr.String())
			continue
		}
		if !strings.Contains(stderr.String(), c.flag) {
			t.Errorf("%v %v: stderr %q does not name %s", c.env, c.args, stderr.String(), c.flag)
		}
	}
}

// The flag defaults shown in --help must be the defaults the parts use.
func TestFlagDefaultsMatchParts(t *testing.T) {
	eq := func(name string, got, want any) {
		if got != want {
			t.Errorf("%s: flag default %v, part default %v", name, got, want)
		}
	}
	eq("lock-duration", config.DefaultLockDuration, bridge.DefaultLockDuration)
	eq("long-poll-timeout", config.DefaultLongPollTimeout, bridge.DefaultLongPollTimeout)
	eq("window", config.DefaultWindow, bridge.DefaultWindow)
	eq("max-processing-time", config.DefaultMaxProcessingTime, bridge.DefaultMaxProcessingTime)
	eq("handler-timeout", config.DefaultHandlerTimeout, bridge.DefaultHandlerTimeout)
	eq("max-attempts", config.DefaultMaxAttempts, bridge.DefaultMaxAttempts)
	eq("failure-error-code", config.DefaultFailureErrorCode, bridge.DefaultFailureErrorCode)
	eq("drain-timeout", config.DefaultDrainTimeout, bridge.DefaultDrainTimeout)
	eq("report-concurrency", config.DefaultReportConcurrency, bridge.DefaultReportConcurrency)
	eq("extend-concurrency", config.DefaultExtendConcurrency, bridge.DefaultExtendConcurrency)
	eq("events", strings.Join(config.DefaultEvents, ","), strings.Join(forwarder.DefaultEvents, ","))
	eq("max-in-flight", config.DefaultMaxInFlight, service.DefaultMaxInFlight)
	eq("max-blocking-starts", config.DefaultMaxBlockingStarts, service.DefaultMaxBlockingStarts)
	eq("require-user-token groups", strings.Join(config.UserTokenGroups, ","), strings.Join(service.Groups, ","))
	eq("topic-refresh", config.DefaultTopicRefresh, bridge.DefaultTopicRefresh)
	eq("events-dedup-window", config.DefaultEventsDedupWindow, forwarder.DefaultDuplicateWindow)
	eq("events-lease-ttl", config.DefaultEventsLeaseTTL, forwarder.DefaultLeaseTTL)
}

func TestEmulatorFaultFlags(t *testing.T) {
	es, err := newEmulatorServer(emulatorServerConfig{baseURL: "http://x", faults: emulator.Faults{ErrorRate: 1}, logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer es.close()
	req := httptest.NewRequest(http.MethodGet, engine.BasePath+"/info", nil)
	req.Header.Set("Authorization", "Bearer "+engine.DummyToken)
	rec := httptest.NewRecorder()
	es.handler.ServeHTTP(rec, req)
	var be engine.BaseError
	if rec.Code != http.StatusInternalServerError || json.Unmarshal(rec.Body.Bytes(), &be) != nil || be.Code != 500 {
		t.Fatalf("error rate 1: %d %s", rec.Code, rec.Body)
	}
}
