package bridge

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/events"
)

// recorder is an Observer and Tracer that writes down every call.
type recorder struct {
	mu    sync.Mutex
	calls []string
}

func (r *recorder) add(f string, a ...any) {
	r.mu.Lock()
	r.calls = append(r.calls, fmt.Sprintf(f, a...))
	r.mu.Unlock()
}

func (r *recorder) has(prefix string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.calls {
		if strings.HasPrefix(c, prefix) {
			n++
		}
	}
	return n
}

func (r *recorder) TaskFetched(topic string)                     { r.add("fetched %s", topic) }
func (r *recorder) TaskPublished(topic string)                   { r.add("published %s", topic) }
func (r *recorder) HandlerReplied(topic string, d time.Duration) { r.add("replied %s %s", topic, d) }
func (r *recorder) LockExtended(topic string, err error)         { r.add("extended %s %v", topic, err) }
func (r *recorder) TopicPaused(topic string)                     { r.add("paused %s", topic) }
func (r *recorder) AckLost(topic string)                         { r.add("ack lost %s", topic) }
func (r *recorder) Window(topic string, inFlight, window int) {
	r.add("window %s %d/%d", topic, inFlight, window)
}
func (r *recorder) TaskSettled(topic string, s Settlement, d time.Duration) {
	r.add("settled %s %s %s", topic, s, d)
}

func (r *recorder) StartTask(topic, taskID string, fetchedAt time.Time) TaskSpan {
	r.add("span %s %s", topic, taskID)
	return &recSpan{r: r, id: taskID}
}

type recSpan struct {
	r  *recorder
	id string
	n  int
}

func (s *recSpan) Publish() (string, func(error)) {
	s.n++
	tp := fmt.Sprintf("00-%032x-%016x-01", 1, s.n)
	s.r.add("publish %s %d", s.id, s.n)
	return tp, func(err error) { s.r.add("publish-end %s %v", s.id, err) }
}

func (s *recSpan) Report(kind string) func(error) {
	s.r.add("report %s %s", s.id, kind)
	return func(err error) { s.r.add("report-end %s %v", s.id, err) }
}

func (s *recSpan) End(st Settlement) { s.r.add("end %s %s", s.id, st) }

func TestPumpObserverAndTracer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{}
		cfg := unitConfig()
		cfg.Observer, cfg.Tracer = rec, rec
		eng, bus := newFakeEngine(), newFakeBus()
		h := startPump(t, cfg, eng, bus)
		eng.add(testTask("o1", "t1", false))
		m := h.next(time.Second)
		if tp := m.Header.Get("ce-traceparent"); tp != fmt.Sprintf("00-%032x-%016x-01", 1, 1) {
			t.Fatalf("traceparent %q does not come from TaskSpan.Publish", tp)
		}
		time.Sleep(1500 * time.Millisecond) // one extension (lock 3 s: at 1 s)
		bus.reply(m, `{}`)
		h.reported(time.Second)
		for _, want := range []string{"fetched t1", "published t1", "replied t1", "extended t1 <nil>",
			"settled t1 finished", "window t1 1/10", "window t1 0/10", "span t1 o1", "publish o1 1",
			"publish-end o1 <nil>", "report o1 finish", "report-end o1 <nil>", "end o1 finished"} {
			if rec.has(want) != 1 {
				t.Errorf("%q recorded %d times; calls:\n%s", want, rec.has(want), strings.Join(rec.calls, "\n"))
			}
		}
	})
}

func TestPumpTopicPausedObserved(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{}
		cfg := unitConfig()
		cfg.Observer = rec
		eng, bus := newFakeEngine(), newFakeBus()
		bus.setNoResponders(true)
		h := startPump(t, cfg, eng, bus)
		eng.add(testTask("p1", "t1", false))
		h.next(time.Second)
		synctest.Wait()
		if rec.has("paused t1") != 1 || rec.has("settled t1 released") != 1 {
			t.Fatalf("calls:\n%s", strings.Join(rec.calls, "\n"))
		}
	})
}

func TestPumpRefreshTopicsAndDiscovered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := unitConfig()
		cfg.Topics = nil
		cfg.TopicRefresh = time.Hour
		eng, bus := newFakeEngine(), newFakeBus()
		eng.setTopics() // nothing deployed yet
		p, err := newPump(eng, bus, cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-p.Discovered():
			t.Fatal("discovered before Run")
		default:
		}
		h := startPumpWith(t, p, eng, bus)
		select {
		case <-p.Discovered():
		case <-time.After(time.Second):
			t.Fatal("Discovered not closed after the first discovery")
		}
		eng.setTopics("late")
		eng.add(testTask("r1", "late", false))
		h.none(time.Minute) // no refresh for an hour
		p.RefreshTopics()
		p.RefreshTopics() // coalesces, never blocks
		if m := h.next(time.Second); m.Subject != "pe.task.late" {
			t.Fatalf("subject %s", m.Subject)
		}
		// Static topics: discovered at once.
		q, err := newPump(eng, bus, unitConfig(), nil)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-q.Discovered():
		default:
			t.Fatal("static topics not discovered at once")
		}
	})
}

func TestPumpContentModeByTopic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := unitConfig()
		cfg.Topics = []string{"t1", "t2"}
		cfg.ContentModeByTopic = map[string]ContentMode{"t2": Structured}
		eng, bus := newFakeEngine(), newFakeBus()
		h := startPump(t, cfg, eng, bus)
		eng.add(testTask("b1", "t1", false), testTask("s1", "t2", false))
		got := map[string]*nats.Msg{}
		for range 2 {
			m := h.next(time.Second)
			got[m.Subject] = m
		}
		if b := got["pe.task.t1"]; b.Header.Get("ce-id") != "b1" || events.IsStructured(events.Header(b.Header)) {
			t.Fatalf("t1 not binary: %v", b.Header)
		}
		s := got["pe.task.t2"]
		if !events.IsStructured(events.Header(s.Header)) || s.Header.Get("ce-id") != "" {
			t.Fatalf("t2 not structured: %v", s.Header)
		}
		ev := readWithSDK(t, s)
		if ev.ID() != "s1" {
			t.Fatalf("structured event %v", ev)
		}
		if err := (Config{ContentModeByTopic: map[string]ContentMode{"x": 7}}).Validate(); err == nil {
			t.Fatal("unknown per-topic mode accepted")
		}
	})
}

// Reply keys are random; a reply to a key never issued is counted and
// dropped, one to an ended attempt counts as late.
func TestPumpReplyKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		eng, bus := newFakeEngine(), newFakeBus()
		h := startPump(t, unitConfig(), eng, bus)
		tasks := []string{"k1", "k2", "k3"}
		for _, id := range tasks {
			eng.add(testTask(id, "t1", false))
		}
		keys := map[string]bool{}
		var msgs []*nats.Msg
		for range tasks {
			m := h.next(time.Second)
			msgs = append(msgs, m)
			key := m.Reply[strings.LastIndexByte(m.Reply, '.')+1:]
			if len(key) != 26 || keys[key] {
				t.Fatalf("key %q (of %v)", key, keys)
			}
			keys[key] = true
		}
		prefix := msgs[0].Reply[:strings.LastIndexByte(msgs[0].Reply, '.')+1]
		for _, forged := range []string{"1", "2", "a", strings.Repeat("A", 26)} {
			bus.deliver(&nats.Msg{Subject: prefix + forged, Data: []byte(`{"forged":true}`)})
		}
		bus.reply(msgs[0], `{}`)
		h.reported(time.Second)
		bus.reply(msgs[0], `{}`) // a late reply to an issued key
		synctest.Wait()
		if s := h.p.Stats(); s.UnknownReplies != 4 || s.LateReplies != 1 || s.Finished != 1 {
			t.Fatalf("stats %+v", s)
		}
		if len(eng.finishesOf("k2")) != 0 || len(eng.finishesOf("k3")) != 0 {
			t.Fatal("forged reply finished a task")
		}
	})
}

// The pump matches the Pe-Outcome header in any case (issue 9 item 2).
func TestPumpOutcomeHeaderAnyCase(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := unitConfig()
		cfg.MaxAttempts = 1
		eng, bus := newFakeEngine(), newFakeBus()
		h := startPump(t, cfg, eng, bus)
		eng.add(testTask("lc", "t1", false))
		m := h.next(time.Second)
		bus.deliver(&nats.Msg{Subject: m.Reply, Header: nats.Header{"pe-outcome": {"failure"}}})
		h.reported(time.Second)
		if errs := eng.errorsOf("lc"); len(errs) != 1 || errs[0].ErrorCode != DefaultFailureErrorCode {
			t.Fatalf("errors %+v finishes %s", errs, eng.finishesOf("lc"))
		}
	})
}

// A stalled fetch on a busy topic is hedged after hedgeDelay (the topic
// keeps fetching) and itself given up at LongPollTimeout plus its margin
// (issue 9 item 4).
func TestPumpStalledFetchHedgedAndBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := unitConfig()
		eng, bus := newFakeEngine(), newFakeBus()
		eng.fetchStall = func(n int) bool { return n == 2 } // the fetch after the first batch
		h := startPump(t, cfg, eng, bus)
		eng.add(testTask("f1", "t1", false))
		bus.reply(h.next(time.Second), `{}`)
		h.reported(time.Second)
		eng.add(testTask("f2", "t1", false)) // waits behind the stalled fetch
		start := time.Now()
		m := h.next(time.Minute)
		if d, hedge := time.Since(start), cfg.withDefaults().hedgeDelay(); m.Header.Get("ce-id") != "f2" || d > hedge {
			t.Fatalf("f2 published after %s (hedge delay %s)", d, hedge)
		}
		bus.reply(m, `{}`)
		h.reported(time.Second)
		// The stalled fetch ends at its bound, without backing the topic off.
		// (The long poll after f2 is hedged too: f2's fetch made the topic
		// busy; the hedges only long-poll as well, so after maxHedges no more
		// follow.)
		time.Sleep(cfg.LongPollTimeout + cfg.withDefaults().fetchMargin())
		synctest.Wait()
		if s := h.p.Stats(); s.FetchErrors != 1 || s.HedgedFetches != 1+maxHedges {
			t.Fatalf("stats %+v", s)
		}
		eng.add(testTask("f3", "t1", false))
		bus.reply(h.next(time.Second), `{}`)
		h.reported(time.Second)
		// Quiet again: back to one long poll at a time.
		time.Sleep(2 * cfg.LongPollTimeout)
		n := len(eng.fetchLog())
		time.Sleep(3 * cfg.LongPollTimeout)
		if k := len(eng.fetchLog()) - n; k != 3 {
			t.Fatalf("%d fetches in 3 long polls of a quiet topic", k)
		}
	})
}

// An idle topic keeps one long poll at a time.
func TestPumpIdleTopicOneLongPoll(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := unitConfig()
		eng, bus := newFakeEngine(), newFakeBus()
		startPump(t, cfg, eng, bus)
		time.Sleep(3*cfg.LongPollTimeout - time.Second)
		if n := len(eng.fetchLog()); n != 3 {
			t.Fatalf("%d fetches in %s on an idle topic, want 3", n, 3*cfg.LongPollTimeout-time.Second)
		}
	})
}
