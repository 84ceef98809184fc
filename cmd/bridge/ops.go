package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/internal/config"
	"github.com/pe-bridge/pe-bridge/internal/natsserver"
	"github.com/pe-bridge/pe-bridge/internal/telemetry"
)

// Readiness checks, in the order /readyz lists them.
const (
	checkNATS    = "nats"
	checkEngine  = "engine"
	checkTopics  = "topics"
	checkService = "service"
	checkEvents  = "events"
)

// checkOrder is the order /readyz lists the checks in.
var checkOrder = []string{checkNATS, checkEngine, checkTopics, checkService, checkEvents}

// readiness answers /readyz. Every check reads state in memory (a channel,
// an atomic, the engine client's outage state, the NATS connection's
// status), so a probe never waits for the bridge.
type readiness struct {
	nc       atomic.Pointer[nats.Conn]
	eng      atomic.Pointer[engine.Client]
	engineOK atomic.Pointer[string] // nil: identified; else why not
	topics   atomic.Pointer[<-chan struct{}]
	service  atomic.Pointer[<-chan struct{}]
	events   atomic.Pointer[<-chan struct{}]
	draining atomic.Bool
	metrics  *telemetry.Metrics // may be nil
}

func newReadiness(m *telemetry.Metrics) *readiness {
	r := &readiness{metrics: m}
	if m != nil {
		m.BeforeScrape(func() { r.check() })
	}
	why := "not asked yet (GET /info)"
	r.engineOK.Store(&why)
	return r
}

func (r *readiness) setEngine(why string) {
	if why == "" {
		r.engineOK.Store(nil)
		return
	}
	r.engineOK.Store(&why)
}

func closedOrWaiting(ch *<-chan struct{}, waiting string) string {
	if ch == nil {
		return waiting
	}
	select {
	case <-*ch:
		return ""
	default:
		return waiting
	}
}

// check runs every check: name → "" when it passes, else why not.
func (r *readiness) check() (map[string]string, bool) {
	res := map[string]string{}
	if nc := r.nc.Load(); nc == nil {
		res[checkNATS] = "not connected yet"
	} else if !nc.IsConnected() {
		res[checkNATS] = "not connected (" + nc.Status().String() + ")"
	} else {
		res[checkNATS] = ""
	}
	res[checkEngine] = ""
	if why := r.engineOK.Load(); why != nil {
		res[checkEngine] = *why
	} else if eng := r.eng.Load(); eng != nil {
		if since, err := eng.Outage(); !since.IsZero() {
			res[checkEngine] = fmt.Sprintf("unreachable since %s: %v", since.UTC().Format(time.RFC3339), err)
		}
	}
	res[checkTopics] = closedOrWaiting(r.topics.Load(), "first topic discovery not done")
	res[checkService] = closedOrWaiting(r.service.Load(), "micro service not registered")
	res[checkEvents] = closedOrWaiting(r.events.Load(), "engine event feed not connected yet")
	ok := true
	for _, v := range res {
		if v != "" {
			ok = false
		}
	}
	if r.draining.Load() {
		ok = false
	}
	if r.metrics != nil {
		for k, v := range res {
			r.metrics.SetReady(k, v == "")
		}
		r.metrics.SetReady("all", ok)
	}
	return res, ok
}

type readyBody struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
	Failed []string          `json:"failed,omitempty"`
}

func (r *readiness) serveReady(w http.ResponseWriter, _ *http.Request) {
	res, ok := r.check()
	body := readyBody{Status: "ready", Checks: map[string]string{}}
	for _, k := range checkOrder {
		if v, in := res[k]; in {
			if v == "" {
				body.Checks[k] = "ok"
			} else {
				body.Checks[k] = v
				body.Failed = append(body.Failed, k)
			}
		}
	}
	code := http.StatusOK
	switch {
	case r.draining.Load():
		body.Status, code = "draining", http.StatusServiceUnavailable
	case !ok:
		body.Status, code = "not ready", http.StatusServiceUnavailable
	}
	writeJSON(w, code, body)
}

func serveHealth(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// opsServer serves /healthz, /readyz and /metrics on --http-addr.
type opsServer struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// startOps listens on addr (a taken port is a *config.FlagError naming
// --http-addr) and serves until close.
func startOps(addr string, r *readiness, m *telemetry.Metrics, stdout io.Writer, logger *slog.Logger) (*opsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, &config.FlagError{Flag: "http-addr", Msg: fmt.Sprintf("listening on %s: %v (choose another address with --http-addr or PE_HTTP_ADDR; empty turns it off)", addr, errors.Unwrap(err))}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", serveHealth)
	mux.HandleFunc("GET /readyz", r.serveReady)
	if m != nil {
		mux.Handle("GET /metrics", m.Handler())
	}
	s := &opsServer{
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
			WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second,
			ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelDebug)},
		ln:   ln,
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Warn("health and metrics server stopped", "error", err)
		}
	}()
	fmt.Fprintf(stdout, "health and metrics on http://%s (/healthz, /readyz, /metrics)\n", ln.Addr())
	return s, nil
}

func (s *opsServer) close() {
	if s == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
	}
	<-s.done
}

// identifyEngine asks GET /info until the engine answers as an engine does,
// with backoff (1 s doubling to 30 s). A server that is not an engine is
// logged at ERROR (naming the URL, the status and the content type), again
// only when that answer changes; no answer is the client's outage log. It
// returns ctx.Err() when ctx ends first.
func identifyEngine(ctx context.Context, eng *engine.Client, r *readiness, logger *slog.Logger) (engine.ApplicationInfo, error) {
	backoff := time.Second
	var last string
	for {
		info, err := eng.Identify(ctx)
		if err == nil {
			r.setEngine("")
			return info, nil
		}
		if ctx.Err() != nil {
			return info, ctx.Err()
		}
		var ne *engine.NotEngineError
		switch {
		case errors.As(err, &ne):
			r.setEngine(fmt.Sprintf("%s answered HTTP %d (%s), not as an engine", ne.URL, ne.Status, ne.ContentType))
			if msg := err.Error(); msg != last {
				last = msg
				logger.Error("the engine URL does not answer as a ProcessCube engine; retrying with backoff",
					"url", ne.URL, "status", ne.Status, "content_type", ne.ContentType, "reason", ne.Reason)
			}
		case engine.IsTemporary(err):
			r.setEngine("no answer: " + err.Error())
		default:
			r.setEngine(err.Error())
			if msg := err.Error(); msg != last {
				last = msg
				logger.Error("the engine refused GET /info; retrying with backoff", "url", eng.URL(), "error", err)
			}
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return info, ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// natsListenError maps a taken embedded NATS port to a usage error naming
// --nats-listen.
func natsListenError(err error) error {
	var le *natsserver.ListenError
	if errors.As(err, &le) {
		return &config.FlagError{Flag: "nats-listen", Msg: fmt.Sprintf("listening on %s: %v (choose another address with --nats-listen or PE_NATS_LISTEN; port 0 picks a free one)", le.Addr, errors.Unwrap(le.Err))}
	}
	return err
}

// startTracing builds the tracing the OTEL_* variables ask for; nil when
// off. A bad value is a usage error (exit 2).
func startTracing(ctx context.Context, logger *slog.Logger) (*telemetry.Tracing, error) {
	tr, err := telemetry.TracingFromEnv(ctx, buildVersion(), os.Getenv)
	if err != nil {
		return nil, usageError{err}
	}
	if tr != nil {
		logger.Info("tracing on: OTLP exporter configured by the OTEL_* environment variables")
	}
	return tr, nil
}

func stopTracing(tr *telemetry.Tracing, logger *slog.Logger) {
	if tr == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tr.Shutdown(ctx); err != nil {
		logger.Warn("flushing spans", "error", err)
	}
}
