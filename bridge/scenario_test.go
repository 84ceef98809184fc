package bridge

// Scenario tests of issue 9 and 10 (item 1): each provokes one edge of the
// task life cycle for real (engine emulator over HTTP with injected faults,
// embedded nats-server, handlers on their own connections) and logs the
// figure the issue quotes as "FIGURE <name>: ...". The ones that need the
// issue's full-scale timings (35 s handlers, 2,000 tasks) are in
// scenario_full_test.go, built only with the scenarios tag:
//
//	make scenarios
//
// They use only the pump's public API, so the same file measures the code
// before the change.

import (
	"cmp"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/engine/emulator"
)

// scenarioSeed is the fault seed: PE_SEED if set, else def.
func scenarioSeed(def int64) int64 {
	if v, err := strconv.ParseInt(os.Getenv("PE_SEED"), 10, 64); err == nil {
		return v
	}
	return def
}

// scenarioConfig is the default configuration (what `bridge run` uses) with
// the test's worker id, source and topics.
func scenarioConfig(topics ...string) Config {
	return Config{WorkerID: "bridge-scenario", Source: "pe-bridge://scenario", Topics: topics}
}

// tally counts how a set of instances ended.
type tally struct {
	finished, expired, technical, otherError, running int
}

func (e *compEnv) tally(ids []string) tally {
	var c tally
	for _, id := range ids {
		pi, _ := e.emu.ProcessInstance(id)
		switch {
		case pi.State == engine.InstanceFinished:
			c.finished++
		case pi.State == engine.InstanceRunning:
			c.running++
		case strings.Contains(string(pi.Error), "ExternalTaskExpired"):
			c.expired++
		case strings.Contains(string(pi.Error), DefaultFailureErrorCode):
			c.technical++
		default:
			c.otherError++
		}
	}
	return c
}

// waitSettled waits up to timeout for every instance to end and reports
// whether they did.
func (e *compEnv) waitSettled(timeout time.Duration, ids []string) bool {
	deadline := time.Now().Add(timeout)
	for {
		if e.tally(ids).running == 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond) // polling the emulator's state
	}
}

// deliveries counts the task events each task id received.
type deliveries struct {
	mu sync.Mutex
	n  map[string]int
}

func (d *deliveries) add(m *nats.Msg) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.n == nil {
		d.n = map[string]int{}
	}
	id := m.Header.Get("ce-id")
	d.n[id]++
	return d.n[id]
}

// twice is the number of tasks delivered more than once.
func (d *deliveries) twice() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	k := 0
	for _, n := range d.n {
		if n > 1 {
			k++
		}
	}
	return k
}

func (e *compEnv) startN(model string, n int) []string {
	ids := make([]string, 0, n)
	for range n {
		ids = append(ids, e.start(model, nil))
	}
	return ids
}

// The same in the default suite, scaled down: a 2 s lock, extend_lock
// answered 0.8 s late (40% of the lock, twice the 20%), 3 s handlers.
func TestScenarioSlowExtendScaled(t *testing.T) {
	slowExtendScenario(t, 10, 2*time.Second, 800*time.Millisecond, 3*time.Second)
}

// slowExtendScenario runs n single-try tasks whose handlers take handler,
// with every extend_lock answered late; lock 0 = the default.
func slowExtendScenario(t *testing.T, n int, lock, late, handler time.Duration) {
	e := newCompEnv(t, serviceModel("slow_extend", "slow-extend", true, ""))
	e.handle("slow-extend", func(m *nats.Msg) {
		time.AfterFunc(handler, func() { _ = m.Respond([]byte(`{"ok":true}`)) })
	})
	e.emu.SetFaults(emulator.Faults{Latency: late, PathContains: "/extend_lock"})
	cfg := scenarioConfig("slow-extend")
	cfg.LockDuration = lock
	if lock > 0 {
		cfg.LongPollTimeout = lock / 2 // scaled down too (Run waits for the open long poll)
	}
	e.runPump(cfg)
	ids := e.startN("slow_extend", n)
	e.waitSettled(handler+time.Minute, ids)
	c := e.tally(ids)
	t.Logf("FIGURE 9.3a slow extend_lock (%s late), %s lock, %s handlers: %d of %d single-try tasks expired, %d finished, %d technical failures",
		late, cmp.Or(lock, DefaultLockDuration), handler, c.expired, n, c.finished, c.technical)
	if c.expired != 0 || c.finished != n {
		t.Errorf("tally %+v", c)
	}
}

// The same in the default suite, scaled down by 5.
func TestScenarioStalledExtendsScaled(t *testing.T) {
	stalledExtendScenario(t, 20, 2*time.Second, 3*time.Second)
}

// stalledExtendScenario runs n single-try and n multi-try tasks with a
// quarter of all extend_lock calls stalled.
func stalledExtendScenario(t *testing.T, n int, lock, handler time.Duration) {
	e := newCompEnv(t, serviceModel("stall_single", "stall-single", true, ""),
		serviceModel("stall_multi", "stall-multi", false, ""))
	var d deliveries
	for _, topic := range []string{"stall-single", "stall-multi"} {
		e.handle(topic, func(m *nats.Msg) {
			d.add(m)
			time.AfterFunc(handler, func() { _ = m.Respond([]byte(`{"ok":true}`)) })
		})
	}
	e.emu.SetFaults(emulator.Faults{StallRate: 0.25, PathContains: "/extend_lock", Seed: scenarioSeed(3)})
	cfg := scenarioConfig("stall-single", "stall-multi")
	cfg.LockDuration = lock
	if lock < DefaultLockDuration/3 {
		cfg.LongPollTimeout = lock / 2 // scaled down too (Run waits for the open long poll)
	}
	e.runPump(cfg)
	single, multi := e.startN("stall_single", n), e.startN("stall_multi", n)
	e.waitSettled(handler+2*time.Minute, append(append([]string{}, single...), multi...))
	cs, cm := e.tally(single), e.tally(multi)
	st := e.emu.Stats()
	t.Logf("FIGURE 9.3b 25%% of extend_lock stalled, %s lock, %s handlers: %d of %d single-try expired, %d of %d multi-try handled twice (%d lock lapses), finished %d+%d",
		lock, handler, cs.expired, n, d.twice(), n, st.TasksUnlocked, cs.finished, cm.finished)
	if cs.expired != 0 || d.twice() != 0 || cs.finished != n || cm.finished != n {
		t.Errorf("single %+v multi %+v twice %d", cs, cm, d.twice())
	}
}

// Issue 9 item 5: a task the engine hands out again while the bridge still
// holds it (its lock lapsed because extensions failed) is not published twice.
func TestScenarioRefetchedWhileHeld(t *testing.T) {
	const n = 5
	e := newCompEnv(t, serviceModel("refetch", "refetch", false, ""))
	var d deliveries
	e.handle("refetch", func(m *nats.Msg) {
		d.add(m)
		time.AfterFunc(2500*time.Millisecond, func() { _ = m.Respond([]byte(`{"ok":true}`)) })
	})
	e.emu.SetFaults(emulator.Faults{ErrorRate: 1, Status: 500, PathContains: "/extend_lock"})
	cfg := compConfig("refetch")
	cfg.LockDuration = time.Second
	cfg.LongPollTimeout = 200 * time.Millisecond
	p, _ := e.runPump(cfg)
	ids := e.startN("refetch", n)
	e.waitSettled(20*time.Second, ids)
	c := e.tally(ids)
	t.Logf("FIGURE 9.5 re-fetched while held: %d of %d tasks published twice, %d finished (%d lock lapses)",
		d.twice(), n, c.finished, e.emu.Stats().TasksUnlocked)
	if d.twice() != 0 || c.finished != n {
		t.Errorf("twice %d tally %+v stats %+v", d.twice(), c, p.Stats())
	}
}

// Issue 9 item 6: a task above NATS max_payload is reported once as the
// reserved technical failure; the topic's other tasks keep flowing.
func TestScenarioUnpublishableTask(t *testing.T) {
	e := newCompEnv(t, serviceModel("big", "big", false, ""))
	e.handle("big", func(m *nats.Msg) { _ = m.Respond([]byte(`{"ok":true}`)) })
	cfg := compConfig("big")
	p, _ := e.runPump(cfg)
	big := e.start("big", map[string]string{"blob": strings.Repeat("x", 2<<20)})
	small := e.startN("big", 5)
	e.waitSettled(5*time.Second, append([]string{big}, small...))
	pi, _ := e.emu.ProcessInstance(big)
	cs := e.tally(small)
	locks := e.emu.Stats().TasksLocked - int64(len(small))
	t.Logf("FIGURE 9.6 2 MiB task: locked %d times in 5 s, state %s, error %s; other tasks finished %d of %d",
		locks, pi.State, pi.Error, cs.finished, len(small))
	if pi.State != engine.InstanceError || !strings.Contains(string(pi.Error), DefaultFailureErrorCode) ||
		!strings.Contains(string(pi.Error), "max_payload") || locks != 1 || cs.finished != len(small) {
		t.Errorf("big %+v locks %d small %+v stats %+v", pi, locks, cs, p.Stats())
	}
}

// Issue 9 item 7: attempts awaiting a reply when nats-server went away for
// 2 s are published again soon after the reconnect, with default handler
// timeout (5 min): all finish within 60 s of the outage.
func TestScenarioNATSOutageRepublishes(t *testing.T) {
	const n = 20
	e := newCompEnv(t, serviceModel("outage", "outage", false, ""))
	var d deliveries
	var outage atomic.Bool
	received := make(chan struct{}, n)
	nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", e.port), nats.MaxReconnects(-1),
		nats.ReconnectWait(20*time.Millisecond), nats.ReconnectBufSize(-1)) // replies during the outage are lost
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if _, err := nc.QueueSubscribe("pe.task.outage", "pe-handlers", func(m *nats.Msg) {
		if d.add(m) == 1 && !outage.Load() {
			received <- struct{}{}
			// Works until the outage and answers during it: the reply is lost.
			go func() {
				for !outage.Load() {
					time.Sleep(5 * time.Millisecond) // waiting for the test's outage flag
				}
				_ = m.Respond([]byte(`{"lost":true}`))
			}()
			return
		}
		_ = m.Respond([]byte(`{"ok":true}`))
	}); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	cfg := scenarioConfig("outage")   // default handler timeout (5 min)
	cfg.LongPollTimeout = time.Second // Run waits for the open long poll
	e.runPump(cfg)
	ids := e.startN("outage", n)
	for range n {
		<-received
	}
	e.ns.Shutdown()
	e.ns.WaitForShutdown()
	outage.Store(true)
	time.Sleep(2 * time.Second) // the outage
	e.startNATS(e.port)
	back := time.Now()
	limit := 60 * time.Second
	if v, _ := strconv.Atoi(os.Getenv("PE_OUTAGE_WAIT_S")); v > 0 {
		limit = time.Duration(v) * time.Second
	}
	ok := e.waitSettled(limit, ids)
	c := e.tally(ids)
	t.Logf("FIGURE 9.7 2 s nats-server outage, default handler timeout: %d of %d finished %s after the outage (all=%v)",
		c.finished, n, time.Since(back).Round(100*time.Millisecond), ok)
	if !ok || c.finished != n {
		t.Errorf("tally %+v", c)
	}
}

// Issue 9 item 8: outcomes waiting in the report queue when the drain ends
// are reported before Run returns.
func TestScenarioDrainReportsQueue(t *testing.T) {
	const n = 20
	e := newCompEnv(t, serviceModel("queued", "queued", true, ""))
	var got atomic.Int32
	e.handle("queued", func(m *nats.Msg) {
		got.Add(1)
		_ = m.Respond([]byte(`{"ok":true}`))
	})
	e.emu.SetFaults(emulator.Faults{Latency: 100 * time.Millisecond, PathContains: "/finish"})
	cfg := compConfig("queued")
	cfg.ReportConcurrency = 1
	cfg.DrainTimeout = 50 * time.Millisecond
	cfg.LockDuration = 5 * time.Second
	p, stop := e.runPump(cfg)
	ids := e.startN("queued", n)
	waitUntil(t, 10*time.Second, "all replies", func() bool { return got.Load() == n })
	stop()
	e.waitSettled(2*time.Second, ids)
	c := e.tally(ids)
	t.Logf("FIGURE 9.8 %d single-try successes queued at shutdown: %d finished, %d technical failures, %d expired, %d unreported",
		n, c.finished, c.technical, c.expired, c.running)
	if c.finished != n {
		t.Errorf("tally %+v stats %+v", c, p.Stats())
	}
}

// Issue 9 item 9: a shutdown that lands while the engine is answering a
// fetch (the tasks are locked, the answer is on the way) loses no task.
func TestScenarioShutdownDuringFetchAnswer(t *testing.T) {
	const n = 4
	e := newCompEnv(t, serviceModel("last_single", "last-fetch", true, ""))
	var got atomic.Int32
	e.handle("last-fetch", func(m *nats.Msg) {
		got.Add(1)
		_ = m.Respond([]byte(`{"ok":true}`))
	})
	cfg := compConfig("last-fetch")
	cfg.LockDuration = 2 * time.Second
	_, stop := e.runPump(cfg)
	e.emu.SetFaults(emulator.Faults{AnswerDelay: 300 * time.Millisecond, PathContains: "/fetch_and_lock"})
	ids := e.startN("last_single", n)
	waitUntil(t, 5*time.Second, "tasks locked", func() bool { return e.emu.Stats().TasksLocked == n })
	stop() // the answer is still on the way
	e.emu.SetFaults(emulator.Faults{})
	e.waitSettled(5*time.Second, ids)
	c := e.tally(ids)
	t.Logf("FIGURE 9.9 shutdown during a fetch answer: %d single-try tasks locked, %d delivered, %d finished, %d expired, %d still running",
		n, got.Load(), c.finished, c.expired, c.running)
	if c.finished != n {
		t.Errorf("tally %+v", c)
	}
}

// Issue 10 item 1: a client that saw the task events (and their reply
// subjects) cannot produce a valid reply subject for another task.
func TestScenarioReplyKeysUnguessable(t *testing.T) {
	const n = 200
	e := newCompEnv(t, serviceModel("guess", "guess", false, ""))
	seen := make(chan string, n)
	e.handle("guess", func(m *nats.Msg) {
		seen <- m.Reply
		time.AfterFunc(time.Second, func() { _ = m.Respond([]byte(`{"by":"handler"}`)) })
	})
	// The attacker sees the events of the first task only.
	cfg := compConfig("guess")
	cfg.HandlerTimeout = 10 * time.Second
	cfg.LockDuration = 5 * time.Second
	e.runPump(cfg)
	first := e.startN("guess", 1)
	saw := <-seen
	rest := e.startN("guess", n-1)
	waitUntil(t, 10*time.Second, "all published", func() bool { return len(seen) == n-1 })
	attacker := e.connect("attacker")
	for _, guess := range guessReplySubjects(saw, 2*n) {
		_ = attacker.Publish(guess, []byte(`{"by":"attacker"}`))
	}
	_ = attacker.Flush()
	e.waitSettled(20*time.Second, append(first, rest...))
	forged := 0
	for _, id := range rest {
		if pi, _ := e.emu.ProcessInstance(id); strings.Contains(string(pi.EndToken), "attacker") {
			forged++
		}
	}
	t.Logf("FIGURE 10.1 a client that saw 1 task event forged %d of %d other tasks' results blind", forged, n-1)
	if forged != 0 {
		t.Errorf("forged %d", forged)
	}
}

// guessReplySubjects derives k candidate reply subjects from one observed
// one: neighbours of a trailing base-36 or decimal counter, and the seen
// prefix with small counters.
func guessReplySubjects(saw string, k int) []string {
	i := strings.LastIndexByte(saw, '.')
	prefix, key := saw[:i+1], saw[i+1:]
	var out []string
	if v, err := strconv.ParseUint(key, 36, 64); err == nil {
		for d := 1; d <= k; d++ {
			out = append(out, prefix+strconv.FormatUint(v+uint64(d), 36))
		}
	}
	for d := 1; d <= k; d++ {
		out = append(out, prefix+strconv.Itoa(d))
	}
	return out
}

// Issue 9 item 2: replies without "$pe" are successes carrying the body;
// a lower-case "pe-outcome: failure" header is a failure.
func TestScenarioPlainReplies(t *testing.T) {
	bodies := []string{`{"code":200,"message":"ok"}`, `{"message":["a"]}`, `{"details":{"x":1}}`}
	e := newCompEnv(t, serviceModel("plain", "plain", true, ""), serviceModel("lower", "lower", true, ""))
	var next atomic.Int32
	e.handle("plain", func(m *nats.Msg) {
		i := int(next.Add(1)-1) % len(bodies)
		_ = m.Respond([]byte(bodies[i]))
	})
	e.handle("lower", func(m *nats.Msg) {
		r := nats.NewMsg(m.Reply)
		r.Header.Set("pe-outcome", "failure")
		_ = m.RespondMsg(r)
	})
	cfg := compConfig("plain", "lower")
	cfg.MaxAttempts = 1
	e.runPump(cfg)
	plain := e.startN("plain", len(bodies))
	lower := e.startN("lower", 1)
	e.waitSettled(10*time.Second, append(append([]string{}, plain...), lower...))
	cp, cl := e.tally(plain), e.tally(lower)
	t.Logf("FIGURE 9.2 replies without $pe: %d of %d finished (%d technical failures); lower-case pe-outcome: failure: %d of 1 failed",
		cp.finished, len(bodies), cp.technical, cl.technical)
	if cp.finished != len(bodies) || cl.technical != 1 {
		t.Errorf("plain %+v lower %+v", cp, cl)
	}
	for i, id := range plain {
		pi, _ := e.emu.ProcessInstance(id)
		if pi.State == engine.InstanceFinished && !strings.Contains(string(pi.EndToken), strings.Trim(bodies[i%len(bodies)], "{}")) {
			t.Logf("end token %s", pi.EndToken)
		}
	}
}
