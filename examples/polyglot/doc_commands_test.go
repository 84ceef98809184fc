package polyglot_test

// The documentation's commands, run as written with the real nats CLI v0.5.0
// against a real `bridge dev`.
//
// Every fenced shell block (```sh, ```bash) of the files in docFiles carries
// a marker in its info string: `doctest=<name>` (the block is run by one of
// the tests below, which asserts on its output) or `doctest-skip=<reason>`.
// The block's text is what runs: change a command in the docs and its test
// runs the new command. TestDocBlocks fails on an unmarked block, on a marked
// block no test runs and on a test that runs a block the docs do not have.

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pe-bridge/pe-bridge/internal/testutil"
)

// docFiles are the Markdown files whose shell blocks are all marked; section
// limits the rule to the part of a file under a "## " heading starting so.
var docFiles = []struct{ path, section string }{
	{"README.md", ""},
	{"examples/polyglot/README.md", ""},
	{"examples/polyglot/go/README.md", ""},
	{"examples/polyglot/node/README.md", ""},
	{"examples/polyglot/python/README.md", ""},
	{"examples/polyglot/shell/README.md", ""},
	{"handlers-sdk/README.md", ""},
	{"docs/contract.md", ""},
}

// docTests lists the blocks ("file#name") each test runs. A block may be run
// by several tests; every marked block by at least one.
var docTests = map[string][]string{
	"TestDocWalkthrough": {
		"README.md#bridge-dev", "README.md#sub-events", "README.md#start-no-handler",
		"README.md#worker-go", "README.md#worker-node", "README.md#worker-shell", "README.md#start-finished",
		"README.md#usertask-start", "README.md#usertask-finish",
		"examples/polyglot/README.md#bridge-dev", "examples/polyglot/README.md#work",
		"examples/polyglot/go/README.md#worker", "examples/polyglot/go/README.md#approver",
		"examples/polyglot/node/README.md#install", "examples/polyglot/node/README.md#unit",
		"examples/polyglot/node/README.md#start", "examples/polyglot/node/README.md#worker",
		"examples/polyglot/node/README.md#approver",
	},
	"TestDocDemo": {"README.md#demo"},
	"TestDocShell": {
		"examples/polyglot/shell/README.md#bridge-dev", "examples/polyglot/shell/README.md#worker",
		"examples/polyglot/shell/README.md#approver", "examples/polyglot/shell/README.md#dedup",
		"examples/polyglot/shell/README.md#by-hand", "examples/polyglot/README.md#work",
	},
	"TestDocContractService": {
		"docs/contract.md#sub-events", "docs/contract.md#reply-result", "docs/contract.md#service-start",
		"docs/contract.md#service-usertask", "docs/contract.md#service-message",
	},
	"TestDocContractReplies": {
		"docs/contract.md#reply-result", "docs/contract.md#reply-bpmn-error", "docs/contract.md#reply-failure",
		"docs/contract.md#reply-command",
	},
}

// docBlock is one marked shell block.
type docBlock struct {
	key  string // file#name
	line int
	skip string // the reason of doctest-skip
	text string
}

// readDocBlocks returns the marked blocks of docFiles by key and the
// problems found: unmarked blocks, duplicate names.
func readDocBlocks(t *testing.T) (map[string]*docBlock, []string) {
	t.Helper()
	blocks := map[string]*docBlock{}
	var problems []string
	for _, f := range docFiles {
		data, err := os.ReadFile(filepath.Join(root, f.path))
		if err != nil {
			t.Fatal(err)
		}
		inSection := f.section == ""
		var cur *docBlock
		var indent int
		var body []string
		sc := bufio.NewScanner(strings.NewReader(string(data)))
		for n := 1; sc.Scan(); n++ {
			line := sc.Text()
			trimmed := strings.TrimSpace(line)
			if cur != nil || indent < 0 {
				if trimmed == "```" {
					if cur != nil {
						cur.text = strings.Join(body, "\n") + "\n"
					}
					cur, indent, body = nil, 0, nil
					continue
				}
				if cur != nil {
					body = append(body, strings.TrimPrefix(line, strings.Repeat(" ", indent)))
				}
				continue
			}
			if f.section != "" && strings.HasPrefix(line, "## ") {
				inSection = strings.HasPrefix(line, f.section)
			}
			if !strings.HasPrefix(trimmed, "```") {
				continue
			}
			info := strings.Fields(strings.TrimPrefix(trimmed, "```"))
			if len(info) == 0 || !slices.Contains([]string{"sh", "bash", "shell"}, info[0]) || !inSection {
				indent = -1 // another block: skip to its end
				continue
			}
			b := &docBlock{line: n}
			for _, attr := range info[1:] {
				if v, ok := strings.CutPrefix(attr, "doctest="); ok {
					b.key = f.path + "#" + v
				} else if v, ok := strings.CutPrefix(attr, "doctest-skip="); ok {
					b.key, b.skip = f.path+"#skip:"+fmt.Sprint(n), v
				}
			}
			switch {
			case b.key == "":
				problems = append(problems, fmt.Sprintf("%s:%d: shell block without doctest=<name> or doctest-skip=<reason>", f.path, n))
				indent = -1
				continue
			case blocks[b.key] != nil:
				problems = append(problems, fmt.Sprintf("%s:%d: doctest name of line %d again", f.path, n, blocks[b.key].line))
			}
			blocks[b.key] = b
			cur, indent = b, len(line)-len(strings.TrimLeft(line, " "))
		}
		if cur != nil || indent < 0 {
			problems = append(problems, f.path+": unterminated code block")
		}
	}
	return blocks, problems
}

func TestDocBlocks(t *testing.T) {
	blocks, problems := readDocBlocks(t)
	for _, p := range problems {
		t.Error(p)
	}
	run := map[string]bool{}
	for test, keys := range docTests {
		for _, k := range keys {
			run[k] = true
			if blocks[k] == nil {
				t.Errorf("%s runs %s, which the docs do not have (renamed? then rename it here too)", test, k)
			}
		}
	}
	for k, b := range blocks {
		if b.skip == "" && !run[k] {
			t.Errorf("%s (line %d) is marked doctest but no test runs it: add it to docTests and run it", k, b.line)
		}
	}
}

// docRun runs the blocks of one test with the pinned nats CLI first in PATH.
type docRun struct {
	t      *testing.T
	blocks map[string]*docBlock
	allow  []string
	used   map[string]bool
	env    []string
}

func newDocRun(t *testing.T) *docRun {
	t.Helper()
	allow, ok := docTests[t.Name()]
	if !ok {
		t.Fatalf("%s is not in docTests", t.Name())
	}
	blocks, problems := readDocBlocks(t)
	if len(problems) > 0 {
		t.Fatalf("docs: %s (see TestDocBlocks)", strings.Join(problems, "; "))
	}
	if _, err := exec.LookPath("jq"); err != nil {
		t.Fatal("jq is not installed (apt-get install jq); the documented shell commands use it")
	}
	bin := t.TempDir()
	if err := os.Symlink(testutil.NATSCLI(t), filepath.Join(bin, "nats")); err != nil {
		t.Fatal(err)
	}
	r := &docRun{t: t, blocks: blocks, allow: allow, used: map[string]bool{}}
	r.env = append(cleanEnv(),
		"PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		// `bridge dev` on free loopback ports, quiet: its settings as environment variables.
		"PE_NATS_LISTEN=127.0.0.1:0", "PE_ENGINE_ADDR=127.0.0.1:0", "PE_HTTP_ADDR=127.0.0.1:0", "PE_LOG_LEVEL=warn",
		"STATE_DIR="+t.TempDir(), // the shell worker's de-duplication store
	)
	t.Cleanup(func() {
		for _, k := range allow {
			if !r.used[k] && !t.Failed() {
				t.Errorf("%s did not run %s", t.Name(), k)
			}
		}
	})
	return r
}

func (r *docRun) block(key string) *docBlock {
	r.t.Helper()
	if !slices.Contains(r.allow, key) {
		r.t.Fatalf("%s runs %s, which its docTests entry does not list", r.t.Name(), key)
	}
	b := r.blocks[key]
	if b == nil {
		r.t.Fatalf("the docs have no block %s", key)
	}
	r.used[key] = true
	return b
}

// same checks that the docs show one command the same way in two places, so
// running one runs both.
func (r *docRun) same(a, b string) {
	r.t.Helper()
	if x, y := r.block(a).text, r.block(b).text; x != y {
		r.t.Errorf("%s and %s should be the same command:\n%s\n%s", a, b, x, y)
	}
}

func (r *docRun) command(ctx context.Context, b *docBlock, dir string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "bash", "-e", "-o", "pipefail", "-c", b.text)
	cmd.Dir = filepath.Join(root, dir)
	cmd.Env = r.env
	return cmd
}

// run runs block key in dir (relative to the repository root) to its end and
// returns its output (stdout and stderr); a non-zero exit fails the test.
func (r *docRun) run(key, dir string) string {
	r.t.Helper()
	b := r.block(key)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := r.command(ctx, b, dir)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("%s (line %d) failed: %v\n%s\n%s", key, b.line, err, b.text, out)
	}
	r.t.Logf("%s:\n%s", key, out)
	return string(out)
}

// start starts the long-running block key in dir; it is stopped at cleanup.
func (r *docRun) start(key, dir string) *proc {
	r.t.Helper()
	b := r.block(key)
	return startProc(r.t, &proc{name: key, cmd: r.command(context.Background(), b, dir), shell: true})
}

// expect fails unless out contains every want.
func expect(t *testing.T, what, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s: output lacks %q:\n%s", what, w, out)
		}
	}
}

func (r *docRun) setenv(kv string) { r.env = append(r.env, kv) }

const (
	helloFinished = `"endEventId":"the_end_event"`
	workerResult  = `"some":"result"`
)

// TestDocWalkthrough runs the README's walkthrough and the Go, Node.js and
// polyglot READMEs against one `bridge dev`.
func TestDocWalkthrough(t *testing.T) {
	r := newDocRun(t)
	r.same("README.md#bridge-dev", "examples/polyglot/README.md#bridge-dev")
	nc, url := awaitBridgeDev(t, r.start("README.md#bridge-dev", "."))
	r.setenv("NATS_URL=" + url)
	sub := r.start("README.md#sub-events", ".")
	waitOutput(t, sub, "Subscribing on", 0, 30*time.Second)

	out := r.run("README.md#start-no-handler", ".")
	expect(t, "a blocking start without handler", out, `"code":504`, "keeps running", `"processInstanceId"`)

	work := func(what string) {
		t.Helper()
		waitForWorker(t, nc)
		expect(t, what, r.run("examples/polyglot/README.md#work", "."), workerResult, helloFinished, `"endEventId":"approved_end"`)
	}
	startFinished := func(what string) {
		t.Helper()
		waitForWorker(t, nc)
		expect(t, what, r.run("README.md#start-finished", "."), workerResult, helloFinished, `"tokenPayload"`)
	}

	// Go: the walkthrough's worker is the Go README's.
	r.same("README.md#worker-go", "examples/polyglot/go/README.md#worker")
	procs := []*proc{r.start("examples/polyglot/go/README.md#worker", "."), r.start("examples/polyglot/go/README.md#approver", ".")}
	startFinished("Go worker")
	work("Go worker and approver")
	// The approver prints its line after the finish call, so maybe after the process ended.
	waitOutput(t, procs[1], "approver: finished user task ", 0, 30*time.Second)
	stopAll(t, procs...)
	expect(t, "Go worker", procs[0].out.String(), "worker: task ")

	// Node.js, in its folder as its README says, then from the root as the walkthrough says.
	node := "examples/polyglot/node"
	r.run(node+"/README.md#install", node)
	r.run(node+"/README.md#unit", node)
	procs = []*proc{r.start(node+"/README.md#start", node)}
	work("npm start")
	stopAll(t, procs...)
	procs = []*proc{r.start(node+"/README.md#worker", node), r.start(node+"/README.md#approver", node)}
	work("node worker.js and approver.js")
	stopAll(t, procs...)
	procs = []*proc{r.start("README.md#worker-node", ".")}
	startFinished("the walkthrough's Node.js worker")
	stopAll(t, procs...)

	// The shell worker from the root (binary mode: no de-duplication, see TestDocShell).
	procs = []*proc{r.start("README.md#worker-shell", ".")}
	startFinished("the walkthrough's shell worker")
	stopAll(t, procs...)
	expect(t, "shell worker", procs[0].out.String(), `Received on subject "pe.task.SampleExternalTask"`)

	// A user task: start, wait for its event, list, reserve, finish.
	waiting := strings.Count(sub.out.String(), `"pe.event.user_task_waiting"`)
	finished := strings.Count(sub.out.String(), `"pe.event.user_task_finished"`)
	expect(t, "approval start", r.run("README.md#usertask-start", "."), `"processInstanceId"`)
	waitOutput(t, sub, `"pe.event.user_task_waiting"`, waiting, time.Minute)
	out = r.run("README.md#usertask-finish", ".")
	expect(t, "user task reserve and finish", out, `"actualOwnerId":"alice"`, `"userTaskInstanceId"`)
	waitOutput(t, sub, `"pe.event.user_task_finished"`, finished, time.Minute)
	expect(t, "nats sub", sub.out.String(), `"pe.event.process_started"`, `"pe.event.process_ended"`)
}

func stopAll(t *testing.T, procs ...*proc) {
	t.Helper()
	for _, p := range procs {
		if err := p.stop(); err != nil {
			t.Errorf("%s: %v\n%s", p.name, err, p.out)
		}
	}
}

// TestDocDemo runs `bridge dev --demo` until its sample handler finished a task.
func TestDocDemo(t *testing.T) {
	r := newDocRun(t)
	p := r.start("README.md#demo", ".")
	waitOutput(t, p, "demo: process ended:", 0, 3*time.Minute)
	expect(t, "bridge dev --demo", p.out.String(), "demo: task handled:", "demo: task finished:")
}

// TestDocShell runs the shell README: the bridge with the topic in structured
// mode, worker.sh and approver.sh with the real CLI, de-duplication.
func TestDocShell(t *testing.T) {
	r := newDocRun(t)
	nc, url := awaitBridgeDev(t, r.start("examples/polyglot/shell/README.md#bridge-dev", "."))
	r.setenv("NATS_URL=" + url)
	shell := "examples/polyglot/shell"
	worker := r.start(shell+"/README.md#worker", shell)
	approver := r.start(shell+"/README.md#approver", shell)
	waitForWorker(t, nc)
	expect(t, "shell worker and approver", r.run("examples/polyglot/README.md#work", "."), workerResult, helloFinished, `"endEventId":"approved_end"`)
	waitOutput(t, approver, "approver: finished user task ", 0, 30*time.Second)
	// The bridge's task event was structured: the worker saw its id.
	expect(t, "worker.sh", worker.out.String(), `"specversion":"1.0"`)
	var stateDir string
	for _, kv := range r.env {
		if v, ok := strings.CutPrefix(kv, "STATE_DIR="); ok {
			stateDir = v
		}
	}
	log, err := os.ReadFile(filepath.Join(stateDir, "handled.log"))
	if err != nil || !regexp.MustCompile(`(?m)^task [0-9a-f-]{36}: handled$`).Match(log) {
		t.Errorf("handled.log (%v) lacks a bridge task id:\n%s", err, log)
	}

	out := r.run(shell+"/README.md#dedup", shell)
	if n := strings.Count(out, `{"some":"result","echo":{"amount":5}}`); n != 2 {
		t.Errorf("de-duplication: %d replies with the result, want 2:\n%s", n, out)
	}
	expect(t, "de-duplication", out, "task demo-task-1: handled\ntask demo-task-1: delivered again, stored reply sent\n")
	expect(t, "handle-task.sh by hand", r.run(shell+"/README.md#by-hand", shell), `{"some":"result","echo":{"a":1}}`)
}

// TestDocContractReplies runs the nats reply commands of docs/contract.md
// §4.1 against `bridge dev` and checks what the engine made of each reply.
func TestDocContractReplies(t *testing.T) {
	r := newDocRun(t)
	nc, url := startBridgeDev(t)
	r.setenv("NATS_URL=" + url)
	serve := func(key string) *proc {
		t.Helper()
		p := r.start(key, ".")
		waitOutput(t, p, "Listening on", 0, 30*time.Second)
		return p
	}

	p := serve("docs/contract.md#reply-result")
	if s := startProcess(t, nc, "hello_world", map[string]any{}); s.EndEventID != "the_end_event" || !strings.Contains(string(s.TokenPayload), workerResult) {
		t.Errorf("reply-result: %+v", s)
	}
	stopAll(t, p)

	p = serve("docs/contract.md#reply-command")
	if s := startProcess(t, nc, "hello_world", map[string]any{"n": 1}); !strings.Contains(string(s.TokenPayload), `"echo":{"n":1}`) {
		t.Errorf("reply-command: %+v", s)
	}
	stopAll(t, p)

	p = serve("docs/contract.md#reply-bpmn-error")
	msg, err := nc.Request("pe.process.start", []byte(`{"processModelId":"hello_world","returnOn":"finished"}`), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	expect(t, "reply-bpmn-error", string(msg.Data), "credit_denied")
	stopAll(t, p)

	// A technical failure with retryAfterMs: the bridge offers the task again.
	p = serve("docs/contract.md#reply-failure")
	if _, err := nc.Request("pe.process.start", []byte(`{"processModelId":"hello_world"}`), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	waitOutput(t, p, `Received on subject "pe.task.SampleExternalTask"`, 1, time.Minute)
	stopAll(t, p)
}

// TestDocContractService runs the contract's event subscription (section 7)
// and its request/reply examples (section 8) against one `bridge dev`.
func TestDocContractService(t *testing.T) {
	r := newDocRun(t)
	_, url := startBridgeDev(t)
	r.setenv("NATS_URL=" + url)
	sub := r.start("docs/contract.md#sub-events", ".")
	waitOutput(t, sub, "Subscribing on", 0, 30*time.Second)
	worker := r.start("docs/contract.md#reply-result", ".")
	waitOutput(t, worker, "Listening on", 0, 30*time.Second)

	expect(t, "service-start", r.run("docs/contract.md#service-start", "."), helloFinished, workerResult)
	stopAll(t, worker)
	out := r.run("docs/contract.md#service-usertask", ".")
	expect(t, "service-usertask", out, `"processInstanceId"`, `"flowNodeId":"manual_approval"`, `"state":"suspended"`, `"userTaskInstanceId"`)
	if strings.Contains(out, "Nats-Service-Error") || strings.Contains(out, `"userTaskInstanceId":"null"`) {
		t.Errorf("service-usertask:\n%s", out)
	}
	out = r.run("docs/contract.md#service-message", ".")
	expect(t, "service-message", out, `"name":"approval_received"`, `"processModelId":"message_catch"`)
	if strings.Contains(out, "Nats-Service-Error") {
		t.Errorf("service-message:\n%s", out)
	}
	waitOutput(t, sub, `"pe.event.user_task_finished"`, 0, time.Minute)
	expect(t, "nats sub", sub.out.String(), `"pe.event.process_started"`, `"pe.event.process_ended"`, `"pe.event.user_task_waiting"`)
	stopAll(t, sub)
}
