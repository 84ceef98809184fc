package forwarder

import (
	"context"
	"encoding/json"

	"github.com/pe-bridge/pe-bridge/engine"
)

// Feed delivers the engine's notifications: SocketFeed (Socket.IO, what the
// engine's own clients use) or PollFeed (the REST long poll, a lossy
// fallback).
type Feed interface {
	// Run subscribes to the notification names and hands every one that
	// arrives to sink, until ctx is done; it then returns nil. It reconnects
	// on its own; each (re)connection is reported through Sink.Connected
	// before the events that follow it.
	Run(ctx context.Context, names []string, sink Sink) error
}

// Sink receives what a Feed delivers. Its methods are called from the
// feed's goroutines, one at a time per feed connection, in arrival order;
// they may block (backpressure).
type Sink interface {
	// Event is one notification: its name (the REST name, e.g.
	// process_ended), the decoded message and the JSON body to forward.
	Event(name string, m engine.EventMessage, body json.RawMessage)
	// Connected reports that the feed (re)connected: events that happened
	// since the last one was delivered (or, with first, before the feed
	// started) may be missing.
	Connected(first bool)
}
