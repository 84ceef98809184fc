package conformance

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/pe-bridge/pe-bridge/engine/emulator"

	"github.com/pe-bridge/pe-bridge/engine"
)

// Headers the scenario driver sets to label an exchange; the recorder strips nothing, the spec ignores them.
const (
	hdrStep          = "X-Conformance-Step"
	hdrExpectInvalid = "X-Conformance-Invalid-Request" // the request deliberately violates the spec
)

// exchange is one request/response pair seen by the recorder.
type exchange struct {
	step          string
	expectInvalid bool
	method        string
	target        string // path?query as sent
	reqHeader     http.Header
	reqBody       []byte
	status        int
	respHeader    http.Header
	respBody      []byte
	clientGone    bool // the client went away before the answer (aborted long poll)
}

func (x *exchange) String() string {
	s := fmt.Sprintf("%s %s → %d", x.method, x.target, x.status)
	if x.step != "" {
		s = "[" + x.step + "] " + s
	}
	return s
}

// recorder is an http.Handler in front of the emulator that keeps every exchange for validation.
type recorder struct {
	next http.Handler
	mu   sync.Mutex
	xs   []*exchange
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, emulator.SocketPath+"/") {
		rec.next.ServeHTTP(w, r) // Socket.IO is not part of the OpenAPI file (and needs the hijacker)
		return
	}
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	cw := &captureWriter{ResponseWriter: w}
	rec.next.ServeHTTP(cw, r)
	x := &exchange{
		step:          r.Header.Get(hdrStep),
		expectInvalid: r.Header.Get(hdrExpectInvalid) != "",
		method:        r.Method,
		target:        r.URL.RequestURI(),
		reqHeader:     r.Header.Clone(),
		reqBody:       body,
		status:        cw.status(),
		respHeader:    w.Header().Clone(),
		respBody:      cw.buf.Bytes(),
		clientGone:    r.Context().Err() != nil,
	}
	rec.mu.Lock()
	rec.xs = append(rec.xs, x)
	rec.mu.Unlock()
}

func (rec *recorder) exchanges() []*exchange {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]*exchange(nil), rec.xs...)
}

type captureWriter struct {
	http.ResponseWriter
	code int
	buf  bytes.Buffer
}

func (c *captureWriter) WriteHeader(code int) {
	if c.code == 0 {
		c.code = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *captureWriter) Write(p []byte) (int, error) {
	if c.code == 0 {
		c.code = http.StatusOK
	}
	c.buf.Write(p)
	return c.ResponseWriter.Write(p)
}

func (c *captureWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (c *captureWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if h, ok := c.ResponseWriter.(http.Hijacker); ok {
		return h.Hijack()
	}
	return nil, nil, errors.New("conformance: hijack not supported")
}

func (c *captureWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

func (c *captureWriter) status() int {
	if c.code == 0 {
		return http.StatusOK
	}
	return c.code
}

// validator checks exchanges against the fixed spec.
type validator struct {
	router routers.Router
}

func newValidator(t testing.TB) *validator {
	t.Helper()
	doc := loadSpec(t)
	// The spec's server is the relative URL /atlas_engine/api/v1; make it absolute so the router
	// matches requests to any loopback host.
	doc.Servers = openapi3.Servers{{URL: "http://{host}/atlas_engine/api/v1",
		Variables: map[string]*openapi3.ServerVariable{"host": {Default: "localhost"}}}}
	r, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatalf("building the OpenAPI router: %v", err)
	}
	return &validator{router: r}
}

// bearerAuth is the spec's only security scheme: `Authorization: Bearer <token>`.
func bearerAuth(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	h := in.RequestValidationInput.Request.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || strings.TrimSpace(tok) == "" {
		return errors.New("no bearer token")
	}
	return nil
}

// result of validating one exchange.
type verdict struct {
	op       string // "METHOD /template" or "" when no route matched
	problems []string
	served   bool // a 2xx answer that validated
}

func (v *validator) check(x *exchange) verdict {
	var out verdict
	// Go's net/url rejects ';' in query strings, which the official client uses to join
	// process_instance_ids (DELETE /process_instances); escape it so the parameter survives parsing.
	target := x.target
	if i := strings.IndexByte(target, '?'); i >= 0 {
		target = target[:i] + strings.ReplaceAll(target[i:], ";", "%3B")
	}
	req, err := http.NewRequest(x.method, "http://localhost"+target, bytes.NewReader(x.reqBody))
	if err != nil {
		out.problems = append(out.problems, "rebuilding request: "+err.Error())
		return out
	}
	req.Header = x.reqHeader.Clone()
	route, params, err := v.router.FindRoute(req)
	if err != nil {
		out.problems = append(out.problems, "request matches no operation of the spec: "+err.Error())
		return out
	}
	out.op = x.method + " " + route.Path
	ctx := context.Background()
	reqIn := &openapi3filter.RequestValidationInput{
		Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: bearerAuth, MultiError: true},
	}
	reqErr := openapi3filter.ValidateRequest(ctx, reqIn)
	switch {
	case x.expectInvalid && reqErr == nil:
		out.problems = append(out.problems, "request was meant to violate the spec but validated (validator too lax)")
	case !x.expectInvalid && reqErr != nil:
		out.problems = append(out.problems, "request invalid: "+oneLine(reqErr))
	}
	if x.clientGone {
		return out
	}
	if x.status >= 400 {
		out.problems = append(out.problems, checkBaseError(x)...)
		return out
	}
	respIn := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: reqIn,
		Status:                 x.status,
		Header:                 x.respHeader,
		Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	respIn.SetBodyBytes(x.respBody)
	if err := openapi3filter.ValidateResponse(ctx, respIn); err != nil {
		out.problems = append(out.problems, "response invalid: "+oneLine(err)+"; body: "+clip(x.respBody))
		return out
	}
	if x.status == http.StatusNoContent && len(x.respBody) != 0 {
		out.problems = append(out.problems, "204 with a body: "+clip(x.respBody))
		return out
	}
	out.served = x.status < 300
	return out
}

// checkBaseError verifies an error answer is BaseError.serialize() JSON with code == HTTP status (API.md §1.4).
func checkBaseError(x *exchange) []string {
	var probs []string
	if ct := x.respHeader.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		probs = append(probs, fmt.Sprintf("error Content-Type %q, want application/json", ct))
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(x.respBody, &raw); err != nil {
		return append(probs, "error body is not a JSON object: "+clip(x.respBody))
	}
	for _, k := range []string{"errorClassName", "code", "message", "callStack", "fatal", "errorType", "isEngineError", "name"} {
		if _, ok := raw[k]; !ok {
			probs = append(probs, "error body lacks "+k+": "+clip(x.respBody))
		}
	}
	var be engine.BaseError
	if err := json.Unmarshal(x.respBody, &be); err != nil {
		return append(probs, "error body does not decode as BaseError: "+err.Error())
	}
	if be.Code != x.status {
		probs = append(probs, fmt.Sprintf("error code %d != HTTP status %d", be.Code, x.status))
	}
	if want := errorClass(x.status); be.ErrorClassName != want || be.Name != want {
		probs = append(probs, fmt.Sprintf("errorClassName/name %q/%q, want %q for %d", be.ErrorClassName, be.Name, want, x.status))
	}
	if be.Message == "" {
		probs = append(probs, "error message empty")
	}
	return probs
}

func oneLine(err error) string {
	s := strings.Join(strings.Fields(err.Error()), " ")
	if len(s) > 600 {
		s = s[:600] + "…"
	}
	return s
}

func clip(b []byte) string {
	s := string(b)
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// validateAll validates every recorded exchange, reports problems and returns the operations that
// were served with a valid 2xx answer.
func validateAll(t *testing.T, v *validator, xs []*exchange) map[string]bool {
	t.Helper()
	served := map[string]bool{}
	for _, x := range xs {
		vd := v.check(x)
		if vd.served {
			served[vd.op] = true
		}
		for _, p := range vd.problems {
			t.Errorf("%s: %s", x, p)
		}
	}
	return served
}

// newRecordedServer starts the given handler behind a recorder on a loopback httptest server.
func newRecordedServer(t testing.TB, h http.Handler) (*httptest.Server, *recorder) {
	t.Helper()
	rec := &recorder{next: h}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	if u, err := url.Parse(srv.URL); err != nil || !strings.HasPrefix(u.Host, "127.0.0.1:") {
		t.Fatalf("test server not on loopback: %s", srv.URL)
	}
	return srv, rec
}

// sdkErrorClasses is the engine SDK's status → error class table (@5minds/processcube_engine_sdk
// Errors/ErrorCodes.d.ts, 4xx/5xx part; the spelling "Unavaliable" is the SDK's).
var sdkErrorClasses = map[int]string{
	400: "BadRequestError", 401: "UnauthorizedError", 402: "PaymentRequiredError", 403: "ForbiddenError",
	404: "NotFoundError", 405: "MethodNotAllowedError", 406: "NotAcceptableError", 407: "ProxyAuthenticationRequiredError",
	408: "RequestTimeoutError", 409: "ConflictError", 410: "GoneError", 411: "LengthRequiredError",
	412: "PreconditionFailedError", 413: "RequestTooLargeError", 414: "URLTooLongError", 415: "UnsupportedMediaTypeError",
	416: "RequestedRangeNotSatisfiableError", 417: "ExpectationFailedError", 418: "ImATeapotError",
	419: "AuthenticationTimeoutError", 420: "PolicyNotFulfilledError", 421: "MisdirectedRequestError",
	422: "UnprocessableEntityError", 423: "LockedError", 424: "FailedDependencyError", 426: "UpgradeRequiredError",
	428: "PreconditionRequiredError", 429: "TooManyRequestsError", 431: "RequestHeaderTooLargeError",
	451: "UnavaliableForLegalReasonsError", 500: "InternalServerError", 501: "NotImplementedError",
	502: "BadGatewayError", 503: "ServiceUnavaliableError", 504: "GatewayTimeoutError", 505: "VersionNotSupportedError",
	507: "InsufficientStorageError", 508: "LoopDetectedError", 509: "BandwithLimitExceededError",
	511: "NetworkAuthenticationRequiredError",
}

// errorClass is the class the SDK deserializes for status (the client keys its 409 handling on it).
func errorClass(status int) string {
	if c, ok := sdkErrorClasses[status]; ok {
		return c
	}
	return fmt.Sprintf("(no SDK error class for %d)", status)
}
