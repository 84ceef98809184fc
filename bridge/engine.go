package bridge

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/engine"
)

// Fetcher long-polls and locks external tasks.
type Fetcher interface {
	FetchAndLock(ctx context.Context, req engine.FetchAndLockRequest) ([]engine.ExternalTask, error)
}

// Locker extends the lock of an external task by d (new expiry = now + d).
type Locker interface {
	ExtendLock(ctx context.Context, taskID, workerID string, d time.Duration) error
}

// Reporter reports the outcome of an external task.
type Reporter interface {
	FinishTask(ctx context.Context, taskID, workerID string, result json.RawMessage) error
	HandleError(ctx context.Context, taskID, workerID string, e engine.ExternalTaskError) error
}

// TopicSource lists the topics of all deployed external service tasks.
type TopicSource interface {
	DeployedTopics(ctx context.Context) ([]string, error)
}

// Engine is everything the pump needs from the engine; *engine.Client
// satisfies it. Errors are classified with the engine package's sentinels
// (ErrGone, ErrLockLost, ErrNotFound) and engine.IsTemporary.
type Engine interface {
	Fetcher
	Locker
	Reporter
	TopicSource
}

// transport is the part of NATS the pump uses; natsTransport is the real one,
// unit tests use a fake.
type transport interface {
	// NewInbox returns a unique inbox subject honouring the connection's
	// inbox prefix.
	NewInbox() string
	Publish(m *nats.Msg) error
	// MaxPayload is the server's max_payload (headers and body).
	MaxPayload() int64
	// OnReconnect calls f (on a goroutine of its own) after each reconnect
	// until the returned func is called.
	OnReconnect(f func()) (stop func())
	// Subscribe registers cb for subject (may be a wildcard); cb is called
	// serially. The returned func unsubscribes.
	Subscribe(subject string, cb func(*nats.Msg)) (func() error, error)
}

type natsTransport struct{ nc *nats.Conn }

func (t natsTransport) NewInbox() string          { return t.nc.NewInbox() }
func (t natsTransport) Publish(m *nats.Msg) error { return t.nc.PublishMsg(m) }
func (t natsTransport) MaxPayload() int64         { return t.nc.MaxPayload() }

// OnReconnect listens with a status channel of its own: the connection's
// reconnect handler belongs to its owner (cmd/bridge).
func (t natsTransport) OnReconnect(f func()) func() {
	ch := t.nc.StatusChanged(nats.CONNECTED)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range ch {
			f()
		}
	}()
	return func() {
		t.nc.RemoveStatusListener(ch)
		<-done
	}
}

func (t natsTransport) Subscribe(subject string, cb func(*nats.Msg)) (func() error, error) {
	sub, err := t.nc.Subscribe(subject, cb)
	if err != nil {
		return nil, err
	}
	// Replies must never be dropped as a slow consumer: the callback only
	// decodes and hands off, so the queue stays short, but bursts can be large.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	return sub.Unsubscribe, nil
}
