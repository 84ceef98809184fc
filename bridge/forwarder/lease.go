package forwarder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// DefaultLeaseTTL is the default LeaseConfig.TTL.
const DefaultLeaseTTL = 6 * time.Second

// LeaseConfig configures a Lease.
type LeaseConfig struct {
	// Bucket is the JetStream KV bucket (created when missing, with TTL as
	// its max age). Required.
	Bucket string
	// Key names what is leased; replicas forwarding the same engine use the
	// same key. Required; KV key characters.
	Key string
	// Holder identifies this replica in the bucket (e.g. the worker id;
	// the entry's value is Holder#<random suffix of this Lease>). Required.
	Holder string
	// TTL is how long the lease outlives a holder that stopped renewing
	// (it renews every TTL/3). A new holder takes over at most TTL + TTL/3
	// after the old one died: the longest stretch in which no replica
	// publishes. An existing bucket's max age wins. Default DefaultLeaseTTL.
	TTL time.Duration
	// Replicas of a bucket it creates. Default 1.
	Replicas int
}

// Lease is a leader lease in a JetStream KV bucket: one key, written by its
// holder every TTL/3, expiring TTL after the last write. Among the bridge
// replicas of one engine exactly one holds it at a time (KV Create and
// Update with the last revision are atomic), and the holder stops claiming
// it (Leading false) TTL*2/3 after its last successful renewal, before the
// entry can expire and another replica can take it.
type Lease struct {
	kv  jetstream.KeyValue
	js  jetstream.JetStream
	cfg LeaseConfig
	id  string // the entry's value: Holder and a random suffix, unique even when two replicas share a Holder
	log *slog.Logger
	now func() time.Time

	acquired chan struct{} // cap 1: a value each time this replica takes the lease

	mu         sync.Mutex
	rev        uint64
	validUntil time.Time // Leading is true until then
	refused    bool      // a claim was refused by the server's permissions (logged once)
}

// NewLease creates or binds the bucket. logger nil discards.
func NewLease(ctx context.Context, js jetstream.JetStream, cfg LeaseConfig, logger *slog.Logger) (*Lease, error) {
	if cfg.Bucket == "" || cfg.Key == "" || cfg.Holder == "" {
		return nil, errors.New("forwarder: lease needs a bucket, a key and a holder")
	}
	if cfg.TTL < 0 {
		return nil, errors.New("forwarder: negative lease TTL")
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultLeaseTTL
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      cfg.Bucket,
			Description: "pe-bridge leases: which replica forwards engine events",
			TTL:         cfg.TTL,
			History:     1,
			Replicas:    cfg.Replicas,
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, cfg.Bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("opening lease bucket %s: %w", cfg.Bucket, jsRefused(js, err))
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading lease bucket %s: %w", cfg.Bucket, jsRefused(js, err))
	}
	if ttl := st.TTL(); ttl <= 0 {
		return nil, fmt.Errorf("forwarder: lease bucket %s has no TTL (max age): a dead holder would keep the lease forever", cfg.Bucket)
	} else if ttl != cfg.TTL {
		logger.Warn("forwarder: lease bucket exists with another TTL; using it", "bucket", cfg.Bucket, "ttl", ttl, "configured_ttl", cfg.TTL)
		cfg.TTL = ttl
	}
	return &Lease{kv: kv, js: js, cfg: cfg, id: fmt.Sprintf("%s#%08x", cfg.Holder, rand.Uint32()), log: logger, now: time.Now, acquired: make(chan struct{}, 1)}, nil
}

// LeaseKey makes s (e.g. an engine URL) a KV key: characters other than
// letters, digits, '-' and '_' become '_'.
func LeaseKey(s string) string {
	return "forwarder." + strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, s)
}

// TTL is the lease's effective TTL.
func (l *Lease) TTL() time.Duration { return l.cfg.TTL }

// Leading reports whether this replica holds the lease now.
func (l *Lease) Leading() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.now().Before(l.validUntil)
}

// Acquired receives a value each time this replica takes the lease (values
// coalesce), so the forwarder announces a pending gap at once instead of
// with the next event.
func (l *Lease) Acquired() <-chan struct{} { return l.acquired }

// Run claims and renews the lease every TTL/3 (a failed renewal is retried
// after TTL/12) until ctx is done; then it releases a held lease (so
// another replica takes over within TTL/3) and returns nil.
func (l *Lease) Run(ctx context.Context) error {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			l.release()
			return nil
		case <-t.C:
		}
		begin, wait := time.Now(), l.cfg.TTL/3
		if l.attempt(ctx) {
			// A renewal failed (e.g. a slow server): retry well before the
			// lease lapses here instead of a full TTL/3 later, when it has.
			wait = l.cfg.TTL / 12
		}
		t.Reset(max(0, wait-time.Since(begin))) // every TTL/3 from attempt to attempt, however long one took
	}
}

// Claim makes one attempt to take or renew the lease (Run does this every
// TTL/3) and reports whether this replica holds it.
func (l *Lease) Claim(ctx context.Context) bool {
	l.attempt(ctx)
	return l.Leading()
}

// attempt reports whether it was a renewal that failed for another reason
// than another replica holding the lease (Run then retries soon).
func (l *Lease) attempt(ctx context.Context) (renewFailed bool) {
	cctx, cancel := context.WithTimeout(ctx, l.cfg.TTL/3)
	defer cancel()
	start := l.now()
	l.mu.Lock()
	held, rev := start.Before(l.validUntil), l.rev
	l.mu.Unlock()
	var err error
	if held {
		rev, err = l.kv.Update(cctx, l.cfg.Key, []byte(l.id), rev)
	} else {
		rev, err = l.kv.Create(cctx, l.cfg.Key, []byte(l.id))
	}
	if errors.Is(err, jetstream.ErrKeyExists) {
		// The entry may still be this replica's own: a renewal stored by the
		// server whose reply came too late here leaves l.rev behind, and a
		// renewal that came too late for validUntil makes this a Create.
		// Without this, a holder slowed down once would refuse its own
		// entry and no replica would publish until it expired. An entry
		// with this Lease's id was written by no other replica since (their
		// writes carry their ids), so renewing its revision is safe.
		if e, gerr := l.kv.Get(cctx, l.cfg.Key); gerr == nil && string(e.Value()) == l.id {
			rev, err = l.kv.Update(cctx, l.cfg.Key, []byte(l.id), e.Revision())
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err == nil:
		l.rev = rev
		l.validUntil = start.Add(l.cfg.TTL * 2 / 3)
		if !held {
			l.log.Info("forwarder: holding the event lease; this replica publishes engine events", "bucket", l.cfg.Bucket, "key", l.cfg.Key, "holder", l.cfg.Holder)
			select {
			case l.acquired <- struct{}{}:
			default:
			}
		}
	case held:
		l.log.Warn("forwarder: renewing the event lease", "bucket", l.cfg.Bucket, "error", err)
		if errors.Is(err, jetstream.ErrKeyExists) { // someone else holds it now
			l.validUntil = time.Time{}
			break
		}
		return true
	case errors.Is(err, jetstream.ErrKeyExists):
		// another replica holds it
	default:
		if r := jsRefused(l.js, err); r != err && !l.refused {
			// A misconfiguration that silences every replica: say so once.
			l.refused = true
			l.log.Warn("forwarder: cannot claim the event lease; no engine event is published until it can",
				"bucket", l.cfg.Bucket, "error", r.Error())
			break
		}
		l.log.Debug("forwarder: claiming the event lease", "bucket", l.cfg.Bucket, "error", err)
	}
	return false
}

func (l *Lease) release() {
	l.mu.Lock()
	held, rev := l.now().Before(l.validUntil), l.rev
	l.validUntil = time.Time{}
	l.mu.Unlock()
	if !held {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := l.kv.Delete(ctx, l.cfg.Key, jetstream.LastRevision(rev)); err != nil {
		l.log.Debug("forwarder: releasing the event lease", "error", err)
		return
	}
	l.log.Info("forwarder: released the event lease", "bucket", l.cfg.Bucket, "key", l.cfg.Key)
}
