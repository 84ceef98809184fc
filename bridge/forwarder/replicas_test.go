package forwarder_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pe-bridge/pe-bridge/bridge/forwarder"
	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/engine/emulator"
	"github.com/pe-bridge/pe-bridge/events"
	"github.com/pe-bridge/pe-bridge/internal/natsserver"
)

const (
	testStream = "PE_EVENTS"
	testBucket = "pe_leases"
)

// replica is one bridge replica: its own NATS connection, lease and
// forwarder (publishing with JetStream acks when stream is set).
type replica struct {
	name  string
	nc    *nats.Conn
	lease *forwarder.Lease
	obs   *counter
	stop  func()
}

func startReplica(t testing.TB, eng *engineWorld, url, name string, ttl time.Duration, stream bool, opts ...nats.Option) *replica {
	t.Helper()
	nc := connect(t, url, opts...)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l, err := forwarder.NewLease(ctx, js, forwarder.LeaseConfig{Bucket: testBucket, Key: forwarder.LeaseKey(eng.url), Holder: name, TTL: ttl}, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.Claim(ctx) // the first replica started takes it
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	_, obs, stop := runForwarder(t, eng, nc, fwdOpts{stream: stream, natsConn: nc,
		cfg: forwarder.Config{Events: []string{"process_started", "process_ended"}, Leader: l}})
	return &replica{name: name, nc: nc, lease: l, obs: obs, stop: stop}
}

// streamTally counts the ce-ids of the process events stored in the stream
// (read with an ordered consumer until nothing is pending).
func streamTally(t testing.TB, nc *nats.Conn) tally {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, testStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("ordered consumer on %s: %v", testStream, err)
	}
	got := tally{}
	for {
		batch, err := c.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatalf("fetching from %s: %v", testStream, err)
		}
		n, pending := 0, uint64(0)
		for m := range batch.Messages() {
			n++
			if md, err := m.Metadata(); err == nil {
				pending = md.NumPending
			}
			if subj := m.Subject(); subj == events.EventPrefix+"process_started" || subj == events.EventPrefix+"process_ended" {
				got[m.Headers().Get(forwarder.HeaderMsgID)]++
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, nats.ErrTimeout) {
			t.Fatalf("fetching from %s: %v", testStream, err)
		}
		if n == 0 || pending == 0 {
			return got
		}
	}
}

// leaderOf returns the replica that holds the lease.
func leaderOf(t testing.TB, rs []*replica) *replica {
	t.Helper()
	var l *replica
	for _, r := range rs {
		if r.lease.Leading() {
			if l != nil {
				t.Fatalf("%s and %s both hold the lease", l.name, r.name)
			}
			l = r
		}
	}
	if l == nil {
		t.Fatal("no replica holds the lease")
	}
	return l
}

// TestReplicasPublishOnce: three bridge replicas on one engine, a
// 500 starts/s load: every event exactly once in the stream and on a plain
// subscription. Then the forwarding replica dies (its NATS connection is
// cut): another takes over within the lease TTL + TTL/3, announces a
// takeover gap, and from then on every event is again there exactly once.
func TestReplicasPublishOnce(t *testing.T) {
	n := loadInstances() / 2 // per phase: 1,025 instances (100 with -short)
	const ttl = 1500 * time.Millisecond
	eng := newEngine(t, emulator.Config{})
	ns, nc := startStreamNATS(t)
	in := subscribe(t, nc)
	var rs []*replica
	for i := range 3 {
		rs = append(rs, startReplica(t, eng, ns.ClientURL(), fmt.Sprintf("replica-%d", i), ttl, true))
	}
	first := leaderOf(t, rs)
	if r := in.gap(t); r != forwarder.GapStart {
		t.Fatalf("gap %q", r)
	}

	ids, rate := startPaced(t, eng.client, "direct", n, 500)
	waitHandled(t, int64(2*n), observers(rs)...)
	plain := collect(in.ch, 2*n, 10*time.Second)
	lost, dups, missing := plain.check(ids)
	t.Logf("3 replicas, %d instances at %.0f/s: plain subscription %d of %d lost, %d duplicates", n, rate, lost, 2*n, dups)
	if lost != 0 || dups != 0 {
		t.Fatalf("plain: lost %d (%v), duplicates %d", lost, missing, dups)
	}

	// The forwarding replica dies.
	killed := time.Now()
	first.nc.Close()
	var pi string
	for {
		res, err := eng.client.StartProcess(context.Background(), engine.ProcessStartRequest{ProcessModelID: "direct"})
		if err != nil {
			t.Fatal(err)
		}
		if in.has(t, "process_started", res.ProcessInstanceID) { // has waits up to 1s
			pi = res.ProcessInstanceID
			break
		}
		if time.Since(killed) > 10*time.Second {
			t.Fatal("no replica took over within 10s")
		}
	}
	takeover := time.Since(killed)
	second := leaderOf(t, rs)
	t.Logf("%s died; %s forwards again %s later (lease TTL %s; bound TTL+TTL/3+1s poll)", first.name, second.name, takeover.Round(time.Millisecond), ttl)
	if second == first || takeover > ttl+ttl/3+time.Second+500*time.Millisecond {
		t.Fatalf("takeover by %s after %s", second.name, takeover)
	}
	if r := in.gap(t); r != forwarder.GapTakeover {
		t.Fatalf("gap after the takeover %q, want %q", r, forwarder.GapTakeover)
	}
	in.seen = nil
	drain(in.ch) // process_ended of pi and of the lost instances

	before := handled(observers(rs)...)
	ids2, rate := startPaced(t, eng.client, "direct", n, 500)
	waitHandled(t, before+int64(2*n), observers(rs)...)
	plain = collect(in.ch, 2*n, 10*time.Second)
	lost, dups, missing = plain.check(ids2)
	t.Logf("after the takeover, %d instances at %.0f/s: plain %d of %d lost, %d duplicates", n, rate, lost, 2*n, dups)
	if lost != 0 || dups != 0 {
		t.Fatalf("plain after takeover: lost %d (%v), duplicates %d", lost, missing, dups)
	}

	stored := streamTally(t, nc)
	for phase, list := range map[string][]string{"before the kill": ids, "after the takeover": ids2} {
		lost, dups, missing := stored.check(list)
		t.Logf("stream, %s: %d of %d lost, %d duplicates", phase, lost, 2*len(list), dups)
		if lost != 0 || dups != 0 {
			t.Fatalf("stream %s: lost %d (%v), duplicates %d", phase, lost, missing, dups)
		}
	}
	if _, dups, _ := stored.check([]string{pi}); dups != 0 {
		t.Fatalf("first event after the takeover stored %d extra times", dups)
	}
}

func observers(rs []*replica) []*counter {
	var obs []*counter
	for _, r := range rs {
		obs = append(obs, r.obs)
	}
	return obs
}

func drain(ch <-chan *nats.Msg) {
	for {
		select {
		case <-ch:
		case <-time.After(300 * time.Millisecond):
			return
		}
	}
}

// startStreamNATS starts an embedded nats-server with the events stream
// testStream on pe.event.>.
func startStreamNATS(t *testing.T) (*natsserver.Server, *nats.Conn) {
	t.Helper()
	ns, nc := startNATS(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := forwarder.EnsureStream(context.Background(), js, forwarder.StreamConfig{Name: testStream}); err != nil {
		t.Fatal(err)
	}
	return ns, nc
}

// TestReplicasWithoutLeaseStoreOnce: three replicas without a lease each
// publish every event; the stream stores each once (Nats-Msg-Id = ce-id
// within the duplicate window), plain subscribers see three copies with
// one ce-id.
func TestReplicasWithoutLeaseStoreOnce(t *testing.T) {
	const n = 200
	eng := newEngine(t, emulator.Config{})
	ns, nc := startStreamNATS(t)
	in := subscribe(t, nc)
	var obs []*counter
	for range 3 {
		rnc := connect(t, ns.ClientURL())
		_, o, _ := runForwarder(t, eng, rnc, fwdOpts{stream: true, cfg: forwarder.Config{Events: []string{"process_started", "process_ended"}}})
		obs = append(obs, o)
	}
	for range 3 {
		if r := in.gap(t); r != forwarder.GapStart {
			t.Fatalf("gap %q", r)
		}
	}
	ids, _ := startPaced(t, eng.client, "direct", n, 500)
	for _, o := range obs { // each replica publishes every event
		waitHandled(t, 2*n, o)
	}
	plain := collect(in.ch, 3*2*n, 10*time.Second)
	lost, dups, _ := plain.check(ids)
	if lost != 0 || dups != 2*2*n {
		t.Fatalf("plain: lost %d, duplicates %d, want 0 and %d (two extra copies each); replicas forwarded %d, %d, %d, dropped %d",
			lost, dups, 2*2*n, obs[0].forwarded.Load(), obs[1].forwarded.Load(), obs[2].forwarded.Load(), handled(obs...)-obs[0].forwarded.Load()-obs[1].forwarded.Load()-obs[2].forwarded.Load())
	}
	stored := streamTally(t, nc)
	lost, dups, missing := stored.check(ids)
	t.Logf("3 replicas without a lease, %d instances: plain subscribers got 3 copies of each event; the stream stored %d of %d once (%d lost, %d duplicates)",
		n, 2*n-lost, 2*n, lost, dups)
	if lost != 0 || dups != 0 {
		t.Fatalf("stream: lost %d (%v), duplicates %d", lost, missing, dups)
	}
}

// TestJetStreamGrants: the bridge's publish grants docs/security.md asks
// for with --events-stream ($JS.API.>) and --events-lease ($JS.API.> and
// $KV.<bucket>.>) suffice; without them the stream setup fails naming the
// refused subject and the grant, and a lease that can never be claimed
// (no event would be published) is logged once as a WARN naming the grant.
func TestJetStreamGrants(t *testing.T) {
	t.Parallel() // its own nats-server; mostly waits for refusals
	conf := t.TempDir() + "/grants.conf"
	const users = `authorization { users = [
  { user: full, password: pw, permissions: { publish: { allow: ["pe.event.>", "$JS.API.>", "$KV.QB.>"] }, subscribe: { allow: ["_INBOX.>"] } } }
  { user: nojs, password: pw, permissions: { publish: { allow: ["pe.event.>"] }, subscribe: { allow: ["_INBOX.>"] } } }
  { user: nokv, password: pw, permissions: { publish: { allow: ["pe.event.>", "$JS.API.>"] }, subscribe: { allow: ["_INBOX.>"] } } }
] }
`
	if err := os.WriteFile(conf, []byte(users), 0o600); err != nil {
		t.Fatal(err)
	}
	ns, err := natsserver.Start(natsserver.Config{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), ConfigFile: conf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ns.Close() })
	jsOf := func(user string) jetstream.JetStream {
		js, err := jetstream.New(connect(t, ns.ClientURL(), nats.UserInfo(user, "pw")))
		if err != nil {
			t.Fatal(err)
		}
		return js
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lc := forwarder.LeaseConfig{Bucket: "QB", Key: "k", Holder: "full", TTL: 1500 * time.Millisecond}

	full := jsOf("full")
	if _, err := forwarder.EnsureStream(ctx, full, forwarder.StreamConfig{Name: "QS"}); err != nil {
		t.Fatalf("stream with the documented grant: %v", err)
	}
	l, err := forwarder.NewLease(ctx, full, lc, nil)
	if err != nil {
		t.Fatalf("lease with the documented grants: %v", err)
	}
	if !l.Claim(ctx) {
		t.Fatal("the lease could not be claimed with the documented grants")
	}

	sctx, scancel := context.WithTimeout(ctx, time.Second)
	defer scancel()
	_, err = forwarder.EnsureStream(sctx, jsOf("nojs"), forwarder.StreamConfig{Name: "QS2"})
	if err == nil || !strings.Contains(err.Error(), `"$JS.API.STREAM.INFO.QS2"`) || !strings.Contains(err.Error(), "needs publish permission on $JS.API.>") {
		t.Fatalf("stream without $JS.API.>: %v", err)
	}

	logs := newLevelLog(t)
	lc.Key, lc.Holder = "k2", "nokv"
	l2, err := forwarder.NewLease(ctx, jsOf("nokv"), lc, slog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if l2.Claim(ctx) {
			t.Fatal("claimed a lease without publish permission on $KV.QB.>")
		}
	}
	warns := logs.atLeast(slog.LevelWarn)
	if len(warns) != 1 || !strings.Contains(warns[0], "cannot claim the event lease") {
		t.Fatalf("WARNs %q, want one about the lease", warns)
	}
	logs.mu.Lock()
	defer logs.mu.Unlock()
	var msg string
	for _, r := range logs.recs {
		if r.Level >= slog.LevelWarn {
			r.Attrs(func(a slog.Attr) bool {
				if a.Key == "error" {
					msg = a.Value.String()
				}
				return true
			})
		}
	}
	if !strings.Contains(msg, "needs publish permission on $KV.QB.>") {
		t.Fatalf("lease WARN error %q does not name the grant", msg)
	}
}
