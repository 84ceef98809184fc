package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
)

func machine() Machine {
	m := Machine{NProc: runtime.NumCPU(), GoVersion: runtime.Version(), LoadAvg: loadAvg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m.CPUModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		m.MemTotalMB = int(parseStatusKB(b, "MemTotal:") / 1024)
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if out, err := exec.Command("node", "--version").Output(); err == nil {
		m.NodeVersion = strings.TrimSpace(string(out))
	}
	return m
}

func f0(n Num) string {
	if !n.Valid() {
		return "-"
	}
	return strconv.FormatFloat(float64(n), 'f', 0, 64)
}

func f1(n Num) string {
	if !n.Valid() {
		return "-"
	}
	return strconv.FormatFloat(float64(n), 'f', 1, 64)
}

func f2(n Num) string {
	if !n.Valid() {
		return "-"
	}
	return strconv.FormatFloat(float64(n), 'f', 2, 64)
}

// printTable prints the one table of the run, then idle cost, the in-flight
// scenario and the targets.
func printTable(w io.Writer, rep *Report) {
	fmt.Fprintf(w, "\npe-bridge side-by-side benchmark: medians of %d repeat(s); b/a and a/c are medians of per-repeat ratios of tasks/s\n",
		rep.Settings.Repeats)
	fmt.Fprintf(w, "machine: %d CPUs, %s, %s, node %s; load avg at start %.2f\n", rep.Machine.NProc, rep.Machine.CPUModel,
		rep.Machine.GoVersion, rep.Machine.NodeVersion, rep.Machine.LoadAvg)
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, c := range rep.Cells {
		for _, pc := range c.Paths {
			for _, run := range pc.Runs {
				lo, hi = math.Min(lo, run.LoadAvgBefore), math.Max(hi, run.LoadAvgBefore)
			}
		}
	}
	if lo <= hi {
		fmt.Fprintf(w, "1-minute load average before the throughput runs: %.1f to %.1f (on %d CPUs)\n", lo, hi, rep.Machine.NProc)
	}
	fmt.Fprintln(w, "latency: creation→finish of tasks started at a fixed rate (half the bridge's throughput in that cell)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "CPU: user+sys of the worker processes while draining N tasks, in µs per task; b/a and a/c as for tasks/s")
	fmt.Fprintf(w, "%-5s %-6s %-6s %-22s %8s %6s %6s %8s %6s %6s %7s %8s %8s %8s %7s  %s\n",
		"cost", "window", "N", "path", "tasks/s", "b/a", "a/c", "CPU µs", "b/a", "a/c", "lat/s", "p50 ms", "p95 ms", "p99 ms", "RSS MB", "per process (CPU s / peak RSS MB)")
	for _, c := range rep.Cells {
		first := true
		for _, p := range []string{PathBridge, PathOfficial, PathDirect} {
			pc := c.Paths[p]
			if pc == nil {
				continue
			}
			m := pc.Median
			cost, win, n := "", "", ""
			if first {
				cost, win, n = fmt.Sprintf("%dms", c.CostMs), strconv.Itoa(c.Window), strconv.Itoa(c.N)
				first = false
			}
			ba, ac, cba, cac := "", "", "", ""
			if r, ok := c.Ratios["b/a"]; ok && p == PathOfficial {
				ba, cba = f2(r.TasksPerSec), f2(r.CPUSeconds)
			}
			if r, ok := c.Ratios["a/c"]; ok && p == PathBridge {
				ac, cac = f2(r.TasksPerSec), f2(r.CPUSeconds)
			}
			var per []string
			if len(m.ProcCPU) > 0 {
				names := make([]string, 0, len(m.ProcCPU))
				for k := range m.ProcCPU {
					names = append(names, k)
				}
				sort.Strings(names)
				for _, k := range names {
					per = append(per, fmt.Sprintf("%s %s/%s", k, f2(m.ProcCPU[k]), f1(m.ProcRSSMB[k])))
				}
			}
			lat := f0(c.LatencyRate)
			p50, p95, p99 := f2(m.P50Ms), f2(m.P95Ms), f2(m.P99Ms)
			if m.LatencyNote != "" {
				p50, p95, p99 = "sat.", "sat.", "sat."
			}
			errs := 0
			for _, r := range pc.Runs {
				if r.Error != "" {
					errs++
				}
			}
			note := strings.Join(per, ", ")
			if errs > 0 {
				note += fmt.Sprintf(" [%d run(s) failed]", errs)
			}
			if m.Lapses > 0 {
				note += fmt.Sprintf(" [%d lock lapses]", m.Lapses)
			}
			fmt.Fprintf(w, "%-5s %-6s %-6s %-22s %8s %6s %6s %8s %6s %6s %7s %8s %8s %8s %7s  %s\n",
				cost, win, n, PathLabel[p], f0(m.TasksPerSec), ba, ac, f0(m.CPUMsPer1k), cba, cac, lat, p50, p95, p99, f1(m.PeakRSSMB), note)
		}
	}
	if c := rep.LowLoad; c != nil {
		fmt.Fprintf(w, "\nlatency at a low load (%s tasks/s, cost 0, window %d), creation→finish:\n", f0(c.LatencyRate), c.Window)
		for _, p := range []string{PathBridge, PathOfficial, PathDirect} {
			pc := c.Paths[p]
			if pc == nil {
				continue
			}
			m := pc.Median
			fmt.Fprintf(w, "  %-22s p50 %s ms  p95 %s ms  p99 %s ms", PathLabel[p], f2(m.P50Ms), f2(m.P95Ms), f2(m.P99Ms))
			if r, ok := c.Ratios["a/c"]; ok && p == PathBridge {
				fmt.Fprintf(w, "  (a−c: p50 %s ms, p99 %s ms)", f2(r.P50DeltaMs), f2(r.P99DeltaMs))
			}
			fmt.Fprintln(w)
		}
	}
	if len(rep.Idle) > 0 {
		fmt.Fprintln(w, "\nidle cost (no work, window 100; requests = every engine API call, fetches included):")
		for _, r := range rep.Idle {
			if r.Error != "" {
				fmt.Fprintf(w, "  %-22s ERROR %s\n", PathLabel[r.Path], r.Error)
				continue
			}
			label := PathLabel[r.Path]
			if r.Full {
				label = "a +events +service"
			}
			fmt.Fprintf(w, "  %-22s %5.1f fetches/min (%d in %.0f s; %d requests)  CPU %.3f s/min", label,
				r.FetchesPerMinute, r.Fetches, r.Seconds, r.Requests, r.CPUSecPerMin)
			if r.Path == PathBridge {
				fmt.Fprintf(w, "  limit %.1f/min", r.Limit)
			}
			fmt.Fprintln(w)
		}
	}
	if b := rep.Big; b != nil {
		fmt.Fprintf(w, "\nin-flight scenario (bridge, window %d, %d tasks, 50 ms handlers):\n", b.Window, b.N)
		if b.Error != "" {
			fmt.Fprintf(w, "  ERROR %s\n", b.Error)
		} else {
			fmt.Fprintf(w, "  %.0f tasks/s, peak in flight %d, bridge peak RSS %.1f MB, lock lapses %d expired + %d unlocked, %d extend calls\n",
				b.TasksPerSec, b.InFlightPeak, b.BridgeRSSMB, b.Expired, b.Unlocked, b.Extends)
			for _, p := range b.Procs {
				fmt.Fprintf(w, "  %-8s CPU %.2f s, peak RSS %.1f MB, peak open fds %d, peak threads %d\n",
					p.Name, p.CPUSeconds, p.PeakRSSMB, p.PeakFDs, p.PeakThreads)
			}
		}
	}
	fmt.Fprintln(w, "\ntargets (issue 6):")
	for _, t := range rep.Targets {
		status := "not measured"
		if t.Met != nil {
			status = "MISSED"
			if *t.Met {
				status = "met"
			}
		}
		fmt.Fprintf(w, "  %-62s %10s  (%s) %s\n", t.Name, f2(t.Value), t.Limit, status)
		if t.Note != "" {
			fmt.Fprintf(w, "      %s\n", t.Note)
		}
	}
	for _, m := range rep.Missing {
		fmt.Fprintf(w, "missing: %s\n", m)
	}
}

func boolp(b bool) *bool { return &b }

// targets evaluates the targets of issue 6 on the report.
func targets(rep *Report) []Target {
	var out []Target
	for _, c := range rep.Cells {
		if c.CostMs != 0 {
			continue
		}
		if r, ok := c.Ratios["b/a"]; ok && r.TasksPerSec.Valid() && r.TasksPerSec > 0 {
			v := 1 / float64(r.TasksPerSec)
			out = append(out, Target{Name: fmt.Sprintf("throughput a/b, cost 0, window %d", c.Window),
				Value: Num(v), Limit: "≥ 3", Met: boolp(v >= 3)})
		}
		if r, ok := c.Ratios["a/c"]; ok && r.TasksPerSec.Valid() {
			out = append(out, Target{Name: fmt.Sprintf("throughput a/c, cost 0, window %d", c.Window),
				Value: r.TasksPerSec, Limit: "≥ 0.70", Met: boolp(r.TasksPerSec >= 0.7)})
			if r.P50DeltaMs.Valid() {
				out = append(out, Target{Name: fmt.Sprintf("added p50 latency a−c at %s/s, cost 0, window %d", f0(c.LatencyRate), c.Window),
					Value: r.P50DeltaMs, Limit: "≤ 1 ms", Met: boolp(r.P50DeltaMs <= 1)})
			}
			if r.P99DeltaMs.Valid() {
				out = append(out, Target{Name: fmt.Sprintf("added p99 latency a−c at %s/s, cost 0, window %d", f0(c.LatencyRate), c.Window),
					Value: r.P99DeltaMs, Limit: "≤ 5 ms", Met: boolp(r.P99DeltaMs <= 5)})
			}
		}
	}
	if c := rep.LowLoad; c != nil {
		if r, ok := c.Ratios["a/c"]; ok {
			if r.P50DeltaMs.Valid() {
				out = append(out, Target{Name: fmt.Sprintf("added p50 latency a−c at a low load (%s/s)", f0(c.LatencyRate)),
					Value: r.P50DeltaMs, Limit: "≤ 1 ms", Met: boolp(r.P50DeltaMs <= 1),
					Note: "not the target's load (half the maximum throughput); shows the cost of the hops alone"})
			}
			if r.P99DeltaMs.Valid() {
				out = append(out, Target{Name: fmt.Sprintf("added p99 latency a−c at a low load (%s/s)", f0(c.LatencyRate)),
					Value: r.P99DeltaMs, Limit: "≤ 5 ms", Met: boolp(r.P99DeltaMs <= 5)})
			}
		}
	}
	if b := rep.Big; b != nil {
		t := Target{Name: fmt.Sprintf("bridge peak RSS, %d in flight, 50 ms handlers", b.Window), Limit: "< 150 MB"}
		l := Target{Name: "lock lapses in the in-flight scenario", Limit: "= 0"}
		if b.Error == "" {
			t.Value, t.Met = Num(b.BridgeRSSMB), boolp(b.BridgeRSSMB < 150)
			l.Value, l.Met = Num(float64(b.Expired+b.Unlocked)), boolp(b.Expired+b.Unlocked == 0)
			if b.InFlightPeak < int64(b.Window) {
				t.Note = fmt.Sprintf("peak in flight was %d, below the window", b.InFlightPeak)
			}
		} else {
			t.Value, l.Value = Num(math.NaN()), Num(math.NaN())
			t.Note = b.Error
		}
		out = append(out, t, l)
	}
	for _, r := range rep.Idle {
		if r.Path != PathBridge {
			continue
		}
		name := "bridge idle fetches per minute (task pump only)"
		if r.Full {
			name = "bridge idle fetches per minute (+events +service)"
		}
		t := Target{Name: name, Limit: fmt.Sprintf("≤ %.1f (1 per long poll per topic group)", r.Limit)}
		if r.Error == "" {
			t.Value, t.Met = Num(r.FetchesPerMinute), boolp(idleWithinLimit(r))
		} else {
			t.Value, t.Note = Num(math.NaN()), r.Error
		}
		out = append(out, t)
	}
	return out
}
