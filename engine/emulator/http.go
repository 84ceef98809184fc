package emulator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/engine/emulator/bpmn"
)

type scopeRule uint8

const (
	scopeNone   scopeRule = iota // any valid token
	scopePublic                  // no token needed: authority discovery must work before a client has one
	scopeETW                     // engine_etw
	scopeRead                    // engine_read
	scopeWrite                   // engine_write
	scopeNotify                  // engine_read or engine_observer
)

type opKind uint8

const (
	opOther opKind = iota
	opFetch
	opExtend
	opFinish
	opError
)

type route struct {
	method  string
	segs    []string // "*" = parameter
	scope   scopeRule
	op      opKind
	handler func(w http.ResponseWriter, r *http.Request, p []string, id Identity)
}

func (e *Emulator) buildRoutes() []route {
	r := func(method, path string, scope scopeRule, op opKind, h func(http.ResponseWriter, *http.Request, []string, Identity)) route {
		return route{method: method, segs: strings.Split(path, "/"), scope: scope, op: op, handler: h}
	}
	return []route{
		// [I] public: the official client discovers the authority with the dummy
		// token even where anonymous root access is off (IdentityAccessorClientCredentials
		// → ApplicationInfoClient without identity), so the engine must answer it.
		r("GET", "info", scopePublic, opOther, e.hInfo),
		r("GET", "authority", scopePublic, opOther, e.hAuthority),
		r("GET", "external_tasks/deployed_topics", scopeETW, opOther, e.hDeployedTopics),
		r("POST", "external_tasks/fetch_and_lock", scopeETW, opFetch, e.hFetchAndLock),
		r("PUT", "external_tasks/*/extend_lock", scopeETW, opExtend, taskCall(decodeExtend, e.extendLock)),
		r("PUT", "external_tasks/*/finish", scopeETW, opFinish, taskCall(decodeFinish, e.finishTask)),
		r("PUT", "external_tasks/*/error", scopeETW, opError, taskCall(decodeTaskError, e.errorTask)),
		r("GET", "process_models", scopeRead, opOther, e.hProcessModels),
		r("GET", "process_models/*", scopeRead, opOther, e.hProcessModel),
		r("POST", "process_models/*/start", scopeWrite, opOther, e.hStart),
		r("POST", "process_definitions", scopeWrite, opOther, e.hDeploy),
		r("GET", "process_instances/query", scopeRead, opOther, e.hInstanceQuery),
		r("PUT", "process_instances/*/terminate", scopeWrite, opOther, e.hTerminate),
		r("GET", "flow_node_instances", scopeRead, opOther, e.hFlowNodeInstances),
		r("PUT", "user_tasks/*/reserve", scopeWrite, opOther, e.hReserve),
		r("DELETE", "user_tasks/*/cancel-reservation", scopeWrite, opOther, e.hCancelReservation),
		r("PUT", "user_tasks/*/finish", scopeWrite, opOther, e.hUserTaskFinish),
		r("POST", "process_models/*/enable", scopeWrite, opOther, e.hEnable(true)),
		r("POST", "process_models/*/disable", scopeWrite, opOther, e.hEnable(false)),
		r("DELETE", "process_models/*", scopeWrite, opOther, e.hDeleteModel),
		r("PUT", "manual_tasks/*/finish", scopeWrite, opOther, e.hWaitingTaskFinish(bpmn.KindManualTask, "Manual Task")),
		r("PUT", "untyped_tasks/*/finish", scopeWrite, opOther, e.hWaitingTaskFinish(bpmn.KindUntypedTask, "Untyped Task")),
		r("PUT", "empty_activities/*/finish", scopeWrite, opOther, e.hWaitingTaskFinish(bpmn.KindUntypedTask, "Empty Activity")),
		r("POST", "timer/*/trigger", scopeWrite, opOther, e.hTimerTrigger),
		r("POST", "messages/*/trigger", scopeWrite, opOther, e.hMessage),
		r("POST", "signals/*/trigger", scopeWrite, opOther, e.hSignal),
		r("GET", "notifications/long_polling/*", scopeNotify, opOther, e.hNotification),
	}
}

// splitPath returns the decoded segments after the base path, or ok=false.
func splitPath(r *http.Request) ([]string, bool) {
	p := r.URL.EscapedPath()
	if !strings.HasPrefix(p, engine.BasePath+"/") {
		return nil, false
	}
	p = strings.TrimPrefix(p, engine.BasePath+"/")
	p = strings.TrimSuffix(p, "/")
	if p == "" {
		return nil, false
	}
	segs := strings.Split(p, "/")
	for i, s := range segs {
		d, err := url.PathUnescape(s)
		if err != nil {
			return nil, false
		}
		segs[i] = d
	}
	return segs, true
}

func (e *Emulator) match(segs []string, method string) (rt *route, params []string, methodMismatch bool, allow []string) {
	for i := range e.routes {
		cand := &e.routes[i]
		if len(cand.segs) != len(segs) {
			continue
		}
		var ps []string
		ok := true
		for j, s := range cand.segs {
			if s == "*" {
				if segs[j] == "" {
					ok = false
					break
				}
				ps = append(ps, segs[j])
			} else if s != segs[j] {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		if cand.method == method {
			return cand, ps, false, nil
		}
		methodMismatch = true
		allow = append(allow, cand.method)
	}
	return nil, nil, methodMismatch, allow
}

// opOf classifies a request for the counters without full routing.
func opOf(r *http.Request) (opKind, string) {
	p := r.URL.Path
	const pre = engine.BasePath + "/external_tasks/"
	if !strings.HasPrefix(p, pre) {
		return opOther, ""
	}
	rest := strings.TrimSuffix(strings.TrimPrefix(p, pre), "/")
	if rest == "fetch_and_lock" {
		return opFetch, ""
	}
	i := strings.LastIndexByte(rest, '/')
	if i <= 0 {
		return opOther, ""
	}
	id := rest[:i]
	switch rest[i+1:] {
	case "extend_lock":
		return opExtend, id
	case "finish":
		return opFinish, id
	case "error":
		return opError, id
	}
	return opOther, ""
}

// statusWriter records the status written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// ServeHTTP serves the engine REST API under /atlas_engine/api/v1.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	op, taskID := opOf(r)
	sw := &statusWriter{ResponseWriter: w}
	if op != opOther {
		if taskID != "" && (op == opFinish || op == opError) {
			e.statsMu.Lock()
			e.calls[taskID]++
			e.statsMu.Unlock()
		}
		defer func() { e.countCall(op, sw.status) }()
	}
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			e.log.Error("emulator: recovered panic", "panic", fmt.Sprint(v), "path", r.URL.Path)
			if sw.status == 0 {
				writeError(sw, apiError(500, "Internal error in the engine emulator.", nil))
			}
		}
	}()
	if e.applyFaults(sw, r) {
		return
	}
	if isSocketPath(r.URL.Path) {
		e.sio.handler.ServeHTTP(w, r)
		return
	}
	e.serve(sw, r)
}

func (e *Emulator) countCall(op opKind, status int) {
	if op == opOther {
		return
	}
	e.statsMu.Lock()
	defer e.statsMu.Unlock()
	c := &e.calls4[op-opFetch]
	c.Total++
	switch {
	case status == 0:
		c.NoAnswer++
	case status < 300:
		c.Status2xx++
	case status < 500:
		c.Status4xx++
	default:
		c.Status5xx++
	}
}

// rootPage answers GET / (the engine serves its API docs there; compose
// healthchecks probe it).
const rootPage = "pe-bridge engine emulator: an in-memory emulator of the 5Minds ProcessCube engine REST API " +
	"for development and tests, not a ProcessCube engine.\nAPI: " + engine.BasePath + "\n"

func (e *Emulator) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, rootPage)
		return
	}
	segs, ok := splitPath(r)
	if !ok {
		writeError(w, apiError(404, fmt.Sprintf("Route %s %s not found.", r.Method, r.URL.Path), nil))
		return
	}
	rt, params, mismatch, allow := e.match(segs, r.Method)
	if rt == nil {
		if mismatch {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeError(w, apiError(405, fmt.Sprintf("Method %s is not allowed on %s.", r.Method, r.URL.Path), nil))
			return
		}
		writeError(w, apiError(404, fmt.Sprintf("Route %s %s not found.", r.Method, r.URL.Path), nil))
		return
	}
	var id Identity
	if rt.scope != scopePublic {
		var err *engine.Error
		if id, err = e.authenticate(r); err != nil {
			writeError(w, err)
			return
		}
	}
	if err := checkScope(rt.scope, id); err != nil {
		writeError(w, err)
		return
	}
	if e.closedFlag.Load() {
		writeError(w, apiError(503, "The engine emulator is shutting down.", nil))
		return
	}
	if r.ContentLength > e.cfg.MaxBodyBytes {
		writeError(w, apiError(413, fmt.Sprintf("Request body larger than %d bytes.", e.cfg.MaxBodyBytes), nil))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, e.cfg.MaxBodyBytes)
	rt.handler(w, r, params, id)
}

// root marks the identity of the dummy token.
const rootUser = engine.DummyUserID

func (e *Emulator) authenticate(r *http.Request) (Identity, *engine.Error) {
	return e.authenticateToken(r.Header.Get("Authorization"), true)
}

// authenticateToken checks an Authorization header value: "Bearer <token>"
// (REST), or with bearer false also the bare token (the Socket.IO handshake
// of the official client sends the token without "Bearer").
func (e *Emulator) authenticateToken(h string, bearer bool) (Identity, *engine.Error) {
	if h == "" {
		return Identity{}, apiError(401, "No auth token provided.", nil)
	}
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		tok, ok = strings.CutPrefix(h, "bearer ")
	}
	if !ok && !bearer {
		tok, ok = h, true
	}
	tok = strings.TrimSpace(tok)
	if !ok || tok == "" {
		return Identity{}, apiError(401, "Authorization header must be 'Bearer <token>'.", nil)
	}
	if tok == engine.DummyToken {
		if e.cfg.DenyAnonymous {
			return Identity{}, apiError(401, "Anonymous root access is not allowed.", nil)
		}
		return Identity{UserID: rootUser, Scopes: nil}, nil
	}
	if e.cfg.Verify == nil {
		return Identity{}, apiError(401, "Invalid auth token.", nil)
	}
	id, err := e.cfg.Verify(tok)
	if err != nil {
		return Identity{}, apiError(401, "Invalid auth token: "+err.Error(), nil)
	}
	if id.Scopes == nil {
		id.Scopes = []string{}
	}
	return id, nil
}

func isRoot(id Identity) bool { return id.Scopes == nil }

func checkScope(rule scopeRule, id Identity) *engine.Error {
	if isRoot(id) || rule == scopeNone || rule == scopePublic {
		return nil
	}
	var need []string
	switch rule {
	case scopeETW:
		need = []string{ScopeETW}
	case scopeRead:
		need = []string{ScopeRead}
	case scopeWrite:
		need = []string{ScopeWrite}
	case scopeNotify:
		need = []string{ScopeRead, ScopeObserver}
	}
	for _, n := range need {
		if slices.Contains(id.Scopes, n) {
			return nil
		}
	}
	return apiError(403, "Identity does not have the requested claim! Required scope: "+strings.Join(need, " or "), map[string]any{"requiredScopes": need})
}

func writeError(w http.ResponseWriter, err error) {
	var ee *engine.Error
	if !errors.As(err, &ee) {
		ee = apiError(500, err.Error(), nil)
	}
	writeJSON(w, ee.Status, ee.Body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		status = 500
		buf.Reset()
		_ = json.NewEncoder(&buf).Encode(engine.NewBaseError(500, "encoding response: "+err.Error(), nil))
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func writeNoContent(w http.ResponseWriter) { w.WriteHeader(http.StatusNoContent) }

// readBody reads the request body; too large → 413.
func readBody(r *http.Request) ([]byte, *engine.Error) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, apiError(413, fmt.Sprintf("Request body larger than %d bytes.", mbe.Limit), nil)
		}
		return nil, apiError(400, "Reading request body: "+err.Error(), nil)
	}
	return b, nil
}

// decodeJSON decodes a JSON object body into v; type errors name the field.
func decodeJSON(b []byte, v any) *engine.Error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return apiError(400, "Request body is empty; a JSON object is required.", nil)
	}
	if b[0] != '{' {
		return apiError(400, "Request body must be a JSON object.", nil)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return jsonError(err)
	}
	return nil
}

func jsonError(err error) *engine.Error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if field == "" {
			field = "(body)"
		}
		return apiError(400, fmt.Sprintf("Field '%s' has the wrong type: got JSON %s, want %s.", field, te.Value, te.Type), map[string]string{"field": field})
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return apiError(400, fmt.Sprintf("Malformed JSON at offset %d: %v", se.Offset, err), nil)
	}
	return apiError(400, "Invalid request body: "+err.Error(), nil)
}
