package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/internal/config"
	"github.com/pe-bridge/pe-bridge/internal/natsserver"
	"github.com/pe-bridge/pe-bridge/internal/telemetry"
)

const runDescription = `Bridges a ProcessCube engine and NATS: locks the engine's external tasks and publishes
each as a CloudEvent on pe.task.<topic> (a handler's reply finishes the task or raises its
BPMN error), serves process start, user tasks, messages and signals as the NATS micro
service "pe-bridge" (pe.process.*, pe.usertask.*, pe.message.trigger, pe.signal.trigger),
and forwards engine events on pe.event.<name>.

By default every deployed topic is bridged. Without --nats-url an embedded nats-server
(JetStream on) is started on --nats-listen and its URL printed. Without --client-id the
dummy token is used (development engines only). SIGINT/SIGTERM drain: fetching stops at
once, in-flight tasks may still finish for --drain-timeout, then a summary line is printed.`

func cmdRun(ctx context.Context, stop func(), args []string, stdout, stderr io.Writer) error {
	var s config.Settings
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	s.RegisterConfigFile(fs)
	s.RegisterEngine(fs)
	s.RegisterNATSClient(fs)
	s.RegisterNATSEmbedded(fs)
	s.RegisterPump(fs)
	s.RegisterBridge(fs)
	s.RegisterLog(fs)
	s.RegisterPprof(fs)
	s.RegisterHTTP(fs)
	if err := parseFlags(fs, args, stdout, "bridge run --engine-url URL [--nats-url URL] [flags]", runDescription); err != nil {
		return err
	}
	if err := s.Validate(); err != nil {
		return err
	}
	logger := s.NewLogger(stderr)
	logger.Info("starting pe-bridge", "version", buildVersion(), "config", &s, "gogc", setGCPercent())
	if s.PprofAddr != "" {
		stopPprof, err := startPprof(s.PprofAddr, stdout, logger)
		if err != nil {
			return err
		}
		defer stopPprof()
	}

	var ns *natsserver.Server
	natsURL := s.NATSURL
	if natsURL == "" {
		var err error
		if ns, err = startEmbeddedNATS(&s, logger); err != nil {
			return err
		}
		defer ns.Close()
		natsURL = ns.ClientURL()
		fmt.Fprintf(stdout, "embedded NATS (JetStream on, store %s) listening on %s\n", ns.StoreDir(), natsURL)
	}
	return runBridge(ctx, stop, &s, natsURL, s.Events.Values, nil, stdout, logger)
}

// defaultGCPercent is the GC target of `bridge run` when GOGC is not set.
// Measured in docs/performance.md: 200 cuts the bridge's CPU per task by
// about 10–15% against Go's default 100 and keeps the bridge under 150 MB
// with 10,000 tasks in flight; 400 no longer does.
const defaultGCPercent = 200

// setGCPercent applies defaultGCPercent unless GOGC is set, and returns the
// GOGC in effect ("200", or the environment's value).
func setGCPercent() string {
	if v := os.Getenv("GOGC"); v != "" {
		return v
	}
	debug.SetGCPercent(defaultGCPercent)
	return strconv.Itoa(defaultGCPercent)
}

// startPprof serves net/http/pprof on addr with a mux and server of its own
// (never http.DefaultServeMux) until the returned stop is called. The
// command line is not served (redactedCmdline).
func startPprof(addr string, stdout io.Writer, logger *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, &config.FlagError{Flag: "pprof-addr", Msg: fmt.Sprintf("listening on %s: %v", addr, errors.Unwrap(err))}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", redactedCmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Warn("pprof server stopped", "error", err)
		}
	}()
	fmt.Fprintf(stdout, "pprof listening on http://%s/debug/pprof/\n", ln.Addr())
	return func() {
		_ = srv.Close()
		<-done
	}, nil
}

// redactedCmdline replaces pprof.Cmdline, which serves the command line in
// clear (--client-secret, --nats-password, --nats-token with it): only the
// program name is served, in pprof's format (arguments NUL-separated).
func redactedCmdline(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	name := "bridge"
	if len(os.Args) > 0 {
		name = os.Args[0]
	}
	fmt.Fprintf(w, "%s\x00[arguments not shown: they may hold secrets]", name)
}

func startEmbeddedNATS(s *config.Settings, logger *slog.Logger) (*natsserver.Server, error) {
	cfg := natsserver.Config{
		Listen:     s.NATSListen,
		StoreDir:   s.NATSStoreDir,
		ConfigFile: s.NATSConfig,
		Logger:     logger,
	}
	if s.NATSConfig == "" {
		// Without a config file the bridge's credentials are the server's
		// only user; with one, they are just the bridge's own.
		cfg.User, cfg.Password, cfg.Token = s.NATSUser, s.NATSPassword, s.NATSToken
	}
	ns, err := natsserver.Start(cfg)
	if err != nil {
		if lerr := natsListenError(err); lerr != err {
			return nil, lerr
		}
		return nil, fmt.Errorf("starting embedded NATS on %s: %w", s.NATSListen, err)
	}
	if s.NATSConfig == "" && !loopback(ns.Addr()) {
		logger.Warn("embedded NATS listens beyond loopback without --nats-config: every client that reaches it (with the bridge's own user or token, if set) may take tasks, answer them and act on the engine as the bridge; see docs/security.md",
			"nats_listen", s.NATSListen)
	}
	return ns, nil
}

// loopback reports whether addr is a loopback TCP address.
func loopback(addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// runBridge serves health, readiness and metrics on --http-addr, connects
// to NATS and the engine (waiting, not ready, while either does not answer),
// runs the pump, service and forwarder (and extra, if given; ready is closed
// once the bridge is ready) until ctx is done, drains, and prints the summary
// line.
func runBridge(ctx context.Context, stop func(), s *config.Settings, natsURL string, events []string,
	extra func(ctx context.Context, ready <-chan struct{}) error, stdout io.Writer, logger *slog.Logger) error {
	tracing, err := startTracing(ctx, logger)
	if err != nil {
		return err
	}
	defer stopTracing(tracing, logger)
	var metrics *telemetry.Metrics
	if s.HTTPAddr != "" {
		metrics = telemetry.NewMetrics(buildVersion())
	}
	rd := newReadiness(metrics)
	if s.HTTPAddr != "" {
		ops, err := startOps(s.HTTPAddr, rd, metrics, stdout, logger.With("component", "http"))
		if err != nil {
			return err
		}
		defer ops.close()
	}

	opts, err := natsOptions(s, "pe-bridge", logger.With("component", "nats"))
	if err != nil {
		return err
	}
	natsUp := make(chan struct{})
	var natsOnce sync.Once
	opts = append(opts, nats.RetryOnFailedConnect(true),
		nats.ConnectHandler(func(*nats.Conn) { natsOnce.Do(func() { close(natsUp) }) }))
	nc, err := nats.Connect(natsURL, opts...)
	if err != nil {
		return fmt.Errorf("connecting to NATS at %s: %w", config.RedactURL(natsURL), err)
	}
	defer nc.Close()
	rd.nc.Store(nc)
	if metrics != nil {
		metrics.WatchNATS(nc)
	}
	if nc.IsConnected() {
		natsOnce.Do(func() { close(natsUp) })
	} else {
		logger.Warn("NATS not reachable yet; retrying (not ready until connected)", "url", config.RedactURL(natsURL))
	}
	var obs engine.CallObserver
	if metrics != nil {
		obs = metrics
	}
	eng, err := engineClient(ctx, s, obs, rd, logger)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while waiting for a token: nothing ran
		}
		return err
	}
	defer eng.Close()
	rd.eng.Store(eng)
	select {
	case <-natsUp:
	case <-ctx.Done():
		return nil
	}
	info, err := identifyEngine(ctx, eng, rd, logger.With("component", "engine"))
	if err != nil {
		return nil // cancelled while waiting: nothing ran
	}
	logger.Info("engine identified", "url", config.RedactURL(s.EngineURL), "name", info.Name, "version", info.Version)
	parts, err := newBridgeParts(s, nc, eng, events, hooks{metrics: metrics, tracing: tracing}, logger)
	if err != nil {
		return err
	}
	topics := "every deployed topic"
	if len(s.Topics.Values) > 0 {
		topics = strings.Join(s.Topics.Values, ", ")
	}
	fmt.Fprintf(stdout, "bridge running: engine %s (%s %s), NATS %s, topics: %s\n", config.RedactURL(s.EngineURL), info.Name, info.Version, nc.ConnectedUrlRedacted(), topics)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		<-gctx.Done()
		rd.draining.Store(true)
		stop() // a second signal ends the process at once
		if ctx.Err() != nil {
			fmt.Fprintf(stdout, "shutting down: draining in-flight tasks (up to %s)\n", s.DrainTimeout)
		}
		return nil
	})
	parts.start(gctx, g)
	discovered := parts.discovered()
	rd.topics.Store(&discovered)
	svcReady := parts.serviceReady()
	rd.service.Store(&svcReady)
	feedUp := parts.eventsUp()
	rd.events.Store(&feedUp)
	ready := make(chan struct{})
	g.Go(func() error {
		for _, ch := range []<-chan struct{}{discovered, svcReady, feedUp} {
			select {
			case <-ch:
			case <-gctx.Done():
				return nil
			}
		}
		fmt.Fprintln(stdout, "bridge ready")
		close(ready)
		return nil
	})
	if extra != nil {
		// extra runs next to the parts; its error cancels gctx like any other.
		g.Go(func() error { return extra(gctx, ready) })
	}
	err = g.Wait()
	if ferr := nc.Flush(); ferr != nil {
		logger.Debug("flushing NATS", "error", ferr)
	}
	fmt.Fprintln(stdout, parts.summary())
	return err
}
