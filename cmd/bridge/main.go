package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"sync"
	"syscall"

	"github.com/pe-bridge/pe-bridge/internal/config"
)

// version is set at build time: go build -ldflags "-X main.version=v1.2.3".
// Empty: the module version from the build info, else "devel".
var version string

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// usageError is a command-line or configuration error: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

const topUsage = `pe-bridge connects the 5Minds ProcessCube engine to NATS.

Usage:
  bridge run       --engine-url URL [--nats-url URL] [flags]   bridge an engine and NATS
  bridge dev       [--demo] [flags]                            embedded NATS + engine emulator + bridge, one process
  bridge emulator  [--addr HOST:PORT] [--models DIR]           serve the engine emulator alone (development and tests)
  bridge probe      [--http-addr HOST:PORT] [--live]            ask a running bridge's /readyz (container health checks)
  bridge version                                               print the version

"bridge <command> --help" lists each command's flags. Every flag can also be
given as an environment variable: the flag name upper-cased, dashes turned
into underscores, prefixed with PE_ (--engine-url is PE_ENGINE_URL), or in a
config file (--config FILE) under the flag's name. Flags win over environment
variables, which win over the file.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line args and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, topUsage)
		return 2
	}
	stdout = &syncWriter{w: stdout} // status lines come from several goroutines
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(ctx, stop, args[1:], stdout, stderr)
	case "dev":
		err = cmdDev(ctx, stop, args[1:], stdout, stderr)
	case "emulator":
		err = cmdEmulator(ctx, stop, args[1:], stdout, stderr)
	case "probe":
		err = cmdProbe(ctx, args[1:], stdout)
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "pe-bridge %s (%s, %s/%s)\n", buildVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, topUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "bridge: unknown command %q\n\n%s", args[0], topUsage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	}
	fmt.Fprintf(stderr, "bridge %s: %v\n", args[0], err)
	var ue usageError
	var fe *config.FlagError
	if errors.As(err, &ue) || errors.As(err, &fe) {
		return 2
	}
	return 1
}

// parseFlags parses args into fs (flags, PE_* env, config file). --help
// prints the usage to stdout and returns flag.ErrHelp; other parse errors are
// usage errors.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer, usage, description string) error {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if err := config.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			config.PrintUsage(stdout, fs, usage, description)
			return flag.ErrHelp
		}
		return usageError{fmt.Errorf("%w (see --help)", err)}
	}
	return nil
}

// syncWriter serializes writes, so lines from several goroutines never interleave.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
