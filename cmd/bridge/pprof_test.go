package main

import (
	"bytes"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/pe-bridge/pe-bridge/internal/config"
)

func TestPprofServer(t *testing.T) {
	var out bytes.Buffer
	stop, err := startPprof("127.0.0.1:0", &out, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`http://\S+/debug/pprof/`).FindString(out.String())
	if m == "" {
		stop()
		t.Fatalf("no pprof URL printed: %q", out.String())
	}
	for _, path := range []string{"", "cmdline", "goroutine?debug=1"} {
		resp, err := http.Get(m + path)
		if err != nil {
			stop()
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || len(body) == 0 {
			t.Errorf("GET %s: %d, %d bytes", m+path, resp.StatusCode, len(body))
		}
	}
	stop()
	if _, err := http.Get(m); err == nil {
		t.Error("pprof still served after stop")
	}
}

func TestPprofAddrFlag(t *testing.T) {
	parse := func(args ...string) (config.Settings, error) {
		var s config.Settings
		fs := flag.NewFlagSet("run", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		s.RegisterEngine(fs)
		s.RegisterPprof(fs)
		if err := fs.Parse(args); err != nil {
			return s, err
		}
		return s, s.Validate()
	}
	if s, err := parse("--engine-url", "http://e:8000"); err != nil || s.PprofAddr != "" {
		t.Fatalf("default: %q, %v (want off)", s.PprofAddr, err)
	}
	if _, err := parse("--engine-url", "http://e:8000", "--pprof-addr", "127.0.0.1:6060"); err != nil {
		t.Fatal(err)
	}
	if _, err := parse("--engine-url", "http://e:8000", "--pprof-addr", "nonsense"); err == nil || !strings.Contains(err.Error(), "pprof-addr") {
		t.Fatalf("bad address: %v", err)
	}
}

func TestSetGCPercent(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	t.Setenv("GOGC", "")
	if got := setGCPercent(); got != "200" {
		t.Errorf("GOGC unset: %q, want 200", got)
	}
	if prev := debug.SetGCPercent(100); prev != defaultGCPercent {
		t.Errorf("GC percent %d after setGCPercent, want %d", prev, defaultGCPercent)
	}
	t.Setenv("GOGC", "50")
	if got := setGCPercent(); got != "50" {
		t.Errorf("GOGC=50: %q", got)
	}
	if prev := debug.SetGCPercent(100); prev != 100 {
		t.Errorf("GOGC set: GC percent changed to %d", prev)
	}
}
