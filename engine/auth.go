package engine

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// DefaultRefreshBefore is how long before its expiry a client-credentials
// token is replaced (the official client uses 5 minutes).
const DefaultRefreshBefore = 5 * time.Minute

// DummyTokenSource yields DummyToken, accepted by engines that run with
// anonymous root access. Development only.
func DummyTokenSource() oauth2.TokenSource {
	return oauth2.StaticTokenSource(&oauth2.Token{AccessToken: DummyToken, TokenType: "Bearer"})
}

// CredentialsConfig configures ClientCredentials.
type CredentialsConfig struct {
	// EngineURL is the engine root; used to discover the authority when
	// AuthorityURL is empty.
	EngineURL string
	// AuthorityURL is the OAuth authority (issuer). Empty: asked from the
	// engine (GET /atlas_engine/api/v1/authority, trailing slash stripped).
	AuthorityURL string
	ClientID     string
	ClientSecret string
	// Scopes requested; empty asks for the client's default scopes. Workers
	// need "engine_etw", plus "engine_read engine_write" to start processes,
	// query and finish user tasks.
	Scopes []string
	// HTTPClient is used for discovery and token requests. nil: a client
	// with a 30 s timeout (and TLSConfig).
	HTTPClient *http.Client
	// TLSConfig verifies an https authority and engine when HTTPClient is
	// nil. nil: the system's roots.
	TLSConfig *tls.Config
	// RefreshBefore is how long before expiry a token is replaced. Default
	// 5 min, clamped to half the token lifetime.
	RefreshBefore time.Duration
}

// Validate reports a configuration that cannot work.
func (c CredentialsConfig) Validate() error {
	switch {
	case c.ClientID == "":
		return errors.New("engine: credentials: empty client id")
	case c.ClientSecret == "":
		return errors.New("engine: credentials: empty client secret")
	case c.EngineURL == "" && c.AuthorityURL == "":
		return errors.New("engine: credentials: need an engine url or an authority url")
	case c.RefreshBefore < 0:
		return errors.New("engine: credentials: negative RefreshBefore")
	}
	return nil
}

// LogValue redacts the client secret.
func (c CredentialsConfig) LogValue() slog.Value {
	secret := ""
	if c.ClientSecret != "" {
		secret = "[REDACTED]"
	}
	return slog.GroupValue(
		slog.String("engine_url", c.EngineURL),
		slog.String("authority_url", c.AuthorityURL),
		slog.String("client_id", c.ClientID),
		slog.String("client_secret", secret),
		slog.Any("scopes", c.Scopes),
		slog.Duration("refresh_before", c.RefreshBefore),
	)
}

// String redacts the client secret too (for %v and %+v).
func (c CredentialsConfig) String() string {
	return c.LogValue().String()
}

// ClientCredentials returns a token source for the OAuth2 client-credentials
// grant, as the official client does it: the authority (AuthorityURL, else
// asked from the engine), OIDC discovery of its token_endpoint, and
// client_secret_post. It fetches the first token at once, so wrong
// credentials fail here. Tokens are reused until RefreshBefore ahead of
// their expiry (oauth2.ReuseTokenSourceWithExpiry). The returned source
// implements TokenRefresher, which Client uses when the engine rejects a
// token as expired.
//
// ctx bounds discovery and the first token only; later refreshes run
// detached from it, each bounded by 30 s and the HTTP client's timeout.
// Token takes no context: a call that needs a refresh waits for it. No error
// contains the secret or a token.
func ClientCredentials(ctx context.Context, cfg CredentialsConfig) (oauth2.TokenSource, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
		if cfg.TLSConfig != nil {
			t := http.DefaultTransport.(*http.Transport).Clone()
			t.TLSClientConfig = cfg.TLSConfig.Clone()
			hc.Transport = t
		}
	}
	authority := strings.TrimRight(strings.TrimSpace(cfg.AuthorityURL), "/")
	if authority == "" {
		ec, err := NewClient(cfg.EngineURL, ClientConfig{HTTPClient: hc})
		if err != nil {
			return nil, err
		}
		a, err := ec.Authority(ctx)
		if err != nil {
			return nil, fmt.Errorf("engine: discovering authority: %w", err)
		}
		authority = strings.TrimRight(strings.TrimSpace(a), "/")
		if authority == "" {
			return nil, errors.New("engine: discovering authority: engine reports no authority url")
		}
	}
	tokenURL, err := discoverTokenEndpoint(ctx, hc, authority)
	if err != nil {
		return nil, redact(err, cfg.ClientSecret)
	}
	cc := &clientcredentials.Config{
		ClientID:     cfg.ClientID,
		ClientSecret: cfg.ClientSecret,
		TokenURL:     tokenURL,
		Scopes:       cfg.Scopes,
		AuthStyle:    oauth2.AuthStyleInParams, // client_secret_post
	}
	first, err := cc.Token(context.WithValue(ctx, oauth2.HTTPClient, hc))
	if err != nil {
		return nil, fmt.Errorf("engine: getting token from %s: %w", tokenURL, redact(err, cfg.ClientSecret))
	}
	s := &credentialsSource{
		base: &fetchSource{
			ctx: context.WithValue(context.WithoutCancel(ctx), oauth2.HTTPClient, hc),
			cc:  cc, secret: cfg.ClientSecret,
		},
		refreshBefore: cfg.RefreshBefore,
	}
	if s.refreshBefore == 0 {
		s.refreshBefore = DefaultRefreshBefore
	}
	s.install(first)
	return s, nil
}

// credentialsSource reuses tokens until refreshBefore (clamped to half their
// lifetime) ahead of expiry, and can be forced to refresh.
type credentialsSource struct {
	base          oauth2.TokenSource
	refreshBefore time.Duration

	mu    sync.Mutex // serializes Refresh; guards reuse
	reuse oauth2.TokenSource
}

// install makes t the current token; the caller holds mu or is the
// constructor.
func (s *credentialsSource) install(t *oauth2.Token) {
	early := s.refreshBefore
	if !t.Expiry.IsZero() {
		if half := time.Until(t.Expiry) / 2; half < early {
			early = max(half, 0)
		}
	}
	s.reuse = oauth2.ReuseTokenSourceWithExpiry(t, s.base, early)
}

func (s *credentialsSource) Token() (*oauth2.Token, error) {
	s.mu.Lock()
	r := s.reuse
	s.mu.Unlock()
	return r.Token()
}

// Refresh fetches a new token unless the current one already differs from
// stale.
func (s *credentialsSource) Refresh(stale *oauth2.Token) (*oauth2.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, err := s.reuse.Token()
	if err == nil && (stale == nil || cur.AccessToken != stale.AccessToken) {
		return cur, nil
	}
	t, err := s.base.Token()
	if err != nil {
		return nil, err
	}
	s.install(t)
	return t, nil
}

// tokenFetchTimeout bounds each token request made after ClientCredentials
// returned (on top of the HTTP client's own timeout).
const tokenFetchTimeout = 30 * time.Second

// fetchSource fetches a new token on every call, each bounded by
// tokenFetchTimeout, and keeps the secret out of its errors.
type fetchSource struct {
	ctx    context.Context // detached from the caller of ClientCredentials; carries the HTTP client
	cc     *clientcredentials.Config
	secret string
}

func (f *fetchSource) Token() (*oauth2.Token, error) {
	ctx, cancel := context.WithTimeout(f.ctx, tokenFetchTimeout)
	defer cancel()
	t, err := f.cc.Token(ctx)
	if err != nil {
		return nil, fmt.Errorf("engine: getting token from %s: %w", f.cc.TokenURL, redact(err, f.secret))
	}
	return t, nil
}

// redact hides secret in err when its text holds it (an authority echoing a
// request). The result's text is err's with the secret replaced, and it
// keeps what callers classify an error by, without the secret: an
// *oauth2.RetrieveError (status, code; body and description redacted),
// context.Canceled/DeadlineExceeded, and whether err was temporary (a
// transport failure, a *url.Error). Unchanged when the secret is absent.
func redact(err error, secret string) error {
	if err == nil || secret == "" || !strings.Contains(err.Error(), secret) {
		return err
	}
	hide := func(s string) string { return strings.ReplaceAll(s, secret, "[REDACTED]") }
	r := &redactedError{msg: hide(err.Error())}
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		c := *re
		c.Body = []byte(hide(string(re.Body)))
		c.ErrorDescription = hide(re.ErrorDescription)
		c.ErrorURI = hide(re.ErrorURI)
		r.parts = append(r.parts, &c)
	}
	for _, ctxErr := range []error{context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, ctxErr) {
			r.parts = append(r.parts, ctxErr)
		}
	}
	var ue *url.Error
	r.temporary = IsTemporary(err) || errors.As(err, &ue)
	return r
}

// redactedError is an error whose text had a secret in it; see redact.
type redactedError struct {
	msg       string
	parts     []error
	temporary bool
}

func (e *redactedError) Error() string   { return e.msg }
func (e *redactedError) Unwrap() []error { return e.parts }
func (e *redactedError) Temporary() bool { return e.temporary }

// discoverTokenEndpoint reads {authority}/.well-known/openid-configuration.
func discoverTokenEndpoint(ctx context.Context, hc *http.Client, authority string) (string, error) {
	u, err := url.Parse(authority)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("engine: authority url %q is not an absolute http(s) url", authority)
	}
	doc := authority + "/.well-known/openid-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, doc, nil)
	if err != nil {
		return "", fmt.Errorf("engine: discovering token endpoint: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return "", &TransportError{Op: "GET " + doc, Err: err}
	}
	defer func() {
		_, _ = io.CopyN(io.Discard, resp.Body, maxDrain)
		_ = resp.Body.Close()
	}()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", &TransportError{Op: "GET " + doc, Err: err}
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("engine: discovering token endpoint: GET %s: %d %s", doc, resp.StatusCode,
			truncate(string(bytes.TrimSpace(body)), maxRawMessage))
	}
	var meta struct {
		Issuer        string `json:"issuer"`
		TokenEndpoint string `json:"token_endpoint"`
	}
	if err := json.Unmarshal(body, &meta); err != nil {
		return "", fmt.Errorf("engine: discovering token endpoint: decoding %s: %w", doc, err)
	}
	if meta.TokenEndpoint == "" {
		return "", fmt.Errorf("engine: discovering token endpoint: %s has no token_endpoint", doc)
	}
	te, err := url.Parse(meta.TokenEndpoint)
	if err != nil || !te.IsAbs() {
		return "", fmt.Errorf("engine: discovering token endpoint: %q is not an absolute url", meta.TokenEndpoint)
	}
	return meta.TokenEndpoint, nil
}
