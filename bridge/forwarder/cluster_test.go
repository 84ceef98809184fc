package forwarder_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pe-bridge/pe-bridge/bridge"
	"github.com/pe-bridge/pe-bridge/bridge/forwarder"
	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/engine/emulator"
	"github.com/pe-bridge/pe-bridge/events"
)

// startCluster runs n nats-servers clustered in process with JetStream, as
// nats-server's own tests do (Cluster + Routes, StoreDir t.TempDir()).
func startCluster(t testing.TB, n int) []*server.Server {
	t.Helper()
	var (
		servers []*server.Server
		routes  []string
	)
	for i := range n {
		o := &server.Options{
			ServerName: fmt.Sprintf("n%d", i),
			Host:       "127.0.0.1",
			Port:       -1,
			NoLog:      true,
			NoSigs:     true,
			JetStream:  true,
			StoreDir:   t.TempDir(),
			Cluster:    server.ClusterOpts{Name: "pe", Host: "127.0.0.1", Port: -1},
		}
		o.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		s, err := server.NewServer(o)
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatalf("server %d not ready", i)
		}
		t.Cleanup(s.Shutdown)
		servers = append(servers, s)
		routes = append(routes, fmt.Sprintf("nats://%s", s.ClusterAddr()))
	}
	return servers
}

func clientURLs(ss []*server.Server) string {
	var urls []string
	for _, s := range ss {
		urls = append(urls, s.ClientURL())
	}
	return strings.Join(urls, ",")
}

// retry calls op until it succeeds or 30s passed (JetStream needs a meta
// leader before it takes a stream; the cluster elects one after start).
func retry(t testing.TB, what string, op func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := op()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
		<-ctx.Done() // a bounded pause between attempts of a cluster operation
		cancel()
	}
}

// TestBridgeOnClusterNodeKilled: pump, handler and forwarder (with a
// 3-replica events stream) on a 3-node NATS cluster; mid-load the node the
// bridge is connected to is killed. Every task is still done (every
// instance ends) and the stream holds every process_started and
// process_ended event exactly once.
func TestBridgeOnClusterNodeKilled(t *testing.T) {
	n := 600
	if testing.Short() {
		n = 150
	}
	eng := newEngine(t, emulator.Config{})
	nodes := startCluster(t, 3)
	opts := []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond), nats.ReconnectBufSize(64 << 20),
		nats.DontRandomize()}
	// The bridge connects to node 0 first, the handler and the checker to node 2.
	bnc := connect(t, clientURLs(nodes), opts...)
	hnc := connect(t, nodes[2].ClientURL()+","+nodes[1].ClientURL(), opts...)
	js, err := jetstream.New(hnc)
	if err != nil {
		t.Fatal(err)
	}
	retry(t, "creating the R3 stream", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := forwarder.EnsureStream(ctx, js, forwarder.StreamConfig{Name: testStream, Replicas: 3})
		return err
	})

	var handled atomic.Int64
	sub, err := hnc.QueueSubscribe("pe.task.SampleExternalTask", "workers", func(m *nats.Msg) {
		handled.Add(1)
		_ = m.Respond([]byte(`{"ok":true}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := hnc.Flush(); err != nil {
		t.Fatal(err)
	}

	pump, err := bridge.NewPump(eng.client, bnc, bridge.Config{Topics: []string{"SampleExternalTask"}, LockDuration: 3 * time.Second,
		HandlerTimeout: 2 * time.Second, Window: 64}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pumpDone := make(chan error, 1)
	go func() { pumpDone <- pump.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-pumpDone; err != nil {
			t.Errorf("pump: %v", err)
		}
	})
	in := subscribe(t, hnc)
	_, obs, _ := runForwarder(t, eng, bnc, fwdOpts{stream: true, cfg: forwarder.Config{Events: []string{"process_started", "process_ended"}}})
	if r := in.gap(t); r != forwarder.GapStart {
		t.Fatalf("gap %q", r)
	}

	// Kill the bridge's node once a third of the instances ended.
	loadStart := time.Now()
	var (
		victim string
		killed time.Time
	)
	killDone := make(chan struct{})
	go func() {
		defer close(killDone)
		timeout := time.After(60 * time.Second)
		for ended := 0; ended < n/3; {
			select {
			case m := <-in.ch:
				if m.Subject == events.EventPrefix+"process_ended" {
					ended++
				}
			case <-timeout:
				return
			}
		}
		victim = bnc.ConnectedServerName()
		for _, s := range nodes {
			if s.Name() == victim {
				s.Shutdown()
			}
		}
		killed = time.Now()
	}()
	ids, rate := startPaced(t, eng.client, "hello_world", n, 500)
	<-killDone
	if victim == "" {
		t.Fatal("a third of the instances did not end within 60s")
	}

	// Every instance ends: no task was lost (lapsed locks are re-fetched).
	deadline := time.Now().Add(60 * time.Second)
	for {
		list, err := eng.client.QueryProcessInstances(context.Background(), engine.ProcessInstanceQuery{ProcessModelID: []string{"hello_world"}, State: []string{"finished"}, Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if list.TotalCount >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d instances finished 60s after the load (tasks lost)", list.TotalCount, n)
		}
		select {
		case <-in.ch: // keep the subscriber moving while the engine finishes
		case <-time.After(200 * time.Millisecond):
		}
	}
	// Read until every event is there: a consumer created right after the
	// failover can sit on a replica that is still catching up, so an early
	// read may come up short; the stream converges (a loss would not).
	stored := tally{}
	reads := 0
	retry(t, "reading the stream", func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("%v", r)
			}
		}()
		reads++
		stored = streamTally(&fatalAsPanic{t}, hnc)
		if lost, _, _ := stored.check(ids); lost > 0 {
			t.Logf("read %d: %d events not (yet) readable from the stream", reads, lost)
			return fmt.Errorf("%d events not (yet) in the stream", lost)
		}
		return nil
	})
	t.Logf("stream read %d times", reads)
	lost, dups, missing := stored.check(ids)
	t.Logf("3-node cluster, node %s killed %s into the load; %d instances at %.0f/s; handler calls %d; stream: %d of %d events lost, %d duplicates; forwarder dropped %d, gaps %d",
		victim, killed.Sub(loadStart).Round(time.Millisecond), n, rate, handled.Load(), lost, 2*n, dups, obs.dropped.Load(), obs.gaps.Load())
	if lost != 0 || dups != 0 {
		t.Fatalf("stream lost %d (%v), duplicates %d", lost, missing, dups)
	}
}

// fatalAsPanic turns Fatal into a panic so retry can repeat a read that
// met a stream leader election.
type fatalAsPanic struct{ testing.TB }

func (f *fatalAsPanic) Fatal(args ...any)                 { panic(fmt.Sprint(args...)) }
func (f *fatalAsPanic) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
