// Package engine is the typed REST client of the 5Minds ProcessCube engine
// (base path /atlas_engine/api/v1) and owns the engine's wire types.
//
// It speaks net/http with an oauth2.TokenSource for authorization (client
// credentials via the engine's authority, or the dev dummy token). Non-2xx
// answers decode into *Error, which matches the sentinels ErrNotFound (404),
// ErrGone (409/410), ErrLockLost (423), ErrUnauthorized (401), ErrForbidden
// (403) with errors.Is; IsTemporary reports 5xx, 429 and transport failures.
//
// It must not import the bridge, events or NATS packages. The engine
// emulator lives in the sub-package emulator and reuses these types.
package engine
