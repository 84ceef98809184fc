package forwarder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/events"
)

// Notifier waits for the next engine notification of one event name
// (GET /notifications/long_polling/<event>). *engine.Client satisfies it.
type Notifier interface {
	WaitForNotification(ctx context.Context, event string) (engine.EventMessage, error)
}

// Publisher sends one NATS message. *nats.Conn satisfies it.
type Publisher interface {
	PublishMsg(m *nats.Msg) error
}

// DefaultEvents are the notifications forwarded when Config.Events is empty.
var DefaultEvents = []string{
	"user_task_waiting", "user_task_finished", "user_task_reserved",
	"process_started", "process_ended", "process_error", "process_terminated",
}

// Defaults of Config.
const (
	DefaultSource      = "pe-bridge"
	DefaultMinBackoff  = 100 * time.Millisecond
	DefaultMaxBackoff  = 30 * time.Second
	DefaultPollTimeout = 2 * time.Minute
)

// HeaderMsgID is the NATS header JetStream de-duplicates on; it carries the
// CloudEvent id.
const HeaderMsgID = "Nats-Msg-Id"

// Config tunes the forwarder. Zero fields take the documented defaults.
type Config struct {
	// Events are the engine notification names to forward, each on
	// events.EventPrefix + name. Default DefaultEvents.
	Events []string
	// Source is the CloudEvent source. Default DefaultSource.
	Source string
	// MinBackoff and MaxBackoff bound the exponential, jittered wait after
	// an engine error (per event name). Defaults DefaultMinBackoff and
	// DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// PollTimeout bounds one long poll; when it runs out the poll is simply
	// re-issued (guards against connections that silently died). Default
	// DefaultPollTimeout.
	PollTimeout time.Duration
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
		if seen[name] {
			return fmt.Errorf("forwarder: event name %q listed twice", name)
		}
		seen[name] = true
	}
	if c.MinBackoff < 0 || c.MaxBackoff < 0 || c.PollTimeout < 0 {
		return errors.New("forwarder: negative duration")
	}
	if c.MinBackoff > 0 && c.MaxBackoff > 0 && c.MinBackoff > c.MaxBackoff {
		return fmt.Errorf("forwarder: MinBackoff %s is longer than MaxBackoff %s", c.MinBackoff, c.MaxBackoff)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if len(c.Events) == 0 {
		c.Events = DefaultEvents
	}
	c.Events = append([]string(nil), c.Events...)
	if c.Source == "" {
		c.Source = DefaultSource
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = max(DefaultMaxBackoff, c.MinBackoff)
	}
	if c.PollTimeout == 0 {
		c.PollTimeout = DefaultPollTimeout
	}
	return c
}

// Forwarder long-polls engine notifications and publishes each one as a
// CloudEvent. Create it with New, run it with Run.
type Forwarder struct {
	n   Notifier
	pub Publisher
	cfg Config
	log *slog.Logger
	now func() time.Time

	mu      sync.Mutex
	running bool
	closeCh chan struct{}
	once    sync.Once
	done    chan struct{}
}

// New builds a forwarder. n and pub are required; logger nil discards.
func New(n Notifier, pub Publisher, cfg Config, logger *slog.Logger) (*Forwarder, error) {
	if n == nil {
		return nil, errors.New("forwarder: nil notifier")
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
	return &Forwarder{
		n: n, pub: pub, cfg: cfg.withDefaults(), log: logger, now: time.Now,
		closeCh: make(chan struct{}), done: make(chan struct{}),
	}, nil
}

// Events returns the forwarded event names.
func (f *Forwarder) Events() []string { return append([]string(nil), f.cfg.Events...) }

// Run polls every configured event name in its own loop and publishes what
// arrives, until ctx is done or Close is called; it then cancels the polls
// at once and returns nil after every loop ended. Run may be called once.
func (f *Forwarder) Run(ctx context.Context) error {
	f.mu.Lock()
	if f.running {
		f.mu.Unlock()
		return errors.New("forwarder: Run called twice")
	}
	f.running = true
	f.mu.Unlock()
	defer close(f.done)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for _, name := range f.cfg.Events {
		wg.Go(func() { f.loop(ctx, name) })
	}
	select {
	case <-ctx.Done():
	case <-f.closeCh:
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

func (f *Forwarder) loop(ctx context.Context, name string) {
	backoff := f.cfg.MinBackoff
	for ctx.Err() == nil {
		pctx, cancel := context.WithTimeout(ctx, f.cfg.PollTimeout)
		msg, err := f.n.WaitForNotification(pctx, name)
		pollExpired := pctx.Err() != nil
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if pollExpired { // our own bound on one poll: ask again
				continue
			}
			wait := jitter(backoff)
			f.log.Warn("forwarder: waiting for engine notification", "event", name, "error", err, "retry_in", wait)
			if !sleep(ctx, wait) {
				return
			}
			backoff = min(backoff*2, f.cfg.MaxBackoff)
			continue
		}
		backoff = f.cfg.MinBackoff
		if empty(msg) { // a long poll the engine ended without an event
			continue
		}
		m, err := f.message(name, msg)
		if err != nil {
			f.log.Warn("forwarder: encoding event", "event", name, "error", err)
			continue
		}
		if err := f.pub.PublishMsg(m); err != nil {
			f.log.Warn("forwarder: publishing event", "event", name, "ce_id", m.Header.Get(events.HeaderID), "error", err)
			continue
		}
		f.log.Debug("forwarder: event published", "event", name, "ce_id", m.Header.Get(events.HeaderID),
			"process_instance_id", msg.ProcessInstanceID)
	}
}

// jitter returns d ± 20 %.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d - d/5 + time.Duration(rand.Int64N(int64(d)*2/5+1))
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func empty(m engine.EventMessage) bool {
	return m.ProcessInstanceID == "" && m.ProcessDefinitionID == "" && m.ProcessModelID == "" &&
		m.FlowNodeInstanceID == "" && m.CorrelationID == "" && m.ExternalTaskID == ""
}

// onceForFlowNode and onceForInstance are the events the engine emits at
// most once per flow node instance / process instance; their CloudEvent id
// is derived from that instance, so the same event polled by several
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

// Event builds the CloudEvent of notification name with payload m.
func Event(name, source string, m engine.EventMessage, now time.Time) (event.Event, error) {
	ev := event.New()
	ev.SetID(EventID(name, m))
	ev.SetType(events.EventType(name))
	ev.SetSource(source)
	ev.SetTime(now.UTC())
	switch {
	case m.FlowNodeInstanceID != "":
		ev.SetSubject(m.FlowNodeInstanceID)
	case m.ProcessInstanceID != "":
		ev.SetSubject(m.ProcessInstanceID)
	}
	for ext, v := range map[string]string{
		events.ExtProcessInstanceID:  m.ProcessInstanceID,
		events.ExtProcessModelID:     m.ProcessModelID,
		events.ExtCorrelationID:      m.CorrelationID,
		events.ExtFlowNodeInstanceID: m.FlowNodeInstanceID,
	} {
		if v != "" {
			ev.SetExtension(ext, v)
		}
	}
	data, err := json.Marshal(m)
	if err != nil {
		return ev, fmt.Errorf("forwarder: encoding %s payload: %w", name, err)
	}
	if err := ev.SetData(event.ApplicationJSON, data); err != nil {
		return ev, fmt.Errorf("forwarder: setting %s data: %w", name, err)
	}
	if err := ev.Validate(); err != nil {
		return ev, fmt.Errorf("forwarder: validating %s event: %w", name, err)
	}
	return ev, nil
}

// Message encodes ev in binary content mode: attributes as ce-* headers,
// the data as the body, the id also as Nats-Msg-Id.
func Message(subject string, ev event.Event) (*nats.Msg, error) {
	h := nats.Header{}
	h.Set(events.HeaderSpecVersion, ev.SpecVersion())
	h.Set(events.HeaderID, ev.ID())
	h.Set(events.HeaderType, ev.Type())
	h.Set(events.HeaderSource, ev.Source())
	if s := ev.Subject(); s != "" {
		h.Set(events.HeaderSubject, s)
	}
	if t := ev.Time(); !t.IsZero() {
		h.Set(events.HeaderTime, t.Format(time.RFC3339Nano))
	}
	for name, v := range ev.Extensions() {
		s, err := types.Format(v)
		if err != nil {
			return nil, fmt.Errorf("forwarder: formatting extension %s: %w", name, err)
		}
		h.Set(events.HeaderPrefix+name, s)
	}
	h.Set(events.HeaderDataContent, ev.DataContentType())
	h.Set(HeaderMsgID, ev.ID())
	return &nats.Msg{Subject: subject, Header: h, Data: ev.Data()}, nil
}

func (f *Forwarder) message(name string, m engine.EventMessage) (*nats.Msg, error) {
	ev, err := Event(name, f.cfg.Source, m, f.now())
	if err != nil {
		return nil, err
	}
	return Message(events.EventPrefix+name, ev)
}
