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
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/internal/config"
)

const devDescription = `Runs everything in one process, for development: an embedded nats-server (JetStream on)
on --nats-listen, the engine EMULATOR (not the ProcessCube engine) with the embedded sample
models on --engine-addr, and the bridge (task pump, request/reply service, event forwarder)
between them, with the dummy token. It prints the URLs and how to try it with the nats CLI.

--demo also runs a sample handler on pe.task.SampleExternalTask and starts a hello_world
instance every second, printing each step of the round trip (started, task published,
handled, finished, process ended) as seen on NATS.`

func cmdDev(ctx context.Context, stop func(), args []string, stdout, stderr io.Writer) error {
	var s config.Settings
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	s.RegisterConfigFile(fs)
	s.RegisterDev(fs)
	s.RegisterNATSEmbedded(fs)
	s.RegisterPump(fs)
	s.RegisterBridge(fs)
	s.RegisterLog(fs)
	s.RegisterHTTP(fs)
	if err := parseFlags(fs, args, stdout, "bridge dev [--demo] [flags]", devDescription); err != nil {
		return err
	}
	if err := s.Validate(); err != nil {
		return err
	}
	if s.Demo && s.NoService {
		return &config.FlagError{Flag: "no-service", Msg: "--demo starts processes through the service"}
	}
	if s.Demo && s.NATSConfig != "" {
		return &config.FlagError{Flag: "nats-config", Msg: "--demo runs its sample handler with the bridge's own NATS user, which a permission model does not let take tasks"}
	}
	if s.Demo && s.NoEvents {
		return &config.FlagError{Flag: "no-events", Msg: "--demo observes the round trip through the forwarded events"}
	}
	logger := s.NewLogger(stderr)
	logger.Debug("starting pe-bridge dev", "version", buildVersion(), "config", &s)

	ns, err := startEmbeddedNATS(&s, logger)
	if err != nil {
		return err
	}
	defer ns.Close()

	ln, err := net.Listen("tcp", s.EngineAddr)
	if err != nil {
		return &config.FlagError{Flag: "engine-addr", Msg: fmt.Sprintf("listening: %v", err)}
	}
	base := "http://" + ln.Addr().String()
	es, err := newEmulatorServer(emulatorServerConfig{baseURL: base, logger: logger})
	if err != nil {
		ln.Close()
		return err
	}
	defer es.close()
	srv := &http.Server{Handler: es.handler, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelDebug)}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		// The emulator outlives the bridge so in-flight tasks can finish while draining.
		es.close()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
		if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("serving emulator", "error", err)
		}
	}()
	s.EngineURL = base

	natsURL := ns.ClientURL()
	fmt.Fprintln(stdout, "pe-bridge dev: NATS, engine emulator and bridge in one process (development only)")
	fmt.Fprintf(stdout, "  NATS:   %s (embedded nats-server, JetStream on)\n", natsURL)
	fmt.Fprintf(stdout, "  engine: %s (engine emulator, not the ProcessCube engine; models: %s)\n", base, strings.Join(es.models, ", "))
	fmt.Fprintf(stdout, "try it:  nats --server %s reply pe.task.SampleExternalTask '{\"greeting\":\"hi\"}' --queue pe-handlers\n", natsURL)
	fmt.Fprintf(stdout, "   and:  nats --server %s req --timeout 70s pe.process.start '{\"processModelId\":\"hello_world\",\"returnOn\":\"finished\"}'\n", natsURL)

	events := s.Events.Values
	var extra func(context.Context, <-chan struct{}) error
	if s.Demo {
		for _, e := range []string{"activity_finished", "process_ended"} {
			if !slices.Contains(events, e) {
				events = append(slices.Clone(events), e)
			}
		}
		extra = func(ctx context.Context, ready <-chan struct{}) error {
			opts, err := natsOptions(&s, "pe-bridge-demo", logger.With("component", "demo"))
			if err != nil {
				return err
			}
			dnc, err := nats.Connect(natsURL, opts...)
			if err != nil {
				return fmt.Errorf("demo: connecting to NATS: %w", err)
			}
			return runDemo(ctx, dnc, ready, stdout, logger.With("component", "demo"))
		}
	}
	return runBridge(ctx, stop, &s, natsURL, events, extra, stdout, logger)
}
