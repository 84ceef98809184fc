// Package natsserver runs a real nats-server in process, with JetStream on,
// for `bridge run` without --nats-url and for `bridge dev`.
//
// It owns the embedded server's lifetime and its store directory (a temporary
// one unless the caller names one). It must not import the bridge, engine or
// events packages.
package natsserver
