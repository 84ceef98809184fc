package forwarder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/bridge/forwarder/watermillce"
	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/events"
)

// DefaultEvents are the notifications forwarded when Config.Events is empty.
var DefaultEvents = []string{
	"user_task_waiting", "user_task_finished", "user_task_reserved",
	"process_started", "process_ended", "process_error", "process_terminated",
}

// GapEvent is the name of the event that announces a possible gap:
// published on events.EventPrefix+GapEvent (pe.event.gap).
const GapEvent = "gap"

// Gap reasons, the "reason" member of a gap event's data.
const (
	GapStart     = "start"          // the forwarder started: events before it are not forwarded
	GapReconnect = "reconnect"      // the engine feed reconnected after a loss of connection
	GapTakeover  = "takeover"       // this replica took over the lease from another one
	GapPublish   = "publish_failed" // events could not be published to NATS and were dropped
)

// Defaults of Config.
const (
	DefaultSource          = "pe-bridge"
	DefaultQueueSize       = 4096
	DefaultPublishAttempts = 10
)

// HeaderMsgID is the NATS header JetStream de-duplicates on; it carries the
// CloudEvent id.
const HeaderMsgID = watermillce.HeaderMsgID

// Leader says whether this replica is the one that publishes engine events
// (Lease implements it). Only the leader publishes, so N replicas publish
// each event once.
type Leader interface {
	Leading() bool
}

// acquirer is a Leader that announces when this replica became the leader
// (Lease does): a gap pending since the replica was a follower is then
// announced at once, not with the next engine event, which may be long.
type acquirer interface {
	Acquired() <-chan struct{}
}

// Config tunes the forwarder. Zero fields take the documented defaults.
type Config struct {
	// Events are the engine notification names to forward, each on
	// events.EventPrefix + name. Default DefaultEvents.
	Events []string
	// Source is the CloudEvent source. Default DefaultSource.
	Source string
	// QueueSize bounds the events received and not yet published; when it
	// is full the feed waits (backpressure). Default DefaultQueueSize.
	QueueSize int
	// PublishAttempts is how often one publish is tried (with backoff from
	// 50ms doubling to 1s: 10 attempts span about 5.5s, longer than a
	// JetStream leader election) before the event is dropped and a gap
	// announced. Default DefaultPublishAttempts.
	PublishAttempts int
	// OnDeploy, when set, is called (from one goroutine, coalesced) when
	// the engine reports process_deployed or an external_task_created for
	// a topic this forwarder has not seen yet: the task pump then re-reads
	// the deployed topics at once. Those two notifications are received for
	// it even when Events does not list them.
	OnDeploy func()
	// Observer receives measurements. Nil: none.
	Observer Observer
	// Leader, when set, gates publishing: events that arrive while
	// Leading() is false are not published. Nil: always publish.
	Leader Leader
	// DeployOnly forwards nothing: no event and no gap announcement is
	// published; the feed only receives what OnDeploy needs
	// (process_deployed, external_task_created), and each (re)connection of
	// the feed, after which a deployment may have been missed, also calls
	// OnDeploy. Events must be empty and OnDeploy set. For a bridge run without event forwarding that still
	// picks up new deployments at once.
	DeployOnly bool
}

// Validate reports unusable settings: event names must be non-empty NATS
// subject tokens (letters, digits, '_' and '-').
func (c Config) Validate() error {
	seen := map[string]bool{}
	for _, name := range c.Events {
		tok, err := events.TopicToken(name)
		if err != nil || tok != name {
			return fmt.Errorf("forwarder: event name %q is not a plain subject token", name)
		}
		if name == GapEvent {
			return fmt.Errorf("forwarder: event name %q is reserved for gap announcements", name)
		}
		if seen[name] {
			return fmt.Errorf("forwarder: event name %q listed twice", name)
		}
		seen[name] = true
	}
	if c.QueueSize < 0 || c.PublishAttempts < 0 {
		return errors.New("forwarder: negative QueueSize or PublishAttempts")
	}
	if c.DeployOnly && (len(c.Events) > 0 || c.OnDeploy == nil) {
		return errors.New("forwarder: DeployOnly needs an OnDeploy and no Events")
	}
	return nil
}

func (c Config) withDefaults() Config {
	if len(c.Events) == 0 && !c.DeployOnly {
		c.Events = DefaultEvents
	}
	c.Events = append([]string(nil), c.Events...)
	if c.Source == "" {
		c.Source = DefaultSource
	}
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.PublishAttempts == 0 {
		c.PublishAttempts = DefaultPublishAttempts
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	return c
}

type nopObserver struct{}

func (nopObserver) EventForwarded(string)       {}
func (nopObserver) EventDropped(string, string) {}
func (nopObserver) Gap()                        {}

// Forwarder receives engine notifications from a Feed and publishes each as
// a CloudEvent through a Watermill publisher. Create it with New, run it
// with Run.
type Forwarder struct {
	feed Feed
	pub  message.Publisher
	cfg  Config
	log  *slog.Logger
	now  func() time.Time

	forward map[string]bool
	queue   chan item
	deploy  chan struct{}

	topicsMu sync.Mutex
	topics   map[string]bool // topics seen in external_task_created

	// publisher state, owned by the publishing goroutine
	follower bool   // Leader said no since the last published event
	pendGap  string // a gap to announce before the next event ("" none)

	stopping chan struct{} // closed when Run begins to stop: no more publish retries

	upOnce sync.Once
	up     chan struct{} // closed when the feed first connected

	mu      sync.Mutex
	running bool
	closeCh chan struct{}
	once    sync.Once
	done    chan struct{}
}

type item struct {
	name string // "" for a gap
	m    engine.EventMessage
	body json.RawMessage
	gap  string
}

// New builds a forwarder. feed and pub are required; logger nil discards.
// The forwarder never closes pub (watermill-nats' Publisher.Close closes
// its NATS connection, which the bridge shares).
func New(feed Feed, pub message.Publisher, cfg Config, logger *slog.Logger) (*Forwarder, error) {
	if feed == nil {
		return nil, errors.New("forwarder: nil feed")
	}
	if pub == nil {
		return nil, errors.New("forwarder: nil publisher")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	cfg = cfg.withDefaults()
	f := &Forwarder{
		feed: feed, pub: pub, cfg: cfg, log: logger, now: time.Now,
		forward:  map[string]bool{},
		queue:    make(chan item, cfg.QueueSize),
		deploy:   make(chan struct{}, 1),
		topics:   map[string]bool{},
		stopping: make(chan struct{}), up: make(chan struct{}),
		closeCh: make(chan struct{}), done: make(chan struct{}),
	}
	for _, n := range cfg.Events {
		f.forward[n] = true
	}
	return f, nil
}

// FeedUp is closed once the engine event feed first connected (the Socket.IO
// namespace joined, or the first long poll answered): events the engine
// emits from then on reach NATS.
func (f *Forwarder) FeedUp() <-chan struct{} { return f.up }

// Events returns the forwarded event names.
func (f *Forwarder) Events() []string { return append([]string(nil), f.cfg.Events...) }

// subscribed are the names the feed listens to: the forwarded ones and,
// with OnDeploy, process_deployed and external_task_created.
func (f *Forwarder) subscribed() []string {
	names := append([]string(nil), f.cfg.Events...)
	if f.cfg.OnDeploy != nil {
		for _, n := range []string{"process_deployed", "external_task_created"} {
			if !f.forward[n] {
				names = append(names, n)
			}
		}
	}
	return names
}

// Run receives and publishes until ctx is done or Close is called; it then
// stops the feed at once, makes one publish attempt for each event already
// received and returns nil. Run may be called once.
func (f *Forwarder) Run(ctx context.Context) error {
	f.mu.Lock()
	if f.running {
		f.mu.Unlock()
		return errors.New("forwarder: Run called twice")
	}
	f.running = true
	f.mu.Unlock()
	defer close(f.done)

	feedCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	feedDone := make(chan struct{})
	wg.Go(func() {
		defer close(feedDone)
		if err := f.feed.Run(feedCtx, f.subscribed(), sink{f, feedCtx}); err != nil {
			f.log.Error("forwarder: engine event feed stopped", "error", err)
		}
	})
	pubDone := make(chan struct{})
	wg.Go(func() {
		defer close(pubDone)
		f.publishLoop(feedDone)
	})
	if f.cfg.OnDeploy != nil {
		wg.Go(func() {
			for {
				select {
				case <-feedCtx.Done():
					return
				case <-f.deploy:
					f.cfg.OnDeploy()
				}
			}
		})
	}
	select {
	case <-ctx.Done():
		close(f.stopping)
	case <-f.closeCh:
		close(f.stopping)
	case <-feedDone: // the feed gave up: publish what it delivered
	}
	cancel()
	wg.Wait()
	return nil
}

// Close stops a running forwarder and waits for Run to return. Idempotent;
// safe before Run.
func (f *Forwarder) Close() {
	f.once.Do(func() { close(f.closeCh) })
	f.mu.Lock()
	running := f.running
	f.mu.Unlock()
	if running {
		<-f.done
	}
}

// sink adapts the forwarder to the feed.
type sink struct {
	f   *Forwarder
	ctx context.Context
}

func (s sink) Event(name string, m engine.EventMessage, body json.RawMessage) {
	f := s.f
	if f.cfg.OnDeploy != nil {
		switch {
		case name == "process_deployed":
			f.kickDeploy()
		case name == "external_task_created" && m.Topic != "":
			f.topicsMu.Lock()
			fresh := !f.topics[m.Topic]
			f.topics[m.Topic] = true
			f.topicsMu.Unlock()
			if fresh {
				f.kickDeploy()
			}
		}
	}
	if !f.forward[name] {
		return
	}
	f.enqueue(s.ctx, item{name: name, m: m, body: body})
}

func (s sink) Connected(first bool) {
	s.f.upOnce.Do(func() { close(s.f.up) })
	// A deployment may have passed unseen before this connection: re-read
	// the topics (with OnDeploy; a no-op without).
	if s.f.cfg.OnDeploy != nil {
		s.f.kickDeploy()
	}
	if s.f.cfg.DeployOnly {
		return // nothing is published, so no gap is announced
	}
	reason := GapReconnect
	if first {
		reason = GapStart
	}
	s.f.enqueue(s.ctx, item{gap: reason})
}

func (f *Forwarder) enqueue(ctx context.Context, it item) {
	select {
	case f.queue <- it:
	case <-ctx.Done():
		if it.name != "" {
			f.cfg.Observer.EventDropped(it.name, "shutdown")
		}
	}
}

func (f *Forwarder) kickDeploy() {
	select {
	case f.deploy <- struct{}{}:
	default:
	}
}

// publishLoop publishes the queue in order until the feed ended and the
// queue is empty.
func (f *Forwarder) publishLoop(feedDone <-chan struct{}) {
	var acquired <-chan struct{}
	if a, ok := f.cfg.Leader.(acquirer); ok {
		acquired = a.Acquired()
	}
	for {
		select {
		case it := <-f.queue:
			f.handle(it)
		case <-acquired:
			f.tookLead()
		case <-feedDone:
			for {
				select {
				case it := <-f.queue:
					f.handle(it)
				default:
					return
				}
			}
		}
	}
}

func (f *Forwarder) handle(it item) {
	leading := f.cfg.Leader == nil || f.cfg.Leader.Leading()
	switch {
	case !leading:
		f.follower = true
	case f.follower: // this replica just took the lease over
		f.follower = false
		f.setGap(GapTakeover)
		f.cfg.Observer.Gap()
	}
	if it.gap != "" {
		if it.gap != GapStart {
			f.cfg.Observer.Gap()
		}
		f.setGap(it.gap)
	}
	if !leading {
		if it.gap == "" {
			f.log.Debug("forwarder: not the lease holder, event left to it", "event", it.name)
		}
		return
	}
	if f.pendGap != "" {
		f.flushGap()
	}
	if it.gap != "" {
		return
	}
	ev, err := Event(it.name, f.cfg.Source, it.m, it.body, f.now())
	if err != nil {
		f.cfg.Observer.EventDropped(it.name, "encode")
		f.log.Warn("forwarder: encoding event", "event", it.name, "error", err)
		return
	}
	if !f.publish(events.EventPrefix+it.name, ev) {
		f.cfg.Observer.EventDropped(it.name, "publish")
		f.setGap(GapPublish)
		return
	}
	f.cfg.Observer.EventForwarded(it.name)
	f.log.Debug("forwarder: event published", "event", it.name, "ce_id", ev.ID, "process_instance_id", it.m.ProcessInstanceID)
}

// tookLead announces, once this replica leads, the gap pending since it
// was a follower.
func (f *Forwarder) tookLead() {
	if !f.cfg.Leader.Leading() {
		return
	}
	if f.follower {
		f.follower = false
		f.setGap(GapTakeover)
		f.cfg.Observer.Gap()
	}
	if f.pendGap != "" {
		f.flushGap()
	}
}

// setGap records a gap to announce before the next event; a specific reason
// replaces a pending GapStart.
func (f *Forwarder) setGap(reason string) {
	if f.pendGap == "" || f.pendGap == GapStart {
		f.pendGap = reason
	}
}

func (f *Forwarder) flushGap() {
	ev := GapCloudEvent(f.cfg.Source, f.pendGap, f.now())
	if f.publish(events.EventPrefix+GapEvent, ev) {
		lvl := slog.LevelInfo
		if f.pendGap == GapStart {
			lvl = slog.LevelDebug
		}
		f.log.Log(context.Background(), lvl, "forwarder: announced a possible gap in engine events", "reason", f.pendGap, "ce_id", ev.ID)
		f.pendGap = ""
	}
}

// publish tries PublishAttempts times with backoff (the same ce-id each
// time, so a stream stores it once).
func (f *Forwarder) publish(subject string, ev *events.Event) bool {
	wait := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := f.pub.Publish(subject, watermillce.Message(ev))
		if err == nil {
			return true
		}
		// err.Error(), not err: slog formats an error value with %+v, and
		// Watermill's errors (github.com/pkg/errors) then print their stack.
		if errors.Is(err, nats.ErrMaxPayload) { // permanent: retrying cannot help
			f.log.Warn("forwarder: event cannot be published, dropped", "subject", subject, "ce_id", ev.ID, "error", err.Error())
			return false
		}
		if attempt >= f.cfg.PublishAttempts {
			f.log.Warn("forwarder: publishing event", "subject", subject, "ce_id", ev.ID, "attempts", attempt, "error", err.Error())
			return false
		}
		f.log.Debug("forwarder: publishing event, retrying", "subject", subject, "ce_id", ev.ID, "error", err.Error(), "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-f.stopping:
			t.Stop()
			return false
		}
		wait = min(wait*2, time.Second)
	}
}

// onceForFlowNode and onceForInstance are the events the engine emits at
// most once per flow node instance / process instance; their CloudEvent id
// is derived from that instance, so the same event received by several
// bridges (or twice) carries the same id. Other events get a random id.
var (
	onceForFlowNode = map[string]bool{
		"user_task_waiting": true, "user_task_finished": true,
		"manual_task_waiting": true, "manual_task_finished": true,
		"empty_activity_waiting": true, "empty_activity_finished": true,
		"untyped_task_waiting": true, "untyped_task_finished": true,
		"activity_reached": true, "activity_finished": true, "activity_canceled": true,
		"intermediate_catch_event_reached": true, "intermediate_catch_event_finished": true,
		"start_event_finished": true, "end_event_finished": true,
	}
	onceForInstance = map[string]bool{
		"process_started": true, "process_ended": true, "process_error": true, "process_terminated": true,
	}
)

// EventID is the CloudEvent id of notification name with payload m:
// "<name>/<flowNodeInstanceId>" or "<name>/<processInstanceId>" for events
// that happen once per such instance, "<name>/<externalTaskId>" for
// external_task_created, else a random UUID.
func EventID(name string, m engine.EventMessage) string {
	switch {
	case onceForFlowNode[name] && m.FlowNodeInstanceID != "":
		return name + "/" + m.FlowNodeInstanceID
	case onceForInstance[name] && m.ProcessInstanceID != "":
		return name + "/" + m.ProcessInstanceID
	case name == "external_task_created" && m.ExternalTaskID != "":
		return name + "/" + m.ExternalTaskID
	}
	return uuid.NewString()
}

// Event builds the CloudEvent of notification name with payload m; body is
// the data (the engine's message as JSON; nil: m encoded).
func Event(name, source string, m engine.EventMessage, body json.RawMessage, now time.Time) (*events.Event, error) {
	if body == nil {
		var err error
		if body, err = json.Marshal(m); err != nil {
			return nil, fmt.Errorf("forwarder: encoding %s payload: %w", name, err)
		}
	}
	ev := &events.Event{
		ID:              EventID(name, m),
		Type:            events.EventType(name),
		Source:          source,
		Time:            now.UTC(),
		DataContentType: events.ContentTypeJSON,
		Data:            body,
	}
	switch {
	case m.FlowNodeInstanceID != "":
		ev.Subject = m.FlowNodeInstanceID
	case m.ProcessInstanceID != "":
		ev.Subject = m.ProcessInstanceID
	}
	ev.SetExt(events.ExtProcessInstanceID, m.ProcessInstanceID)
	ev.SetExt(events.ExtProcessModelID, m.ProcessModelID)
	ev.SetExt(events.ExtCorrelationID, m.CorrelationID)
	ev.SetExt(events.ExtFlowNodeInstanceID, m.FlowNodeInstanceID)
	if err := ev.Validate(); err != nil {
		return nil, fmt.Errorf("forwarder: validating %s event: %w", name, err)
	}
	return ev, nil
}

// GapData is the data of a gap event.
type GapData struct {
	// Reason is GapStart, GapReconnect, GapTakeover or GapPublish.
	Reason string `json:"reason"`
}

// GapCloudEvent is the event announcing that engine events may be missing
// before it (type events.EventType(GapEvent), a fresh UUID as id).
func GapCloudEvent(source, reason string, now time.Time) *events.Event {
	data, _ := json.Marshal(GapData{Reason: reason})
	return &events.Event{
		ID: uuid.NewString(), Type: events.EventType(GapEvent), Source: source, Time: now.UTC(),
		DataContentType: events.ContentTypeJSON, Data: data,
	}
}
