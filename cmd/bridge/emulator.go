package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/engine/authority"
	"github.com/pe-bridge/pe-bridge/engine/emulator"
	"github.com/pe-bridge/pe-bridge/internal/config"
)

const emulatorDescription = `Serves an EMULATOR of the 5Minds ProcessCube engine REST API (/atlas_engine/api/v1),
in memory, for development and tests. It is not the ProcessCube engine: it executes a
useful subset of BPMN (start/end events, external service tasks, user tasks, exclusive
and parallel gateways, message and signal catch events, error and timer boundary events,
terminate) so that any ProcessCube client (TypeScript, Python, .NET, the bridge) can be
run and tested without an engine. Notifications come as REST long polls and, as the
engine pushes them, over Socket.IO (namespace api, path /socket.io). State is lost when
it stops.

Without --models it deploys the embedded sample models (hello_world, approval, ...).
The dummy token (anonymous root access) is accepted unless --deny-anonymous is given.
--authority also serves an emulated OAuth authority (OIDC discovery + client-credentials
token endpoint) under /oauth on the same address; GET /atlas_engine/api/v1/authority then
points at it, and tokens it issues to --client-id/--client-secret are accepted.
` + faultsDescription

const authorityPath = "/oauth"

const faultsDescription = `
Fault injection (--fault-*), for testing clients against a misbehaving engine: each
matching request draws, independently and in this order, drop (connection closed, no
answer), stall (held until the client gives up, no answer), error (--fault-status, no
state change) and after-effect (the request takes effect, then 500: a lost
acknowledgement). --fault-latency delays every matching request before it is handled,
--fault-answer-delay holds the answer of every matching request after it took effect.
--fault-path restricts all of them to request paths containing a substring, e.g.
--fault-path extend_lock --fault-answer-delay 6s, or --fault-path extend_lock
--fault-stall-rate 0.25, or --fault-path external_tasks --fault-stall-rate 0.05.`

// emulatorFlags are the settings of `bridge emulator`.
type emulatorFlags struct {
	addr          string
	models        string
	authority     bool
	clientID      string
	clientSecret  string
	scopes        config.List
	denyAnonymous bool
	faults        emulator.Faults
	logFormat     string
	logLevel      string
}

func cmdEmulator(ctx context.Context, stop func(), args []string, stdout, stderr io.Writer) error {
	var f emulatorFlags
	fs := flag.NewFlagSet("emulator", flag.ContinueOnError)
	fs.StringVar(&f.addr, "addr", config.DefaultEngineAddr, "listen address (port 0: any free port)")
	fs.StringVar(&f.models, "models", "", "directory of *.bpmn files to deploy; empty: the embedded sample models")
	fs.BoolVar(&f.authority, "authority", false, "also serve an emulated OAuth authority under "+authorityPath)
	fs.StringVar(&f.clientID, "client-id", "pe-bridge", "client id registered at the emulated authority (with --authority)")
	fs.StringVar(&f.clientSecret, "client-secret", "pe-bridge-secret", "client secret registered at the emulated authority (with --authority)")
	f.scopes = config.List{Values: []string{emulator.ScopeETW, emulator.ScopeRead, emulator.ScopeWrite, emulator.ScopeObserver}}
	fs.Var(&f.scopes, "client-scopes", "scopes the client may request, a comma-separated `list` (default engine_etw,engine_read,engine_write,engine_observer)")
	fs.BoolVar(&f.denyAnonymous, "deny-anonymous", false, "refuse the dummy token (only tokens of the emulated authority pass)")
	registerFaultFlags(fs, &f.faults)
	(&config.Settings{}).RegisterConfigFile(fs)
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json (logs go to stderr)")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	if err := parseFlags(fs, args, stdout, "bridge emulator [--addr HOST:PORT] [--models DIR] [flags]", emulatorDescription); err != nil {
		return err
	}
	ls := &config.Settings{LogFormat: f.logFormat, LogLevel: f.logLevel}
	if _, err := config.ParseLevel(f.logLevel); err != nil {
		return &config.FlagError{Flag: "log-level", Msg: err.Error()}
	}
	if f.logFormat != "text" && f.logFormat != "json" {
		return &config.FlagError{Flag: "log-format", Msg: fmt.Sprintf("%q is not text or json", f.logFormat)}
	}
	if err := validateFaults(f.faults); err != nil {
		return err
	}
	if !faultsOn(f.faults) {
		f.faults = emulator.Faults{} // --fault-status or --fault-seed alone: no faults
	}
	if f.authority && (f.clientID == "" || f.clientSecret == "") {
		return &config.FlagError{Flag: "client-id", Msg: "--authority needs a --client-id and --client-secret"}
	}
	if f.denyAnonymous && !f.authority {
		return &config.FlagError{Flag: "deny-anonymous", Msg: "without --authority no token would be accepted"}
	}
	logger := ls.NewLogger(stderr)

	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		return &config.FlagError{Flag: "addr", Msg: fmt.Sprintf("listening: %v", err)}
	}
	base := "http://" + ln.Addr().String()

	es, err := newEmulatorServer(emulatorServerConfig{
		baseURL:       base,
		modelsDir:     f.models,
		authority:     f.authority,
		clients:       []authority.Client{{ID: f.clientID, Secret: f.clientSecret, Scopes: f.scopes.Values}},
		denyAnonymous: f.denyAnonymous,
		faults:        f.faults,
		logger:        logger,
	})
	if err != nil {
		ln.Close()
		return err
	}
	defer es.close()

	fmt.Fprintf(stdout, "engine emulator (for development and tests, not the ProcessCube engine) listening on %s\n", base)
	fmt.Fprintf(stdout, "engine API: %s%s\n", base, engine.BasePath)
	fmt.Fprintf(stdout, "loaded %d process models from %s: %s\n", len(es.models), es.modelsFrom, strings.Join(es.models, ", "))
	if f.authority {
		fmt.Fprintf(stdout, "emulated authority: %s%s (client id %q)\n", base, authorityPath, f.clientID)
	}
	if line := faultsSummary(f.faults); line != "" {
		fmt.Fprintln(stdout, line)
	}

	srv := &http.Server{Handler: es.handler, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelDebug)}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serving emulator: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		stop() // a second signal ends the process at once
		fmt.Fprintln(stdout, "engine emulator shutting down")
		// Long polls are held open; Close releases them so Shutdown is quick.
		es.emu.Close()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
			return fmt.Errorf("shutting down emulator: %w", err)
		}
		return nil
	})
	err = g.Wait()
	fmt.Fprintln(stdout, "engine emulator stopped")
	return err
}

type emulatorServerConfig struct {
	baseURL       string
	modelsDir     string
	authority     bool
	clients       []authority.Client
	denyAnonymous bool
	faults        emulator.Faults
	logger        *slog.Logger
}

// emulatorServer is the emulator (and optionally the authority) as one
// http.Handler, with the sample or given models deployed.
type emulatorServer struct {
	emu        *emulator.Emulator
	handler    http.Handler
	models     []string
	modelsFrom string
}

func newEmulatorServer(c emulatorServerConfig) (*emulatorServer, error) {
	ecfg := emulator.Config{DenyAnonymous: c.denyAnonymous, Logger: c.logger.With("component", "emulator")}
	mux := http.NewServeMux()
	if c.authority {
		issuer := c.baseURL + authorityPath
		a, err := authority.New(authority.Config{Issuer: issuer, Clients: c.clients})
		if err != nil {
			return nil, fmt.Errorf("creating authority: %w", err)
		}
		ecfg.AuthorityURL = issuer
		ecfg.Verify = a.Verify
		mux.Handle(authorityPath+"/", http.StripPrefix(authorityPath, a))
	}
	emu, err := emulator.New(ecfg)
	if err != nil {
		return nil, fmt.Errorf("creating emulator: %w", err)
	}
	es := &emulatorServer{emu: emu}
	if c.modelsDir != "" {
		es.models, err = emu.LoadDir(c.modelsDir)
		es.modelsFrom = c.modelsDir
	} else {
		var fsys fs.FS
		fsys, err = sampleModels()
		if err == nil {
			es.models, err = emu.LoadFS(fsys)
		}
		es.modelsFrom = "the embedded samples"
	}
	if err != nil {
		emu.Close()
		return nil, fmt.Errorf("loading models: %w", err)
	}
	emu.SetFaults(c.faults)
	mux.Handle("/", emu)
	es.handler = mux
	return es, nil
}

func (es *emulatorServer) close() { es.emu.Close() }

// registerFaultFlags adds the --fault-* flags, one per emulator.Faults field.
func registerFaultFlags(fs *flag.FlagSet, f *emulator.Faults) {
	fs.StringVar(&f.PathContains, "fault-path", "", "apply the faults only to request paths containing this `substring` (e.g. extend_lock, fetch_and_lock, external_tasks); empty: every request")
	fs.Float64Var(&f.ErrorRate, "fault-error-rate", 0, "fraction (0..1) of matching requests answered with --fault-status before any state change")
	fs.IntVar(&f.Status, "fault-status", 500, "HTTP status (400..599) of the answers of --fault-error-rate")
	fs.Float64Var(&f.DropRate, "fault-drop-rate", 0, "fraction (0..1) of matching requests whose connection is closed without an answer (no state change)")
	fs.Float64Var(&f.StallRate, "fault-stall-rate", 0, "fraction (0..1) of matching requests held until the client gives up (no state change, no answer)")
	fs.Float64Var(&f.AfterEffectRate, "fault-after-effect-rate", 0, "fraction (0..1) of matching requests that take effect and are then answered with 500 (a lost acknowledgement)")
	fs.DurationVar(&f.Latency, "fault-latency", 0, "delay added to every matching request before it is handled (cut short when the client gives up)")
	fs.DurationVar(&f.AnswerDelay, "fault-answer-delay", 0, "hold the answer of every matching request this long after it took effect (a client that gives up meanwhile gets nothing)")
	fs.Int64Var(&f.Seed, "fault-seed", 0, "seed of the random draws of the --fault-*-rate flags, for reproducible runs")
}

// validateFaults checks the --fault-* flags.
func validateFaults(f emulator.Faults) error {
	for _, r := range []struct {
		flag string
		v    float64
	}{
		{"fault-error-rate", f.ErrorRate}, {"fault-drop-rate", f.DropRate},
		{"fault-stall-rate", f.StallRate}, {"fault-after-effect-rate", f.AfterEffectRate},
	} {
		if !(r.v >= 0 && r.v <= 1) { // also NaN
			return &config.FlagError{Flag: r.flag, Msg: fmt.Sprintf("%v is not within 0..1", r.v)}
		}
	}
	if f.Status < 400 || f.Status > 599 {
		return &config.FlagError{Flag: "fault-status", Msg: fmt.Sprintf("%d is not an HTTP error status (400..599)", f.Status)}
	}
	if f.Latency < 0 {
		return &config.FlagError{Flag: "fault-latency", Msg: fmt.Sprintf("%s is negative", f.Latency)}
	}
	if f.AnswerDelay < 0 {
		return &config.FlagError{Flag: "fault-answer-delay", Msg: fmt.Sprintf("%s is negative", f.AnswerDelay)}
	}
	if f.PathContains != "" && !faultsOn(f) {
		return &config.FlagError{Flag: "fault-path", Msg: "restricts the faults, but no fault is set (--fault-error-rate, --fault-drop-rate, --fault-stall-rate, --fault-after-effect-rate, --fault-latency or --fault-answer-delay)"}
	}
	return nil
}

// faultsOn reports whether any fault is injected.
func faultsOn(f emulator.Faults) bool {
	return f.ErrorRate > 0 || f.DropRate > 0 || f.StallRate > 0 || f.AfterEffectRate > 0 || f.Latency > 0 || f.AnswerDelay > 0
}

// faultsSummary is the startup line of the fault injection, "" when off.
func faultsSummary(f emulator.Faults) string {
	if !faultsOn(f) {
		return ""
	}
	var parts []string
	if f.ErrorRate > 0 {
		parts = append(parts, fmt.Sprintf("error rate %v (status %d)", f.ErrorRate, f.Status))
	}
	if f.DropRate > 0 {
		parts = append(parts, fmt.Sprintf("drop rate %v", f.DropRate))
	}
	if f.StallRate > 0 {
		parts = append(parts, fmt.Sprintf("stall rate %v", f.StallRate))
	}
	if f.AfterEffectRate > 0 {
		parts = append(parts, fmt.Sprintf("after-effect rate %v", f.AfterEffectRate))
	}
	if f.Latency > 0 {
		parts = append(parts, fmt.Sprintf("latency %s", f.Latency))
	}
	if f.AnswerDelay > 0 {
		parts = append(parts, fmt.Sprintf("answer delay %s", f.AnswerDelay))
	}
	where := "on every request"
	if f.PathContains != "" {
		where = fmt.Sprintf("on request paths containing %q", f.PathContains)
	}
	line := "fault injection " + where + ": " + strings.Join(parts, ", ")
	if f.ErrorRate > 0 || f.DropRate > 0 || f.StallRate > 0 || f.AfterEffectRate > 0 {
		line += fmt.Sprintf(", seed %d", f.Seed)
	}
	return line
}
