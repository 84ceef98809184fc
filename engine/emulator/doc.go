// Package emulator is an in-memory emulator of the 5Minds ProcessCube engine
// REST API (/atlas_engine/api/v1), for development and tests. It is not a
// ProcessCube engine: it executes a subset of BPMN (see README.md) from real
// Studio .bpmn files and follows the contract in shared/engine/API.md.
//
// It owns: routing, authentication/scopes, the external task lock lifecycle
// (fetch_and_lock long polls, extend_lock, finish, error, expiry), process
// start/query/terminate, user tasks, messages, signals, long-polling
// notifications, fault injection and counters. Sub-package bpmn owns parsing
// and validating BPMN XML.
//
// *Emulator is an http.Handler. All state sits behind one mutex; lock
// expiries and timer events use one heap and one time.Timer, and long polls
// are woken by direct hand-off when a matching task appears (no polling).
//
// It must not import the bridge, events, NATS or any engine client; it only
// reuses the wire types of package engine.
package emulator
