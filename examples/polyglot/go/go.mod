module github.com/pe-bridge/pe-bridge/examples/polyglot/go

go 1.26.0

require (
	github.com/nats-io/nats.go v1.55.0
	github.com/pe-bridge/pe-bridge/events v0.1.0
	github.com/pe-bridge/pe-bridge/handlers-sdk v0.1.0
)

require (
	github.com/klauspost/compress v1.20.0 // indirect
	github.com/nats-io/nkeys v0.4.16 // indirect
	github.com/nats-io/nuid v1.0.1 // indirect
	golang.org/x/crypto v0.57.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
)

// This repository's copies of the two modules. A program of your own needs
// only the require lines above (go get github.com/pe-bridge/pe-bridge/handlers-sdk).
replace (
	github.com/pe-bridge/pe-bridge/events => ../../../events
	github.com/pe-bridge/pe-bridge/handlers-sdk => ../../../handlers-sdk
)
