package main

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3, 10, 9, 8, 7, 6} // 1..10, unsorted
	cases := []struct {
		p    float64
		want float64
	}{{50, 5}, {90, 9}, {95, 10}, {99, 10}, {100, 10}, {10, 1}, {1, 1}}
	for _, c := range cases {
		if got := Percentile(xs, c.p); got != c.want {
			t.Errorf("Percentile(1..10, %v) = %v, want %v", c.p, got, c.want)
		}
	}
	if xs[0] != 5 {
		t.Errorf("Percentile sorted its input: %v", xs)
	}
	if got := Percentile(nil, 50); !math.IsNaN(got) {
		t.Errorf("Percentile(nil) = %v, want NaN", got)
	}
	hundred := make([]float64, 100)
	for i := range hundred {
		hundred[i] = float64(100 - i) // 100..1
	}
	p50, p95, p99, mx := Percentiles(hundred)
	if p50 != 50 || p95 != 95 || p99 != 99 || mx != 100 {
		t.Errorf("Percentiles(1..100) = %v %v %v %v, want 50 95 99 100", p50, p95, p99, mx)
	}
}

func TestMedian(t *testing.T) {
	cases := []struct {
		xs   []float64
		want float64
	}{
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{7}, 7},
		{[]float64{math.NaN(), 1, 9, math.NaN(), 5}, 5},
	}
	for _, c := range cases {
		if got := Median(c.xs); got != c.want {
			t.Errorf("Median(%v) = %v, want %v", c.xs, got, c.want)
		}
	}
	if got := Median([]float64{math.NaN()}); !math.IsNaN(got) {
		t.Errorf("Median(NaN) = %v, want NaN", got)
	}
}

func TestPairedRatioAndDelta(t *testing.T) {
	nan := math.NaN()
	// Ratios per repeat: 0.5, 0.25, (skipped: NaN), (skipped: zero denominator), 1.
	num := []float64{1, 1, nan, 3, 4}
	den := []float64{2, 4, 5, 0, 4}
	if got := PairedRatio(num, den); got != 0.5 {
		t.Errorf("PairedRatio = %v, want median of {0.5, 0.25, 1} = 0.5", got)
	}
	// The median of the ratios, not the ratio of the medians.
	a := []float64{1, 10, 100}
	b := []float64{1, 1, 1000}
	if got := PairedRatio(a, b); got != 1 {
		t.Errorf("PairedRatio = %v, want median of {1, 10, 0.1} = 1", got)
	}
	if got := PairedDelta([]float64{3, 5, nan}, []float64{1, 1, 1}); got != 3 {
		t.Errorf("PairedDelta = %v, want median of {2, 4} = 3", got)
	}
	if got := PairedRatio(nil, nil); !math.IsNaN(got) {
		t.Errorf("PairedRatio(nil) = %v, want NaN", got)
	}
}

func TestCellRatiosAndSummary(t *testing.T) {
	c := &Cell{Paths: map[string]*PathCell{
		PathBridge: {Runs: []Run{
			{Repeat: 0, N: 1000, TasksPerSec: 1000, CPUSeconds: 1, Procs: []ProcUsage{{Name: "bridge", CPUSeconds: 0.75, PeakRSSMB: 30}, {Name: "handler", CPUSeconds: 0.25, PeakRSSMB: 10}}},
			{Repeat: 1, N: 1000, TasksPerSec: 2000, CPUSeconds: 2, Procs: []ProcUsage{{Name: "bridge", CPUSeconds: 1.5, PeakRSSMB: 32}, {Name: "handler", CPUSeconds: 0.5, PeakRSSMB: 12}}},
			{Repeat: 2, Error: "boom"},
		}, LatencyRuns: []LatRun{{Repeat: 0, P50Ms: 2, P99Ms: 9}, {Repeat: 1, P50Ms: 4, P99Ms: 11}}},
		PathOfficial: {Runs: []Run{
			{Repeat: 0, N: 1000, TasksPerSec: 250, CPUSeconds: 2},
			{Repeat: 1, N: 1000, TasksPerSec: 1000, CPUSeconds: 2},
			{Repeat: 2, N: 1000, TasksPerSec: 300, CPUSeconds: 2},
		}, LatencyRuns: []LatRun{{Repeat: 0, Skipped: "saturated"}}},
		PathDirect: {Runs: []Run{
			{Repeat: 0, N: 1000, TasksPerSec: 2000, CPUSeconds: 0.5},
			{Repeat: 1, N: 1000, TasksPerSec: 2000, CPUSeconds: 0.5},
		}, LatencyRuns: []LatRun{{Repeat: 0, P50Ms: 1, P99Ms: 4}, {Repeat: 1, P50Ms: 1, P99Ms: 5}}},
	}}
	for _, pc := range c.Paths {
		pc.summarize()
	}
	c.computeRatios(3)
	a := c.Paths[PathBridge].Median
	if a.TasksPerSec != 1500 || a.CPUSeconds != 1.5 || a.CPUMsPer1k != 1500 || a.P50Ms != 3 || a.P99Ms != 10 {
		t.Errorf("bridge median = %+v", a)
	}
	if a.ProcCPU["bridge"] != 1.125 || a.ProcRSSMB["handler"] != 11 {
		t.Errorf("bridge per-process medians = %v %v", a.ProcCPU, a.ProcRSSMB)
	}
	if got := c.Paths[PathOfficial].Median.LatencyNote; got != "saturated" {
		t.Errorf("official latency note = %q", got)
	}
	ba, ac := c.Ratios["b/a"], c.Ratios["a/c"]
	// b/a per repeat: 0.25, 0.5 (repeat 2 of a failed).
	if ba.TasksPerSec != 0.375 || ba.Repeats != 2 {
		t.Errorf("b/a = %+v, want tasks/s 0.375 over 2 repeats", ba)
	}
	// a/c per repeat: 0.5, 1; latency deltas 1, 3 (p50) and 5, 6 (p99).
	if ac.TasksPerSec != 0.75 || ac.P50DeltaMs != 2 || ac.P99DeltaMs != 5.5 {
		t.Errorf("a/c = %+v", ac)
	}
}

func TestCellN(t *testing.T) {
	cases := []struct {
		n, window int
		cost      time.Duration
		want      int
	}{
		{5000, 10, 0, 5000},
		{5000, 10, 50 * time.Millisecond, 2000},    // 200 tasks/s ideal → 10 s
		{5000, 100, 50 * time.Millisecond, 5000},   // ideal 20 000 tasks/s
		{500, 1000, 50 * time.Millisecond, 500},    // never above n
		{50000, 1, 50 * time.Millisecond, 500},     // at least 500
		{50000, 10, 500 * time.Millisecond, 500},   // 20 tasks/s → 200, raised to 500
		{50000, 100, 500 * time.Millisecond, 2000}, // 200 tasks/s → 2000
	}
	for _, c := range cases {
		if got := cellN(c.n, c.window, c.cost); got != c.want {
			t.Errorf("cellN(%d, %d, %s) = %d, want %d", c.n, c.window, c.cost, got, c.want)
		}
	}
}

func TestDirectShape(t *testing.T) {
	for _, c := range []struct{ window, fetchers, f, m int }{
		{10, 4, 1, 10}, {100, 4, 4, 25}, {1000, 4, 4, 250}, {10000, 4, 4, 2500}, {101, 4, 4, 26}, {100, 1, 1, 100},
	} {
		if f, m := directShape(c.window, c.fetchers); f != c.f || m != c.m {
			t.Errorf("directShape(%d, %d) = %d×%d, want %d×%d", c.window, c.fetchers, f, m, c.f, c.m)
		}
	}
}

func TestParseProc(t *testing.T) {
	// The command name may contain spaces and parentheses.
	stat := []byte("4242 (my (odd) proc) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 7 0 100 0 0")
	cpu, err := parseStatCPU(stat)
	if err != nil || cpu != 3.25 {
		t.Errorf("parseStatCPU = %v, %v; want 3.25 (325 ticks)", cpu, err)
	}
	if _, err := parseStatCPU([]byte("garbage")); err == nil {
		t.Error("parseStatCPU accepted garbage")
	}
	status := []byte("Name:\tnode\nVmPeak:\t  900 kB\nVmHWM:\t  81234 kB\nVmRSS:\t   70000 kB\n")
	if got := parseStatusKB(status, "VmHWM:"); got != 81234 {
		t.Errorf("VmHWM = %d", got)
	}
	if got := parseStatusKB(status, "VmSwap:"); got != 0 {
		t.Errorf("absent key = %d, want 0", got)
	}
}

func TestIdleLimit(t *testing.T) {
	// One topic group over 30 s: up to 4 fetches (3 full long polls plus one
	// begun before the window).
	r := Idle{Seconds: 30, Limit: 6, Fetches: 4}
	if !idleWithinLimit(r) {
		t.Error("4 fetches in 30 s rejected")
	}
	r.Fetches = 5
	if idleWithinLimit(r) {
		t.Error("5 fetches in 30 s accepted")
	}
}

// TestReportJSONShape checks that a report with missing values (NaN) encodes,
// that they become null, and the field names the docs refer to.
func TestReportJSONShape(t *testing.T) {
	nan := Num(math.NaN())
	rep := &Report{Schema: 1, Settings: Settings{Repeats: 1}, Cells: []*Cell{{
		CostMs: 0, Window: 10, N: 100, LatencyRate: nan,
		Paths: map[string]*PathCell{PathBridge: {Runs: []Run{{N: 100, TasksPerSec: 50}}}},
	}}, Big: &Big{Window: 10000, BridgeRSSMB: 120}, Idle: []Idle{{Path: PathBridge, Seconds: 30, Limit: 6, Fetches: 3, FetchesPerMinute: 6}}}
	for _, pc := range rep.Cells[0].Paths {
		pc.summarize()
	}
	rep.Cells[0].computeRatios(1)
	rep.Targets = targets(rep)
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	for _, k := range []string{"schema", "machine", "settings", "cells", "idle", "big", "targets"} {
		if _, ok := m[k]; !ok {
			t.Errorf("report lacks %q", k)
		}
	}
	cell := m["cells"].([]any)[0].(map[string]any)
	if cell["latency_rate"] != nil {
		t.Errorf("latency_rate = %v, want null", cell["latency_rate"])
	}
	med := cell["paths"].(map[string]any)["a"].(map[string]any)["median"].(map[string]any)
	if med["tasks_per_s"] != 50.0 || med["p50_ms"] != nil {
		t.Errorf("median = %v", med)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("decoding the report back: %v", err)
	}
	if back.Cells[0].LatencyRate.Valid() {
		t.Error("null latency rate decoded as a value")
	}
	var sb bytes.Buffer
	printTable(&sb, rep)
	for _, want := range []string{"a bridge+NATS+Go SDK", "bridge peak RSS", "met"} {
		if !strings.Contains(sb.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, sb.String())
		}
	}
}
