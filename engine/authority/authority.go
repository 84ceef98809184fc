package authority

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// DefaultTokenTTL is the lifetime of issued tokens when Config.TokenTTL is 0.
const DefaultTokenTTL = time.Hour

// Client is a registered OAuth client.
type Client struct {
	ID, Secret string
	// Scopes the client may request; a token request without scope gets
	// all of them.
	Scopes []string
}

// LogValue redacts the secret.
func (c Client) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", c.ID), slog.String("secret", "[REDACTED]"), slog.Any("scopes", c.Scopes))
}

// Config configures an Authority.
type Config struct {
	// Issuer is the base URL the authority is served at, e.g.
	// http://127.0.0.1:11560. Empty: set later with SetIssuer, or derived
	// from each request's Host.
	Issuer  string
	Clients []Client
	// TokenTTL is the lifetime of issued tokens. Default 1 h; at least 1 s.
	TokenTTL time.Duration
	// Now is the clock. nil: time.Now.
	Now func() time.Time
}

// LogValue redacts the client secrets.
func (c Config) LogValue() slog.Value {
	ids := make([]string, len(c.Clients))
	for i, cl := range c.Clients {
		ids[i] = cl.ID
	}
	return slog.GroupValue(slog.String("issuer", c.Issuer), slog.Any("client_ids", ids), slog.Duration("token_ttl", c.TokenTTL))
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	if c.Issuer != "" {
		if err := checkIssuer(c.Issuer); err != nil {
			return err
		}
	}
	if c.TokenTTL != 0 && c.TokenTTL < time.Second {
		return errors.New("authority: TokenTTL below 1s")
	}
	seen := map[string]bool{}
	for _, cl := range c.Clients {
		switch {
		case cl.ID == "":
			return errors.New("authority: client with empty id")
		case cl.Secret == "":
			return fmt.Errorf("authority: client %q has an empty secret", cl.ID)
		case seen[cl.ID]:
			return fmt.Errorf("authority: client %q registered twice", cl.ID)
		}
		seen[cl.ID] = true
	}
	return nil
}

func checkIssuer(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("authority: issuer %q is not an absolute http(s) url", s)
	}
	return nil
}

// Authority is an emulated OAuth authority. It is safe for concurrent use.
type Authority struct {
	clients map[string]Client
	ttl     time.Duration
	now     func() time.Time
	key     []byte

	mu     sync.RWMutex
	issuer string
}

// New returns an Authority.
func New(cfg Config) (*Authority, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Authority{
		clients: make(map[string]Client, len(cfg.Clients)),
		ttl:     cfg.TokenTTL,
		now:     cfg.Now,
		key:     make([]byte, 32),
		issuer:  strings.TrimRight(cfg.Issuer, "/"),
	}
	for _, c := range cfg.Clients {
		c.Scopes = slices.Clone(c.Scopes)
		a.clients[c.ID] = c
	}
	if a.ttl == 0 {
		a.ttl = DefaultTokenTTL
	}
	if a.now == nil {
		a.now = time.Now
	}
	if _, err := rand.Read(a.key); err != nil {
		return nil, fmt.Errorf("authority: generating signing key: %w", err)
	}
	return a, nil
}

// SetIssuer sets the base URL the authority is served at (often known only
// once the listener runs). Tokens issued before stay valid.
func (a *Authority) SetIssuer(u string) {
	a.mu.Lock()
	a.issuer = strings.TrimRight(u, "/")
	a.mu.Unlock()
}

// Issuer returns the configured issuer ("" if unset).
func (a *Authority) Issuer() string {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.issuer
}

func (a *Authority) issuerFor(r *http.Request) string {
	if iss := a.Issuer(); iss != "" {
		return iss
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// ServeHTTP serves discovery and the token endpoint.
func (a *Authority) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case strings.HasSuffix(r.URL.Path, "/.well-known/openid-configuration"):
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		a.serveDiscovery(w, r)
	case strings.HasSuffix(r.URL.Path, "/token"):
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		a.serveToken(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (a *Authority) serveDiscovery(w http.ResponseWriter, r *http.Request) {
	iss := a.issuerFor(r)
	var scopes []string
	for _, c := range a.clients {
		for _, s := range c.Scopes {
			if !slices.Contains(scopes, s) {
				scopes = append(scopes, s)
			}
		}
	}
	slices.Sort(scopes)
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                iss,
		"token_endpoint":                        iss + "/token",
		"grant_types_supported":                 []string{"client_credentials"},
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "client_secret_basic"},
		"response_types_supported":              []string{"token"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"HS256"},
		"scopes_supported":                      scopes,
		"claims_supported":                      []string{"iss", "sub", "client_id", "scope", "iat", "exp", "jti"},
	})
}

// tokenError is an RFC 6749 §5.2 error.
type tokenError struct {
	status int
	code   string
	desc   string
}

func (a *Authority) serveToken(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		writeTokenError(w, tokenError{http.StatusBadRequest, "invalid_request", "malformed form body"}, false)
		return
	}
	form := r.PostForm
	id, secret, basic, terr := clientAuth(r, form)
	if terr != nil {
		writeTokenError(w, *terr, basic)
		return
	}
	c, ok := a.clients[id]
	if !ok || subtle.ConstantTimeCompare([]byte(c.Secret), []byte(secret)) != 1 {
		writeTokenError(w, tokenError{http.StatusUnauthorized, "invalid_client", "client authentication failed"}, basic)
		return
	}
	switch gt := form.Get("grant_type"); gt {
	case "client_credentials":
	case "":
		writeTokenError(w, tokenError{http.StatusBadRequest, "invalid_request", "missing grant_type"}, false)
		return
	default:
		writeTokenError(w, tokenError{http.StatusBadRequest, "unsupported_grant_type", "only client_credentials is supported"}, false)
		return
	}
	scopes := c.Scopes
	if req := strings.Fields(form.Get("scope")); len(req) > 0 {
		for _, s := range req {
			if !slices.Contains(c.Scopes, s) {
				writeTokenError(w, tokenError{http.StatusBadRequest, "invalid_scope", fmt.Sprintf("scope %q is not allowed for this client", s)}, false)
				return
			}
		}
		scopes = dedupe(req)
	}
	tok, exp, err := a.issue(a.issuerFor(r), c.ID, scopes)
	if err != nil {
		writeTokenError(w, tokenError{http.StatusInternalServerError, "server_error", "issuing token"}, false)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": tok,
		"token_type":   "Bearer",
		"expires_in":   int64(exp / time.Second),
		"scope":        strings.Join(scopes, " "),
	})
}

// clientAuth reads client_secret_basic or client_secret_post credentials.
func clientAuth(r *http.Request, form url.Values) (id, secret string, basic bool, terr *tokenError) {
	bid, bsecret, basic := r.BasicAuth()
	pid, psecret := form.Get("client_id"), form.Get("client_secret")
	if basic {
		// RFC 6749 §2.3.1: both parts are form-urlencoded.
		if u, err := url.QueryUnescape(bid); err == nil {
			bid = u
		}
		if u, err := url.QueryUnescape(bsecret); err == nil {
			bsecret = u
		}
		if psecret != "" {
			return "", "", true, &tokenError{http.StatusBadRequest, "invalid_request", "more than one client authentication method"}
		}
		if pid != "" && pid != bid {
			return "", "", true, &tokenError{http.StatusBadRequest, "invalid_request", "client_id does not match the authorization header"}
		}
		return bid, bsecret, true, nil
	}
	if pid == "" || psecret == "" {
		return "", "", false, &tokenError{http.StatusUnauthorized, "invalid_client", "client authentication missing"}
	}
	return pid, psecret, false, nil
}

func dedupe(s []string) []string {
	out := make([]string, 0, len(s))
	for _, v := range s {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

func writeTokenError(w http.ResponseWriter, e tokenError, basic bool) {
	if e.status == http.StatusUnauthorized {
		// RFC 6749 §5.2: required when the client used the Authorization header.
		scheme := `Basic realm="authority"`
		if !basic {
			scheme = `Bearer realm="authority"`
		}
		w.Header().Set("WWW-Authenticate", scheme)
	}
	writeJSON(w, e.status, map[string]string{"error": e.code, "error_description": e.desc})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// ---- tokens ---------------------------------------------------------------

var jwtHeader = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))

type claims struct {
	Iss      string `json:"iss,omitempty"`
	Sub      string `json:"sub"`
	ClientID string `json:"client_id"`
	Scope    string `json:"scope"`
	Iat      int64  `json:"iat"`
	Exp      int64  `json:"exp"`
	Jti      string `json:"jti"`
}

// Issue mints a token for a registered client with the given scopes (a
// subset of its allowed scopes; nil = all), bypassing HTTP. For tests.
func (a *Authority) Issue(clientID string, scopes []string) (string, error) {
	c, ok := a.clients[clientID]
	if !ok {
		return "", fmt.Errorf("authority: unknown client %q", clientID)
	}
	if scopes == nil {
		scopes = c.Scopes
	}
	for _, s := range scopes {
		if !slices.Contains(c.Scopes, s) {
			return "", fmt.Errorf("authority: scope %q is not allowed for client %q", s, clientID)
		}
	}
	tok, _, err := a.issue(a.Issuer(), clientID, scopes)
	return tok, err
}

func (a *Authority) issue(iss, sub string, scopes []string) (string, time.Duration, error) {
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", 0, err
	}
	now := a.now()
	c := claims{
		Iss: iss, Sub: sub, ClientID: sub, Scope: strings.Join(scopes, " "),
		Iat: now.Unix(), Exp: now.Add(a.ttl).Unix(), Jti: hex.EncodeToString(jti[:]),
	}
	p, err := json.Marshal(c)
	if err != nil {
		return "", 0, err
	}
	signing := jwtHeader + "." + base64.RawURLEncoding.EncodeToString(p)
	return signing + "." + a.sign(signing), a.ttl, nil
}

func (a *Authority) sign(s string) string {
	m := hmac.New(sha256.New, a.key)
	m.Write([]byte(s))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Errors of Verify. The message of ErrExpired contains "expired", which the
// official clients (and engine.Client) take as a cue to refresh.
var (
	ErrInvalidToken = errors.New("authority: invalid token")
	ErrExpired      = errors.New("authority: token expired")
)

// Verify checks a token this authority issued and returns its identity
// (UserID = client id). Errors never contain the token.
func (a *Authority) Verify(token string) (Identity, error) {
	token = strings.TrimPrefix(token, "Bearer ")
	h, rest, ok := strings.Cut(token, ".")
	if !ok || h != jwtHeader {
		return Identity{}, ErrInvalidToken
	}
	p, sig, ok := strings.Cut(rest, ".")
	if !ok {
		return Identity{}, ErrInvalidToken
	}
	if !hmac.Equal([]byte(sig), []byte(a.sign(h+"."+p))) {
		return Identity{}, fmt.Errorf("%w: bad signature", ErrInvalidToken)
	}
	raw, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		return Identity{}, ErrInvalidToken
	}
	var c claims
	if err := json.Unmarshal(raw, &c); err != nil || c.Sub == "" {
		return Identity{}, ErrInvalidToken
	}
	if !a.now().Before(time.Unix(c.Exp, 0)) {
		return Identity{}, fmt.Errorf("%w at %s", ErrExpired, time.Unix(c.Exp, 0).UTC().Format(time.RFC3339))
	}
	return Identity{UserID: c.Sub, Scopes: strings.Fields(c.Scope)}, nil
}
