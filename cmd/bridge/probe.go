package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/pe-bridge/pe-bridge/internal/config"
)

const probeDescription = `Asks a running bridge's /readyz (or, with --live, /healthz) on --http-addr and exits 0
when it answers 200, 1 otherwise, printing the JSON answer. For container health checks
in images without a shell or curl (the distroless image): a wildcard listen address
(0.0.0.0, ::) is probed on loopback.`

func cmdProbe(ctx context.Context, args []string, stdout io.Writer) error {
	var s config.Settings
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	s.RegisterConfigFile(fs)
	s.RegisterHTTP(fs)
	live := fs.Bool("live", false, "ask /healthz (process alive) instead of /readyz")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	if err := parseFlags(fs, args, stdout, "bridge probe [--http-addr HOST:PORT] [--live]", probeDescription); err != nil {
		return err
	}
	if err := s.Validate(); err != nil {
		return err
	}
	if s.HTTPAddr == "" {
		return &config.FlagError{Flag: "http-addr", Msg: "empty: nothing to probe"}
	}
	host, port, _ := net.SplitHostPort(s.HTTPAddr)
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	path := "/readyz"
	if *live {
		path = "/healthz"
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	u := "http://" + net.JoinHostPort(host, port) + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("probing %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	fmt.Fprintf(stdout, "%s", body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", u, resp.Status)
	}
	return nil
}
