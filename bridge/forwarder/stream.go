package forwarder

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pe-bridge/pe-bridge/events"
)

// StreamSubject is the subject filter of the events stream.
const StreamSubject = events.EventPrefix + ">"

// Defaults of StreamConfig.
const (
	DefaultDuplicateWindow = 2 * time.Minute
	DefaultStreamMaxAge    = 7 * 24 * time.Hour
)

// StreamConfig describes the stream EnsureStream creates.
type StreamConfig struct {
	// Name of the stream (required).
	Name string
	// Replicas of the stream's storage (1 on a single server; 3 on a
	// cluster). Default 1.
	Replicas int
	// DuplicateWindow is how long JetStream remembers a Nats-Msg-Id: a
	// re-publish of an event (a retry, a second replica during a lease
	// handover) within it is stored once. Default DefaultDuplicateWindow.
	DuplicateWindow time.Duration
	// MaxAge bounds how long events are kept. Default DefaultStreamMaxAge.
	MaxAge time.Duration
}

// ErrStreamMismatch: a stream of that name exists but does not capture
// StreamSubject, so the forwarder cannot adopt it.
var ErrStreamMismatch = errors.New("forwarder: existing stream does not capture " + StreamSubject)

// EnsureStream creates the events stream, or adopts an existing one of that
// name whose subjects include StreamSubject (its settings are left as they
// are). It returns the stream's info.
func EnsureStream(ctx context.Context, js jetstream.JetStream, c StreamConfig) (*jetstream.StreamInfo, error) {
	if c.Name == "" {
		return nil, errors.New("forwarder: stream name is empty")
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = DefaultDuplicateWindow
	}
	if c.MaxAge == 0 {
		c.MaxAge = DefaultStreamMaxAge
	}
	s, err := js.Stream(ctx, c.Name)
	if err == nil {
		info, err := s.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("reading stream %s: %w", c.Name, jsRefused(js, err))
		}
		if !slices.Contains(info.Config.Subjects, StreamSubject) && !slices.Contains(info.Config.Subjects, "pe.>") && !slices.Contains(info.Config.Subjects, ">") {
			return nil, fmt.Errorf("%w: stream %s has subjects %v", ErrStreamMismatch, c.Name, info.Config.Subjects)
		}
		return info, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("looking up stream %s: %w", c.Name, jsRefused(js, err))
	}
	s, err = js.CreateStream(ctx, jetstream.StreamConfig{
		Name:        c.Name,
		Description: "pe-bridge engine events (pe.event.*), de-duplicated on Nats-Msg-Id = ce-id",
		Subjects:    []string{StreamSubject},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Replicas:    c.Replicas,
		Duplicates:  c.DuplicateWindow,
		MaxAge:      c.MaxAge,
	})
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) { // another replica was faster
		return EnsureStream(ctx, js, c)
	}
	if err != nil {
		return nil, fmt.Errorf("creating stream %s: %w", c.Name, jsRefused(js, err))
	}
	return s.CachedInfo(), nil
}

// jsRefused explains a JetStream API call that failed because the server
// refused to let this connection publish the request: the server drops such
// a request (the caller only sees its timeout) and reports the violation
// asynchronously, as the connection's last error.
func jsRefused(js jetstream.JetStream, err error) error {
	if err == nil || js == nil || js.Conn() == nil {
		return err
	}
	last := js.Conn().LastError()
	if !errors.Is(last, nats.ErrPermissionViolation) || !strings.Contains(last.Error(), "$JS.API.") && !strings.Contains(last.Error(), "$KV.") {
		return err
	}
	need := "$JS.API.>"
	if i := strings.Index(last.Error(), `"$KV.`); i >= 0 {
		need = "$KV." + strings.SplitN(last.Error()[i+len(`"$KV.`):], ".", 2)[0] + ".>"
	}
	return fmt.Errorf("%w (%v: the bridge's NATS user needs publish permission on %s, docs/security.md)", err, last, need)
}
