package main

import (
	"encoding/json"
	"net/http/httptest"
	"testing"

	"github.com/pe-bridge/pe-bridge/internal/telemetry"
)

// /readyz answers from state in memory at every stage: before NATS, while
// the engine is not identified, when everything passes, while draining.
func TestReadinessStages(t *testing.T) {
	m := telemetry.NewMetrics("test")
	r := newReadiness(m)
	ask := func() (int, readyBody) {
		rec := httptest.NewRecorder()
		r.serveReady(rec, httptest.NewRequest("GET", "/readyz", nil))
		var b readyBody
		if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil {
			t.Fatalf("body %q: %v", rec.Body, err)
		}
		return rec.Code, b
	}
	if code, b := ask(); code != 503 || b.Status != "not ready" || len(b.Failed) != 4 || b.Checks[checkNATS] != "not connected yet" {
		t.Fatalf("at start: %d %+v", code, b)
	}
	done := make(chan struct{})
	close(done)
	var ch <-chan struct{} = done
	r.topics.Store(&ch)
	r.service.Store(&ch)
	r.setEngine("")
	if code, b := ask(); code != 503 || len(b.Failed) != 1 || b.Failed[0] != checkNATS {
		t.Fatalf("without NATS: %d %+v", code, b)
	}
	r.draining.Store(true)
	if code, b := ask(); code != 503 || b.Status != "draining" {
		t.Fatalf("draining: %d %+v", code, b)
	}
}
