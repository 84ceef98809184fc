// Package authority is an emulated OAuth 2.0 / OpenID Connect authority for
// tests and `bridge dev`: it serves OIDC discovery and a client-credentials
// token endpoint, issues HMAC-signed JWTs (HS256, key random per Authority)
// and verifies them for the engine emulator (emulator.Config.Verify).
//
// Routes, relative to the issuer URL:
//
//	GET  /.well-known/openid-configuration
//	POST /token   grant_type=client_credentials; client_secret_post or client_secret_basic
//
// Token errors follow RFC 6749 §5.2 (invalid_client 401, invalid_scope,
// unsupported_grant_type and invalid_request 400).
//
// It may import engine/emulator (for Identity); the emulator must not import
// it. It must not import the bridge, events or NATS packages.
package authority
