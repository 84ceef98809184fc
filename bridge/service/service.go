package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/events"
)

// Headers that carry an end user's token. The token is forwarded to the
// engine instead of the bridge's own; it is never logged or echoed.
const (
	HeaderAuthorization = "Authorization" // "Bearer <token>"
	HeaderUserToken     = "Pe-User-Token" // "<token>"; wins over Authorization
	// HeaderRetryAfter is set on 503 replies of a busy bridge: whole seconds
	// after which the request may be tried again (as HTTP's Retry-After).
	HeaderRetryAfter = "Retry-After"
)

// Endpoint groups, for Config.RequireUserToken.
const (
	GroupProcess  = "process"  // pe.process.*
	GroupUserTask = "usertask" // pe.usertask.*
	GroupTrigger  = "trigger"  // pe.message.trigger, pe.signal.trigger
)

// Groups lists the endpoint groups.
var Groups = []string{GroupProcess, GroupUserTask, GroupTrigger}

// Defaults of Config.
const (
	DefaultVersion           = "0.0.0"
	DefaultDescription       = "pe-bridge: process start, user tasks, messages and signals of the ProcessCube engine"
	DefaultQueueGroup        = "pe-bridge"
	DefaultRequestTimeout    = 30 * time.Second
	DefaultStartTimeout      = 60 * time.Second
	DefaultMaxStartTimeout   = 10 * time.Minute
	DefaultMaxRequestBytes   = 1 << 20
	DefaultMaxInFlight       = 1000
	DefaultMaxBlockingStarts = 1000
	DefaultBusyRetryAfter    = time.Second
	DefaultShutdownGrace     = 5 * time.Second
)

// Config tunes the service. The zero value is valid: every zero field takes
// the default named in its comment.
type Config struct {
	// Version is the micro service version shown in $SRV.INFO. Default
	// DefaultVersion.
	Version string
	// Description shows in $SRV.INFO. Default DefaultDescription.
	Description string
	// Metadata is added to the micro service's metadata.
	Metadata map[string]string
	// QueueGroup is shared by every endpoint so several bridges share the
	// load. Default DefaultQueueGroup.
	QueueGroup string
	// RequestTimeout bounds every request except blocking starts. Default
	// DefaultRequestTimeout.
	RequestTimeout time.Duration
	// StartTimeout is the timeout of a blocking start (returnOn finished or
	// end_event) that names none. Default DefaultStartTimeout.
	StartTimeout time.Duration
	// MaxStartTimeout is the longest timeout a start request may ask for; a
	// longer one is a 400. Default DefaultMaxStartTimeout.
	MaxStartTimeout time.Duration
	// MaxRequestBytes bounds a request body; larger ones get 413. Default
	// DefaultMaxRequestBytes.
	MaxRequestBytes int
	// MaxInFlight bounds the requests other than blocking starts handled at
	// once; beyond it they get 503 with a retry hint at once. Default
	// DefaultMaxInFlight.
	MaxInFlight int
	// MaxBlockingStarts bounds the blocking starts (returnOn finished or
	// end_event) waiting at once, apart from MaxInFlight, so a flood of them
	// never starves the other requests; beyond it they get 503 with a retry
	// hint at once. Default DefaultMaxBlockingStarts.
	MaxBlockingStarts int
	// BusyRetryAfter is the retry hint of a 503 for a full limit (header
	// Retry-After in whole seconds, body member retryAfterMs). Default
	// DefaultBusyRetryAfter.
	BusyRetryAfter time.Duration
	// RequireUserToken lists the endpoint groups (GroupProcess,
	// GroupUserTask, GroupTrigger) whose requests must carry an end user's
	// token; without one they get 401 and never run as the bridge. Empty:
	// a request without a token runs with the bridge's own token.
	RequireUserToken []string
	// ShutdownGrace is how long Run waits, once stopped, for requests in
	// flight before cancelling them (they then get 503). Default
	// DefaultShutdownGrace.
	ShutdownGrace time.Duration
	// WithToken attaches an end user's bearer token to the context of the
	// engine calls of one request. Nil means engine.WithToken.
	WithToken func(ctx context.Context, token string) context.Context
	// Observer receives one call per answered request. Nil: none.
	Observer Observer
	// Tracer starts one span per request. Nil: no spans.
	Tracer Tracer
}

// Validate reports a negative duration or limit, or an unknown group in
// RequireUserToken.
func (c Config) Validate() error {
	for _, d := range []struct {
		name string
		d    time.Duration
	}{
		{"RequestTimeout", c.RequestTimeout}, {"StartTimeout", c.StartTimeout},
		{"MaxStartTimeout", c.MaxStartTimeout}, {"ShutdownGrace", c.ShutdownGrace}, {"BusyRetryAfter", c.BusyRetryAfter},
	} {
		if d.d < 0 {
			return fmt.Errorf("service: %s %s is negative", d.name, d.d)
		}
	}
	for _, n := range []struct {
		name string
		n    int
	}{
		{"MaxRequestBytes", c.MaxRequestBytes}, {"MaxInFlight", c.MaxInFlight}, {"MaxBlockingStarts", c.MaxBlockingStarts},
	} {
		if n.n < 0 {
			return fmt.Errorf("service: %s %d is negative", n.name, n.n)
		}
	}
	if c.StartTimeout > 0 && c.MaxStartTimeout > 0 && c.StartTimeout > c.MaxStartTimeout {
		return fmt.Errorf("service: StartTimeout %s is longer than MaxStartTimeout %s", c.StartTimeout, c.MaxStartTimeout)
	}
	for _, g := range c.RequireUserToken {
		if !slices.Contains(Groups, g) {
			return fmt.Errorf("service: RequireUserToken: unknown endpoint group %q (want %s)", g, strings.Join(Groups, ", "))
		}
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Version == "" {
		c.Version = DefaultVersion
	}
	if c.Description == "" {
		c.Description = DefaultDescription
	}
	if c.QueueGroup == "" {
		c.QueueGroup = DefaultQueueGroup
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.MaxStartTimeout == 0 {
		c.MaxStartTimeout = DefaultMaxStartTimeout
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = min(DefaultStartTimeout, c.MaxStartTimeout)
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.MaxBlockingStarts == 0 {
		c.MaxBlockingStarts = DefaultMaxBlockingStarts
	}
	if c.BusyRetryAfter == 0 {
		c.BusyRetryAfter = DefaultBusyRetryAfter
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = DefaultShutdownGrace
	}
	if c.WithToken == nil {
		c.WithToken = defaultWithToken
	}
	return c
}

// Service is the pe-bridge NATS micro service. Create it with New, serve
// with Run.
type Service struct {
	nc  *nats.Conn
	eng Engine
	cfg Config
	log *slog.Logger
	id  string // micro service instance id

	endpoints []*endpoint
	byName    map[string]*endpoint
	sem       chan struct{} // Config.MaxInFlight
	blockSem  chan struct{} // Config.MaxBlockingStarts

	baseCtx    context.Context // cancelled when the shutdown grace ran out
	cancelBase context.CancelFunc

	mu       sync.Mutex
	running  bool
	closing  bool // no new requests are accepted
	started  time.Time
	inflight sync.WaitGroup

	ready     chan struct{}
	closeCh   chan struct{}
	closeOnce sync.Once
	done      chan struct{} // closed when Run returned
}

type endpoint struct {
	name, subject, description string
	group                      string // GroupProcess, GroupUserTask or GroupTrigger
	needsToken                 bool   // the group is in Config.RequireUserToken
	// fn handles one request. ownTimeout endpoints set their own deadline;
	// the others run under Config.RequestTimeout.
	fn         func(ctx context.Context, data []byte) (any, error)
	ownTimeout bool
	// blocking reports whether a request is a blocking start (limited by
	// Config.MaxBlockingStarts instead of Config.MaxInFlight). Nil: never.
	blocking func(data []byte) bool

	inFlight atomic.Int64
	stats    endpointStats
}

// endpointStats are the real figures of $SRV.STATS: every answered request
// counts, from its arrival to its reply being sent; every error reply is an
// error.
type endpointStats struct {
	mu             sync.Mutex
	requests       int
	errors         int
	lastError      string
	processingTime time.Duration
}

func (st *endpointStats) record(d time.Duration, e *Error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.requests++
	st.processingTime += d
	if e != nil {
		st.errors++
		st.lastError = strconv.Itoa(e.Code) + " " + e.Message
	}
}

// New builds the service. nc and eng are required; logger nil discards.
func New(nc *nats.Conn, eng Engine, cfg Config, logger *slog.Logger) (*Service, error) {
	if nc == nil {
		return nil, errors.New("service: nil NATS connection")
	}
	if eng == nil {
		return nil, errors.New("service: nil engine")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	cfg = cfg.withDefaults()
	s := &Service{
		nc:       nc,
		eng:      eng,
		cfg:      cfg,
		log:      logger,
		id:       newServiceID(),
		sem:      make(chan struct{}, cfg.MaxInFlight),
		blockSem: make(chan struct{}, cfg.MaxBlockingStarts),
		byName:   map[string]*endpoint{},
		ready:    make(chan struct{}),
		closeCh:  make(chan struct{}),
		done:     make(chan struct{}),
	}
	s.baseCtx, s.cancelBase = context.WithCancel(context.Background())
	s.endpoints = []*endpoint{
		{name: "process_start", subject: events.SubjectProcessStart, group: GroupProcess, fn: s.processStart, ownTimeout: true,
			blocking:    isBlockingStart,
			description: "start a process instance; returnOn created | finished | end_event"},
		{name: "process_terminate", subject: events.SubjectProcessTerminate, group: GroupProcess, fn: s.processTerminate,
			description: "terminate a process instance"},
		{name: "process_get", subject: events.SubjectProcessGet, group: GroupProcess, fn: s.processGet,
			description: "get one process instance"},
		{name: "process_query", subject: events.SubjectProcessQuery, group: GroupProcess, fn: s.processQuery,
			description: "query process instances"},
		{name: "usertask_list", subject: events.SubjectUserTaskList, group: GroupUserTask, fn: s.userTaskList,
			description: "list user tasks (default: waiting ones)"},
		{name: "usertask_get", subject: events.SubjectUserTaskGet, group: GroupUserTask, fn: s.userTaskGet,
			description: "get one user task"},
		{name: "usertask_reserve", subject: events.SubjectUserTaskReserve, group: GroupUserTask, fn: s.userTaskReserve,
			description: "reserve a user task for an owner"},
		{name: "usertask_cancel_reservation", subject: events.SubjectUserTaskCancelReserve, group: GroupUserTask, fn: s.userTaskCancelReservation,
			description: "cancel a user task reservation"},
		{name: "usertask_finish", subject: events.SubjectUserTaskFinish, group: GroupUserTask, fn: s.userTaskFinish,
			description: "finish a user task with a result"},
		{name: "message_trigger", subject: events.SubjectMessageTrigger, group: GroupTrigger, fn: s.messageTrigger,
			description: "trigger a BPMN message"},
		{name: "signal_trigger", subject: events.SubjectSignalTrigger, group: GroupTrigger, fn: s.signalTrigger,
			description: "trigger a BPMN signal"},
	}
	for _, ep := range s.endpoints {
		ep.needsToken = slices.Contains(cfg.RequireUserToken, ep.group)
		s.byName[ep.name] = ep
	}
	return s, nil
}

// Subjects lists the subjects the service answers on, in registration order.
func (s *Service) Subjects() []string {
	out := make([]string, len(s.endpoints))
	for i, ep := range s.endpoints {
		out[i] = ep.subject
	}
	return out
}

// Ready is closed once the service's subscriptions are in place.
func (s *Service) Ready() <-chan struct{} { return s.ready }

// Run subscribes the endpoints (queue group Config.QueueGroup) and the micro
// discovery subjects ($SRV.PING|INFO|STATS), serves until ctx is done or
// Close is called, then stops taking requests, waits up to
// Config.ShutdownGrace for requests in flight and cancels the rest. It
// returns nil after a clean stop.
func (s *Service) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("service: Run called twice")
	}
	s.running = true
	s.started = time.Now().UTC()
	s.mu.Unlock()
	defer close(s.done)
	defer s.cancelBase()

	var subs []*nats.Subscription
	for _, ep := range s.endpoints {
		sub, err := s.nc.QueueSubscribe(ep.subject, s.cfg.QueueGroup, func(m *nats.Msg) { s.onRequest(ep, m) })
		if err != nil {
			unsubscribeAll(subs)
			return fmt.Errorf("service: subscribing to %s: %w", ep.subject, err)
		}
		subs = append(subs, sub)
	}
	vsubs, err := s.subscribeDiscovery()
	subs = append(subs, vsubs...)
	if err != nil {
		unsubscribeAll(subs)
		return err
	}
	if err := s.nc.Flush(); err != nil {
		unsubscribeAll(subs)
		return fmt.Errorf("service: flushing subscriptions: %w", err)
	}
	if err := s.refusedSubscription(subs); err != nil {
		unsubscribeAll(subs)
		return err
	}
	close(s.ready)
	s.log.Info("service running", "service", events.ServiceName, "queue_group", s.cfg.QueueGroup, "endpoints", len(s.endpoints),
		"max_in_flight", s.cfg.MaxInFlight, "max_blocking_starts", s.cfg.MaxBlockingStarts,
		"require_user_token", strings.Join(s.cfg.RequireUserToken, ","))

	select {
	case <-ctx.Done():
	case <-s.closeCh:
	}
	return s.shutdown(subs)
}

// refusedSubscription reports a subscription of subs the server refused
// for lack of permissions: the server says so asynchronously, and Flush
// has made sure the answer to every subscription arrived.
func (s *Service) refusedSubscription(subs []*nats.Subscription) error {
	err := s.nc.LastError()
	if err == nil || !errors.Is(err, nats.ErrPermissionViolation) {
		return nil
	}
	for _, sub := range subs {
		if strings.Contains(err.Error(), `"`+sub.Subject+`"`) {
			return fmt.Errorf("service: subscribing to %s (queue group %q): %w", sub.Subject, sub.Queue, err)
		}
	}
	return nil
}

func unsubscribeAll(subs []*nats.Subscription) {
	for _, sub := range subs {
		_ = sub.Unsubscribe()
	}
}

func (s *Service) shutdown(subs []*nats.Subscription) error {
	var stopErr error
	for _, sub := range subs {
		// Drain: requests the server already sent are still answered (503).
		if err := sub.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && stopErr == nil {
			stopErr = err
		}
	}
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()

	drained := make(chan struct{})
	go func() {
		s.inflight.Wait()
		close(drained)
	}()
	timer := time.NewTimer(s.cfg.ShutdownGrace)
	defer timer.Stop()
	select {
	case <-drained:
	case <-timer.C:
		s.log.Warn("service: cancelling requests still in flight after the shutdown grace")
		s.cancelBase()
		<-drained
	}
	if stopErr != nil {
		return fmt.Errorf("service: unsubscribing: %w", stopErr)
	}
	return nil
}

// Close stops a running service as if Run's context was cancelled and waits
// for Run to return. It is idempotent and safe before Run.
func (s *Service) Close() {
	s.closeOnce.Do(func() { close(s.closeCh) })
	s.mu.Lock()
	running := s.running
	s.closing = true
	s.mu.Unlock()
	if running {
		<-s.done
	}
}

// onRequest receives the requests of ep, one at a time (NATS calls a
// subscription's handler serially). Cheap checks (size, token, limits) are
// answered here; the request itself runs in a goroutine of its own, bounded
// by Config.MaxInFlight or Config.MaxBlockingStarts, which answers on the
// request's reply subject.
func (s *Service) onRequest(ep *endpoint, m *nats.Msg) {
	start := time.Now()
	if m.Reply == "" {
		s.log.Debug("service: dropping request without reply subject", "subject", ep.subject)
		return
	}
	ctx, end := s.baseCtx, func(int) {}
	if s.cfg.Tracer != nil {
		ctx, end = s.cfg.Tracer.StartRequest(ctx, ep.name, m.Header)
	}
	a := answer{ep: ep, reply: m.Reply, start: start, end: end}
	if len(m.Data) > s.cfg.MaxRequestBytes {
		s.finish(a, nil, &Error{Code: CodeTooLarge,
			Message: fmt.Sprintf("request of %d bytes is larger than the limit of %d", len(m.Data), s.cfg.MaxRequestBytes)})
		return
	}
	token, terr := userToken(m.Header)
	if terr == nil && token == "" && ep.needsToken {
		terr = &Error{Code: CodeUnauthorized, Field: HeaderUserToken,
			Message: fmt.Sprintf("%s requires the end user's token (header %s: <token> or %s: Bearer <token>)", ep.subject, HeaderUserToken, HeaderAuthorization)}
	}
	if terr != nil {
		s.finish(a, nil, terr)
		return
	}
	if token != "" {
		ctx = s.cfg.WithToken(ctx, token)
	}
	sem, limit, what := s.sem, s.cfg.MaxInFlight, "requests"
	if ep.blocking != nil && ep.blocking(m.Data) {
		sem, limit, what = s.blockSem, s.cfg.MaxBlockingStarts, "blocking starts"
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		s.finish(a, nil, &Error{Code: CodeUnavailable, Message: "the bridge is stopping"})
		return
	}
	select {
	case sem <- struct{}{}:
	default:
		s.mu.Unlock()
		s.finish(a, nil, &Error{Code: CodeUnavailable, RetryAfterMs: s.cfg.BusyRetryAfter.Milliseconds(),
			Message: fmt.Sprintf("too many %s in flight (limit %d); retry after %s", what, limit, s.cfg.BusyRetryAfter)})
		return
	}
	s.inflight.Add(1)
	s.mu.Unlock()
	go s.serve(ctx, a, sem, m.Data)
}

// answer is what finish needs to reply to one request and account for it.
type answer struct {
	ep    *endpoint
	reply string
	start time.Time
	end   func(code int) // the Tracer's
}

func (s *Service) serve(ctx context.Context, a answer, sem chan struct{}, data []byte) {
	defer s.inflight.Done()
	defer func() { <-sem }()
	a.ep.inFlight.Add(1)
	defer a.ep.inFlight.Add(-1)

	result, err := s.call(ctx, a.ep, data)
	if err != nil {
		s.finish(a, nil, err)
		return
	}
	s.finish(a, result, nil)
}

// call runs ep.fn, turning a panic into a 500.
func (s *Service) call(ctx context.Context, ep *endpoint, data []byte) (result any, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("service: panic handling request", "subject", ep.subject, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			result, err = nil, &Error{Code: CodeInternal, Message: "internal error"}
		}
	}()
	if !ep.ownTimeout {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.RequestTimeout)
		defer cancel()
	}
	result, err = ep.fn(ctx, data)
	return result, deadlineError(ctx, err)
}

// finish sends the reply of one request (result, or the error cause mapped
// to a service error), then accounts for it: $SRV.STATS, the Observer, the
// Tracer's end and a log line for errors. It is the only place that
// replies.
func (s *Service) finish(a answer, result any, cause error) {
	var e *Error
	msg := &nats.Msg{Subject: a.reply, Header: nats.Header{contentTypeHeader: []string{contentTypeJSON}}}
	if cause == nil {
		b, err := json.Marshal(result)
		if err != nil {
			cause = err
			e = &Error{Code: CodeInternal, Message: "encoding the reply"}
		} else {
			msg.Data = b
		}
	} else {
		e = mapError(cause)
	}
	code := 200
	if e != nil {
		code = e.Code
		b, err := json.Marshal(ErrorReply{Error: e})
		if err != nil { // cannot happen: Error holds only strings, ints and valid raw JSON
			b = []byte(`{"error":{"code":500,"message":"internal error"}}`)
		}
		msg.Data = b
		msg.Header.Set(headerServiceError, headerSafe(e.Message))
		msg.Header.Set(headerServiceCode, strconv.Itoa(e.Code))
		if e.RetryAfterMs > 0 {
			msg.Header.Set(HeaderRetryAfter, strconv.FormatInt(max(1, (e.RetryAfterMs+999)/1000), 10))
		}
	}
	if perr := s.nc.PublishMsg(msg); perr != nil {
		s.log.Warn("service: sending reply", "subject", a.ep.subject, "error", perr)
	}
	d := time.Since(a.start)
	a.ep.stats.record(d, e)
	if s.cfg.Observer != nil {
		s.cfg.Observer.Request(a.ep.name, code, d)
	}
	a.end(code)
	if e == nil {
		return
	}
	attrs := []any{"subject", a.ep.subject, "code", e.Code, "message", e.Message}
	if e.Field != "" {
		attrs = append(attrs, "field", e.Field)
	}
	if cause != nil && cause != error(e) {
		attrs = append(attrs, "error", cause.Error())
	}
	if e.Code >= 500 {
		s.log.Warn("service: request failed", attrs...)
	} else {
		s.log.Debug("service: request rejected", attrs...)
	}
}

// headerSafe removes the bytes a NATS header value must not contain.
func headerSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r < 0x20 && r != '\t' {
			return ' '
		}
		return r
	}, s)
}
