package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pe-bridge/pe-bridge/engine/emulator"
	"github.com/pe-bridge/pe-bridge/examples/models"
	"github.com/pe-bridge/pe-bridge/internal/natsserver"
	"github.com/pe-bridge/pe-bridge/internal/testutil"
)

// binary is the bridge binary TestMain builds once for the package run.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pe-bridge-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "bridge")
	args := []string{"build", "-o", binary, "-ldflags", "-X main.version=v0.0.0-test"}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, ".")...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the bridge binary:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running bridge subprocess whose output lines the test can wait for.
type proc struct {
	t   *testing.T
	cmd *exec.Cmd

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every new line
	stdout  []string
	stderr  []string
	readers sync.WaitGroup
	done    chan struct{}
	exit    int
}

func startBridge(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	if len(args) > 0 && (args[0] == "run" || args[0] == "dev") && !slices.Contains(args, "--http-addr") {
		args = append(args, "--http-addr", "127.0.0.1:0") // tests run in parallel
	}
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	outR, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errR, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, cmd: cmd, changed: make(chan struct{}), done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.readers.Add(2)
	go p.read(outR, &p.stdout)
	go p.read(errR, &p.stderr)
	go func() {
		p.readers.Wait() // pipes must be drained before Wait
		err := cmd.Wait()
		p.exit = cmd.ProcessState.ExitCode()
		if err != nil && p.exit == -1 {
			p.exit = -1
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
		if strings.Contains(p.output(true), "WARNING: DATA RACE") {
			t.Errorf("the bridge binary reported a data race")
		}
		if t.Failed() {
			t.Logf("bridge %s stdout:\n%s", strings.Join(args, " "), p.output(false))
			t.Logf("bridge stderr:\n%s", p.output(true))
		}
	})
	return p
}

func (p *proc) read(r io.Reader, lines *[]string) {
	defer p.readers.Done()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		p.mu.Lock()
		*lines = append(*lines, sc.Text())
		close(p.changed)
		p.changed = make(chan struct{})
		p.mu.Unlock()
	}
}

func (p *proc) output(stderr bool) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if stderr {
		return strings.Join(p.stderr, "\n")
	}
	return strings.Join(p.stdout, "\n")
}

// waitLine waits until a stdout line contains substr and returns it.
func (p *proc) waitLine(substr string, timeout time.Duration) string {
	p.t.Helper()
	l, ok := p.waitFor(func(lines []string) (string, bool) {
		for _, l := range lines {
			if strings.Contains(l, substr) {
				return l, true
			}
		}
		return "", false
	}, timeout)
	if !ok {
		p.t.Fatalf("no stdout line with %q within %s", substr, timeout)
	}
	return l
}

// waitFor waits until f, called on all stdout lines so far, reports true.
func (p *proc) waitFor(f func(lines []string) (string, bool), timeout time.Duration) (string, bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		s, ok := f(p.stdout)
		ch := p.changed
		p.mu.Unlock()
		if ok {
			return s, true
		}
		select {
		case <-ch:
		case <-p.done:
			p.mu.Lock()
			s, ok := f(p.stdout)
			p.mu.Unlock()
			return s, ok
		case <-deadline.C:
			return "", false
		}
	}
}

func (p *proc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signalling bridge: %v", err)
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.exit
	case <-time.After(timeout):
		p.t.Fatalf("bridge did not exit within %s", timeout)
		return 0
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.t.Helper()
	p.signal(syscall.SIGKILL)
	p.wait(10 * time.Second)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// testEngine is an in-test engine emulator with the sample models.
func testEngine(t *testing.T, cfg emulator.Config) (*emulator.Emulator, string) {
	t.Helper()
	emu, srv := serveEngine(t, cfg, httptest.NewServer)
	return emu, srv.URL
}

// serveEngine serves an emulator with the example models on a server made
// by newServer (httptest.NewServer or httptest.NewTLSServer).
func serveEngine(t *testing.T, cfg emulator.Config, newServer func(http.Handler) *httptest.Server) (*emulator.Emulator, *httptest.Server) {
	t.Helper()
	emu, err := emulator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := emu.LoadFS(models.FS); err != nil {
		t.Fatal(err)
	}
	srv := newServer(emu)
	t.Cleanup(func() {
		emu.Close()
		srv.Close()
	})
	return emu, srv
}

func testNATS(t *testing.T) *natsserver.Server {
	t.Helper()
	ns, err := natsserver.Start(natsserver.Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// eventually polls f until it returns nil or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	testutil.Eventually(t, timeout, f)
}

func newHTTPServer(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}
