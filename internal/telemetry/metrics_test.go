package telemetry_test

import (
	"errors"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/pe-bridge/pe-bridge/bridge"
	"github.com/pe-bridge/pe-bridge/internal/telemetry"
)

// Every hook moves its metric, and the exposition passes promlint.
func TestMetricsHooks(t *testing.T) {
	m := telemetry.NewMetrics("v1.2.3")
	m.TaskFetched("a")
	m.TaskFetched("a")
	m.TaskPublished("a")
	m.HandlerReplied("a", 1500*time.Millisecond)
	m.TaskSettled("a", bridge.SettledFinished, 2*time.Second)
	m.TaskSettled("a", bridge.SettledDropped, time.Second)
	m.LockExtended("a", nil)
	m.LockExtended("a", errors.New("423"))
	m.TopicPaused("a")
	m.AckLost("a")
	m.Window("a", 3, 100)
	m.Request("pe.process.start", 200, 10*time.Millisecond)
	m.Request("pe.process.start", 504, time.Second)
	m.EventForwarded("process_ended")
	m.EventDropped("process_ended", "publish")
	m.Gap()
	m.EngineCall("PUT /external_tasks/{id}/finish", 200, 3*time.Millisecond)
	m.EngineCall("POST /external_tasks/fetch_and_lock", 0, time.Second)
	m.EngineCall("GET /info", 503, time.Millisecond)
	m.SetReady("all", true)

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	out := rec.Body.String()
	problems, err := promlint.New(strings.NewReader(out)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	for _, want := range []string{
		`pe_bridge_tasks_fetched_total{topic="a"} 2`,
		`pe_bridge_tasks_published_total{topic="a"} 1`,
		`pe_bridge_tasks_settled_total{outcome="finished",topic="a"} 1`,
		`pe_bridge_tasks_settled_total{outcome="dropped",topic="a"} 1`,
		`pe_bridge_handler_duration_seconds_sum{topic="a"} 1.5`,
		`pe_bridge_task_duration_seconds_count{outcome="finished",topic="a"} 1`,
		`pe_bridge_lock_extensions_total{topic="a"} 1`,
		`pe_bridge_lock_extension_failures_total{topic="a"} 1`,
		`pe_bridge_topic_pauses_total{topic="a"} 1`,
		`pe_bridge_lost_acknowledgements_total{topic="a"} 1`,
		`pe_bridge_tasks_in_flight{topic="a"} 3`,
		`pe_bridge_task_window_size{topic="a"} 100`,
		`pe_bridge_service_requests_total{code="504",endpoint="pe.process.start"} 1`,
		`pe_bridge_service_request_duration_seconds_count{endpoint="pe.process.start"} 2`,
		`pe_bridge_events_forwarded_total{event="process_ended"} 1`,
		`pe_bridge_events_dropped_total{event="process_ended",reason="publish"} 1`,
		`pe_bridge_event_feed_gaps_total 1`,
		`pe_bridge_engine_request_duration_seconds_count{method="PUT",route="/external_tasks/{id}/finish",status_class="2xx"} 1`,
		`pe_bridge_engine_request_duration_seconds_count{method="POST",route="/external_tasks/fetch_and_lock",status_class="error"} 1`,
		`pe_bridge_engine_request_duration_seconds_count{method="GET",route="/info",status_class="5xx"} 1`,
		`pe_bridge_ready{check="all"} 1`,
		`pe_bridge_build_info{version="v1.2.3"} 1`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("exposition lacks %s", want)
		}
	}
	if n := testutil.CollectAndCount(m.Registry(), "pe_bridge_tasks_fetched_total"); n != 1 {
		t.Errorf("%d fetched series", n)
	}
	// docs/operations.md documents every metric of the bridge.
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		if name, ok := strings.CutPrefix(line, "# HELP "); ok {
			name, _, _ = strings.Cut(name, " ")
			if strings.HasPrefix(name, telemetry.Namespace+"_") && !strings.Contains(string(doc), "`"+name+"`") {
				t.Errorf("docs/operations.md does not document %s", name)
			}
		}
	}
}

// The hot-path hooks of the pump allocate nothing once a topic is known.
func TestMetricsHotPathAllocs(t *testing.T) {
	m := telemetry.NewMetrics("v")
	m.TaskFetched("a")
	if n := testing.AllocsPerRun(100, func() {
		m.TaskFetched("a")
		m.TaskPublished("a")
		m.HandlerReplied("a", time.Millisecond)
		m.Window("a", 1, 100)
		m.LockExtended("a", nil)
		m.TaskSettled("a", bridge.SettledFinished, time.Millisecond)
		m.EngineCall("PUT /external_tasks/{id}/finish", 200, time.Millisecond)
	}); n != 0 {
		t.Errorf("%.1f allocations per task", n)
	}
}
