package forwarder

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pe-bridge/pe-bridge/internal/natsserver"
)

// TestLeaseKeepsOwnEntry: a holder slowed down once keeps its lease. A
// renewal the server stored but whose reply came too late (the holder's
// revision is then behind), and a renewal too late for the holder's own
// validity (it then tries Create), both met an entry that is still its
// own; before, the holder gave it up and no replica published until the
// entry expired (TestReplicasPublishOnce lost ~640 events under load).
// Another replica still cannot take an entry that is not its own.
func TestLeaseKeepsOwnEntry(t *testing.T) {
	t.Parallel()
	ns, err := natsserver.Start(natsserver.Config{Listen: "127.0.0.1:0", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ns.Close() })
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg := LeaseConfig{Bucket: "own", Key: "k", Holder: "a", TTL: time.Minute}
	a, err := NewLease(ctx, js, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Claim(ctx) {
		t.Fatal("first claim failed")
	}
	<-a.Acquired()

	// A renewal stored whose reply never came: a's revision is behind.
	a.mu.Lock()
	rev := a.rev
	a.mu.Unlock()
	if _, err := a.kv.Update(ctx, cfg.Key, []byte(a.id), rev); err != nil {
		t.Fatal(err)
	}
	if !a.Claim(ctx) {
		t.Fatal("the holder gave up its lease after a renewal whose reply was lost")
	}
	select {
	case <-a.Acquired():
		t.Fatal("a renewal announced as a new acquisition")
	default:
	}

	// A renewal too late for a's validity: the entry is still a's.
	a.mu.Lock()
	a.validUntil = time.Time{}
	a.mu.Unlock()
	if !a.Claim(ctx) {
		t.Fatal("the holder could not take back its own entry after its validity lapsed")
	}
	select {
	case <-a.Acquired(): // it did not lead in between: the forwarder announces that gap
	default:
		t.Fatal("taking the lease back was not announced")
	}

	for _, holder := range []string{"b", "a"} { // "a" again: a replica misconfigured with the same name
		cfg.Holder = holder
		b, err := NewLease(ctx, js, cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if b.Claim(ctx) {
				t.Fatalf("another replica (holder %q) took an entry that is not its own", holder)
			}
		}
	}
	if !a.Claim(ctx) {
		t.Fatal("the holder lost its lease to a failed claim")
	}
}
