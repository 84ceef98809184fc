// Package engine is the typed REST client of the 5Minds ProcessCube engine
// (base path /atlas_engine/api/v1) and owns the engine's wire types.
//
// Client speaks net/http with an oauth2.TokenSource for authorization:
// ClientCredentials (authority discovered through GET /authority and OIDC
// discovery, client_secret_post, early refresh) or DummyTokenSource for
// development engines. WithToken forwards an end user's token for one call.
// A 401 whose message contains "expired" makes the client refresh the token
// once and retry, when the source implements TokenRefresher.
//
// Timeouts: each call is bounded by ClientConfig.RequestTimeout, except
// FetchAndLock (LongPollingTimeout + RequestTimeout), blocking StartProcess
// (ReturnOn 2/3) and WaitForNotification, which only the caller's context
// bounds.
//
// Errors: non-2xx answers decode into *Error, which matches the sentinels
// ErrNotFound (404), ErrGone (409/410), ErrLockLost (423), ErrUnauthorized
// (401), ErrForbidden (403), ErrBadRequest (400) with errors.Is; failures to
// get an answer (refused, reset, the call's own timeout) are *TransportError;
// the caller's cancellation comes back as a wrapped ctx.Err(). IsTemporary
// reports 5xx, 429 and transport failures. No error or log record holds a
// token or client secret.
//
// It must not import the bridge, events or NATS packages, nor its
// sub-packages emulator (the engine emulator, which reuses these types) and
// authority (an emulated OAuth authority) outside tests.
package engine
