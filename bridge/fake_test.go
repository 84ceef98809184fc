package bridge

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/engine"
)

// fakeEngine is a hand-written Engine for unit tests. Fetches block until a
// task of the topic is queued, the long poll times out or ctx ends.
type fakeEngine struct {
	mu       sync.Mutex
	queue    map[string][]engine.ExternalTask
	added    chan struct{} // closed and replaced whenever tasks are queued
	topics   []string
	topicErr error
	fetches  []engine.FetchAndLockRequest
	fetchErr func(n int) error // n = 1-based fetch number
	// fetchStall, when it reports true for fetch n, holds that fetch until
	// ctx ends, without taking tasks (a stalled engine).
	fetchStall func(n int) bool
	extends    map[string][]time.Time
	finishes   map[string][]json.RawMessage
	errs       map[string][]engine.ExternalTaskError
	calls      map[string]int // finish + error calls per task

	extendErr func(id string, n int) error // n = 1-based extend number of the task
	reportErr func(id string, n int) error // n = 1-based finish/error call of the task
	reported  chan string                  // task id after each successful finish/error (buffered)

	// reportGate, when set, holds every finish/error call until it is closed
	// (or ctx ends); extendDelay makes every extend_lock take that long.
	reportGate  chan struct{}
	extendDelay time.Duration
	inReport    int // finish/error calls open now, and the most seen at once
	maxReport   int
	inExtend    int // extend_lock calls open now, and the most seen at once
	maxExtend   int
}

func newFakeEngine(topics ...string) *fakeEngine {
	return &fakeEngine{
		queue:    make(map[string][]engine.ExternalTask),
		added:    make(chan struct{}),
		topics:   topics,
		extends:  make(map[string][]time.Time),
		finishes: make(map[string][]json.RawMessage),
		errs:     make(map[string][]engine.ExternalTaskError),
		calls:    make(map[string]int),
		reported: make(chan string, 10000),
	}
}

func (f *fakeEngine) add(tasks ...engine.ExternalTask) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, t := range tasks {
		f.queue[t.Topic] = append(f.queue[t.Topic], t)
	}
	close(f.added)
	f.added = make(chan struct{})
}

func (f *fakeEngine) setTopics(topics ...string) {
	f.mu.Lock()
	f.topics = topics
	f.mu.Unlock()
}

func (f *fakeEngine) DeployedTopics(ctx context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.topicErr != nil {
		return nil, f.topicErr
	}
	return append([]string(nil), f.topics...), nil
}

func (f *fakeEngine) FetchAndLock(ctx context.Context, req engine.FetchAndLockRequest) ([]engine.ExternalTask, error) {
	f.mu.Lock()
	f.fetches = append(f.fetches, req)
	n := len(f.fetches)
	errf, stall := f.fetchErr, f.fetchStall
	f.mu.Unlock()
	if stall != nil && stall(n) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if errf != nil {
		if err := errf(n); err != nil {
			return nil, err
		}
	}
	timeout := time.NewTimer(req.LongPollingTimeout)
	defer timeout.Stop()
	for {
		f.mu.Lock()
		var out []engine.ExternalTask
		for _, topic := range req.Topics {
			q := f.queue[topic]
			k := min(len(q), req.MaxTasks-len(out))
			out = append(out, q[:k]...)
			f.queue[topic] = q[k:]
		}
		added := f.added
		f.mu.Unlock()
		if len(out) > 0 {
			now := time.Now()
			for i := range out {
				out[i].WorkerID = req.WorkerID
				out[i].LockExpirationTime = now.Add(req.LockDuration)
			}
			return out, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timeout.C:
			return []engine.ExternalTask{}, nil
		case <-added:
		}
	}
}

func (f *fakeEngine) ExtendLock(ctx context.Context, id, worker string, d time.Duration) error {
	f.mu.Lock()
	f.inExtend++
	f.maxExtend = max(f.maxExtend, f.inExtend)
	delay := f.extendDelay
	f.mu.Unlock()
	if delay > 0 {
		time.Sleep(delay)
	}
	f.mu.Lock()
	f.inExtend--
	f.extends[id] = append(f.extends[id], time.Now())
	n := len(f.extends[id])
	errf := f.extendErr
	f.mu.Unlock()
	if errf != nil {
		return errf(id, n)
	}
	return nil
}

func (f *fakeEngine) report(ctx context.Context, id string, record func()) error {
	f.mu.Lock()
	f.inReport++
	f.maxReport = max(f.maxReport, f.inReport)
	gate := f.reportGate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			f.mu.Lock()
			f.inReport--
			f.mu.Unlock()
			return ctx.Err()
		}
	}
	f.mu.Lock()
	f.inReport--
	f.calls[id]++
	n := f.calls[id]
	errf := f.reportErr
	f.mu.Unlock()
	if errf != nil {
		if err := errf(id, n); err != nil {
			return err
		}
	}
	f.mu.Lock()
	record()
	f.mu.Unlock()
	f.reported <- id
	return nil
}

func (f *fakeEngine) FinishTask(ctx context.Context, id, worker string, result json.RawMessage) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return f.report(ctx, id, func() { f.finishes[id] = append(f.finishes[id], result) })
}

func (f *fakeEngine) HandleError(ctx context.Context, id, worker string, e engine.ExternalTaskError) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return f.report(ctx, id, func() { f.errs[id] = append(f.errs[id], e) })
}

func (f *fakeEngine) extendCount(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.extends[id])
}

func (f *fakeEngine) finishesOf(id string) []json.RawMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]json.RawMessage(nil), f.finishes[id]...)
}

func (f *fakeEngine) errorsOf(id string) []engine.ExternalTaskError {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]engine.ExternalTaskError(nil), f.errs[id]...)
}

func (f *fakeEngine) fetchLog() []engine.FetchAndLockRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]engine.FetchAndLockRequest(nil), f.fetches...)
}

// fakeBus is a transport for unit tests. Published messages go to the
// channel pub; replies are delivered to the pump's subscription through
// reply(). With noResponders set, a publication with a reply subject gets a
// 503 status back, as nats-server sends it.
type fakeBus struct {
	mu           sync.Mutex
	cbMu         sync.Mutex // serialises callbacks, as nats.go does per subscription
	subs         map[string]func(*nats.Msg)
	pub          chan *nats.Msg
	noResponders bool
	publishErr   error
}

func newFakeBus() *fakeBus {
	return &fakeBus{subs: make(map[string]func(*nats.Msg)), pub: make(chan *nats.Msg, 10000)}
}

func (b *fakeBus) NewInbox() string { return "_INBOX.test" }

func (b *fakeBus) MaxPayload() int64 { return 1 << 20 }

func (b *fakeBus) OnReconnect(func()) func() { return func() {} }

func (b *fakeBus) Publish(m *nats.Msg) error {
	b.mu.Lock()
	nr, perr := b.noResponders, b.publishErr
	b.mu.Unlock()
	if perr != nil {
		return perr
	}
	b.pub <- m
	if nr && m.Reply != "" {
		status := &nats.Msg{Subject: m.Reply, Header: nats.Header{"Status": []string{"503"}}}
		go b.deliver(status)
	}
	return nil
}

func (b *fakeBus) Subscribe(subject string, cb func(*nats.Msg)) (func() error, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.subs[subject] = cb
	return func() error {
		b.mu.Lock()
		defer b.mu.Unlock()
		delete(b.subs, subject)
		return nil
	}, nil
}

func (b *fakeBus) setNoResponders(v bool) {
	b.mu.Lock()
	b.noResponders = v
	b.mu.Unlock()
}

func (b *fakeBus) deliver(m *nats.Msg) {
	b.mu.Lock()
	var cb func(*nats.Msg)
	for pattern, c := range b.subs {
		if strings.HasSuffix(pattern, ">") && strings.HasPrefix(m.Subject, strings.TrimSuffix(pattern, ">")) {
			cb = c
		}
	}
	b.mu.Unlock()
	if cb == nil {
		return
	}
	b.cbMu.Lock()
	defer b.cbMu.Unlock()
	cb(m)
}

// reply answers the task message m with body and an optional outcome header.
func (b *fakeBus) reply(m *nats.Msg, body string, header ...string) {
	r := &nats.Msg{Subject: m.Reply, Data: []byte(body), Header: nats.Header{}}
	if len(header) > 0 {
		r.Header.Set("Pe-Outcome", header[0])
	}
	b.deliver(r)
}

// concurrency returns the finish/error and extend_lock calls open now and
// the most seen at once.
func (f *fakeEngine) concurrency() (inReport, maxReport, inExtend, maxExtend int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.inReport, f.maxReport, f.inExtend, f.maxExtend
}
