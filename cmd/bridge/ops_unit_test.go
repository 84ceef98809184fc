package main

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
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
	if code, b := ask(); code != 503 || b.Status != "not ready" || len(b.Failed) != 5 || b.Checks[checkNATS] != "not connected yet" {
		t.Fatalf("at start: %d %+v", code, b)
	}
	done := make(chan struct{})
	close(done)
	var ch <-chan struct{} = done
	r.topics.Store(&ch)
	r.service.Store(&ch)
	r.setEngine("")
	feed := make(chan struct{})
	var feedCh <-chan struct{} = feed
	r.events.Store(&feedCh)
	if code, b := ask(); code != 503 || len(b.Failed) != 2 || b.Failed[0] != checkNATS || b.Failed[1] != checkEvents {
		t.Fatalf("without NATS and events: %d %+v", code, b)
	}
	close(feed)
	if code, b := ask(); code != 503 || len(b.Failed) != 1 || b.Failed[0] != checkNATS {
		t.Fatalf("without NATS: %d %+v", code, b)
	}
	r.draining.Store(true)
	if code, b := ask(); code != 503 || b.Status != "draining" {
		t.Fatalf("draining: %d %+v", code, b)
	}
}

// pe_bridge_ready is computed at each scrape, not only when /readyz is
// asked.
func TestReadyGaugeCurrentAtScrape(t *testing.T) {
	m := telemetry.NewMetrics("test")
	r := newReadiness(m)
	scrape := func() string {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.String()
	}
	if body := scrape(); !strings.Contains(body, `pe_bridge_ready{check="events"} 0`) || !strings.Contains(body, `pe_bridge_ready{check="all"} 0`) {
		t.Fatalf("first scrape:\n%s", grepLines(body, "pe_bridge_ready"))
	}
	feed := make(chan struct{})
	var ch <-chan struct{} = feed
	r.events.Store(&ch)
	close(feed)
	if body := scrape(); !strings.Contains(body, `pe_bridge_ready{check="events"} 1`) {
		t.Fatalf("after the feed connected, without a probe:\n%s", grepLines(body, "pe_bridge_ready"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
