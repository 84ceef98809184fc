// Command bench is the side-by-side benchmark of issue 6 (`make bench`): the
// same workload, on loopback and in one run, through
//
//	(a) the bridge (`bridge run`, embedded nats-server) + Go handlers written
//	    with the SDK (bench/handler), each in its own process;
//	(b) the official TypeScript ExternalTaskWorker of
//	    @5minds/processcube_engine_client 6.1.4 (bench/node/worker.js) with the
//	    client defaults (maxTasks = window, lockDuration 30 s);
//	(c) a direct Go REST worker, no NATS (bench/direct), the practical limit;
//
// against the engine emulator in a process of its own (bench/emulator).
//
// For every handler cost × in-flight window it runs each path `-repeats`
// times, interleaved (a, b, c, a, b, c, ...), each run against a fresh
// emulator and fresh worker processes:
//
//   - throughput: N hello_world instances are started while the workers'
//     fetches are held at a gate in the emulator, then the gate opens; tasks/s
//     is N over the time from the gate opening to the last finish, and CPU
//     seconds (utime+stime from /proc/<pid>/stat) and peak RSS (VmHWM) are
//     read for every worker process;
//   - latency: instances are started at a fixed rate, half the bridge's median
//     throughput in that cell, and the latency of each task is the time from
//     its instance's creation to its finish, as the emulator recorded them.
//
// It then measures the idle cost (engine requests per minute with no work),
// the 10,000-in-flight scenario of the bridge, prints one table and writes a
// JSON report. See docs/performance.md.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pe-bridge/pe-bridge/engine"
)

// topic and model of the workload (examples/models hello_world).
const (
	benchTopic = "SampleExternalTask"
	benchModel = "hello_world"
)

type options struct {
	n            int
	repeats      int
	costs        []int
	windows      []int
	paths        []string
	out          string
	quick        bool
	latency      time.Duration
	idle         time.Duration
	big          bool
	bigN         int
	bigWindow    int
	profile      string
	profileSecs  int
	logDir       string
	startConc    int
	directFetch  int
	nodeLogLevel string
	lowRate      float64
	bridgeEnv    []string
	bridgeArgs   []string
}

func main() {
	var o options
	var costs, windows, paths string
	flag.IntVar(&o.n, "n", 10000, "tasks per throughput run (slow cells use fewer: about 10 s of ideal work, at least 10 windows)")
	flag.IntVar(&o.repeats, "repeats", 3, "runs per path and cell; medians are reported")
	flag.StringVar(&costs, "costs", "0,50", "handler costs in ms, comma-separated")
	flag.StringVar(&windows, "windows", "10,100,1000", "in-flight windows, comma-separated")
	flag.StringVar(&paths, "paths", "a,b,c", "paths to run: a (bridge), b (official TS worker), c (direct Go)")
	flag.StringVar(&o.out, "out", "bench/results/bench.json", "JSON report path")
	flag.BoolVar(&o.quick, "quick", false, "small N, one repeat, short idle/latency phases (a smoke run, not a measurement)")
	flag.DurationVar(&o.latency, "latency", 5*time.Second, "duration of each fixed-rate latency run (0 skips latency runs)")
	flag.DurationVar(&o.idle, "idle", 30*time.Second, "idle-cost observation time per path (0 skips)")
	flag.BoolVar(&o.big, "big", true, "run the 10,000-in-flight scenario of the bridge")
	flag.IntVar(&o.bigN, "big-n", 30000, "tasks of the in-flight scenario")
	flag.IntVar(&o.bigWindow, "big-window", 10000, "window of the in-flight scenario")
	flag.StringVar(&o.profile, "profile", "bench/results/bridge.cpu.pprof", "write a CPU profile of the bridge at full load here (from bridge run --pprof-addr when it exists, else in process; empty skips)")
	flag.IntVar(&o.profileSecs, "profile-seconds", 8, "length of the CPU profile")
	flag.StringVar(&o.logDir, "logs", "", "directory for process logs (default: a new temporary directory)")
	flag.IntVar(&o.startConc, "start-concurrency", 32, "concurrent process starts of the harness")
	flag.IntVar(&o.directFetch, "direct-fetchers", 4, "fetch loops of the direct worker for windows ≥ 40 (window/fetchers tasks each)")
	flag.Float64Var(&o.lowRate, "low-rate", 200, "start rate of the low-load latency runs (cost 0, window 100; 0 skips)")
	flag.StringVar(&o.nodeLogLevel, "node-log-level", "warn", "minLogLevel of the official worker's logger (its default, debug, logs twice per task)")
	var bridgeEnv, bridgeArgs string
	flag.StringVar(&bridgeArgs, "bridge-args", "", "extra arguments of `bridge run`, space-separated, after the harness's own (e.g. --http-addr= turns health and metrics off), for experiments")
	flag.StringVar(&bridgeEnv, "bridge-env", "", "extra environment of the bridge process only, comma-separated KEY=VALUE (e.g. GOGC=200), for experiments")
	flag.Parse()
	o.bridgeArgs = strings.Fields(bridgeArgs)
	if bridgeEnv != "" {
		o.bridgeEnv = strings.Split(bridgeEnv, ",")
	}
	var err error
	if o.costs, err = parseInts(costs); err == nil {
		o.windows, err = parseInts(windows)
	}
	if err != nil {
		fatal(err)
	}
	o.paths = strings.Split(paths, ",")
	for _, p := range o.paths {
		if PathLabel[p] == "" {
			fatal(fmt.Errorf("unknown path %q (want a, b or c)", p))
		}
	}
	if o.quick {
		setIfUnset("n", func() { o.n = 1000 })
		setIfUnset("repeats", func() { o.repeats = 1 })
		setIfUnset("latency", func() { o.latency = 2 * time.Second })
		setIfUnset("idle", func() { o.idle = 11 * time.Second })
		setIfUnset("big-n", func() { o.bigN = o.bigWindow + 2000 })
		setIfUnset("profile-seconds", func() { o.profileSecs = 3 })
		setIfUnset("profile", func() { o.profile = "bench/results/bridge.quick.cpu.pprof" })
	}
	if o.n < 1 || o.repeats < 1 {
		fatal(errors.New("-n and -repeats must be at least 1"))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fatal(err)
	}
}

func setIfUnset(name string, f func()) {
	set := false
	flag.Visit(func(fl *flag.Flag) {
		if fl.Name == name {
			set = true
		}
	})
	if !set {
		f()
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

func parseInts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		v, err := strconv.Atoi(f)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("bad number %q in %q", f, s)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("empty list %q", s)
	}
	return out, nil
}

// harness holds the built binaries and shared state of one run.
type harness struct {
	o        options
	root     string
	binDir   string
	logDir   string
	bins     map[string]string // emulator, handler, direct, bridge
	bridge   bridgeCLI
	hc       *http.Client
	runSeq   atomic.Int64
	missing  []string
	nodeDir  string
	nodeExec string
}

func run(ctx context.Context, o options) error {
	started := time.Now()
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	if err := os.Chdir(root); err != nil {
		return err
	}
	binDir, err := os.MkdirTemp("", "pe-bench-bin-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(binDir)
	logDir := o.logDir
	if logDir == "" {
		if logDir, err = os.MkdirTemp("", "pe-bench-logs-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 256
	h := &harness{o: o, root: root, binDir: binDir, logDir: logDir, bins: map[string]string{},
		hc: &http.Client{Transport: t, Timeout: 60 * time.Second}}
	fmt.Printf("bench: logs in %s\n", logDir)
	if err := h.build(ctx); err != nil {
		return err
	}
	rep := &Report{Schema: 1, StartedAt: started.UTC(), Machine: machine(), Command: commandLine(),
		Settings: Settings{N: o.n, Repeats: o.repeats, CostsMs: o.costs, Windows: o.windows, Paths: o.paths,
			Quick: o.quick, LatencySecs: o.latency.Seconds(), IdleSecs: o.idle.Seconds(), BigN: o.bigN,
			BigWindow: o.bigWindow, LockDurationS: 30, LowRate: o.lowRate}}
	paths := h.availablePaths()

	for _, cost := range o.costs {
		for _, w := range o.windows {
			if ctx.Err() != nil {
				break
			}
			c := h.runCell(ctx, paths, time.Duration(cost)*time.Millisecond, w)
			rep.Cells = append(rep.Cells, c)
		}
	}
	if o.lowRate > 0 && o.latency > 0 && ctx.Err() == nil {
		rep.LowLoad = h.runLowLoad(ctx, paths)
	}
	if o.idle > 0 && ctx.Err() == nil {
		rep.Idle = h.runIdle(ctx, paths)
	}
	if o.big && ctx.Err() == nil && contains(paths, PathBridge) {
		b := h.runBig(ctx)
		rep.Big = &b
	}
	if o.profile != "" && ctx.Err() == nil && contains(paths, PathBridge) {
		if err := h.runProfile(ctx); err != nil {
			h.missing = append(h.missing, "bridge CPU profile: "+err.Error())
		}
	}
	rep.Missing = h.missing
	rep.Targets = targets(rep)
	rep.Seconds = time.Since(started).Seconds()
	printTable(os.Stdout, rep)
	if err := writeReport(o.out, rep); err != nil {
		return err
	}
	fmt.Printf("\nbench: wrote %s (process logs in %s)\n", o.out, logDir)
	return ctx.Err()
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func writeReport(path string, rep *Report) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding report: %w", err)
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("finding the module root: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run the benchmark inside the pe-bridge module (go run ./bench)")
	}
	return filepath.Dir(mod), nil
}

func commandLine() string {
	return "go run ./bench " + strings.Join(os.Args[1:], " ")
}

// build compiles every Go program of the run once.
func (h *harness) build(ctx context.Context) error {
	progs := []struct{ name, pkg string }{
		{"emulator", "./bench/emulator"},
		{"handler", "./bench/handler"},
		{"direct", "./bench/direct"},
		{"bridge", "./cmd/bridge"},
	}
	for _, p := range progs {
		out := filepath.Join(h.binDir, p.name)
		fmt.Printf("bench: go build -o %s %s\n", out, p.pkg)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", out, p.pkg)
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			if p.name == "bridge" {
				h.missing = append(h.missing, "path (a): ./cmd/bridge does not build: "+err.Error())
				continue
			}
			return fmt.Errorf("building %s: %w", p.pkg, err)
		}
		h.bins[p.name] = out
	}
	if b := h.bins["bridge"]; b != "" {
		cli, err := probeBridge(ctx, b)
		if err != nil {
			h.missing = append(h.missing, "path (a): "+err.Error())
			delete(h.bins, "bridge")
		}
		h.bridge = cli
	}
	// Node: the official worker needs bench/node/node_modules (npm ci from the lockfile).
	h.nodeDir = filepath.Join(h.root, "bench", "node")
	if node, err := exec.LookPath("node"); err != nil {
		h.missing = append(h.missing, "path (b): node is not installed")
	} else {
		h.nodeExec = node
		if _, err := os.Stat(filepath.Join(h.nodeDir, "node_modules", "@5minds", "processcube_engine_client")); err != nil {
			fmt.Println("bench: npm ci --prefix bench/node")
			cmd := exec.CommandContext(ctx, "npm", "ci", "--prefix", h.nodeDir, "--no-audit", "--no-fund")
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			if err := cmd.Run(); err != nil {
				h.missing = append(h.missing, "path (b): npm ci in bench/node failed: "+err.Error())
				h.nodeExec = ""
			}
		}
	}
	return nil
}

func (h *harness) availablePaths() []string {
	var out []string
	for _, p := range h.o.paths {
		switch p {
		case PathBridge:
			if h.bins["bridge"] == "" {
				continue
			}
		case PathOfficial:
			if h.nodeExec == "" {
				continue
			}
		}
		out = append(out, p)
	}
	return out
}

// ---- the emulator process ----

type emuProc struct {
	c   *child
	url string
	h   *harness
}

func (h *harness) startEmulator(ctx context.Context, tag string) (*emuProc, error) {
	c, err := startChild(h.logDir, tag+"-emulator", []string{"GOMAXPROCS=" + strconv.Itoa(runtime.NumCPU())},
		h.bins["emulator"], "-addr", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	line, err := c.waitLine(ctx, "listening ", 20*time.Second)
	if err != nil {
		c.stop(time.Second)
		return nil, err
	}
	return &emuProc{c: c, url: "http://" + strings.TrimPrefix(line, "listening "), h: h}, nil
}

func (e *emuProc) stop() {
	if e != nil {
		e.c.stop(3 * time.Second)
	}
}

// benchStats mirrors bench/emulator's Stats (only what the harness reads).
type benchStats struct {
	Emulator struct {
		Fetch, Extend, Finish struct{ Total int64 }

		TasksCreated, TasksLocked, TasksFinished, TasksExpired, TasksUnlocked int64
		InstancesStarted, InstancesFinished                                   int64
		PendingTasks                                                          int
	} `json:"emulator"`
	FetchArrived  int64 `json:"fetch_arrived"`
	FetchNonEmpty int64 `json:"fetch_non_empty"`
	FinishOK      int64 `json:"finish_ok"`
	LastFinishNs  int64 `json:"last_finish_ns"`
	Requests      int64 `json:"requests"`
	NowNs         int64 `json:"now_ns"`
}

func (e *emuProc) stats(ctx context.Context) (benchStats, error) {
	var s benchStats
	err := e.h.getJSON(ctx, http.MethodGet, e.url+"/_bench/stats", nil, &s)
	return s, err
}

func (e *emuProc) gate(ctx context.Context, open bool) (int64, error) {
	v := "0"
	if open {
		v = "1"
	}
	var out struct {
		NowNs int64 `json:"now_ns"`
	}
	err := e.h.getJSON(ctx, http.MethodPost, e.url+"/_bench/gate?open="+v, nil, &out)
	return out.NowNs, err
}

type instanceTimes struct {
	ID         string `json:"id"`
	State      string `json:"state"`
	CreatedNs  int64  `json:"created_ns"`
	FinishedNs int64  `json:"finished_ns"`
}

func (e *emuProc) instances(ctx context.Context, ids []string) ([]instanceTimes, error) {
	var out []instanceTimes
	err := e.h.getJSON(ctx, http.MethodPost, e.url+"/_bench/instances", ids, &out)
	return out, err
}

func (h *harness) getJSON(ctx context.Context, method, url string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+engine.DummyToken)
	resp, err := h.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, truncate(string(b), 300))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// startOne starts one hello_world instance (returnOn 1) and returns its id.
func (h *harness) startOne(ctx context.Context, emuURL string) (string, error) {
	var out struct {
		ProcessInstanceID string `json:"processInstanceId"`
	}
	err := h.getJSON(ctx, http.MethodPost, emuURL+"/atlas_engine/api/v1/process_models/"+benchModel+"/start",
		map[string]any{"processModelId": benchModel, "returnOn": 1}, &out)
	if err == nil && out.ProcessInstanceID == "" {
		err = errors.New("start answered without processInstanceId")
	}
	return out.ProcessInstanceID, err
}

// startBurst starts n instances with conc concurrent requests.
func (h *harness) startBurst(ctx context.Context, emuURL string, n, conc int) ([]string, error) {
	ids := make([]string, n)
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range min(conc, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				id, err := h.startOne(ctx, emuURL)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				ids[i] = id
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, fmt.Errorf("starting instances: %w", firstErr)
	}
	return ids, ctx.Err()
}

// startPaced starts n instances at rate per second (open loop: a start is
// issued at its scheduled time whether or not earlier ones answered, with
// up to conc requests in flight).
func (h *harness) startPaced(ctx context.Context, emuURL string, rate float64, n, conc int) ([]string, error) {
	ids := make([]string, n)
	tickets := make(chan int, n)
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for i := range tickets {
				id, err := h.startOne(ctx, emuURL)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					continue
				}
				ids[i] = id
			}
		})
	}
	begin := time.Now()
	for i := 0; i < n && ctx.Err() == nil; i++ {
		at := begin.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
		tickets <- i
	}
	close(tickets)
	wg.Wait()
	if firstErr != nil {
		return nil, fmt.Errorf("starting instances: %w", firstErr)
	}
	return ids, ctx.Err()
}

// ---- worker paths ----

// pathProcs is the set of worker processes of one path in one run.
type pathProcs struct {
	names []string // "bridge", "handler", "node", "direct"
	procs []*child
	// pprof is the bridge's pprof base URL when enabled.
	pprof string
	// peaks of open fds and threads per process (see sample).
	peakFDs, peakThreads []int
}

func (p *pathProcs) stop() {
	// Stop in reverse start order (handler before bridge).
	for i := len(p.procs) - 1; i >= 0; i-- {
		p.procs[i].stop(5 * time.Second)
	}
}

// sample records the open file descriptors (mostly sockets) and threads of
// every process, keeping the peaks.
func (p *pathProcs) sample() {
	if len(p.peakFDs) < len(p.procs) {
		p.peakFDs = make([]int, len(p.procs))
		p.peakThreads = make([]int, len(p.procs))
	}
	for i, c := range p.procs {
		fds, threads := countFDs(c.pid())
		p.peakFDs[i] = max(p.peakFDs[i], fds)
		p.peakThreads[i] = max(p.peakThreads[i], threads)
	}
}

func (p *pathProcs) usage() ([]usage, error) {
	var out []usage
	for _, c := range p.procs {
		u, err := readUsage(c.pid())
		if err != nil {
			return nil, fmt.Errorf("reading usage of %s: %w", c.name, err)
		}
		out = append(out, u)
	}
	return out, nil
}

func (p *pathProcs) alive() error {
	for _, c := range p.procs {
		if c.exited() {
			return fmt.Errorf("%s exited: %v (see %s)", c.name, c.exitErr(), c.log.Name())
		}
	}
	return nil
}

// directShape splits a window into fetch loops × maxTasks.
func directShape(window, fetchers int) (f, m int) {
	if window < 40 || fetchers <= 1 {
		return 1, window
	}
	m = (window + fetchers - 1) / fetchers
	return fetchers, m
}

// startPath starts the worker processes of path for one run and waits until
// they poll the emulator (fetch_arrived reaches the expected count).
func (h *harness) startPath(ctx context.Context, emu *emuProc, path, tag string, cost time.Duration, window int, pprof bool) (*pathProcs, error) {
	return h.startPathFull(ctx, emu, path, tag, cost, window, pprof, false)
}

// startPathFull is startPath; full runs the bridge with its event forwarder
// and request/reply service on (its defaults).
func (h *harness) startPathFull(ctx context.Context, emu *emuProc, path, tag string, cost time.Duration, window int, pprof, full bool) (*pathProcs, error) {
	pp := &pathProcs{}
	ok := false
	defer func() {
		if !ok {
			pp.stop()
		}
	}()
	before, err := emu.stats(ctx)
	if err != nil {
		return nil, err
	}
	wantFetchers := int64(1)
	switch path {
	case PathBridge:
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		args := h.bridge.runArgs(emu.url, port, window, full)
		if pprof && h.bridge.pprofFlag != "" {
			pport, err := freePort()
			if err != nil {
				return nil, err
			}
			args = append(args, h.bridge.pprofFlag, fmt.Sprintf("127.0.0.1:%d", pport))
			pp.pprof = fmt.Sprintf("http://127.0.0.1:%d", pport)
		}
		args = append(args, h.o.bridgeArgs...)
		b, err := startChild(h.logDir, tag+"-bridge", h.o.bridgeEnv, h.bins["bridge"], args...)
		if err != nil {
			return nil, err
		}
		pp.names, pp.procs = append(pp.names, "bridge"), append(pp.procs, b)
		natsURL := fmt.Sprintf("nats://127.0.0.1:%d", port)
		if err := waitTCP(ctx, fmt.Sprintf("127.0.0.1:%d", port), 20*time.Second, b); err != nil {
			return nil, fmt.Errorf("bridge's embedded NATS: %w", err)
		}
		conc := max(window, 1)
		hd, err := startChild(h.logDir, tag+"-handler", nil, h.bins["handler"], "-nats-url", natsURL,
			"-topic", benchTopic, "-cost", cost.String(), "-concurrency", strconv.Itoa(conc))
		if err != nil {
			return nil, err
		}
		pp.names, pp.procs = append(pp.names, "handler"), append(pp.procs, hd)
		if _, err := hd.waitLine(ctx, "ready", 20*time.Second); err != nil {
			return nil, err
		}
	case PathOfficial:
		c, err := startChild(h.logDir, tag+"-node", []string{"minLogLevel=" + h.o.nodeLogLevel}, h.nodeExec,
			filepath.Join(h.nodeDir, "worker.js"), "--engine-url", emu.url, "--topic", benchTopic,
			"--max-tasks", strconv.Itoa(window), "--cost-ms", strconv.Itoa(int(cost.Milliseconds())))
		if err != nil {
			return nil, err
		}
		pp.names, pp.procs = append(pp.names, "node"), append(pp.procs, c)
		if _, err := c.waitLine(ctx, "ready", 30*time.Second); err != nil {
			return nil, err
		}
	case PathDirect:
		f, m := directShape(window, h.o.directFetch)
		wantFetchers = int64(f)
		c, err := startChild(h.logDir, tag+"-direct", nil, h.bins["direct"], "-engine-url", emu.url,
			"-topic", benchTopic, "-fetchers", strconv.Itoa(f), "-max-tasks", strconv.Itoa(m), "-cost", cost.String())
		if err != nil {
			return nil, err
		}
		pp.names, pp.procs = append(pp.names, "direct"), append(pp.procs, c)
		if _, err := c.waitLine(ctx, "ready", 20*time.Second); err != nil {
			return nil, err
		}
	}
	// Ready = polling: the expected number of fetches reached the emulator.
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err := emu.stats(ctx)
		if err != nil {
			return nil, err
		}
		if s.FetchArrived-before.FetchArrived >= wantFetchers {
			break
		}
		if err := pp.alive(); err != nil {
			return nil, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("path %s: no fetch_and_lock reached the emulator within 30s (logs in %s)", path, h.logDir)
		}
		if !sleepCtx(ctx, 20*time.Millisecond) {
			return nil, ctx.Err()
		}
	}
	ok = true
	return pp, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitTCP(ctx context.Context, addr string, timeout time.Duration, owner *child) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if owner.exited() {
			return fmt.Errorf("%s exited: %v (see %s)", owner.name, owner.exitErr(), owner.log.Name())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not accept connections after %s", addr, timeout)
		}
		if !sleepCtx(ctx, 20*time.Millisecond) {
			return ctx.Err()
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// ---- runs ----

func (h *harness) tag(path string, cost time.Duration, window, repeat int, kind string) string {
	return fmt.Sprintf("%03d-%s-%s-c%d-w%d-r%d", h.runSeq.Add(1), kind, path, cost.Milliseconds(), window, repeat)
}

func procUsages(names []string, before, after []usage) (out []ProcUsage, cpu, rss float64) {
	for i := range names {
		if i >= len(before) || i >= len(after) {
			break
		}
		u := ProcUsage{Name: names[i], CPUSeconds: round3(after[i].CPUSeconds - before[i].CPUSeconds),
			PeakRSSMB: round3(float64(after[i].HWMBytes) / (1 << 20))}
		out = append(out, u)
		cpu += u.CPUSeconds
		rss += u.PeakRSSMB
	}
	return out, round3(cpu), round3(rss)
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

// waitFinished polls the emulator until n instances finished, tracking the
// peak of locked-but-unfinished tasks.
func (h *harness) waitFinished(ctx context.Context, emu *emuProc, pp *pathProcs, n int64, timeout time.Duration) (benchStats, int64, error) {
	deadline := time.Now().Add(timeout)
	var peak int64
	lastSample := time.Time{}
	for {
		s, err := emu.stats(ctx)
		if err != nil {
			return s, peak, err
		}
		peak = max(peak, s.Emulator.TasksLocked-s.Emulator.TasksFinished)
		if time.Since(lastSample) >= 100*time.Millisecond {
			pp.sample()
			lastSample = time.Now()
		}
		if s.Emulator.InstancesFinished >= n {
			return s, peak, nil
		}
		if err := pp.alive(); err != nil {
			return s, peak, err
		}
		if time.Now().After(deadline) {
			return s, peak, fmt.Errorf("only %d of %d instances finished within %s", s.Emulator.InstancesFinished, n, timeout)
		}
		if !sleepCtx(ctx, 20*time.Millisecond) {
			return s, peak, ctx.Err()
		}
	}
}

func runTimeout(n int) time.Duration { return 90*time.Second + time.Duration(n)*20*time.Millisecond }

// throughputRun drains a backlog of n tasks released at once.
func (h *harness) throughputRun(ctx context.Context, path string, cost time.Duration, window, n, repeat int) (r Run) {
	r = Run{Repeat: repeat, N: n, LoadAvgBefore: loadAvg()}
	tag := h.tag(path, cost, window, repeat, "tput")
	emu, err := h.startEmulator(ctx, tag)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer emu.stop()
	if _, err := emu.gate(ctx, false); err != nil {
		r.Error = err.Error()
		return r
	}
	pp, err := h.startPath(ctx, emu, path, tag, cost, window, false)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer pp.stop()
	if _, err := h.startBurst(ctx, emu.url, n, h.o.startConc); err != nil {
		r.Error = err.Error()
		return r
	}
	before, err := pp.usage()
	if err != nil {
		r.Error = err.Error()
		return r
	}
	emuBefore, _ := readUsage(emu.c.pid())
	s0, err := emu.stats(ctx)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	t0, err := emu.gate(ctx, true)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	s, peak, err := h.waitFinished(ctx, emu, pp, int64(n), runTimeout(n))
	if err != nil {
		r.Error = err.Error()
		return r
	}
	after, err := pp.usage()
	if err != nil {
		r.Error = err.Error()
		return r
	}
	emuAfter, _ := readUsage(emu.c.pid())
	r.Seconds = float64(s.LastFinishNs-t0) / 1e9
	if r.Seconds > 0 {
		r.TasksPerSec = math.Round(float64(n) / r.Seconds)
	}
	r.Seconds = round3(r.Seconds)
	r.Procs, r.CPUSeconds, r.PeakRSSMB = procUsages(pp.names, before, after)
	for i := range r.Procs {
		if i < len(pp.peakFDs) {
			r.Procs[i].PeakFDs, r.Procs[i].PeakThreads = pp.peakFDs[i], pp.peakThreads[i]
		}
	}
	r.EmulatorCPU = round3(emuAfter.CPUSeconds - emuBefore.CPUSeconds)
	r.InFlightPeak = peak
	r.Expired, r.Unlocked = s.Emulator.TasksExpired, s.Emulator.TasksUnlocked
	r.Lapses = r.Expired + r.Unlocked
	r.FetchCalls = s.Emulator.Fetch.Total - s0.Emulator.Fetch.Total
	r.ExtendCalls = s.Emulator.Extend.Total - s0.Emulator.Extend.Total
	return r
}

// latencyRun starts instances at rate for the latency duration and returns
// the creation-to-finish latency percentiles.
func (h *harness) latencyRun(ctx context.Context, path string, cost time.Duration, window, repeat int, rate float64) (r LatRun) {
	n := max(int(rate*h.o.latency.Seconds()), 50)
	r = LatRun{Repeat: repeat, Rate: math.Round(rate), N: n}
	tag := h.tag(path, cost, window, repeat, "lat")
	emu, err := h.startEmulator(ctx, tag)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer emu.stop()
	pp, err := h.startPath(ctx, emu, path, tag, cost, window, false)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer pp.stop()
	before, err := pp.usage()
	if err != nil {
		r.Error = err.Error()
		return r
	}
	ids, err := h.startPaced(ctx, emu.url, rate, n, max(h.o.startConc, 64))
	if err != nil {
		r.Error = err.Error()
		return r
	}
	if _, _, err := h.waitFinished(ctx, emu, pp, int64(n), runTimeout(n)); err != nil {
		r.Error = err.Error()
		return r
	}
	after, err := pp.usage()
	if err != nil {
		r.Error = err.Error()
		return r
	}
	r.Procs, r.CPUSeconds, _ = procUsages(pp.names, before, after)
	times, err := emu.instances(ctx, ids)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	lat := make([]float64, 0, len(times))
	for _, t := range times {
		if t.CreatedNs > 0 && t.FinishedNs >= t.CreatedNs {
			lat = append(lat, float64(t.FinishedNs-t.CreatedNs)/1e6)
		}
	}
	if len(lat) < n {
		r.Error = fmt.Sprintf("only %d of %d instances have creation and finish times", len(lat), n)
		return r
	}
	p50, p95, p99, mx := Percentiles(lat)
	r.P50Ms, r.P95Ms, r.P99Ms, r.MaxMs = Num(round3(p50)), Num(round3(p95)), Num(round3(p99)), Num(round3(mx))
	return r
}

// runCell measures one (cost, window) cell on every path.
func (h *harness) runCell(ctx context.Context, paths []string, cost time.Duration, window int) *Cell {
	n := cellN(h.o.n, window, cost)
	c := &Cell{CostMs: int(cost.Milliseconds()), Window: window, N: n, Paths: map[string]*PathCell{}}
	for _, p := range paths {
		c.Paths[p] = &PathCell{}
	}
	for rep := range h.o.repeats {
		for _, p := range paths {
			if ctx.Err() != nil {
				return c
			}
			r := h.throughputRun(ctx, p, cost, window, n, rep)
			c.Paths[p].Runs = append(c.Paths[p].Runs, r)
			logRun("tput", p, cost, window, rep, r)
		}
	}
	// Latency at half the bridge's throughput (the direct worker's when the
	// bridge is not measured).
	ref := PathBridge
	if c.Paths[ref] == nil {
		ref = PathDirect
	}
	c.LatencyRate = Num(math.NaN())
	if pc := c.Paths[ref]; pc != nil && h.o.latency > 0 {
		pc.summarize()
		if pc.Median.TasksPerSec.Valid() && pc.Median.TasksPerSec > 0 {
			rate := float64(pc.Median.TasksPerSec) / 2
			c.LatencyRate = Num(math.Round(rate))
			for rep := range h.o.repeats {
				for _, p := range paths {
					if ctx.Err() != nil {
						return c
					}
					pc := c.Paths[p]
					pc.summarize()
					var lr LatRun
					if mt := float64(pc.Median.TasksPerSec); pc.Median.TasksPerSec.Valid() && mt < rate*1.05 {
						lr = LatRun{Repeat: rep, Rate: math.Round(rate), Skipped: fmt.Sprintf(
							"saturated: max %.0f tasks/s < start rate %.0f/s", mt, rate)}
					} else {
						lr = h.latencyRun(ctx, p, cost, window, rep, rate)
					}
					pc.LatencyRuns = append(pc.LatencyRuns, lr)
					logLat(p, cost, window, rep, lr)
				}
			}
		}
	}
	for _, pc := range c.Paths {
		pc.summarize()
	}
	c.computeRatios(h.o.repeats)
	return c
}

func logRun(kind, p string, cost time.Duration, window, rep int, r Run) {
	if r.Error != "" {
		fmt.Printf("bench: %s path %s cost %s window %d repeat %d: ERROR %s\n", kind, p, cost, window, rep, r.Error)
		return
	}
	fmt.Printf("bench: %s path %s cost %-5s window %-5d repeat %d: %6.0f tasks/s  cpu %.2fs  rss %.0fMB  in-flight peak %d  lapses %d  (load %.1f)\n",
		kind, p, cost, window, rep, r.TasksPerSec, r.CPUSeconds, r.PeakRSSMB, r.InFlightPeak, r.Lapses, r.LoadAvgBefore)
}

func logLat(p string, cost time.Duration, window, rep int, r LatRun) {
	switch {
	case r.Error != "":
		fmt.Printf("bench: lat  path %s cost %s window %d repeat %d: ERROR %s\n", p, cost, window, rep, r.Error)
	case r.Skipped != "":
		fmt.Printf("bench: lat  path %s cost %s window %d repeat %d: skipped (%s)\n", p, cost, window, rep, r.Skipped)
	default:
		fmt.Printf("bench: lat  path %s cost %-5s window %-5d repeat %d: %5.0f/s  p50 %.2fms p95 %.2fms p99 %.2fms\n",
			p, cost, window, rep, r.Rate, float64(r.P50Ms), float64(r.P95Ms), float64(r.P99Ms))
	}
}
