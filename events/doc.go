// Package events is pe-bridge's wire contract v1: subjects, CloudEvent types
// and attributes, the topic-to-subject mapping and the encoding of handler
// outcomes. docs/contract.md describes the same contract for humans.
//
// It imports neither NATS nor HTTP packages, so the bridge, the handler SDK
// and tests share it without pulling in transports. It is a Go module of its
// own (github.com/pe-bridge/pe-bridge/events, tags events/vX.Y.Z) that
// imports the standard library only.
package events
