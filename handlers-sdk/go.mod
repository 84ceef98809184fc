module github.com/pe-bridge/pe-bridge/handlers-sdk

go 1.26.0

require (
	github.com/nats-io/nats.go v1.55.0
	github.com/pe-bridge/pe-bridge/events v0.1.0
)

require (
	github.com/klauspost/compress v1.20.0 // indirect
	github.com/nats-io/nkeys v0.4.16 // indirect
	github.com/nats-io/nuid v1.0.1 // indirect
	golang.org/x/crypto v0.57.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
)

// Local development: the SDK is built against the events package of this
// repository. A replace directive applies only to this module's own builds;
// a program that requires the SDK gets the tagged events/v0.1.0.
replace github.com/pe-bridge/pe-bridge/events => ../events
