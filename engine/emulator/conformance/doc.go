// Package conformance holds the fidelity checks of the engine emulator (package emulator). It has no
// non-test code: its tests drive an in-process emulator with
//
//   - the official TypeScript client @5minds/processcube_engine_client@6.1.4 (Node scripts in node/,
//     pinned by node/package-lock.json), covering its ExternalTaskWorker, the three start variants,
//     user tasks, lock-extension abort on 409, deployment, messages, signals and queries;
//   - the engine's OpenAPI file (testdata/openapi.json), validating every request and response of a
//     scripted scenario with kin-openapi, after a named, commented fix per known documentation bug
//     (spec_test.go), and checking that every error body is a BaseError whose code equals the status.
//
// Run: npm ci --prefix engine/emulator/conformance/node && go test ./engine/emulator/conformance/
//
// It imports the emulator and the example models only; nothing may import it.
package conformance
