// Command direct is path (c) of the side-by-side benchmark (go run ./bench):
// the practical limit, a Go worker that talks REST to the engine with no NATS
// hop. Fetchers goroutines each long-poll fetch_and_lock for up to max-tasks
// tasks, run every task of the batch in its own goroutine (sleep cost, then
// finish with {}), and fetch again once the batch is done, so at most
// fetchers × max-tasks tasks are in flight. Tasks finish well inside the
// lock, so it does not extend locks.
//
// It prints "ready" when the fetchers start and stops on SIGTERM or SIGINT.
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
	"sync"
	"syscall"
	"time"

	"github.com/pe-bridge/pe-bridge/engine"
)

func main() {
	engineURL := flag.String("engine-url", "http://127.0.0.1:8000", "engine root URL")
	topic := flag.String("topic", "SampleExternalTask", "engine topic")
	fetchers := flag.Int("fetchers", 1, "concurrent fetch loops")
	maxTasks := flag.Int("max-tasks", 10, "maxTasks of each fetch")
	cost := flag.Duration("cost", 0, "handler cost per task (a sleep)")
	lock := flag.Duration("lock-duration", 30*time.Second, "lock duration")
	longPoll := flag.Duration("long-poll", 10*time.Second, "long polling timeout")
	flag.Parse()
	if *fetchers < 1 || *maxTasks < 1 {
		fmt.Fprintln(os.Stderr, "direct: fetchers and max-tasks must be at least 1")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	// Enough idle connections for every task of the window to finish on a
	// kept-alive connection.
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = *fetchers**maxTasks + *fetchers
	t.MaxIdleConnsPerHost = t.MaxIdleConns
	t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	c, err := engine.NewClient(*engineURL, engine.ClientConfig{HTTPClient: &http.Client{Transport: t}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "direct:", err)
		os.Exit(2)
	}
	w := worker{c: c, topic: *topic, maxTasks: *maxTasks, cost: *cost, lock: *lock, longPoll: *longPoll,
		id: fmt.Sprintf("bench-direct-%d", os.Getpid())}
	var wg sync.WaitGroup
	for range *fetchers {
		wg.Go(func() { w.loop(ctx) })
	}
	fmt.Println("ready")
	wg.Wait()
}

type worker struct {
	c        *engine.Client
	topic    string
	id       string
	maxTasks int
	cost     time.Duration
	lock     time.Duration
	longPoll time.Duration
}

var emptyResult = json.RawMessage(`{}`)

func (w worker) loop(ctx context.Context) {
	for ctx.Err() == nil {
		tasks, err := w.c.FetchAndLock(ctx, engine.FetchAndLockRequest{WorkerID: w.id, Topics: []string{w.topic},
			MaxTasks: w.maxTasks, LongPollingTimeout: w.longPoll, LockDuration: w.lock})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			fmt.Fprintln(os.Stderr, "direct: fetching:", err)
			sleep(ctx, 100*time.Millisecond)
			continue
		}
		var wg sync.WaitGroup
		for _, t := range tasks {
			wg.Go(func() { w.handle(ctx, t) })
		}
		wg.Wait()
	}
}

func (w worker) handle(ctx context.Context, t engine.ExternalTask) {
	if w.cost > 0 && !sleep(ctx, w.cost) {
		return
	}
	for attempt := 0; ; attempt++ {
		err := w.c.FinishTask(ctx, t.ID, w.id, emptyResult)
		if err == nil || ctx.Err() != nil || !engine.IsTemporary(err) || attempt == 5 {
			if err != nil && ctx.Err() == nil && !errors.Is(err, engine.ErrGone) {
				fmt.Fprintln(os.Stderr, "direct: finishing:", err)
			}
			return
		}
		sleep(ctx, 50*time.Millisecond)
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
