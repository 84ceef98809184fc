package main

import (
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"time"
)

// Num is a float64 that encodes NaN and ±Inf (no value) as JSON null.
type Num float64

// MarshalJSON implements json.Marshaler.
func (n Num) MarshalJSON() ([]byte, error) {
	f := float64(n)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return []byte("null"), nil
	}
	return strconv.AppendFloat(nil, f, 'g', 6, 64), nil
}

// UnmarshalJSON implements json.Unmarshaler (null → NaN).
func (n *Num) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*n = Num(math.NaN())
		return nil
	}
	var f float64
	err := json.Unmarshal(b, &f)
	*n = Num(f)
	return err
}

// Valid reports whether n holds a value.
func (n Num) Valid() bool { return !math.IsNaN(float64(n)) && !math.IsInf(float64(n), 0) }

// Path names: (a) the bridge, (b) the official TypeScript worker, (c) the
// direct Go REST worker.
const (
	PathBridge   = "a"
	PathOfficial = "b"
	PathDirect   = "c"
)

// PathLabel is the human name of a path.
var PathLabel = map[string]string{
	PathBridge:   "a bridge+NATS+Go SDK",
	PathOfficial: "b official TS worker",
	PathDirect:   "c direct Go REST",
}

// Report is the JSON document the harness writes.
type Report struct {
	Schema    int       `json:"schema"`
	StartedAt time.Time `json:"started_at"`
	Seconds   float64   `json:"seconds"`
	Machine   Machine   `json:"machine"`
	Settings  Settings  `json:"settings"`
	Command   string    `json:"command"`
	Cells     []*Cell   `json:"cells"`
	// LowLoad holds latency runs at a low fixed rate (cost 0, window 100):
	// the cost of the hops themselves, without CPU contention.
	LowLoad *Cell    `json:"low_load,omitempty"`
	Idle    []Idle   `json:"idle,omitempty"`
	Big     *Big     `json:"big,omitempty"`
	Targets []Target `json:"targets"`
	Missing []string `json:"missing,omitempty"`
}

// Machine describes where the numbers were taken.
type Machine struct {
	NProc       int     `json:"nproc"`
	CPUModel    string  `json:"cpu_model"`
	MemTotalMB  int     `json:"mem_total_mb"`
	Kernel      string  `json:"kernel"`
	GoVersion   string  `json:"go_version"`
	NodeVersion string  `json:"node_version"`
	LoadAvg     float64 `json:"load_avg_1m_at_start"`
}

// Settings are the knobs of the run.
type Settings struct {
	N             int      `json:"n"`
	Repeats       int      `json:"repeats"`
	CostsMs       []int    `json:"costs_ms"`
	Windows       []int    `json:"windows"`
	Paths         []string `json:"paths"`
	Quick         bool     `json:"quick"`
	LatencySecs   float64  `json:"latency_seconds"`
	IdleSecs      float64  `json:"idle_seconds"`
	BigN          int      `json:"big_n"`
	BigWindow     int      `json:"big_window"`
	LockDurationS float64  `json:"lock_duration_s"`
	LowRate       float64  `json:"low_rate"`
}

// Cell is one (handler cost, window) combination measured on every path.
type Cell struct {
	CostMs int `json:"cost_ms"`
	Window int `json:"window"`
	N      int `json:"n"`
	// LatencyRate is the start rate (instances/s) of the latency runs: half
	// the median throughput of the bridge in this cell.
	LatencyRate Num                  `json:"latency_rate"`
	Paths       map[string]*PathCell `json:"paths"`
	// Ratios["b/a"] and Ratios["a/c"]: medians of the per-repeat ratios.
	Ratios map[string]Ratio `json:"ratios"`
}

// PathCell holds the runs of one path in one cell and their medians.
type PathCell struct {
	Runs        []Run    `json:"runs"`
	LatencyRuns []LatRun `json:"latency_runs"`
	Median      Summary  `json:"median"`
}

// ProcUsage is the resource use of one worker process during a run.
type ProcUsage struct {
	Name       string  `json:"name"`
	CPUSeconds float64 `json:"cpu_s"`
	PeakRSSMB  float64 `json:"peak_rss_mb"`
	// Peaks sampled every 100 ms during a throughput run.
	PeakFDs     int `json:"peak_fds,omitempty"`
	PeakThreads int `json:"peak_threads,omitempty"`
}

// Run is one throughput run: a backlog of N tasks released at once.
type Run struct {
	Repeat        int         `json:"repeat"`
	N             int         `json:"n"`
	Seconds       float64     `json:"seconds"`
	TasksPerSec   float64     `json:"tasks_per_s"`
	Procs         []ProcUsage `json:"procs"`
	CPUSeconds    float64     `json:"cpu_s"`
	PeakRSSMB     float64     `json:"peak_rss_mb"`
	EmulatorCPU   float64     `json:"emulator_cpu_s"`
	InFlightPeak  int64       `json:"in_flight_peak"`
	Lapses        int64       `json:"lock_lapses"`
	Expired       int64       `json:"expired"`
	Unlocked      int64       `json:"unlocked"`
	FetchCalls    int64       `json:"fetch_calls"`
	ExtendCalls   int64       `json:"extend_calls"`
	Error         string      `json:"error,omitempty"`
	LoadAvgBefore float64     `json:"load_avg_1m"`
}

// LatRun is one latency run: instances started at a fixed rate.
type LatRun struct {
	Repeat     int         `json:"repeat"`
	Rate       float64     `json:"rate"`
	N          int         `json:"n"`
	P50Ms      Num         `json:"p50_ms"`
	P95Ms      Num         `json:"p95_ms"`
	P99Ms      Num         `json:"p99_ms"`
	MaxMs      Num         `json:"max_ms"`
	Procs      []ProcUsage `json:"procs"`
	CPUSeconds float64     `json:"cpu_s"`
	Skipped    string      `json:"skipped,omitempty"`
	Error      string      `json:"error,omitempty"`
}

// Summary is the median over the repeats of a path in a cell.
type Summary struct {
	TasksPerSec   Num            `json:"tasks_per_s"`
	CPUSeconds    Num            `json:"cpu_s"`
	CPUMsPer1k    Num            `json:"cpu_ms_per_1k_tasks"`
	PeakRSSMB     Num            `json:"peak_rss_mb"`
	ProcCPU       map[string]Num `json:"proc_cpu_s,omitempty"`
	ProcRSSMB     map[string]Num `json:"proc_peak_rss_mb,omitempty"`
	P50Ms         Num            `json:"p50_ms"`
	P95Ms         Num            `json:"p95_ms"`
	P99Ms         Num            `json:"p99_ms"`
	LatencyCPUSec Num            `json:"latency_cpu_s"`
	Lapses        int64          `json:"lock_lapses"`
	InFlightPeak  int64          `json:"in_flight_peak"`
	LatencyNote   string         `json:"latency_note,omitempty"`
}

// Ratio compares two paths within one cell: each figure is the median over
// the repeats of value(first)/value(second) taken in the same repeat, except
// the latency deltas, which are medians of value(first)−value(second) in ms.
type Ratio struct {
	TasksPerSec Num `json:"tasks_per_s"`
	CPUSeconds  Num `json:"cpu_s"`
	PeakRSSMB   Num `json:"peak_rss_mb"`
	P50DeltaMs  Num `json:"p50_delta_ms"`
	P99DeltaMs  Num `json:"p99_delta_ms"`
	Repeats     int `json:"repeats"`
}

// Idle is the cost of one path with no work.
type Idle struct {
	Path string `json:"path"`
	// Full: the bridge with its defaults (event forwarder and request/reply
	// service on); otherwise the task pump only, as in the throughput cells.
	Full             bool    `json:"full,omitempty"`
	Seconds          float64 `json:"seconds"`
	Fetches          int64   `json:"fetches"`
	Requests         int64   `json:"requests"`
	FetchesPerMinute float64 `json:"fetches_per_minute"`
	// Limit is one fetch per long-poll timeout per topic group, per minute.
	Limit        float64 `json:"limit_per_minute"`
	CPUSecPerMin float64 `json:"cpu_s_per_minute"`
	Error        string  `json:"error,omitempty"`
}

// Big is the 10,000-in-flight scenario of the bridge.
type Big struct {
	N            int         `json:"n"`
	Window       int         `json:"window"`
	CostMs       int         `json:"cost_ms"`
	Seconds      float64     `json:"seconds"`
	TasksPerSec  float64     `json:"tasks_per_s"`
	InFlightPeak int64       `json:"in_flight_peak"`
	Procs        []ProcUsage `json:"procs"`
	BridgeRSSMB  float64     `json:"bridge_peak_rss_mb"`
	Expired      int64       `json:"expired"`
	Unlocked     int64       `json:"unlocked"`
	Extends      int64       `json:"extend_calls"`
	Error        string      `json:"error,omitempty"`
}

// Target is one goal of issue 6 and whether this run met it.
type Target struct {
	Name  string `json:"name"`
	Value Num    `json:"value"`
	Limit string `json:"limit"`
	Met   *bool  `json:"met"` // nil: not measured
	Note  string `json:"note,omitempty"`
}

// Percentile returns the p-th percentile (0 < p ≤ 100) of xs by the
// nearest-rank method; NaN for no values. xs is not modified.
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return percentileSorted(s, p)
}

func percentileSorted(s []float64, p float64) float64 {
	if len(s) == 0 {
		return math.NaN()
	}
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	rank = min(max(rank, 1), len(s))
	return s[rank-1]
}

// Percentiles returns the 50th, 95th and 99th percentiles and the maximum.
func Percentiles(xs []float64) (p50, p95, p99, maxv float64) {
	if len(xs) == 0 {
		n := math.NaN()
		return n, n, n, n
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return percentileSorted(s, 50), percentileSorted(s, 95), percentileSorted(s, 99), s[len(s)-1]
}

// Median of xs ignoring NaNs (mean of the two middle values for an even
// count); NaN for no values.
func Median(xs []float64) float64 {
	s := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) {
			s = append(s, x)
		}
	}
	if len(s) == 0 {
		return math.NaN()
	}
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// PairedRatio is the median of num[i]/den[i] over the pairs where both exist
// and den[i] != 0; NaN when there is none.
func PairedRatio(num, den []float64) float64 {
	var rs []float64
	for i := range min(len(num), len(den)) {
		if den[i] != 0 && !math.IsNaN(num[i]) && !math.IsNaN(den[i]) {
			rs = append(rs, num[i]/den[i])
		}
	}
	return Median(rs)
}

// PairedDelta is the median of a[i]−b[i] over the pairs where both exist.
func PairedDelta(a, b []float64) float64 {
	var ds []float64
	for i := range min(len(a), len(b)) {
		if !math.IsNaN(a[i]) && !math.IsNaN(b[i]) {
			ds = append(ds, a[i]-b[i])
		}
	}
	return Median(ds)
}

// summarize fills pc.Median from its runs.
func (pc *PathCell) summarize() {
	var tps, cpu, rss, p50, p95, p99, lcpu []float64
	procCPU := map[string][]float64{}
	procRSS := map[string][]float64{}
	var lapses, inflight int64
	for _, r := range pc.Runs {
		if r.Error != "" {
			continue
		}
		tps = append(tps, r.TasksPerSec)
		cpu = append(cpu, r.CPUSeconds)
		rss = append(rss, r.PeakRSSMB)
		for _, p := range r.Procs {
			procCPU[p.Name] = append(procCPU[p.Name], p.CPUSeconds)
			procRSS[p.Name] = append(procRSS[p.Name], p.PeakRSSMB)
		}
		lapses += r.Lapses
		inflight = max(inflight, r.InFlightPeak)
	}
	for _, l := range pc.LatencyRuns {
		if l.Error != "" || l.Skipped != "" {
			continue
		}
		p50 = append(p50, float64(l.P50Ms))
		p95 = append(p95, float64(l.P95Ms))
		p99 = append(p99, float64(l.P99Ms))
		lcpu = append(lcpu, l.CPUSeconds)
	}
	m := Summary{
		TasksPerSec: Num(Median(tps)), CPUSeconds: Num(Median(cpu)), PeakRSSMB: Num(Median(rss)),
		P50Ms: Num(Median(p50)), P95Ms: Num(Median(p95)), P99Ms: Num(Median(p99)), LatencyCPUSec: Num(Median(lcpu)),
		Lapses: lapses, InFlightPeak: inflight,
	}
	var per1k []float64
	for _, r := range pc.Runs {
		if r.Error == "" && r.N > 0 {
			per1k = append(per1k, r.CPUSeconds*1e6/float64(r.N))
		}
	}
	m.CPUMsPer1k = Num(Median(per1k))
	if len(procCPU) > 1 {
		m.ProcCPU, m.ProcRSSMB = map[string]Num{}, map[string]Num{}
		for k, v := range procCPU {
			m.ProcCPU[k] = Num(Median(v))
			m.ProcRSSMB[k] = Num(Median(procRSS[k]))
		}
	}
	if len(p50) == 0 {
		for _, l := range pc.LatencyRuns {
			if l.Skipped != "" {
				m.LatencyNote = l.Skipped
				break
			}
		}
	}
	pc.Median = m
}

// byRepeat returns f of the run of each repeat 0..repeats-1 (NaN where the
// run is missing or failed).
func byRepeat(pc *PathCell, repeats int, f func(Run) float64) []float64 {
	out := make([]float64, repeats)
	for i := range out {
		out[i] = math.NaN()
	}
	if pc == nil {
		return out
	}
	for _, r := range pc.Runs {
		if r.Error == "" && r.Repeat >= 0 && r.Repeat < repeats {
			out[r.Repeat] = f(r)
		}
	}
	return out
}

func latByRepeat(pc *PathCell, repeats int, f func(LatRun) float64) []float64 {
	out := make([]float64, repeats)
	for i := range out {
		out[i] = math.NaN()
	}
	if pc == nil {
		return out
	}
	for _, r := range pc.LatencyRuns {
		if r.Error == "" && r.Skipped == "" && r.Repeat >= 0 && r.Repeat < repeats {
			out[r.Repeat] = f(r)
		}
	}
	return out
}

// computeRatios fills c.Ratios["b/a"] and c.Ratios["a/c"] from the runs.
func (c *Cell) computeRatios(repeats int) {
	c.Ratios = map[string]Ratio{}
	pair := func(x, y string) {
		px, py := c.Paths[x], c.Paths[y]
		if px == nil || py == nil {
			return
		}
		tps := func(r Run) float64 { return r.TasksPerSec }
		cpu := func(r Run) float64 { return r.CPUSeconds }
		rss := func(r Run) float64 { return r.PeakRSSMB }
		p50 := func(r LatRun) float64 { return float64(r.P50Ms) }
		p99 := func(r LatRun) float64 { return float64(r.P99Ms) }
		n := 0
		xs, ys := byRepeat(px, repeats, tps), byRepeat(py, repeats, tps)
		for i := range xs {
			if !math.IsNaN(xs[i]) && !math.IsNaN(ys[i]) {
				n++
			}
		}
		c.Ratios[x+"/"+y] = Ratio{
			TasksPerSec: Num(PairedRatio(xs, ys)),
			CPUSeconds:  Num(PairedRatio(byRepeat(px, repeats, cpu), byRepeat(py, repeats, cpu))),
			PeakRSSMB:   Num(PairedRatio(byRepeat(px, repeats, rss), byRepeat(py, repeats, rss))),
			P50DeltaMs:  Num(PairedDelta(latByRepeat(px, repeats, p50), latByRepeat(py, repeats, p50))),
			P99DeltaMs:  Num(PairedDelta(latByRepeat(px, repeats, p99), latByRepeat(py, repeats, p99))),
			Repeats:     n,
		}
	}
	pair(PathOfficial, PathBridge)
	pair(PathBridge, PathDirect)
}

// cellN is the number of tasks of a throughput run: n, but for slow cells
// (window/cost small) no more than about ten seconds of ideal work, and
// never below 10 windows' worth or 500.
func cellN(n, window int, cost time.Duration) int {
	if cost <= 0 {
		return n
	}
	ideal := float64(window) / cost.Seconds() // tasks/s if only the cost limited
	capN := int(ideal * 10)
	capN = max(capN, 500, 10*window)
	return min(n, capN)
}
