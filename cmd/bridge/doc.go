// Command bridge is the pe-bridge binary:
//
//	bridge run        bridge a ProcessCube engine and NATS (task pump, request/reply service, event forwarder)
//	bridge dev        embedded NATS + engine emulator with sample models + the bridge, in one process
//	bridge emulator   serve the engine emulator alone, for development and tests
//	bridge version    print the version
//
// Configuration comes from flags, PE_* environment variables (flag name
// upper-cased, dashes to underscores, PE_ prefix: --engine-url is
// PE_ENGINE_URL) and an optional --config file with the same names; see
// internal/config. Human-readable status lines (addresses, the demo's round
// trip, the shutdown summary) go to stdout, structured logs (log/slog) to
// stderr. Exit codes: 0 after a clean shutdown, 1 on a runtime error, 2 on
// invalid configuration or usage.
//
// Package main wires the concrete types; nothing may import it.
package main
