package engine

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultOutageReminder is the default of ClientConfig.OutageReminder.
const DefaultOutageReminder = time.Minute

// outage tracks whether the engine answers, for the client's logs and
// readiness: one WARN when calls start failing, a reminder every
// ClientConfig.OutageReminder while they keep failing, one INFO when a call
// gets an answer again. The success path is one atomic load.
type outage struct {
	down     atomic.Bool
	log      *slog.Logger
	reminder time.Duration
	now      func() time.Time

	mu       sync.Mutex
	since    time.Time // first failure of the current outage
	lastLog  time.Time // last WARN of the current outage
	failures int       // failed calls in the current outage
	lastErr  error
}

// isOutage reports whether a call's result means the engine is not
// answering: no answer at all (connection refused, reset, the call's own
// timeout) or a gateway's 502/503/504. Other answers, errors included, show
// the engine is there; the caller's cancellation says nothing.
func isOutage(status int, err error) bool {
	if err == nil {
		return false
	}
	var te *TransportError
	if errors.As(err, &te) {
		return true
	}
	return gatewayDown(status)
}

// gatewayDown: the status a proxy gives when the engine behind it is down.
func gatewayDown(status int) bool {
	switch status {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// cause is what went wrong in a call, without the route template the
// error's text starts with (the log names the real path instead).
func cause(err error) string {
	var e *Error
	if errors.As(err, &e) {
		if e.Body.Message != "" && e.Body.Message != "no message" {
			return fmt.Sprintf("%d %s: %s", e.Status, e.Body.ErrorClassName, e.Body.Message)
		}
		return fmt.Sprintf("%d %s", e.Status, e.Body.ErrorClassName)
	}
	var te *TransportError
	if errors.As(err, &te) {
		return te.Err.Error()
	}
	return err.Error()
}

// record notes the result of one call to path (the real path, not the route
// template) started at start. Only a call started after the outage began
// ends it: a long poll sent before may still answer through a proxy that
// already refuses new calls.
func (o *outage) record(path string, start time.Time, status int, err error) {
	switch {
	case isOutage(status, err):
	case err == nil || status > 0: // the engine answered
		if o.down.Load() {
			o.end(path, start)
		}
		return
	default:
		return // cancelled by the caller, or a local error: no news about the engine
	}
	now := o.now()
	o.mu.Lock()
	defer o.mu.Unlock()
	o.lastErr = err
	if !o.down.Load() {
		o.down.Store(true)
		o.since, o.lastLog, o.failures = now, now, 1
		o.log.Warn("engine unreachable: calls fail and are retried with backoff; further failures are logged at debug level",
			"path", path, "status", status, "error", cause(err))
		return
	}
	o.failures++
	if now.Sub(o.lastLog) >= o.reminder {
		o.lastLog = now
		o.log.Warn("engine still unreachable", "down_for", now.Sub(o.since).Round(time.Millisecond),
			"failed_calls", o.failures, "path", path, "status", status, "error", cause(err))
		return
	}
	o.log.Debug("engine call failed during outage", "path", path, "status", status, "error", cause(err))
}

func (o *outage) end(path string, start time.Time) {
	now := o.now()
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.down.Load() || start.Before(o.since) {
		return
	}
	o.down.Store(false)
	o.log.Info("engine reachable again", "down_for", now.Sub(o.since).Round(time.Millisecond),
		"failed_calls", o.failures, "path", path)
	o.failures, o.lastErr = 0, nil
}

// state reports the current outage: since is zero when there is none.
func (o *outage) state() (since time.Time, err error) {
	if !o.down.Load() {
		return time.Time{}, nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.since, o.lastErr
}
