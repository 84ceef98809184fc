// Command emulator serves the engine emulator (engine/emulator) with the
// example models for the side-by-side benchmark (go run ./bench), in its own
// process so that its CPU is charged to no worker.
//
// Besides the engine API it serves, under /_bench/, what the harness needs
// and `bridge emulator` does not expose over HTTP:
//
//	GET  /_bench/stats            emulator.Stats plus request counters (JSON)
//	POST /_bench/gate?open=0|1    hold (0) or release (1) fetch_and_lock requests
//	POST /_bench/instances        body ["id",...] → creation and finish times (ns)
//
// The gate lets the harness queue a backlog of tasks while the workers' long
// polls wait, then release all of them at one instant, so a run measures how
// fast a worker drains work, not how fast the harness can start processes.
//
// It prints "listening <addr>" once it accepts connections and stops on
// SIGTERM or SIGINT.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pe-bridge/pe-bridge/engine/emulator"
	"github.com/pe-bridge/pe-bridge/examples/models"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	dir := flag.String("models-dir", "", "deploy the *.bpmn files of this directory instead of the example models")
	flag.Parse()
	if err := run(*addr, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "emulator:", err)
		os.Exit(1)
	}
}

func run(addr, dir string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	emu, err := emulator.New(emulator.Config{})
	if err != nil {
		return err
	}
	defer emu.Close()
	if dir != "" {
		_, err = emu.LoadDir(dir)
	} else {
		_, err = emu.LoadFS(models.FS)
	}
	if err != nil {
		return err
	}
	b := &bench{emu: emu, open: make(chan struct{})}
	close(b.open)
	b.gateOpen = true
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_bench/stats", b.stats)
	mux.HandleFunc("POST /_bench/gate", b.gate)
	mux.HandleFunc("POST /_bench/instances", b.instances)
	mux.Handle("/", b.wrap(emu))

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Println("listening", ln.Addr().String())
	select {
	case <-ctx.Done():
	case err := <-errc:
		return err
	}
	// Release held long polls so Shutdown does not wait for them.
	_ = emu.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

type bench struct {
	emu *emulator.Emulator

	mu       sync.Mutex
	open     chan struct{} // closed while the gate is open
	gateOpen bool

	fetchArrived  atomic.Int64 // fetch_and_lock requests received (held ones included)
	fetchNonEmpty atomic.Int64 // fetch_and_lock answers with at least one task
	finishOK      atomic.Int64 // 2xx answers to finish
	lastFinish    atomic.Int64 // unix ns of the last 2xx finish answer
	requests      atomic.Int64 // every engine API request
}

// Stats is the body of GET /_bench/stats.
type Stats struct {
	Emulator      emulator.Stats `json:"emulator"`
	FetchArrived  int64          `json:"fetch_arrived"`
	FetchNonEmpty int64          `json:"fetch_non_empty"`
	FinishOK      int64          `json:"finish_ok"`
	LastFinishNs  int64          `json:"last_finish_ns"`
	Requests      int64          `json:"requests"`
	GateOpen      bool           `json:"gate_open"`
	NowNs         int64          `json:"now_ns"`
}

func (b *bench) stats(w http.ResponseWriter, _ *http.Request) {
	b.mu.Lock()
	open := b.gateOpen
	b.mu.Unlock()
	writeJSON(w, Stats{
		Emulator:      b.emu.Stats(),
		FetchArrived:  b.fetchArrived.Load(),
		FetchNonEmpty: b.fetchNonEmpty.Load(),
		FinishOK:      b.finishOK.Load(),
		LastFinishNs:  b.lastFinish.Load(),
		Requests:      b.requests.Load(),
		GateOpen:      open,
		NowNs:         time.Now().UnixNano(),
	})
}

func (b *bench) gate(w http.ResponseWriter, r *http.Request) {
	open := r.URL.Query().Get("open") == "1"
	b.mu.Lock()
	if open != b.gateOpen {
		b.gateOpen = open
		if open {
			close(b.open)
		} else {
			b.open = make(chan struct{})
		}
	}
	b.mu.Unlock()
	writeJSON(w, map[string]any{"gate_open": open, "now_ns": time.Now().UnixNano()})
}

// Instance is one element of the answer of POST /_bench/instances.
type Instance struct {
	ID         string `json:"id"`
	State      string `json:"state"`
	CreatedNs  int64  `json:"created_ns"`
	FinishedNs int64  `json:"finished_ns"`
}

func (b *bench) instances(w http.ResponseWriter, r *http.Request) {
	var ids []string
	if err := json.NewDecoder(r.Body).Decode(&ids); err != nil {
		http.Error(w, "bad body: "+err.Error(), http.StatusBadRequest)
		return
	}
	out := make([]Instance, 0, len(ids))
	for _, id := range ids {
		pi, ok := b.emu.ProcessInstance(id)
		in := Instance{ID: id, State: "unknown"}
		if ok {
			in.State = pi.State
			if pi.CreatedAt != nil {
				in.CreatedNs = pi.CreatedAt.UnixNano()
			}
			if pi.FinishedAt != nil {
				in.FinishedNs = pi.FinishedAt.UnixNano()
			}
		}
		out = append(out, in)
	}
	writeJSON(w, out)
}

func (b *bench) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.requests.Add(1)
		p := r.URL.Path
		switch {
		case r.Method == http.MethodPost && strings.HasSuffix(p, "/external_tasks/fetch_and_lock"):
			b.fetchArrived.Add(1)
			b.mu.Lock()
			open := b.open
			b.mu.Unlock()
			select {
			case <-open:
			case <-r.Context().Done():
				return
			}
			cw := &countingWriter{ResponseWriter: w}
			next.ServeHTTP(cw, r)
			if cw.n > 2 { // more than "[]"
				b.fetchNonEmpty.Add(1)
			}
		case r.Method == http.MethodPut && strings.HasSuffix(p, "/finish") && strings.Contains(p, "/external_tasks/"):
			cw := &countingWriter{ResponseWriter: w}
			next.ServeHTTP(cw, r)
			if cw.status == 0 || cw.status/100 == 2 {
				b.finishOK.Add(1)
				b.lastFinish.Store(time.Now().UnixNano())
			}
		default:
			next.ServeHTTP(w, r)
		}
	})
}

type countingWriter struct {
	http.ResponseWriter
	status int
	n      int
}

func (c *countingWriter) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += n
	return n, err
}

// Flush keeps streaming answers working through the wrapper.
func (c *countingWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(v); err != nil {
		fmt.Fprintln(os.Stderr, "emulator: writing answer:", err)
	}
}
