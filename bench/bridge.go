package main

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"time"
)

// bridgeCLI is what the harness learnt from `bridge run --help`: which of
// the flags it needs this build of cmd/bridge offers.
type bridgeCLI struct {
	natsListenFlag string // where the embedded nats-server listens
	pprofFlag      string
	topicsFlag     string
	windowFlag     string
	logLevelFlag   string
	noEvents       string
	noService      string
	httpFlag       string
}

var flagRE = regexp.MustCompile(`(?m)^\s*-{1,2}([a-z0-9][a-z0-9-]*)`)

func probeBridge(ctx context.Context, bin string) (bridgeCLI, error) {
	var cli bridgeCLI
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, bin, "run", "--help").CombinedOutput()
	flags := map[string]bool{}
	for _, m := range flagRE.FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	if !flags["engine-url"] {
		return cli, fmt.Errorf("`bridge run --help` lists no --engine-url flag (is `bridge run` implemented?): %s", truncate(string(out), 400))
	}
	pick := func(names ...string) string {
		for _, n := range names {
			if flags[n] {
				return "--" + n
			}
		}
		return ""
	}
	cli.natsListenFlag = pick("nats-listen", "embedded-nats-listen", "nats-addr", "embedded-nats-addr", "nats-listen-addr")
	cli.pprofFlag = pick("pprof-addr", "pprof", "debug-addr")
	cli.topicsFlag = pick("topics", "topic")
	cli.windowFlag = pick("window")
	cli.logLevelFlag = pick("log-level")
	cli.noEvents = pick("no-events")
	cli.noService = pick("no-service")
	cli.httpFlag = pick("http-addr")
	if cli.windowFlag == "" {
		return cli, fmt.Errorf("`bridge run` has no --window flag")
	}
	if cli.natsListenFlag == "" {
		return cli, fmt.Errorf("`bridge run` has no flag for the embedded NATS listen address")
	}
	return cli, nil
}

// runArgs is the command line of the bridge of one run: embedded NATS on
// natsPort, the benchmark topic only (one topic group), the given window,
// logs at warn (as the official worker's), the task pump only unless full
// (no event forwarder, no request/reply service: the other paths do
// neither), everything else at its defaults (lock 30 s, long poll 10 s).
func (b bridgeCLI) runArgs(engineURL string, natsPort, window int, full bool) []string {
	args := []string{"run", "--engine-url", engineURL, b.windowFlag, strconv.Itoa(window),
		b.natsListenFlag, fmt.Sprintf("127.0.0.1:%d", natsPort)}
	if b.topicsFlag != "" {
		args = append(args, b.topicsFlag, benchTopic)
	}
	if !full && b.noEvents != "" {
		args = append(args, b.noEvents)
	}
	if !full && b.noService != "" {
		args = append(args, b.noService)
	}
	if b.logLevelFlag != "" {
		args = append(args, b.logLevelFlag, "warn")
	}
	if b.httpFlag != "" {
		// health and metrics on (the default), on a free port: runs never collide
		args = append(args, b.httpFlag, "127.0.0.1:0")
	}
	return args
}
