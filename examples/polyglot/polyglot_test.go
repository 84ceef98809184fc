// Package polyglot_test runs the polyglot examples end to end against a real
// `bridge dev` (built from cmd/bridge, run as a process on loopback):
//
//   - Go and Node.js: the example programs run as processes;
//   - shell: worker.sh and approver.sh run with the real nats CLI v0.5.0, as
//     their README says (doc_commands_test.go, which runs every documented
//     command of the READMEs);
//   - Python: nats-py cannot be installed here, so the test drives the wire
//     exchange from Go and lets the example's own code decide
//     (handlers.py --stdio).
//
// The Node.js example needs `npm ci --prefix examples/polyglot/node` (make
// node-deps) and the documentation test the nats CLI (go install
// github.com/nats-io/natscli/nats@v0.5.0, or PE_NATS_CLI) and jq; the tests
// fail, never skip, without them.
package polyglot_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/events"
	"github.com/pe-bridge/pe-bridge/handlers-sdk/handlertest"
	"github.com/pe-bridge/pe-bridge/internal/testutil"
)

const (
	root       = "../.."
	goExamples = "go" // examples/polyglot/go, relative to this package
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds cmd/bridge and the Go examples once per test binary.
func binaries(t *testing.T) (bridge, worker, approver string) {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "pe-polyglot-")
		if buildErr != nil {
			return
		}
		// The Go examples are a module of their own (examples/polyglot/go/go.mod,
		// requiring the SDK module as a user's program does): build them in
		// their directory, so this works with and without go.work.
		for _, b := range []struct{ name, dir, pkg string }{
			{"bridge", root, "./cmd/bridge"},
			{"worker", goExamples, "./worker"},
			{"approver", goExamples, "./approver"},
		} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, b.name), b.pkg)
			cmd.Dir = b.dir
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s in %s: %v\n%s", b.pkg, b.dir, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "bridge"), filepath.Join(binDir, "worker"), filepath.Join(binDir, "approver")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// proc is a child process in a process group of its own, stopped with
// SIGTERM to the group at cleanup (so `go run`, npm and shell scripts take
// their children with them).
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *testutil.Buffer
	done chan error
	// shell: the process is a shell running a documented command; dying of
	// the SIGTERM is a clean stop.
	shell bool
}

func start(t *testing.T, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	return startProc(t, &proc{name: name, cmd: cmd})
}

func startProc(t *testing.T, p *proc) *proc {
	t.Helper()
	cmd := p.cmd
	p.out, p.done = &testutil.Buffer{}, make(chan error, 1)
	cmd.Stdout, cmd.Stderr = p.out, p.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", p.name, err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if err := p.stop(); err != nil {
			t.Errorf("%s: %v\n%s", p.name, err, p.out)
		}
	})
	return p
}

// stop sends SIGTERM and waits; a process that does not exit in time is
// killed and reported. It returns the exit error (nil on exit 0).
func (p *proc) stop() error {
	select {
	case err := <-p.done: // already exited
		p.done <- err
		return p.exitErr(err)
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		return p.exitErr(err)
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		return errors.New("did not exit within 20s of SIGTERM")
	}
}

func (p *proc) exitErr(err error) error {
	var ee *exec.ExitError
	if p.shell && errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return nil
		}
	}
	return err
}

// waitOutput waits until p has printed want more than n times (n: the
// count before the step that should print it once more).
func waitOutput(t *testing.T, p *proc, want string, n int, d time.Duration) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s to print %q", p.name, want), d, func() bool {
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("%s exited (%v) before printing %q:\n%s", p.name, err, want, p.out)
		default:
		}
		return strings.Count(p.out.String(), want) > n
	})
}

// waitFor waits up to d for cond (testutil.Until).
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	testutil.Until(t, d, what, cond)
}

// startBridgeDev runs `bridge dev` on free loopback ports and returns a
// connection to its NATS server once the request/reply service answers.
func startBridgeDev(t *testing.T, args ...string) (*nats.Conn, string) {
	t.Helper()
	bridge, _, _ := binaries(t)
	args = append([]string{"dev", "--nats-listen", "127.0.0.1:0", "--engine-addr", "127.0.0.1:0", "--log-level", "warn"}, args...)
	cmd := exec.Command(bridge, args...)
	// The health and metrics listener on a free port too (ignored by a bridge without it).
	cmd.Env = append(cleanEnv(), "PE_HTTP_ADDR=127.0.0.1:0")
	return awaitBridgeDev(t, start(t, "bridge dev", cmd))
}

// awaitBridgeDev waits for the `bridge dev` process p to print its NATS URL
// and its request/reply service to answer, and returns a connection.
func awaitBridgeDev(t *testing.T, p *proc) (*nats.Conn, string) {
	t.Helper()
	re := regexp.MustCompile(`NATS:\s+(nats://\S+)`)
	var url string
	waitFor(t, "bridge dev to print its NATS URL", 3*time.Minute, func() bool {
		if m := re.FindStringSubmatch(p.out.String()); m != nil {
			url = m[1]
			return true
		}
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("bridge dev exited: %v\n%s", err, p.out)
		default:
		}
		return false
	})
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	waitFor(t, "the pe-bridge service", 30*time.Second, func() bool {
		_, err := nc.Request(events.SubjectUserTaskList, []byte(`{}`), 5*time.Second)
		return err == nil
	})
	return nc, url
}

// cleanEnv is the test's environment without PE_* variables, so a
// developer's settings cannot change `bridge dev`.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PE_") && !strings.HasPrefix(kv, "NATS_URL=") {
			env = append(env, kv)
		}
	}
	return env
}

// waitForWorker sends a synthetic task event (as the bridge does) until a
// worker answers, and checks its reply.
func waitForWorker(t *testing.T, nc *nats.Conn) {
	t.Helper()
	var reply *nats.Msg
	waitFor(t, "a worker on pe.task.SampleExternalTask", 2*time.Minute, func() bool {
		msg, err := handlertest.NewMsg(handlertest.Task{ID: "probe-1", Topic: "SampleExternalTask", Payload: map[string]any{"probe": true}})
		if err != nil {
			t.Fatal(err)
		}
		reply, err = nc.RequestMsg(msg, 10*time.Second)
		return err == nil
	})
	r, err := handlertest.DecodeMsg(reply)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Some string         `json:"some"`
		Echo map[string]any `json:"echo"`
	}
	if err := r.DecodeResult(&res); err != nil || res.Some != "result" || res.Echo["probe"] != true {
		t.Fatalf("worker reply %s (%v)", reply.Data, err)
	}
	// A negative amount is a BPMN error in every example.
	msg, _ := handlertest.NewMsg(handlertest.Task{ID: "probe-2", Topic: "SampleExternalTask", Payload: map[string]any{"amount": -5}})
	if reply, err = nc.RequestMsg(msg, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if r, err = handlertest.DecodeMsg(reply); err != nil || r.Kind != events.KindBPMNError || r.Code != "invalid_amount" {
		t.Fatalf("worker reply to a negative amount: %s (%v)", reply.Data, err)
	}
}

type startReply struct {
	ProcessInstanceID string          `json:"processInstanceId"`
	EndEventID        string          `json:"endEventId"`
	TokenPayload      json.RawMessage `json:"tokenPayload"`
}

func startProcess(t *testing.T, nc *nats.Conn, model string, token any) startReply {
	t.Helper()
	req, _ := json.Marshal(map[string]any{"processModelId": model, "initialToken": token, "returnOn": "finished", "timeout": "60s"})
	msg, err := nc.Request(events.SubjectProcessStart, req, 70*time.Second)
	if err != nil {
		t.Fatalf("starting %s: %v", model, err)
	}
	if code := msg.Header.Get("Nats-Service-Error-Code"); code != "" {
		t.Fatalf("starting %s: error %s: %s", model, code, msg.Data)
	}
	var r startReply
	if err := json.Unmarshal(msg.Data, &r); err != nil {
		t.Fatalf("start reply %s: %v", msg.Data, err)
	}
	return r
}

// exercise runs the processes both handlers serve and checks the outcomes.
// mode, when set, is the content mode the bridge's task events must have.
func exercise(t *testing.T, nc *nats.Conn, mode string) {
	t.Helper()
	waitForWorker(t, nc)
	// Watch the bridge's task events (no queue group: the handler still gets them).
	seen := make(chan *nats.Msg, 16)
	watch, err := nc.ChanSubscribe(events.TaskPrefix+">", seen)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Unsubscribe()
	hello := startProcess(t, nc, "hello_world", map[string]any{"greeting": "hi"})
	select {
	case m := <-seen:
		ct := m.Header.Get(events.HeaderDataContent)
		if want := map[string]string{"binary": events.ContentTypeJSON, "structured": events.ContentTypeStructured}[mode]; mode != "" && ct != want {
			t.Errorf("task event Content-Type %q, want %q (%s mode)", ct, want, mode)
		}
		if m.Reply == "" {
			t.Error("task event without reply subject")
		}
	default:
		t.Error("no task event of the bridge seen")
	}
	if !bytes.Contains(hello.TokenPayload, []byte(`"some":"result"`)) && !bytes.Contains(hello.TokenPayload, []byte(`"some": "result"`)) {
		t.Errorf("hello_world ended with token %s, want the worker's result", hello.TokenPayload)
	}
	if !bytes.Contains(hello.TokenPayload, []byte("hi")) {
		t.Errorf("hello_world token %s lacks the echoed payload", hello.TokenPayload)
	}
	for _, c := range []struct {
		token map[string]any
		end   string
	}{
		{map[string]any{"amount": 5000, "customerType": "vip"}, "approved_end"},
		{map[string]any{"amount": 2000, "customerType": "regular"}, "rejected_end"},
		{map[string]any{"amount": 500, "customerType": "regular"}, "approved_end"}, // below the gateway: no user task
	} {
		r := startProcess(t, nc, "approval", c.token)
		if r.EndEventID != c.end {
			t.Errorf("approval with %v ended at %q, want %q (token %s)", c.token, r.EndEventID, c.end, r.TokenPayload)
		}
	}
}

// contentModes are the bridge's task event encodings; every process example
// runs against both.
var contentModes = []string{"binary", "structured"}

func TestGoExample(t *testing.T) {
	for _, mode := range contentModes {
		t.Run(mode, func(t *testing.T) { testGoExample(t, mode) })
	}
}

func testGoExample(t *testing.T, mode string) {
	nc, url := startBridgeDev(t, "--content-mode", mode)
	_, worker, approver := binaries(t)
	var procs []*proc
	for _, c := range []*exec.Cmd{exec.Command(worker), exec.Command(approver, "-poll", "500ms")} {
		c.Env = append(cleanEnv(), "NATS_URL="+url)
		procs = append(procs, start(t, filepath.Base(c.Path), c))
	}
	exercise(t, nc, mode)
	for i, want := range []string{"worker: task ", "approver: finished user task "} {
		p := procs[i]
		if err := p.stop(); err != nil {
			t.Fatalf("%s did not shut down cleanly: %v\n%s", p.name, err, p.out)
		}
		if out := p.out.String(); !strings.Contains(out, want) {
			t.Errorf("%s output lacks %q:\n%s", p.name, want, out)
		}
	}
}

func TestNodeExample(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed: install Node.js >= 18 (apt-get install nodejs npm), then run `npm ci --prefix examples/polyglot/node` (make node-deps)")
	}
	dir := filepath.Join(root, "examples/polyglot/node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules/nats/package.json")); err != nil {
		t.Fatal("examples/polyglot/node/node_modules is missing: run `npm ci --prefix examples/polyglot/node` (or make node-deps)")
	}
	unit := exec.Command(node, "--test")
	unit.Dir = dir
	if out, err := unit.CombinedOutput(); err != nil {
		t.Fatalf("node --test: %v\n%s", err, out)
	}
	for _, mode := range contentModes {
		t.Run(mode, func(t *testing.T) { testNodeExample(t, node, dir, mode) })
	}
}

// testNodeExample runs worker.js and approver.js as two processes in binary
// mode, and index.js (both in one) in structured mode.
func testNodeExample(t *testing.T, node, dir, mode string) {
	nc, url := startBridgeDev(t, "--content-mode", mode)
	scripts := [][]string{{"worker.js", "worker: task "}, {"approver.js", "approver: finished user task "}}
	if mode == "structured" {
		scripts = [][]string{{"index.js", "worker: task ", "approver: finished user task "}}
	}
	var procs []*proc
	for _, sc := range scripts {
		cmd := exec.Command(node, sc[0])
		cmd.Dir = dir
		cmd.Env = append(cleanEnv(), "NATS_URL="+url)
		procs = append(procs, start(t, "node "+sc[0], cmd))
	}
	exercise(t, nc, mode)
	for i, sc := range scripts {
		p := procs[i]
		if err := p.stop(); err != nil {
			t.Fatalf("%s did not shut down cleanly: %v\n%s", p.name, err, p.out)
		}
		for _, want := range sc[1:] {
			if out := p.out.String(); !strings.Contains(out, want) {
				t.Errorf("%s output lacks %q:\n%s", p.name, want, out)
			}
		}
	}
}

// serveWithCommand answers task events on pe.task.SampleExternalTask with the
// output of a command run per task (what `nats reply --command` does), and
// finishes waiting approval user tasks with decide (nil: no approver).
func serveWithCommand(t *testing.T, nc *nats.Conn, worker func(body []byte) ([]byte, error), decide func(token json.RawMessage) (json.RawMessage, error)) {
	t.Helper()
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); wg.Wait() })
	sub, err := nc.QueueSubscribe("pe.task.SampleExternalTask", events.DefaultQueueGroup, func(m *nats.Msg) {
		out, err := worker(m.Data)
		if err != nil {
			t.Errorf("worker command: %v", err)
			return
		}
		_ = m.Respond(out)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	wg.Go(func() {
		for ctx.Err() == nil {
			msg, err := nc.Request(events.SubjectUserTaskList, []byte(`{"processModelId":"approval","state":"suspended"}`), 10*time.Second)
			if err == nil {
				var list struct {
					UserTasks []struct {
						ID    string          `json:"userTaskInstanceId"`
						Token json.RawMessage `json:"token"`
					} `json:"userTasks"`
				}
				_ = json.Unmarshal(msg.Data, &list)
				for _, ut := range list.UserTasks {
					result, err := decide(ut.Token)
					if err != nil {
						t.Errorf("decide: %v", err)
						continue
					}
					req, _ := json.Marshal(map[string]any{"userTaskInstanceId": ut.ID, "result": result})
					_, _ = nc.Request(events.SubjectUserTaskFinish, req, 10*time.Second)
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	})
}

func runStdio(name string, stdin []byte, env []string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %v: %v: %s", name, args, err, stderr.String())
	}
	return out, nil
}

func TestPythonExample(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is not installed")
	}
	dir := filepath.Join(root, "examples/polyglot/python")
	compile := exec.Command(py, "-c", "import py_compile,sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], doraise=True)",
		filepath.Join(dir, "handlers.py"), filepath.Join(t.TempDir(), "handlers.pyc"))
	if out, err := compile.CombinedOutput(); err != nil {
		t.Fatalf("py_compile handlers.py: %v\n%s", err, out)
	}
	script := filepath.Join(dir, "handlers.py")
	nc, _ := startBridgeDev(t)
	serveWithCommand(t, nc,
		func(body []byte) ([]byte, error) { return runStdio(py, body, nil, script, "--stdio", "task") },
		func(token json.RawMessage) (json.RawMessage, error) {
			return runStdio(py, token, nil, script, "--stdio", "decide")
		})
	exercise(t, nc, "binary")
}
