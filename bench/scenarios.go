package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// longPoll is the fetch_and_lock long-poll timeout every path uses (the
// bridge's and the official worker's default).
const longPoll = 10 * time.Second

// runIdle starts every path at once, each against its own emulator, with no
// work, and counts the engine requests each makes over h.o.idle.
func (h *harness) runIdle(ctx context.Context, paths []string) []Idle {
	type variant struct {
		path string
		full bool
	}
	var vs []variant
	for _, p := range paths {
		vs = append(vs, variant{p, false})
		if p == PathBridge {
			vs = append(vs, variant{p, true})
		}
	}
	out := make([]Idle, len(vs))
	var wg sync.WaitGroup
	for i, v := range vs {
		wg.Go(func() { out[i] = h.idleRun(ctx, v.path, v.full) })
	}
	wg.Wait()
	for _, r := range out {
		if r.Error != "" {
			fmt.Printf("bench: idle path %s: ERROR %s\n", r.Path, r.Error)
			continue
		}
		fmt.Printf("bench: idle path %s (full %v): %d fetches in %.0fs = %.1f/min (limit %.1f/min), cpu %.3fs/min\n",
			r.Path, r.Full, r.Fetches, r.Seconds, r.FetchesPerMinute, r.Limit, r.CPUSecPerMin)
	}
	return out
}

func (h *harness) idleRun(ctx context.Context, path string, full bool) (r Idle) {
	r = Idle{Path: path, Full: full}
	const window = 100
	tag := h.tag(path, 0, window, 0, "idle")
	emu, err := h.startEmulator(ctx, tag)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer emu.stop()
	pp, err := h.startPathFull(ctx, emu, path, tag, 0, window, false, full)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer pp.stop()
	// Topic groups the path polls: one topic (the bridge is given only the
	// benchmark topic when it has a flag for it, else it polls every deployed
	// topic, each its own group).
	groups := 1
	if path == PathBridge && h.bridge.topicsFlag == "" {
		var topics []string
		if err := h.getJSON(ctx, http.MethodGet, emu.url+"/atlas_engine/api/v1/external_tasks/deployed_topics", nil, &topics); err == nil {
			groups = max(1, len(topics))
		}
	}
	if path == PathDirect {
		f, _ := directShape(window, h.o.directFetch)
		groups = f
	}
	if !sleepCtx(ctx, time.Second) {
		r.Error = ctx.Err().Error()
		return r
	}
	s0, err := emu.stats(ctx)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	u0, err := pp.usage()
	if err != nil {
		r.Error = err.Error()
		return r
	}
	begin := time.Now()
	if !sleepCtx(ctx, h.o.idle) {
		r.Error = ctx.Err().Error()
		return r
	}
	s1, err := emu.stats(ctx)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	u1, err := pp.usage()
	if err != nil {
		r.Error = err.Error()
		return r
	}
	r.Seconds = round3(time.Since(begin).Seconds())
	r.Fetches = s1.FetchArrived - s0.FetchArrived
	r.Requests = s1.Requests - s0.Requests
	perMin := 60 / r.Seconds
	r.FetchesPerMinute = round3(float64(r.Fetches) * perMin)
	r.Limit = round3(float64(groups) * 60 / longPoll.Seconds())
	_, cpu, _ := procUsages(pp.names, u0, u1)
	r.CPUSecPerMin = round3(cpu * perMin)
	return r
}

// idleWithinLimit: fetches counted over the window may include one poll
// that began just before it per group, so allow groups×(⌊T/lp⌋+1).
func idleWithinLimit(r Idle) bool {
	groups := r.Limit * longPoll.Seconds() / 60
	allowed := groups * (math.Floor(r.Seconds/longPoll.Seconds()) + 1)
	return float64(r.Fetches) <= allowed+1e-9
}

// runBig is the 10,000-in-flight scenario: a backlog of bigN tasks with 50 ms
// handlers through the bridge with window bigWindow.
func (h *harness) runBig(ctx context.Context) (b Big) {
	cost := 50 * time.Millisecond
	b = Big{N: h.o.bigN, Window: h.o.bigWindow, CostMs: 50}
	r := h.throughputRun(ctx, PathBridge, cost, h.o.bigWindow, h.o.bigN, 0)
	logRun("big ", PathBridge, cost, h.o.bigWindow, 0, r)
	if r.Error != "" {
		b.Error = r.Error
		return b
	}
	b.Seconds, b.TasksPerSec, b.InFlightPeak, b.Procs = r.Seconds, r.TasksPerSec, r.InFlightPeak, r.Procs
	for _, p := range r.Procs {
		if p.Name == "bridge" {
			b.BridgeRSSMB = p.PeakRSSMB
		}
	}
	b.Expired, b.Unlocked, b.Extends = r.Expired, r.Unlocked, r.ExtendCalls
	return b
}

// runProfile takes a CPU profile of the bridge while it drains a backlog at
// full load (cost 0, window 100 — its default), and writes the profile and
// a `go tool pprof -top` summary next to it.
func (h *harness) runProfile(ctx context.Context) error {
	if h.bridge.pprofFlag == "" {
		return h.runProfileInProcess(ctx)
	}
	const window = 100
	n := h.o.profileSecs * 4000
	tag := h.tag(PathBridge, 0, window, 0, "prof")
	emu, err := h.startEmulator(ctx, tag)
	if err != nil {
		return err
	}
	defer emu.stop()
	if _, err := emu.gate(ctx, false); err != nil {
		return err
	}
	pp, err := h.startPath(ctx, emu, PathBridge, tag, 0, window, true)
	if err != nil {
		return err
	}
	defer pp.stop()
	if _, err := h.startBurst(ctx, emu.url, n, h.o.startConc); err != nil {
		return err
	}
	if _, err := emu.gate(ctx, true); err != nil {
		return err
	}
	url := fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", pp.pprof, h.o.profileSecs)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: time.Duration(h.o.profileSecs+30) * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if err := os.MkdirAll(dirOf(h.o.profile), 0o755); err != nil {
		return err
	}
	f, err := os.Create(h.o.profile)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	s, _ := emu.stats(ctx)
	fmt.Printf("bench: profile: %d of %d tasks finished during the profile; wrote %s\n", s.Emulator.InstancesFinished, n, h.o.profile)
	top, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=45", h.bins["bridge"], h.o.profile).Output()
	if err != nil {
		return fmt.Errorf("go tool pprof: %w", err)
	}
	cum, _ := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-cum", "-nodecount=45", h.bins["bridge"], h.o.profile).Output()
	return os.WriteFile(h.o.profile+".top.txt", append(append(top, "\n--- by cumulative ---\n"...), cum...), 0o644)
}

func dirOf(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			return p[:i]
		}
	}
	return "."
}

// runProfileInProcess is the fallback when `bridge run` cannot serve pprof:
// BenchmarkBridgeFullLoad (profile_test.go) runs the same flow in one process
// with pprof labels per part, and the summary keeps the bridge's samples.
func (h *harness) runProfileInProcess(ctx context.Context) error {
	if err := os.MkdirAll(dirOf(h.o.profile), 0o755); err != nil {
		return err
	}
	testBin := filepath.Join(h.binDir, "bench.test")
	n := h.o.profileSecs * 5000
	fmt.Printf("bench: profile: `bridge run` has no --pprof-addr; profiling in process (BenchmarkBridgeFullLoad, %d tasks)\n", n)
	cmd := exec.CommandContext(ctx, "go", "test", "./bench", "-run", "^$", "-bench", "^BenchmarkBridgeFullLoad$",
		"-benchtime", fmt.Sprintf("%dx", n), "-count", "1", "-cpuprofile", h.o.profile, "-o", testBin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("in-process profile: %v: %s", err, truncate(string(out), 500))
	}
	fmt.Print(grepLines(string(out), "Benchmark"))
	var sb strings.Builder
	sb.WriteString("# in-process profile (BenchmarkBridgeFullLoad): samples per part\n")
	for _, args := range [][]string{
		{"-tags"},
		{"-tagfocus", "part=bridge", "-top", "-cum", "-nodecount=60"},
		{"-tagfocus", "part=bridge", "-top", "-nodecount=40"},
	} {
		a := append([]string{"tool", "pprof"}, args...)
		a = append(a, testBin, h.o.profile)
		b, err := exec.CommandContext(ctx, "go", a...).Output()
		if err != nil {
			return fmt.Errorf("go tool pprof %v: %w", args, err)
		}
		fmt.Fprintf(&sb, "\n--- go tool pprof %s ---\n", strings.Join(args, " "))
		sb.Write(b)
	}
	return os.WriteFile(h.o.profile+".top.txt", []byte(sb.String()), 0o644)
}

func grepLines(s, substr string) string {
	var out []string
	for line := range strings.SplitSeq(s, "\n") {
		if strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	if len(out) == 0 {
		return ""
	}
	return "bench: " + strings.Join(out, "\nbench: ") + "\n"
}

// runLowLoad measures latency at a low start rate (h.o.lowRate, cost 0,
// window 100) on every path, repeats interleaved.
func (h *harness) runLowLoad(ctx context.Context, paths []string) *Cell {
	const window = 100
	c := &Cell{CostMs: 0, Window: window, LatencyRate: Num(h.o.lowRate), Paths: map[string]*PathCell{}}
	for _, p := range paths {
		c.Paths[p] = &PathCell{}
	}
	for rep := range h.o.repeats {
		for _, p := range paths {
			if ctx.Err() != nil {
				return c
			}
			lr := h.latencyRun(ctx, p, 0, window, rep, h.o.lowRate)
			c.Paths[p].LatencyRuns = append(c.Paths[p].LatencyRuns, lr)
			logLat(p, 0, window, rep, lr)
		}
	}
	for _, pc := range c.Paths {
		pc.summarize()
	}
	c.computeRatios(h.o.repeats)
	return c
}
