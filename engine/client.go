package engine

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
)

// Limits of the client.
const (
	// DefaultRequestTimeout bounds every call that is not a long poll or a
	// blocking process start.
	DefaultRequestTimeout = 30 * time.Second
	// MaxResponseSize is the largest response body the client reads.
	MaxResponseSize = 64 << 20
	// maxErrorBody is how much of an error body is read and decoded.
	maxErrorBody = 1 << 20
	// maxRawMessage is how much of a body that is not a BaseError is kept.
	maxRawMessage = 512
	// maxDrain is how much of an unread body is drained to keep the
	// connection alive.
	maxDrain = 64 << 10
)

// ClientConfig tunes a Client. The zero value is usable (dummy token, 30 s
// request timeout, dedicated HTTP client).
type ClientConfig struct {
	// HTTPClient sends the requests. nil: a dedicated client with keep-alives
	// and up to MaxIdleConnsPerHost idle connections per host. A client's
	// Timeout, if set, applies on top of the per-call timeouts and must exceed
	// the longest long poll; leave it zero.
	HTTPClient *http.Client
	// MaxIdleConnsPerHost is how many idle keep-alive connections the
	// dedicated HTTP client keeps to the engine (ignored with HTTPClient).
	// Callers that bound their concurrent calls (the bridge's task pump:
	// report + extend concurrency, plus one long poll per topic) should set it
	// at least that high, so every call reuses a connection instead of
	// dialling a new one. The number of open connections is not capped: long
	// polls must never wait for a connection. Default 256.
	MaxIdleConnsPerHost int
	// TLSConfig verifies an https engine with the dedicated HTTP client
	// (ignored with HTTPClient). nil: the system's roots.
	TLSConfig *tls.Config
	// TokenSource yields the bearer token of every call. nil: the dummy token
	// (development engines with anonymous root access only). When it
	// implements TokenRefresher (ClientCredentials does), a 401 whose message
	// contains "expired" makes the client fetch a fresh token and retry the
	// call once.
	TokenSource oauth2.TokenSource
	// RequestTimeout bounds each call except the long polls (FetchAndLock
	// gets LongPollingTimeout + RequestTimeout, WaitForNotification and
	// blocking StartProcess only the caller's context). Default 30 s.
	RequestTimeout time.Duration
	// UserAgent is sent as User-Agent. Default "pe-bridge".
	UserAgent string
	// Logger receives the outage records (one WARN when calls start failing,
	// a reminder every OutageReminder, one INFO when the engine answers
	// again) and debug records (token refreshes, failures during an
	// outage). nil: discard.
	Logger *slog.Logger
	// OutageReminder is how often a lasting outage is logged again. Default
	// DefaultOutageReminder (1 min).
	OutageReminder time.Duration
	// Observer, when set, is told about every HTTP round trip (metrics).
	Observer CallObserver
}

// CallObserver receives one call per HTTP round trip to the engine. route is
// the route template with its method ("PUT /external_tasks/{id}/finish"),
// never the real path, so it is safe as a metric label; status is the HTTP
// status, 0 when no answer came. Calls must be cheap and must not block.
type CallObserver interface {
	EngineCall(route string, status int, d time.Duration)
}

// Validate reports a configuration that cannot work.
func (c ClientConfig) Validate() error {
	if c.RequestTimeout < 0 {
		return errors.New("engine: negative RequestTimeout")
	}
	if c.MaxIdleConnsPerHost < 0 {
		return errors.New("engine: negative MaxIdleConnsPerHost")
	}
	if c.OutageReminder < 0 {
		return errors.New("engine: negative OutageReminder")
	}
	return nil
}

// TokenRefresher is a TokenSource that can replace a token the engine
// rejected as expired before the source itself considered it stale (clock
// skew, revoked signing keys, shortened lifetimes).
type TokenRefresher interface {
	oauth2.TokenSource
	// Refresh returns a valid token other than stale: the one another caller
	// already fetched, or a new one.
	Refresh(stale *oauth2.Token) (*oauth2.Token, error)
}

// Client is a typed client of the engine REST API. It is safe for concurrent
// use; create one per engine and share it.
type Client struct {
	base      string // engine root + BasePath, no trailing slash
	basePath  string // path part of base, for logs
	hc        *http.Client
	ownHC     bool
	ts        oauth2.TokenSource
	timeout   time.Duration
	userAgent string
	log       *slog.Logger
	maxBody   int64  // MaxResponseSize; smaller in tests
	root      string // engine root URL as given, for messages
	obs       CallObserver
	outage    outage

	bearer atomic.Pointer[bearerCache]
	closed sync.Once
}

type bearerCache struct {
	tok    *oauth2.Token
	header string
}

// NewClient returns a client of the engine served at baseURL, its root such
// as http://localhost:8000 (a trailing slash is tolerated; BasePath is added).
func NewClient(baseURL string, cfg ClientConfig) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	u, err := url.Parse(strings.TrimSpace(baseURL))
	if err != nil {
		return nil, fmt.Errorf("engine: parsing engine url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("engine: engine url %q is not an absolute http(s) url", u.Redacted())
	}
	if u.User != nil {
		return nil, errors.New("engine: engine url must not carry credentials")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("engine: engine url %q must not have a query or fragment", u.Redacted())
	}
	c := &Client{
		base:      strings.TrimRight(u.String(), "/") + BasePath,
		basePath:  strings.TrimRight(u.Path, "/") + BasePath,
		hc:        cfg.HTTPClient,
		ts:        cfg.TokenSource,
		timeout:   cfg.RequestTimeout,
		userAgent: cfg.UserAgent,
		log:       cfg.Logger,
		maxBody:   MaxResponseSize,
		root:      strings.TrimRight(u.String(), "/"),
		obs:       cfg.Observer,
	}
	if c.hc == nil {
		c.hc, c.ownHC = newHTTPClient(cfg.MaxIdleConnsPerHost, cfg.TLSConfig), true
	}
	if c.ts == nil {
		c.ts = DummyTokenSource()
	}
	if c.timeout == 0 {
		c.timeout = DefaultRequestTimeout
	}
	if c.userAgent == "" {
		c.userAgent = "pe-bridge"
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.outage.log, c.outage.now, c.outage.reminder = c.log, time.Now, cfg.OutageReminder
	if c.outage.reminder == 0 {
		c.outage.reminder = DefaultOutageReminder
	}
	return c, nil
}

// DefaultMaxIdleConnsPerHost is the default of ClientConfig.MaxIdleConnsPerHost.
const DefaultMaxIdleConnsPerHost = 256

func newHTTPClient(idlePerHost int, tc *tls.Config) *http.Client {
	if idlePerHost == 0 {
		idlePerHost = DefaultMaxIdleConnsPerHost
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = max(1024, idlePerHost)
	t.MaxIdleConnsPerHost = idlePerHost
	t.IdleConnTimeout = 90 * time.Second
	t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	if tc != nil {
		t.TLSClientConfig = tc.Clone()
	}
	return &http.Client{Transport: t}
}

// Close releases the idle connections of the client's own HTTP client (not
// of one passed in ClientConfig). It is idempotent; calls after Close still
// work but open new connections.
func (c *Client) Close() error {
	c.closed.Do(func() {
		if c.ownHC {
			c.hc.CloseIdleConnections()
		}
	})
	return nil
}

type tokenKey struct{}

// WithToken makes the calls made with ctx send bearer instead of the
// client's own token, e.g. to act as the end user whose token a request
// carried. Such calls are not retried on "expired".
func WithToken(ctx context.Context, bearer string) context.Context {
	return context.WithValue(ctx, tokenKey{}, bearer)
}

// ---- external tasks -------------------------------------------------------

const (
	opDeployedTopics = "GET /external_tasks/deployed_topics"
	opFetchAndLock   = "POST /external_tasks/fetch_and_lock"
	opExtendLock     = "PUT /external_tasks/{id}/extend_lock"
	opFinishTask     = "PUT /external_tasks/{id}/finish"
	opHandleError    = "PUT /external_tasks/{id}/error"
	opProcessModels  = "GET /process_models"
	opProcessModel   = "GET /process_models/{id}/"
	opStartProcess   = "POST /process_models/{id}/start"
	opQueryInstances = "GET /process_instances/query"
	opTerminate      = "PUT /process_instances/{id}/terminate"
	opFlowNodes      = "GET /flow_node_instances"
	opReserve        = "PUT /user_tasks/{id}/reserve"
	opCancelReserve  = "DELETE /user_tasks/{id}/cancel-reservation"
	opFinishUserTask = "PUT /user_tasks/{id}/finish"
	opTriggerMessage = "POST /messages/{name}/trigger"
	opTriggerSignal  = "POST /signals/{name}/trigger"
	opDeploy         = "POST /process_definitions"
	opLongPoll       = "GET /notifications/long_polling/{event}"
	opInfo           = "GET /info"
	opAuthority      = "GET /authority"
)

// DeployedTopics lists the topics of all deployed external service tasks.
func (c *Client) DeployedTopics(ctx context.Context) ([]string, error) {
	var out []string
	err := c.do(ctx, call{op: opDeployedTopics, method: http.MethodGet, path: "/external_tasks/deployed_topics", timeout: c.timeout}, &out)
	return out, err
}

// FetchAndLock locks up to MaxTasks tasks of the topics for WorkerID. It is a
// long poll: the engine holds the call up to LongPollingTimeout and then
// answers with an empty list, so the call is bounded by LongPollingTimeout +
// RequestTimeout (and ctx).
func (c *Client) FetchAndLock(ctx context.Context, req FetchAndLockRequest) ([]ExternalTask, error) {
	if req.WorkerID == "" || len(req.Topics) == 0 {
		return nil, errors.New("engine: fetch and lock needs a worker id and a topic")
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("engine: encoding fetch and lock request: %w", err)
	}
	var out []ExternalTask
	err = c.do(ctx, call{op: opFetchAndLock, method: http.MethodPost, path: "/external_tasks/fetch_and_lock",
		body: body, timeout: req.LongPollingTimeout + c.timeout}, &out)
	if out == nil && err == nil {
		out = []ExternalTask{}
	}
	return out, err
}

// ExtendLock sets the lock of task taskID to now + d. 409 (ErrGone) means
// the task was finished, cancelled or expired; 423 (ErrLockLost) that
// another worker holds it.
func (c *Client) ExtendLock(ctx context.Context, taskID, workerID string, d time.Duration) error {
	// {"workerId":<id>,"additionalDuration":<ms>}, built by hand: this and
	// FinishTask run once per task.
	body := make([]byte, 0, 48+len(workerID))
	body = append(body, `{"workerId":`...)
	body = appendJSONString(body, workerID)
	body = append(body, `,"additionalDuration":`...)
	body = strconv.AppendInt(body, d.Milliseconds(), 10)
	body = append(body, '}')
	return c.do(ctx, call{op: opExtendLock, method: http.MethodPut,
		path: taskPath(taskID, "/extend_lock"), body: body, timeout: c.timeout}, nil)
}

// FinishTask finishes task taskID with result (any JSON; nil sends none).
func (c *Client) FinishTask(ctx context.Context, taskID, workerID string, result json.RawMessage) error {
	// {"workerId":<id>,"result":<result>} (no result when empty), built by
	// appending: json.Marshal would compact and HTML-escape the result with a
	// fresh scanner. json.Valid is the cheaper check that it is JSON.
	if len(result) > 0 && !json.Valid(result) {
		return fmt.Errorf("engine: encoding finish request of %s: result is not valid JSON", taskID)
	}
	body := make([]byte, 0, 36+len(workerID)+len(result))
	body = append(body, `{"workerId":`...)
	body = appendJSONString(body, workerID)
	if len(result) > 0 {
		body = append(body, `,"result":`...)
		body = append(body, result...)
	}
	body = append(body, '}')
	return c.do(ctx, call{op: opFinishTask, method: http.MethodPut,
		path: taskPath(taskID, "/finish"), body: body, timeout: c.timeout}, nil)
}

// HandleError raises the BPMN error e on task taskID.
func (c *Client) HandleError(ctx context.Context, taskID, workerID string, e ExternalTaskError) error {
	body, err := json.Marshal(ErrorRequest{WorkerID: workerID, Error: e})
	if err != nil {
		return fmt.Errorf("engine: encoding error request of %s: %w", taskID, err)
	}
	return c.do(ctx, call{op: opHandleError, method: http.MethodPut,
		path: taskPath(taskID, "/error"), body: body, timeout: c.timeout}, nil)
}

// appendJSONString appends s as a JSON string: quoted as is when it holds
// only printable ASCII that needs no escaping (worker ids do), else as
// encoding/json writes it.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func taskPath(id, suffix string) string {
	return "/external_tasks/" + url.PathEscape(id) + suffix
}

// ---- process models and instances -----------------------------------------

// ProcessModels lists deployed process models; offset and limit are sent
// only when > 0.
func (c *Client) ProcessModels(ctx context.Context, offset, limit int) (ProcessModelList, error) {
	var q query
	q.int("offset", offset)
	q.int("limit", limit)
	q.raw("includeCount", "true")
	var out ProcessModelList
	err := c.do(ctx, call{op: opProcessModels, method: http.MethodGet, path: "/process_models", query: q.String(), timeout: c.timeout}, &out)
	return out, err
}

// ProcessModel returns one process model.
func (c *Client) ProcessModel(ctx context.Context, id string) (ProcessModel, error) {
	var out ProcessModel
	err := c.do(ctx, call{op: opProcessModel, method: http.MethodGet,
		path: "/process_models/" + url.PathEscape(id) + "/", timeout: c.timeout}, &out)
	return out, err
}

// StartProcess starts an instance of req.ProcessModelID. A zero ReturnOn is
// sent as ReturnOnCreated (the official client always sends it). With
// ReturnOnFinished or ReturnOnEndEvent the engine answers only when the
// instance got there, so the call is bounded by ctx alone.
func (c *Client) StartProcess(ctx context.Context, req ProcessStartRequest) (ProcessStartResponse, error) {
	var out ProcessStartResponse
	if req.ProcessModelID == "" {
		return out, errors.New("engine: starting a process needs a process model id")
	}
	if req.ReturnOn == 0 {
		req.ReturnOn = ReturnOnCreated
	}
	body, err := json.Marshal(req)
	if err != nil {
		return out, fmt.Errorf("engine: encoding start request of %s: %w", req.ProcessModelID, err)
	}
	timeout := c.timeout
	if req.ReturnOn == ReturnOnFinished || req.ReturnOn == ReturnOnEndEvent {
		timeout = 0
	}
	err = c.do(ctx, call{op: opStartProcess, method: http.MethodPost,
		path: "/process_models/" + url.PathEscape(req.ProcessModelID) + "/start", body: body, timeout: timeout}, &out)
	return out, err
}

// QueryProcessInstances queries process instances.
func (c *Client) QueryProcessInstances(ctx context.Context, pq ProcessInstanceQuery) (ProcessInstanceList, error) {
	var q query
	q.list("processInstanceId", pq.ProcessInstanceID)
	q.list("processModelId", pq.ProcessModelID)
	q.list("correlationId", pq.CorrelationID)
	q.list("state", pq.State)
	q.int("offset", pq.Offset)
	q.int("limit", pq.Limit)
	q.raw("includeCount", "true")
	var out ProcessInstanceList
	err := c.do(ctx, call{op: opQueryInstances, method: http.MethodGet, path: "/process_instances/query", query: q.String(), timeout: c.timeout}, &out)
	return out, err
}

// TerminateProcessInstance terminates instance id; its open external tasks
// answer 409 afterwards.
func (c *Client) TerminateProcessInstance(ctx context.Context, id string) error {
	return c.do(ctx, call{op: opTerminate, method: http.MethodPut,
		path: "/process_instances/" + url.PathEscape(id) + "/terminate", body: emptyObject, timeout: c.timeout}, nil)
}

var emptyObject = []byte("{}")

// ---- flow node instances and user tasks -----------------------------------

// QueryFlowNodeInstances queries flow node instances.
func (c *Client) QueryFlowNodeInstances(ctx context.Context, fq FlowNodeInstanceQuery) (FlowNodeInstanceList, error) {
	var out FlowNodeInstanceList
	err := c.do(ctx, call{op: opFlowNodes, method: http.MethodGet, path: "/flow_node_instances", query: flowNodeQuery(fq), timeout: c.timeout}, &out)
	return out, err
}

// UserTasks queries user tasks: QueryFlowNodeInstances with FlowNodeType
// forced to bpmn:UserTask. Waiting user tasks have state "suspended".
func (c *Client) UserTasks(ctx context.Context, fq FlowNodeInstanceQuery) (FlowNodeInstanceList, error) {
	fq.FlowNodeType = []string{UserTaskFlowNodeType}
	return c.QueryFlowNodeInstances(ctx, fq)
}

func flowNodeQuery(fq FlowNodeInstanceQuery) string {
	var q query
	q.list("flowNodeInstanceId", fq.FlowNodeInstanceID)
	q.list("flowNodeId", fq.FlowNodeID)
	q.list("processModelId", fq.ProcessModelID)
	q.list("processInstanceId", fq.ProcessInstanceID)
	q.list("correlationId", fq.CorrelationID)
	q.list("ownerId", fq.OwnerID)
	q.list("state", fq.State)
	q.list("flowNodeType", fq.FlowNodeType)
	q.int("offset", fq.Offset)
	q.int("limit", fq.Limit)
	q.raw("includeCount", "true")
	return q.String()
}

// ReserveUserTask reserves user task id for ownerID.
func (c *Client) ReserveUserTask(ctx context.Context, id, ownerID string) error {
	body, err := json.Marshal(ReserveUserTaskRequest{ActualOwnerID: ownerID})
	if err != nil {
		return fmt.Errorf("engine: encoding reserve request of %s: %w", id, err)
	}
	return c.do(ctx, call{op: opReserve, method: http.MethodPut,
		path: "/user_tasks/" + url.PathEscape(id) + "/reserve", body: body, timeout: c.timeout}, nil)
}

// CancelUserTaskReservation drops the reservation of user task id.
func (c *Client) CancelUserTaskReservation(ctx context.Context, id string) error {
	return c.do(ctx, call{op: opCancelReserve, method: http.MethodDelete,
		path: "/user_tasks/" + url.PathEscape(id) + "/cancel-reservation", timeout: c.timeout}, nil)
}

// FinishUserTask finishes user task id; result is the form result itself
// (keyed by form field id, no wrapper). nil sends {}.
func (c *Client) FinishUserTask(ctx context.Context, id string, result json.RawMessage) error {
	body, err := jsonBody(result)
	if err != nil {
		return fmt.Errorf("engine: encoding result of user task %s: %w", id, err)
	}
	return c.do(ctx, call{op: opFinishUserTask, method: http.MethodPut,
		path: "/user_tasks/" + url.PathEscape(id) + "/finish", body: body, timeout: c.timeout}, nil)
}

// ---- events ---------------------------------------------------------------

// TriggerMessage triggers the BPMN message name with payload as the body (as
// the official client sends it; nil sends {}); processInstanceID, when set,
// restricts it to one instance.
func (c *Client) TriggerMessage(ctx context.Context, name string, payload json.RawMessage, processInstanceID string) error {
	return c.trigger(ctx, opTriggerMessage, "/messages/", name, payload, processInstanceID)
}

// TriggerSignal triggers the BPMN signal name, like TriggerMessage.
func (c *Client) TriggerSignal(ctx context.Context, name string, payload json.RawMessage, processInstanceID string) error {
	return c.trigger(ctx, opTriggerSignal, "/signals/", name, payload, processInstanceID)
}

func (c *Client) trigger(ctx context.Context, op, prefix, name string, payload json.RawMessage, pi string) error {
	if name == "" {
		return fmt.Errorf("engine: %s: empty name", op)
	}
	body, err := jsonBody(payload)
	if err != nil {
		return fmt.Errorf("engine: encoding payload of %s: %w", name, err)
	}
	var q query
	if pi != "" {
		q.raw("process_instance_id", encodeURIComponent(pi))
	}
	return c.do(ctx, call{op: op, method: http.MethodPost, path: prefix + url.PathEscape(name) + "/trigger",
		query: q.String(), body: body, timeout: c.timeout}, nil)
}

// Deploy stores BPMN definitions (POST /process_definitions, 201).
func (c *Client) Deploy(ctx context.Context, req DeployRequest) error {
	if len(req.XML) == 0 {
		return errors.New("engine: deploy needs at least one definition")
	}
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("engine: encoding deploy request: %w", err)
	}
	return c.do(ctx, call{op: opDeploy, method: http.MethodPost, path: "/process_definitions", body: body, timeout: c.timeout}, nil)
}

// ErrNoNotification is returned by WaitForNotification when the engine ends
// the long poll without an event (204 or an empty body); poll again.
var ErrNoNotification = errors.New("engine: no notification before the engine's timeout")

// WaitForNotification waits for the next engine event of the given name
// (one of NotificationEvents). It is bounded by ctx alone; when the engine
// gives up first it returns ErrNoNotification.
func (c *Client) WaitForNotification(ctx context.Context, event string) (EventMessage, error) {
	var out json.RawMessage
	if event == "" {
		return EventMessage{}, errors.New("engine: waiting for a notification needs an event name")
	}
	err := c.do(ctx, call{op: opLongPoll, method: http.MethodGet, path: "/notifications/long_polling/" + url.PathEscape(event)}, &out)
	if err != nil {
		return EventMessage{}, err
	}
	var m EventMessage
	if len(out) == 0 || string(out) == "null" {
		return m, ErrNoNotification
	}
	if err := json.Unmarshal(out, &m); err != nil {
		return m, fmt.Errorf("engine: %s: decoding event: %w", opLongPoll, err)
	}
	return m, nil
}

// Info returns the engine's application info.
func (c *Client) Info(ctx context.Context) (ApplicationInfo, error) {
	var out ApplicationInfo
	err := c.do(ctx, call{op: opInfo, method: http.MethodGet, path: "/info", timeout: c.timeout}, &out)
	return out, err
}

// Authority returns the URL of the engine's OAuth authority as the engine
// reports it (a trailing slash is kept).
func (c *Client) Authority(ctx context.Context) (string, error) {
	var out string
	err := c.do(ctx, call{op: opAuthority, method: http.MethodGet, path: "/authority", timeout: c.timeout}, &out)
	return out, err
}

// jsonBody validates raw as JSON (nil → {}).
func jsonBody(raw json.RawMessage) ([]byte, error) {
	if len(raw) == 0 {
		return emptyObject, nil
	}
	if !json.Valid(raw) {
		return nil, errors.New("invalid JSON")
	}
	return raw, nil
}

// ---- transport ------------------------------------------------------------

type call struct {
	op, method, path, query string
	body                    []byte
	timeout                 time.Duration // 0: ctx only
}

// errRequestTimeout is the cause of a call that hit its own timeout.
var errRequestTimeout = errors.New("no answer within the request timeout")

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// do runs one call and decodes a 2xx body into out (when out != nil and the
// body is not empty).
func (c *Client) do(ctx context.Context, cl call, out any) error {
	if cl.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, cl.timeout, errRequestTimeout)
		defer cancel()
	}
	override, _ := ctx.Value(tokenKey{}).(string)
	var tok *oauth2.Token
	bearer := override
	if override == "" {
		var err error
		tok, bearer, err = c.token()
		if err != nil {
			return c.tokenError(cl.op, err)
		}
	}
	status, err := c.observedRoundTrip(ctx, cl, bearer, out)
	if status == http.StatusUnauthorized && tok != nil && isExpired(err) {
		r, ok := c.ts.(TokenRefresher)
		if !ok {
			return err
		}
		c.log.Debug("engine: token rejected as expired, refreshing", "op", cl.op)
		fresh, rerr := r.Refresh(tok)
		if rerr != nil {
			return c.tokenError(cl.op, rerr)
		}
		_, err = c.observedRoundTrip(ctx, cl, authHeader(fresh), out)
	}
	return err
}

// observedRoundTrip is roundTrip, told to the observer and the outage tracker.
func (c *Client) observedRoundTrip(ctx context.Context, cl call, bearer string, out any) (int, error) {
	start := time.Now()
	status, err := c.roundTrip(ctx, cl, bearer, out)
	if c.obs != nil {
		c.obs.EngineCall(cl.op, status, time.Since(start))
	}
	c.outage.record(c.basePath+cl.path, start, status, err)
	return status, err
}

// Outage reports whether the engine is currently not answering (the last
// calls got no answer or a 502/503/504): since is when the outage began,
// zero when there is none; err is the last failure.
func (c *Client) Outage() (since time.Time, err error) { return c.outage.state() }

// URL is the engine root URL the client was made for.
func (c *Client) URL() string { return c.root }

func isExpired(err error) bool {
	var e *Error
	return errors.As(err, &e) && strings.Contains(strings.ToLower(e.Body.Message), "expired")
}

// token returns the current token and its Authorization header, reusing the
// header string while the token stays the same.
func (c *Client) token() (*oauth2.Token, string, error) {
	tok, err := c.ts.Token()
	if err != nil {
		return nil, "", err
	}
	if tok == nil || tok.AccessToken == "" {
		return nil, "", errors.New("token source returned an empty token")
	}
	if b := c.bearer.Load(); b != nil && b.tok == tok {
		return tok, b.header, nil
	}
	h := authHeader(tok)
	c.bearer.Store(&bearerCache{tok: tok, header: h})
	return tok, h, nil
}

func authHeader(t *oauth2.Token) string { return "Bearer " + t.AccessToken }

func (c *Client) tokenError(op string, err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode < 500 && re.Response.StatusCode != 429 {
		return fmt.Errorf("engine: %s: getting token: %w", op, err)
	}
	return &TransportError{Op: op + " (getting token)", Err: err}
}

// roundTrip sends one request; bearer is "Bearer <token>" or a bare token
// from WithToken.
func (c *Client) roundTrip(ctx context.Context, cl call, bearer string, out any) (int, error) {
	u := c.base + cl.path
	if cl.query != "" {
		u += "?" + cl.query
	}
	var body io.Reader
	if cl.body != nil {
		body = bytes.NewReader(cl.body)
	}
	req, err := http.NewRequestWithContext(ctx, cl.method, u, body)
	if err != nil {
		return 0, fmt.Errorf("engine: %s: building request: %w", cl.op, err)
	}
	if !strings.HasPrefix(bearer, "Bearer ") {
		bearer = "Bearer " + bearer
	}
	h := req.Header
	h["Authorization"] = []string{bearer}
	h["Content-Type"] = contentJSON
	h["Accept"] = contentJSON
	h["User-Agent"] = []string{c.userAgent}

	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, c.transportError(ctx, cl.op, err)
	}
	defer func() {
		if resp.Body != http.NoBody {
			_, _ = io.CopyN(io.Discard, resp.Body, maxDrain)
		}
		_ = resp.Body.Close()
	}()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		buf := bufPool.Get().(*bytes.Buffer)
		buf.Reset()
		defer bufPool.Put(buf)
		if _, err := buf.ReadFrom(io.LimitReader(resp.Body, maxErrorBody)); err != nil && buf.Len() == 0 {
			if ctx.Err() != nil {
				return resp.StatusCode, c.transportError(ctx, cl.op, err)
			}
		}
		return resp.StatusCode, decodeError(cl.op, resp.StatusCode, buf.Bytes(), strings.TrimPrefix(bearer, "Bearer "))
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return resp.StatusCode, nil
	}
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= 1<<20 { // do not keep huge buffers alive
			bufPool.Put(buf)
		}
	}()
	n, err := buf.ReadFrom(io.LimitReader(resp.Body, c.maxBody+1))
	if err != nil {
		return resp.StatusCode, c.transportError(ctx, cl.op, err)
	}
	if n > c.maxBody {
		return resp.StatusCode, fmt.Errorf("engine: %s: response exceeds %d bytes", cl.op, c.maxBody)
	}
	if n == 0 {
		return resp.StatusCode, nil
	}
	if err := json.Unmarshal(buf.Bytes(), out); err != nil {
		return resp.StatusCode, fmt.Errorf("engine: %s: decoding %d response: %w", cl.op, resp.StatusCode, err)
	}
	return resp.StatusCode, nil
}

var contentJSON = []string{"application/json"}

// transportError classifies a failure to get (or read) an answer: the
// caller's cancellation → ctx.Err() wrapped; the call's own timeout or a
// network failure → *TransportError.
func (c *Client) transportError(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		if cause := context.Cause(ctx); errors.Is(cause, errRequestTimeout) {
			return &TransportError{Op: op, Err: errRequestTimeout}
		}
		return fmt.Errorf("engine: %s: %w", op, ctx.Err())
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // the URL holds no secret but is noise; Op names the route
	}
	return &TransportError{Op: op, Err: err}
}

// decodeError turns a non-2xx answer into *Error. A BaseError body is
// decoded; anything else is kept, truncated, as the message. secret (the
// bearer token sent) is scrubbed from the message should the server echo it.
func decodeError(op string, status int, body []byte, secret string) *Error {
	e := &Error{Status: status, Op: op}
	scrub := func(s string) string {
		if len(secret) >= 8 {
			return strings.ReplaceAll(s, secret, "[REDACTED]")
		}
		return s
	}
	var be BaseError
	if len(body) > 0 && body[0] == '{' && json.Unmarshal(body, &be) == nil && (be.ErrorClassName != "" || be.Code != 0 || be.Message != "") {
		e.Body = be
		e.Body.Message = scrub(be.Message)
		e.Body.CallStack = scrub(be.CallStack)
	} else {
		e.Body.Message = truncate(scrub(strings.TrimSpace(string(body))), maxRawMessage)
	}
	if e.Body.ErrorClassName == "" {
		e.Body.ErrorClassName = ClassForStatus(status)
	}
	if e.Body.Code == 0 {
		e.Body.Code = status
	}
	return e
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// cut at a rune boundary
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}

// ---- query strings --------------------------------------------------------

// query builds a query string as the official client does (API.md §2.8):
// values encodeURIComponent-ed, lists joined with an unencoded ",".
type query struct{ b strings.Builder }

func (q *query) raw(k, v string) {
	if q.b.Len() > 0 {
		q.b.WriteByte('&')
	}
	q.b.WriteString(k)
	q.b.WriteByte('=')
	q.b.WriteString(v)
}

func (q *query) list(k string, vs []string) {
	if len(vs) == 0 {
		return
	}
	var sb strings.Builder
	for i, v := range vs {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(encodeURIComponent(v))
	}
	q.raw(k, sb.String())
}

func (q *query) int(k string, v int) {
	if v > 0 {
		q.raw(k, strconv.Itoa(v))
	}
}

func (q *query) String() string { return q.b.String() }

// encodeURIComponent escapes like JavaScript's encodeURIComponent.
func encodeURIComponent(s string) string {
	const hex = "0123456789ABCDEF"
	need := false
	for i := 0; i < len(s); i++ {
		if !uriUnreserved(s[i]) {
			need = true
			break
		}
	}
	if !need {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) * 3)
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if uriUnreserved(ch) {
			b.WriteByte(ch)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[ch>>4])
		b.WriteByte(hex[ch&15])
	}
	return b.String()
}

func uriUnreserved(ch byte) bool {
	switch {
	case 'a' <= ch && ch <= 'z', 'A' <= ch && ch <= 'Z', '0' <= ch && ch <= '9':
		return true
	}
	switch ch {
	case '-', '_', '.', '!', '~', '*', '\'', '(', ')':
		return true
	}
	return false
}

// ---- identification -------------------------------------------------------

// NotEngineError is the answer of a server that is not a ProcessCube engine
// (or not at the configured URL): GET /info did not return the engine's
// ApplicationInfo JSON. It names what answered, never the body (an HTML page
// has no place in logs).
type NotEngineError struct {
	URL         string // the URL asked, e.g. http://host:8000/atlas_engine/api/v1/info
	Status      int
	ContentType string
	Reason      string
}

func (e *NotEngineError) Error() string {
	ct := e.ContentType
	if ct == "" {
		ct = "none"
	}
	return fmt.Sprintf("engine: %s did not answer as a ProcessCube engine does: %s (HTTP %d, content type %s); check --engine-url", e.URL, e.Reason, e.Status, ct)
}

// Identify asks GET /info and checks the answer is the engine's: 200, a JSON
// object with a name and a version. A server that answers otherwise gives
// *NotEngineError; no answer (or a gateway's 502/503/504) gives the
// temporary error of any call, worth retrying.
func (c *Client) Identify(ctx context.Context) (ApplicationInfo, error) {
	var info ApplicationInfo
	ctx, cancel := context.WithTimeoutCause(ctx, c.timeout, errRequestTimeout)
	defer cancel()
	_, bearer, err := c.token()
	if err != nil {
		return info, c.tokenError(opInfo, err)
	}
	u := c.base + "/info"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return info, fmt.Errorf("engine: %s: building request: %w", opInfo, err)
	}
	req.Header["Authorization"] = []string{bearer}
	req.Header["Accept"] = contentJSON
	req.Header["User-Agent"] = []string{c.userAgent}
	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		err = c.transportError(ctx, opInfo, err)
		c.outage.record(c.basePath+"/info", start, 0, err)
		if c.obs != nil {
			c.obs.EngineCall(opInfo, 0, time.Since(start))
		}
		return info, err
	}
	defer resp.Body.Close()
	body, rerr := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	if c.obs != nil {
		c.obs.EngineCall(opInfo, resp.StatusCode, time.Since(start))
	}
	ct := resp.Header.Get("Content-Type")
	notEngine := func(reason string) error {
		return &NotEngineError{URL: u, Status: resp.StatusCode, ContentType: ct, Reason: reason}
	}
	if rerr != nil {
		err := c.transportError(ctx, opInfo, rerr)
		c.outage.record(c.basePath+"/info", start, 0, err)
		return info, err
	}
	switch {
	case gatewayDown(resp.StatusCode):
		err := decodeError(opInfo, resp.StatusCode, nil, "")
		c.outage.record(c.basePath+"/info", start, resp.StatusCode, err)
		return info, err
	case resp.StatusCode != http.StatusOK:
		c.outage.record(c.basePath+"/info", start, resp.StatusCode, nil)
		var be BaseError
		if json.Unmarshal(body, &be) == nil && be.IsEngineError {
			return info, decodeError(opInfo, resp.StatusCode, body, strings.TrimPrefix(bearer, "Bearer "))
		}
		return info, notEngine("status is not 200")
	}
	c.outage.record(c.basePath+"/info", start, resp.StatusCode, nil)
	mt := strings.TrimSpace(strings.ToLower(strings.SplitN(ct, ";", 2)[0]))
	if mt != "application/json" {
		return info, notEngine("not JSON")
	}
	if err := json.Unmarshal(body, &info); err != nil {
		return info, notEngine("not the engine's application info")
	}
	if info.Name == "" || info.Version == "" {
		return info, notEngine("no name and version in the application info")
	}
	return info, nil
}
