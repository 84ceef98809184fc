// Package integration tests the handler SDK against a real, embedded
// nats-server. It is a module of its own, never tagged or published, so that
// nats-server stays out of the SDK's go.mod and out of the module graph of
// every program that imports the SDK.
package integration
