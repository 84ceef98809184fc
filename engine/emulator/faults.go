package emulator

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"
)

// Faults injects failures into matching requests. Rates are fractions in
// [0,1]; each is drawn independently, in the order drop, stall, error,
// after-effect. Faults apply before authentication and routing.
type Faults struct {
	// ErrorRate answers Status (zero: 500) with a BaseError body before any
	// state change.
	ErrorRate float64
	Status    int
	// Latency is added before handling (cut short when the client gives up).
	Latency time.Duration
	// AnswerDelay holds the answer of a request that was handled (its state
	// changes happened) for this long before it is sent: an engine that
	// locked tasks while its answer is still on the way. A client that gives
	// up meanwhile gets nothing.
	AnswerDelay time.Duration
	// StallRate holds the request until the client gives up (or Close); no
	// state change, no answer.
	StallRate float64
	// DropRate hijacks the connection and closes it without an answer; no
	// state change.
	DropRate float64
	// AfterEffectRate performs the request (state changes happen) and then
	// answers 500 instead of the real answer: a lost acknowledgement.
	AfterEffectRate float64
	// PathContains limits faults to requests whose path contains it; "" = all.
	PathContains string
	// Seed seeds the random draws, for reproducible runs.
	Seed int64
}

type faultState struct {
	f   Faults
	rnd *rand.Rand
}

// SetFaults replaces the fault configuration; the zero Faults turns faults off.
func (e *Emulator) SetFaults(f Faults) {
	e.faultMu.Lock()
	defer e.faultMu.Unlock()
	if f == (Faults{}) {
		e.faults = nil
		return
	}
	if f.Status == 0 {
		f.Status = 500
	}
	seed := uint64(f.Seed)
	e.faults = &faultState{f: f, rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

type faultDecision struct {
	latency, answerDelay        time.Duration
	drop, stall, fail, afterEff bool
	status                      int
}

func (e *Emulator) decideFaults(path string) (faultDecision, bool) {
	e.faultMu.Lock()
	defer e.faultMu.Unlock()
	fs := e.faults
	if fs == nil || (fs.f.PathContains != "" && !strings.Contains(path, fs.f.PathContains)) {
		return faultDecision{}, false
	}
	draw := func(rate float64) bool { return rate > 0 && fs.rnd.Float64() < rate }
	d := faultDecision{latency: fs.f.Latency, answerDelay: fs.f.AnswerDelay, status: fs.f.Status}
	d.drop = draw(fs.f.DropRate)
	d.stall = draw(fs.f.StallRate)
	d.fail = draw(fs.f.ErrorRate)
	d.afterEff = draw(fs.f.AfterEffectRate)
	return d, true
}

// applyFaults returns true when the request was fully handled by a fault.
func (e *Emulator) applyFaults(w *statusWriter, r *http.Request) bool {
	d, ok := e.decideFaults(r.URL.Path)
	if !ok {
		return false
	}
	if d.stall || d.latency > 0 || d.answerDelay > 0 {
		// Buffer the body so the server notices a client that gives up (it
		// only watches the connection once the body has been read).
		b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, e.cfg.MaxBodyBytes))
		if err != nil && !d.stall {
			writeError(w, apiError(413, fmt.Sprintf("Request body larger than %d bytes.", e.cfg.MaxBodyBytes), nil))
			return true
		}
		r.Body = io.NopCloser(bytes.NewReader(b))
		r.ContentLength = int64(len(b))
	}
	if d.latency > 0 {
		t := time.NewTimer(d.latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return true
		case <-e.closing:
			t.Stop()
		}
	}
	switch {
	case d.drop:
		if hj, ok := w.ResponseWriter.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return true
			}
		}
		panic(http.ErrAbortHandler)
	case d.stall:
		select {
		case <-r.Context().Done():
		case <-e.closing:
		}
		return true
	case d.fail:
		writeError(w, apiError(d.status, "Injected fault.", map[string]bool{"injected": true}))
		return true
	case d.afterEff:
		e.serve(&discardWriter{h: http.Header{}}, r)
		writeError(w, apiError(500, "Injected fault after the request took effect.", map[string]bool{"injected": true, "applied": true}))
		return true
	case d.answerDelay > 0:
		rec := &recordWriter{h: http.Header{}, status: http.StatusOK}
		e.serve(rec, r)
		t := time.NewTimer(d.answerDelay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return true
		case <-e.closing:
		}
		for k, v := range rec.h {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.status)
		_, _ = w.Write(rec.body.Bytes())
		return true
	}
	return false
}

// recordWriter keeps a response to send it later.
type recordWriter struct {
	h      http.Header
	status int
	body   bytes.Buffer
}

func (rw *recordWriter) Header() http.Header         { return rw.h }
func (rw *recordWriter) Write(b []byte) (int, error) { return rw.body.Write(b) }
func (rw *recordWriter) WriteHeader(code int)        { rw.status = code }

// discardWriter swallows a response.
type discardWriter struct {
	h      http.Header
	status int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(code int)        { d.status = code }
