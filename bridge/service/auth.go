package service

import (
	"strings"

	"github.com/nats-io/nats.go"
)

// maxTokenBytes bounds an end user's token.
const maxTokenBytes = 16 << 10

// userToken reads the end user's token from the request headers (names
// match case-insensitively). No header: "" and no error, the request runs
// with the bridge's own token unless its group requires one. A header that
// is present but blank, repeated with different values, or not a bearer
// token (RFC 6750 token68: letters, digits and -._~+/ then optional '=') is
// a 401: the request never falls back to the bridge's identity.
func userToken(h nats.Header) (string, *Error) {
	if vs, ok := headerValues(h, HeaderUserToken); ok {
		tok, ok := single(vs)
		tok = strings.Trim(tok, " \t")
		if !ok || !isToken68(tok) {
			return "", &Error{Code: CodeUnauthorized, Field: HeaderUserToken,
				Message: "the " + HeaderUserToken + " header must hold one bearer token (letters, digits and -._~+/=, no spaces)"}
		}
		return tok, nil
	}
	vs, ok := headerValues(h, HeaderAuthorization)
	if !ok {
		return "", nil
	}
	v, ok := single(vs)
	scheme, tok, cut := strings.Cut(strings.Trim(v, " \t"), " ")
	tok = strings.TrimLeft(tok, " ")
	if !ok || !cut || !strings.EqualFold(scheme, "Bearer") || !isToken68(tok) {
		return "", &Error{Code: CodeUnauthorized, Field: HeaderAuthorization,
			Message: `the ` + HeaderAuthorization + ` header must read "Bearer <token>"`}
	}
	return tok, nil
}

// headerValues returns the values of header name, matched
// case-insensitively, and whether it is present at all.
func headerValues(h nats.Header, name string) ([]string, bool) {
	if vs, ok := h[name]; ok {
		return vs, true
	}
	var out []string
	found := false
	for k, vs := range h {
		if strings.EqualFold(k, name) {
			out, found = append(out, vs...), true
		}
	}
	return out, found
}

// single returns the one value of vs; several different values (or none)
// are not ok.
func single(vs []string) (string, bool) {
	if len(vs) == 0 {
		return "", false
	}
	for _, v := range vs[1:] {
		if v != vs[0] {
			return "", false
		}
	}
	return vs[0], true
}

// isToken68 reports whether s is an RFC 6750 b64token (JWTs and opaque
// OAuth tokens are).
func isToken68(s string) bool {
	if s == "" || len(s) > maxTokenBytes {
		return false
	}
	i := 0
	for ; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/' {
			continue
		}
		break
	}
	if i == 0 {
		return false
	}
	for ; i < len(s); i++ {
		if s[i] != '=' {
			return false
		}
	}
	return true
}
