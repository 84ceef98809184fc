package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/pe-bridge/pe-bridge/events"
)

// Headers that carry an end user's token. The token is forwarded to the
// engine instead of the bridge's own; it is never logged or echoed.
const (
	HeaderAuthorization = "Authorization" // "Bearer <token>"
	HeaderUserToken     = "Pe-User-Token" // "<token>"; wins over Authorization
)

// Defaults of Config.
const (
	DefaultVersion         = "0.0.0"
	DefaultDescription     = "pe-bridge: process start, user tasks, messages and signals of the ProcessCube engine"
	DefaultQueueGroup      = "pe-bridge"
	DefaultRequestTimeout  = 30 * time.Second
	DefaultStartTimeout    = 60 * time.Second
	DefaultMaxStartTimeout = 10 * time.Minute
	DefaultMaxRequestBytes = 1 << 20
	DefaultMaxInFlight     = 10000
	DefaultShutdownGrace   = 5 * time.Second
)

// Config tunes the service. The zero value is valid: every zero field takes
// the default named in its comment.
type Config struct {
	// Version is the micro service version (semver). Default DefaultVersion.
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
	// MaxInFlight bounds the requests handled at once over all endpoints
	// (blocking starts included); beyond it requests get 503 at once.
	// Default DefaultMaxInFlight.
	MaxInFlight int
	// ShutdownGrace is how long Run waits, once stopped, for requests in
	// flight before cancelling them (they then get 503). Default
	// DefaultShutdownGrace.
	ShutdownGrace time.Duration
	// WithToken attaches an end user's bearer token to the context of the
	// engine calls of one request. Nil means engine.WithToken.
	WithToken func(ctx context.Context, token string) context.Context
}

// Validate reports a negative duration or limit.
func (c Config) Validate() error {
	for name, d := range map[string]time.Duration{
		"RequestTimeout": c.RequestTimeout, "StartTimeout": c.StartTimeout,
		"MaxStartTimeout": c.MaxStartTimeout, "ShutdownGrace": c.ShutdownGrace,
	} {
		if d < 0 {
			return fmt.Errorf("service: %s %s is negative", name, d)
		}
	}
	if c.MaxRequestBytes < 0 {
		return fmt.Errorf("service: MaxRequestBytes %d is negative", c.MaxRequestBytes)
	}
	if c.MaxInFlight < 0 {
		return fmt.Errorf("service: MaxInFlight %d is negative", c.MaxInFlight)
	}
	if c.StartTimeout > 0 && c.MaxStartTimeout > 0 && c.StartTimeout > c.MaxStartTimeout {
		return fmt.Errorf("service: StartTimeout %s is longer than MaxStartTimeout %s", c.StartTimeout, c.MaxStartTimeout)
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

	endpoints []*endpoint
	byName    map[string]*endpoint
	sem       chan struct{}

	baseCtx    context.Context // cancelled when the shutdown grace ran out
	cancelBase context.CancelFunc

	mu       sync.Mutex
	running  bool
	closing  bool // no new requests are accepted
	inflight sync.WaitGroup

	ready     chan struct{}
	closeCh   chan struct{}
	closeOnce sync.Once
	done      chan struct{} // closed when Run returned
}

type endpoint struct {
	name, subject, description string
	// fn handles one request. ownTimeout endpoints set their own deadline;
	// the others run under Config.RequestTimeout.
	fn         func(ctx context.Context, data []byte) (any, error)
	ownTimeout bool

	inFlight  atomic.Int64
	errors    atomic.Int64
	lastError atomic.Pointer[string]
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
		nc:      nc,
		eng:     eng,
		cfg:     cfg,
		log:     logger,
		sem:     make(chan struct{}, cfg.MaxInFlight),
		byName:  map[string]*endpoint{},
		ready:   make(chan struct{}),
		closeCh: make(chan struct{}),
		done:    make(chan struct{}),
	}
	s.baseCtx, s.cancelBase = context.WithCancel(context.Background())
	s.endpoints = []*endpoint{
		{name: "process_start", subject: events.SubjectProcessStart, fn: s.processStart, ownTimeout: true,
			description: "start a process instance; returnOn created | finished | end_event"},
		{name: "process_terminate", subject: events.SubjectProcessTerminate, fn: s.processTerminate,
			description: "terminate a process instance"},
		{name: "process_get", subject: events.SubjectProcessGet, fn: s.processGet,
			description: "get one process instance"},
		{name: "process_query", subject: events.SubjectProcessQuery, fn: s.processQuery,
			description: "query process instances"},
		{name: "usertask_list", subject: events.SubjectUserTaskList, fn: s.userTaskList,
			description: "list user tasks (default: waiting ones)"},
		{name: "usertask_get", subject: events.SubjectUserTaskGet, fn: s.userTaskGet,
			description: "get one user task"},
		{name: "usertask_reserve", subject: events.SubjectUserTaskReserve, fn: s.userTaskReserve,
			description: "reserve a user task for an owner"},
		{name: "usertask_cancel_reservation", subject: events.SubjectUserTaskCancelReserve, fn: s.userTaskCancelReservation,
			description: "cancel a user task reservation"},
		{name: "usertask_finish", subject: events.SubjectUserTaskFinish, fn: s.userTaskFinish,
			description: "finish a user task with a result"},
		{name: "message_trigger", subject: events.SubjectMessageTrigger, fn: s.messageTrigger,
			description: "trigger a BPMN message"},
		{name: "signal_trigger", subject: events.SubjectSignalTrigger, fn: s.signalTrigger,
			description: "trigger a BPMN signal"},
	}
	for _, ep := range s.endpoints {
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

// Ready is closed once Run has subscribed every endpoint and flushed the
// subscriptions to the server.
func (s *Service) Ready() <-chan struct{} { return s.ready }

// Run registers the micro service and its endpoints, serves until ctx is
// done or Close is called, then stops the service: it unsubscribes, waits up
// to Config.ShutdownGrace for requests in flight, cancels the rest (they get
// 503) and waits for them. It returns nil on cancellation; Run may be called
// once.
func (s *Service) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("service: Run called twice")
	}
	s.running = true
	s.mu.Unlock()
	defer close(s.done)
	defer s.cancelBase()

	svc, err := micro.AddService(s.nc, micro.Config{
		Name:         events.ServiceName,
		Version:      s.cfg.Version,
		Description:  s.cfg.Description,
		Metadata:     s.cfg.Metadata,
		QueueGroup:   s.cfg.QueueGroup,
		StatsHandler: s.statsData,
		ErrorHandler: func(_ micro.Service, e *micro.NATSError) {
			s.log.Warn("service subscription error", "subject", e.Subject, "error", e.Description)
		},
	})
	if err != nil {
		return fmt.Errorf("service: adding micro service: %w", err)
	}
	for _, ep := range s.endpoints {
		err := svc.AddEndpoint(ep.name, s.handler(ep),
			micro.WithEndpointSubject(ep.subject),
			micro.WithEndpointMetadata(map[string]string{"description": ep.description}))
		if err != nil {
			_ = svc.Stop()
			return fmt.Errorf("service: adding endpoint %s: %w", ep.subject, err)
		}
	}
	if err := s.nc.Flush(); err != nil {
		_ = svc.Stop()
		return fmt.Errorf("service: flushing subscriptions: %w", err)
	}
	close(s.ready)
	s.log.Info("service running", "service", events.ServiceName, "queue_group", s.cfg.QueueGroup, "endpoints", len(s.endpoints))

	select {
	case <-ctx.Done():
	case <-s.closeCh:
	}
	return s.shutdown(svc)
}

func (s *Service) shutdown(svc micro.Service) error {
	stopErr := svc.Stop()
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
	if stopErr != nil && !errors.Is(stopErr, nats.ErrConnectionClosed) {
		return fmt.Errorf("service: stopping micro service: %w", stopErr)
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

// handler is the micro handler of ep. micro calls handlers one at a time
// per subscription, so each request runs in its own goroutine, bounded by
// Config.MaxInFlight; the goroutine answers on the request's reply subject
// itself.
func (s *Service) handler(ep *endpoint) micro.Handler {
	return micro.HandlerFunc(func(req micro.Request) {
		reply := req.Reply()
		if reply == "" {
			s.log.Debug("service: dropping request without reply subject", "subject", ep.subject)
			return
		}
		data := req.Data()
		hdr := nats.Header(req.Headers())
		if len(data) > s.cfg.MaxRequestBytes {
			s.respondError(ep, reply, &Error{Code: CodeTooLarge,
				Message: fmt.Sprintf("request of %d bytes is larger than the limit of %d", len(data), s.cfg.MaxRequestBytes)}, nil)
			return
		}
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			s.respondError(ep, reply, &Error{Code: CodeUnavailable, Message: "the bridge is stopping"}, nil)
			return
		}
		select {
		case s.sem <- struct{}{}:
		default:
			s.mu.Unlock()
			s.respondError(ep, reply, &Error{Code: CodeUnavailable,
				Message: fmt.Sprintf("too many requests in flight (limit %d)", s.cfg.MaxInFlight)}, nil)
			return
		}
		s.inflight.Add(1)
		s.mu.Unlock()
		go s.serve(ep, reply, data, hdr)
	})
}

func (s *Service) serve(ep *endpoint, reply string, data []byte, hdr nats.Header) {
	defer s.inflight.Done()
	defer func() { <-s.sem }()
	ep.inFlight.Add(1)
	defer ep.inFlight.Add(-1)

	result, err := s.call(ep, data, hdr)
	if err != nil {
		s.respondError(ep, reply, mapError(err), err)
		return
	}
	b, merr := json.Marshal(result)
	if merr != nil {
		s.respondError(ep, reply, &Error{Code: CodeInternal, Message: "encoding the reply"}, merr)
		return
	}
	msg := &nats.Msg{Subject: reply, Data: b, Header: nats.Header{contentTypeHeader: []string{contentTypeJSON}}}
	if perr := s.nc.PublishMsg(msg); perr != nil {
		s.log.Warn("service: sending reply", "subject", ep.subject, "error", perr)
	}
}

// call runs ep.fn with the request's context, turning a panic into a 500.
func (s *Service) call(ep *endpoint, data []byte, hdr nats.Header) (result any, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("service: panic handling request", "subject", ep.subject, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			result, err = nil, &Error{Code: CodeInternal, Message: "internal error"}
		}
	}()
	ctx := s.baseCtx
	token, terr := userToken(hdr)
	if terr != nil {
		return nil, terr
	}
	if token != "" {
		ctx = s.cfg.WithToken(ctx, token)
	}
	if !ep.ownTimeout {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.RequestTimeout)
		defer cancel()
	}
	result, err = ep.fn(ctx, data)
	return result, deadlineError(ctx, err)
}

// userToken reads the end user's token from the request headers. Header
// names match case-insensitively.
func userToken(h nats.Header) (string, *Error) {
	if v := headerValue(h, HeaderUserToken); v != "" {
		return strings.TrimSpace(v), nil
	}
	v := strings.TrimSpace(headerValue(h, HeaderAuthorization))
	if v == "" {
		return "", nil
	}
	scheme, tok, ok := strings.Cut(v, " ")
	tok = strings.TrimSpace(tok)
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return "", &Error{Code: CodeUnauthorized, Field: HeaderAuthorization,
			Message: `the Authorization header must read "Bearer <token>"`}
	}
	return tok, nil
}

func headerValue(h nats.Header, name string) string {
	if v := h.Get(name); v != "" {
		return v
	}
	for k, vs := range h {
		if strings.EqualFold(k, name) && len(vs) > 0 {
			return vs[0]
		}
	}
	return ""
}

// respondError sends e; cause (may be nil) is only logged.
func (s *Service) respondError(ep *endpoint, reply string, e *Error, cause error) {
	ep.errors.Add(1)
	last := strconv.Itoa(e.Code) + " " + e.Message
	ep.lastError.Store(&last)
	b, err := json.Marshal(ErrorReply{Error: e})
	if err != nil { // cannot happen: Error holds only strings, ints and valid raw JSON
		b = []byte(`{"error":{"code":500,"message":"internal error"}}`)
	}
	msg := &nats.Msg{
		Subject: reply,
		Data:    b,
		Header: nats.Header{
			headerServiceError: []string{headerSafe(e.Message)},
			headerServiceCode:  []string{strconv.Itoa(e.Code)},
			contentTypeHeader:  []string{contentTypeJSON},
		},
	}
	if perr := s.nc.PublishMsg(msg); perr != nil {
		s.log.Warn("service: sending error reply", "subject", ep.subject, "error", perr)
	}
	attrs := []any{"subject", ep.subject, "code", e.Code, "message", e.Message}
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

// statsData is the endpoint's "data" in $SRV.STATS: the service answers from
// its own goroutines, so micro's error counters stay 0; these are the real ones.
func (s *Service) statsData(e *micro.Endpoint) any {
	ep, ok := s.byName[e.Name]
	if !ok {
		return nil
	}
	st := struct {
		InFlight  int64  `json:"inFlight"`
		Errors    int64  `json:"errors"`
		LastError string `json:"lastError,omitempty"`
	}{InFlight: ep.inFlight.Load(), Errors: ep.errors.Load()}
	if p := ep.lastError.Load(); p != nil {
		st.LastError = *p
	}
	return st
}
