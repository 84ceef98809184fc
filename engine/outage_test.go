package engine

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pe-bridge/pe-bridge/internal/testutil"
)

// logBuf collects JSON log records.
type logBuf struct{ testutil.Buffer }

func (l *logBuf) records(t *testing.T, minLevel slog.Level) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.String()), "\n") {
		if line == "" {
			continue
		}
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		var lvl slog.Level
		_ = lvl.UnmarshalText([]byte(r["level"].(string)))
		if lvl >= minLevel {
			out = append(out, r)
		}
	}
	return out
}

// An outage of 2.5 minutes with a call every 250 ms (600 failures) logs one
// WARN when it starts, a reminder each minute and one INFO when it ends,
// naming the real path; Outage() reports it while it lasts.
func TestOutageLoggedOnceWithReminders(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var down atomic.Bool
		down.Store(true)
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if down.Load() {
				w.WriteHeader(http.StatusBadGateway)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		})
		var logs logBuf
		c, err := NewClient("http://engine.test", ClientConfig{
			HTTPClient: &http.Client{Transport: HandlerTransport{"engine.test": h}},
			Logger:     slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		start := time.Now()
		for time.Since(start) < 150*time.Second {
			if _, err := c.WaitForNotification(ctx, "process_ended"); err == nil {
				t.Fatal("call succeeded during the outage")
			}
			if since, err := c.Outage(); !since.Equal(start) || err == nil {
				t.Fatalf("Outage() = %v, %v during the outage", since, err)
			}
			time.Sleep(250 * time.Millisecond)
		}
		down.Store(false)
		if _, err := c.WaitForNotification(ctx, "process_ended"); !errors.Is(err, ErrNoNotification) {
			t.Fatalf("after the outage: %v", err)
		}
		if since, _ := c.Outage(); !since.IsZero() {
			t.Fatalf("Outage() = %v after the outage", since)
		}
		recs := logs.records(t, slog.LevelInfo)
		var msgs []string
		for _, r := range recs {
			msgs = append(msgs, r["level"].(string)+" "+r["msg"].(string))
		}
		want := []string{"WARN engine unreachable", "WARN engine still unreachable", "WARN engine still unreachable", "INFO engine reachable again"}
		if len(msgs) != len(want) {
			t.Fatalf("records at info and above: %q, want %q", msgs, want)
		}
		for i := range want {
			if !strings.HasPrefix(msgs[i], want[i]) {
				t.Fatalf("records: %q, want %q", msgs, want)
			}
		}
		for _, r := range recs {
			if r["path"] != "/atlas_engine/api/v1/notifications/long_polling/process_ended" {
				t.Errorf("record %v does not name the real path", r)
			}
		}
		if got := recs[3]["down_for"]; got != float64(150*time.Second) {
			t.Errorf("down_for %v, want 150s", got)
		}
	})
}

// Answers other than no answer or a gateway's 502/503/504 are no outage;
// the caller's cancellation says nothing.
func TestOutageClassification(t *testing.T) {
	var status atomic.Int32
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(int(status.Load())) })
	c, err := NewClient("http://engine.test", ClientConfig{HTTPClient: &http.Client{Transport: HandlerTransport{"engine.test": h}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []int{404, 409, 500, 429} {
		status.Store(int32(st))
		_, _ = c.DeployedTopics(context.Background())
		if since, _ := c.Outage(); !since.IsZero() {
			t.Errorf("%d counted as an outage", st)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _ = c.DeployedTopics(ctx)
	if since, _ := c.Outage(); !since.IsZero() {
		t.Error("a cancelled call counted as an outage")
	}
	refused, _ := NewClient("http://nothing.test", ClientConfig{HTTPClient: &http.Client{Transport: HandlerTransport{}}})
	_, _ = refused.DeployedTopics(context.Background())
	if since, _ := refused.Outage(); since.IsZero() {
		t.Error("connection refused is not an outage")
	}
}

func TestIdentify(t *testing.T) {
	engineInfo := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_ = json.NewEncoder(w).Encode(ApplicationInfo{Name: "5Minds Engine", PackageName: "@5minds/processcube_engine", Version: "20.1.1"})
	}
	for name, tc := range map[string]struct {
		h          http.HandlerFunc
		notEngine  bool
		temporary  bool
		wantStatus int
		wantCT     string
	}{
		"engine": {h: engineInfo},
		"html": {h: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte("<html>SECRET-PAGE</html>"))
		}, notEngine: true, wantStatus: 200, wantCT: "text/html"},
		"html 404": {h: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(404)
			_, _ = w.Write([]byte("<html>SECRET-PAGE</html>"))
		}, notEngine: true, wantStatus: 404, wantCT: "text/html"},
		"other json": {h: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"status":"ok"}`))
		}, notEngine: true, wantStatus: 200, wantCT: "application/json"},
		"gateway": {h: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }, temporary: true},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := NewClient("http://engine.test", ClientConfig{HTTPClient: &http.Client{Transport: HandlerTransport{"engine.test": tc.h}}})
			if err != nil {
				t.Fatal(err)
			}
			info, err := c.Identify(context.Background())
			var ne *NotEngineError
			switch {
			case tc.notEngine:
				if !errors.As(err, &ne) || ne.Status != tc.wantStatus || ne.ContentType != tc.wantCT ||
					ne.URL != "http://engine.test/atlas_engine/api/v1/info" || strings.Contains(err.Error(), "SECRET") {
					t.Fatalf("Identify: %v", err)
				}
			case tc.temporary:
				if errors.As(err, &ne) || !IsTemporary(err) {
					t.Fatalf("Identify: %v, want a temporary error", err)
				}
			default:
				if err != nil || info.Version != "20.1.1" {
					t.Fatalf("Identify: %+v, %v", info, err)
				}
			}
		})
	}
}

type callRec struct {
	mu    sync.Mutex
	calls []string
}

func (r *callRec) EngineCall(route string, status int, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, route+" "+http.StatusText(status))
}

// The observer gets the route template (never the real path) and the status
// (0: no answer) of every round trip.
func TestCallObserver(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "missing") {
			w.WriteHeader(404)
			return
		}
		w.WriteHeader(204)
	})
	var rec callRec
	c, err := NewClient("http://engine.test", ClientConfig{HTTPClient: &http.Client{Transport: HandlerTransport{"engine.test": h}}, Observer: &rec})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_ = c.FinishTask(ctx, "task-1", "w", nil)
	_ = c.ExtendLock(ctx, "missing", "w", time.Second)
	refused, _ := NewClient("http://nothing.test", ClientConfig{HTTPClient: &http.Client{Transport: HandlerTransport{}}, Observer: &rec})
	_, _ = refused.DeployedTopics(ctx)
	want := []string{"PUT /external_tasks/{id}/finish No Content", "PUT /external_tasks/{id}/extend_lock Not Found", "GET /external_tasks/deployed_topics "}
	if strings.Join(rec.calls, "|") != strings.Join(want, "|") {
		t.Fatalf("calls %q, want %q", rec.calls, want)
	}
}

// An answer to a call sent before the outage began does not end it.
func TestOutageEndsOnlyByALaterCall(t *testing.T) {
	now := time.Unix(1000, 0)
	o := outage{log: slog.New(slog.DiscardHandler), reminder: time.Minute, now: func() time.Time { return now }}
	before := now.Add(-time.Second)
	o.record("/p", now, 0, &TransportError{Op: "GET /p", Err: errors.New("refused")})
	o.record("/p", before, 200, nil) // a long poll sent before the outage
	if since, _ := o.state(); since.IsZero() {
		t.Fatal("an old call's answer ended the outage")
	}
	now = now.Add(time.Second)
	o.record("/p", now, 204, nil)
	if since, _ := o.state(); !since.IsZero() {
		t.Fatal("a new call's answer did not end the outage")
	}
}
