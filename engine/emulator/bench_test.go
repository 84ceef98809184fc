package emulator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/examples/models"
)

// benchWorker is a minimal direct Go HTTP worker (what a bridge does).
type benchWorker struct {
	c    *http.Client
	base string
}

func (w *benchWorker) post(method, path string, body []byte) ([]byte, int, error) {
	req, _ := http.NewRequest(method, w.base+path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+engine.DummyToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.c.Do(req)
	if err != nil {
		return nil, 0, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return b, resp.StatusCode, err
}

func benchFetchFinish(b *testing.B, workers, maxTasks int) {
	e, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	if _, err := e.LoadFS(models.FS); err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(e)
	defer srv.Close()
	tr := &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		if _, err := e.Start(ctx, engine.ProcessStartRequest{ProcessModelID: "hello_world"}); err != nil {
			b.Fatal(err)
		}
	}
	var done atomic.Int64
	total := int64(b.N)
	cpu0 := cpuTime()
	b.ResetTimer()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			w := &benchWorker{c: client, base: srv.URL + engine.BasePath}
			id := fmt.Sprintf("bench-%d", i)
			fetchBody, _ := json.Marshal(map[string]any{"workerId": id, "topicName": "SampleExternalTask", "maxTasks": maxTasks, "longPollingTimeout": 0, "lockDuration": 30000})
			finishBody, _ := json.Marshal(map[string]any{"workerId": id, "result": map[string]any{"some": "result"}})
			for done.Load() < total {
				body, st, err := w.post("POST", "/external_tasks/fetch_and_lock", fetchBody)
				if err != nil || st != 200 {
					errs <- fmt.Errorf("fetch: %d %v", st, err)
					return
				}
				var tasks []struct {
					ID string `json:"id"`
				}
				if err := json.Unmarshal(body, &tasks); err != nil {
					errs <- err
					return
				}
				for _, t := range tasks {
					if _, st, err := w.post("PUT", "/external_tasks/"+t.ID+"/finish", finishBody); err != nil || st != 204 {
						errs <- fmt.Errorf("finish: %d %v", st, err)
						return
					}
					done.Add(1)
				}
			}
		}(i)
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
	// CPU per cycle (server + client, user + sys) shows capacity on a shared machine:
	// cores / cpu-us-per-task = tasks/s when the cores are free.
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-us/task")
	if s := e.Stats(); s.InstancesFinished != total {
		b.Fatalf("finished %d instances, want %d", s.InstancesFinished, total)
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkFetchFinish measures fetch_and_lock + finish cycles of direct Go
// HTTP workers against the emulator over loopback.
func BenchmarkFetchFinish(b *testing.B) {
	b.Run("workers=1/maxTasks=1", func(b *testing.B) { benchFetchFinish(b, 1, 1) })
	b.Run("workers=4/maxTasks=10", func(b *testing.B) { benchFetchFinish(b, 4, 10) })
	b.Run("workers=16/maxTasks=10", func(b *testing.B) { benchFetchFinish(b, 16, 10) })
}
