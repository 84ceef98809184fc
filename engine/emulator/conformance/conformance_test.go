package conformance

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	clientPackage = "@5minds/processcube_engine_client"
	clientVersion = "6.1.4"
	installHint   = "install the pinned Node dependencies first: npm ci --prefix engine/emulator/conformance/node " +
		"(from the repository root; needs node >= 20 and npm on PATH)"
	scriptTimeout = 45 * time.Second
)

// scriptResult is the one JSON line a node script prints.
type scriptResult struct {
	Conformance string `json:"conformance"`
	OK          bool   `json:"ok"`
	Checks      []struct {
		Name    string          `json:"name"`
		OK      bool            `json:"ok"`
		Error   string          `json:"error"`
		Details json.RawMessage `json:"details"`
	} `json:"checks"`
}

// nodeSetup finds node and the pinned client; it fails the test (never skips) when either is missing.
func nodeSetup(t *testing.T) (nodeBin, dir string) {
	t.Helper()
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not on PATH: the official-client conformance checks need Node.js >= 20; %s", installHint)
	}
	dir, err = filepath.Abs("node")
	if err != nil {
		t.Fatal(err)
	}
	pkg := filepath.Join(dir, "node_modules", filepath.FromSlash(clientPackage), "package.json")
	data, err := os.ReadFile(pkg)
	if err != nil {
		t.Fatalf("%s is not installed (%v); %s", clientPackage, err, installHint)
	}
	var meta struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(data, &meta); err != nil || meta.Version != clientVersion {
		t.Fatalf("%s has version %q, want %s (%v); %s", clientPackage, meta.Version, clientVersion, err, installHint)
	}
	return nodeBin, dir
}

// runScript runs `node <script>` against engineURL and returns its result line.
func runScript(t *testing.T, nodeBin, dir, script, engineURL string) scriptResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), scriptTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, nodeBin, script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"PE_ENGINE_URL="+engineURL,
		"PE_SCRIPT_TIMEOUT_MS=40000", // the script reports its own timeout before scriptTimeout kills it
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	runErr := cmd.Run()
	t.Logf("node %s took %s", script, time.Since(start).Round(time.Millisecond))

	var res scriptResult
	found := false
	sc := bufio.NewScanner(bytes.NewReader(stdout.Bytes()))
	sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte(`{"conformance"`)) {
			continue
		}
		if err := json.Unmarshal(line, &res); err == nil {
			found = true
		}
	}
	if !found {
		t.Fatalf("node %s printed no result line (exit: %v)\nstdout tail:\n%s\nstderr tail:\n%s",
			script, runErr, tail(stdout.String(), 3000), tail(stderr.String(), 3000))
	}
	var exitErr *exec.ExitError
	if runErr != nil && !errors.As(runErr, &exitErr) {
		t.Fatalf("node %s: %v", script, runErr)
	}
	if res.OK != (runErr == nil) {
		t.Errorf("node %s: result ok=%v but exit error %v", script, res.OK, runErr)
	}
	if !res.OK && stderr.Len() > 0 {
		t.Logf("node %s stderr tail:\n%s", script, tail(stderr.String(), 2000))
	}
	return res
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// TestOfficialClient runs each node script against its own emulator, with every exchange validated
// against the OpenAPI file as well.
func TestOfficialClient(t *testing.T) {
	t.Parallel()
	nodeBin, dir := nodeSetup(t)
	v := newValidator(t)
	scripts := []struct {
		file string
		want []string // checks that must be present (so a script cannot silently skip one)
	}{
		{"worker.js", []string{"start instances (returnOn 1)", "all instances finish", "each task handled exactly once", "external task fields", "end token is the worker result", "thrown error is caught by the error boundary"}},
		{"start.js", []string{"startProcessInstance (returnOn 1) with correlationId", "startProcessInstanceAndAwaitEndEvent (returnOn 2, literal :process_model_id path)", "startProcessInstanceAndAwaitSpecificEndEvent (returnOn 3)", "start of an unknown process model is a 404"}},
		{"usertasks.js", []string{"user task appears with form fields", "query filters", "reserve", "cancel reservation", "finish"}},
		{"abort.js", []string{"worker receives the task and extends its lock", "terminateProcessInstance", "AbortSignal fires at the next lock extension (409)", "finish / extend_lock / error after termination answer 409 ConflictError", "timer boundary cancels the task: AbortSignal at the next extension"}},
		{"deploy.js", []string{"persistProcessDefinitions (single XML string)", "deployFiles (XML array)", "deployed models are listed and readable", "deployed start→end model runs to its end event", "deployed external-task model is served to a worker"}},
		{"notifications.js", []string{"socket connects (namespace api, Authorization without Bearer)", "onProcessStarted and onProcessEnded", "userTasks.onUserTaskWaiting, onUserTaskReserved and onUserTaskFinished", "onProcessTerminated and onProcessError", "onProcessDeployed and onExternalTaskCreated", "a socket with a wrong token is refused"}},
		{"misc.js", []string{"application info", "authority", "process models list and get", "message trigger", "signal trigger", "example models message_catch and signal_catch", "error end event rejects the awaiting start with a BpmnError", "process instance query filters", "events query"}},
	}
	for _, s := range scripts {
		t.Run(strings.TrimSuffix(s.file, ".js"), func(t *testing.T) {
			t.Parallel()
			_, base, rec := newEmulator(t)
			res := runScript(t, nodeBin, dir, s.file, base)
			names := map[string]bool{}
			for _, c := range res.Checks {
				names[c.Name] = true
				if c.OK {
					t.Logf("ok   %s %s", c.Name, clip(c.Details))
				} else {
					t.Errorf("FAIL %s: %s", c.Name, c.Error)
				}
			}
			for _, w := range s.want {
				if !names[w] {
					t.Errorf("check %q missing from the output of %s", w, s.file)
				}
			}
			// What the official client sent and got must also match the spec.
			xs := rec.exchanges()
			validateAll(t, v, xs)
			t.Logf("validated %d exchanges of the official client against the OpenAPI file", len(xs))
		})
	}
}
