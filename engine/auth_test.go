package engine_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/oauth2"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/engine/authority"
)

const (
	workerID     = "external_task_worker"
	workerSecret = "external_task_worker_secret-Zq9"
)

func testClients() []authority.Client {
	return []authority.Client{
		{ID: workerID, Secret: workerSecret, Scopes: []string{"engine_etw", "engine_read", "engine_write"}},
		{ID: "etw_only", Secret: "etw-only-secret-123", Scopes: []string{"engine_etw"}},
	}
}

// countingHandler counts token requests.
type countingHandler struct {
	h      http.Handler
	tokens atomic.Int32
}

func (c *countingHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, "/token") {
		c.tokens.Add(1)
	}
	c.h.ServeHTTP(w, r)
}

// startAuthority serves an authority on loopback.
func startAuthority(t *testing.T, cfg authority.Config) (*authority.Authority, *httptest.Server, *countingHandler) {
	t.Helper()
	if cfg.Clients == nil {
		cfg.Clients = testClients()
	}
	a, err := authority.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ch := &countingHandler{h: a}
	srv := httptest.NewServer(ch)
	t.Cleanup(srv.Close)
	a.SetIssuer(srv.URL)
	return a, srv, ch
}

func TestClientCredentialsDiscoversAuthority(t *testing.T) {
	a, asrv, _ := startAuthority(t, authority.Config{})
	var gotAuth atomic.Value
	eng := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != engine.BasePath+"/authority" {
			http.NotFound(w, r)
			return
		}
		gotAuth.Store(r.Header.Get("Authorization"))
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, "%q", asrv.URL+"/")
	}))
	defer eng.Close()

	ts, err := engine.ClientCredentials(t.Context(), engine.CredentialsConfig{
		EngineURL: eng.URL, ClientID: workerID, ClientSecret: workerSecret, Scopes: []string{"engine_etw"},
	})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	id, err := a.Verify(tok.AccessToken)
	if err != nil || id.UserID != workerID || len(id.Scopes) != 1 || id.Scopes[0] != "engine_etw" {
		t.Fatalf("Verify = %+v, %v", id, err)
	}
	if got := gotAuth.Load(); got != "Bearer "+engine.DummyToken {
		t.Errorf("authority lookup sent Authorization %v", got)
	}
	if _, ok := ts.(engine.TokenRefresher); !ok {
		t.Errorf("%T is not a TokenRefresher", ts)
	}
}

func TestClientCredentialsFailures(t *testing.T) {
	ctx := t.Context()
	_, asrv, _ := startAuthority(t, authority.Config{})
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	base := engine.CredentialsConfig{AuthorityURL: asrv.URL + "/", ClientID: workerID, ClientSecret: workerSecret}
	log.Info("credentials", "cfg", base)
	if s := fmt.Sprintf("%v %+v %s", base, base, base); strings.Contains(s, workerSecret) {
		t.Errorf("fmt leaks the secret: %s", s)
	}

	wrong := base
	wrong.ClientSecret = "wrong-secret-value-42"
	_, err := engine.ClientCredentials(ctx, wrong)
	if err == nil || !strings.Contains(err.Error(), "invalid_client") || engine.IsTemporary(err) {
		t.Errorf("wrong secret: %v", err)
	}
	checkNoSecret(t, err, wrong.ClientSecret, workerSecret)

	scope := base
	scope.Scopes = []string{"upe_admin"}
	_, err = engine.ClientCredentials(ctx, scope)
	if err == nil || !strings.Contains(err.Error(), "invalid_scope") {
		t.Errorf("bad scope: %v", err)
	}
	checkNoSecret(t, err, workerSecret)

	noDisc := httptest.NewServer(http.NotFoundHandler())
	defer noDisc.Close()
	bad := base
	bad.AuthorityURL = noDisc.URL
	if _, err := engine.ClientCredentials(ctx, bad); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("no discovery: %v", err)
	}
	empty := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, `{"issuer":"x"}`) }))
	defer empty.Close()
	bad.AuthorityURL = empty.URL
	if _, err := engine.ClientCredentials(ctx, bad); err == nil || !strings.Contains(err.Error(), "token_endpoint") {
		t.Errorf("no token_endpoint: %v", err)
	}
	bad.AuthorityURL = "not a url"
	if _, err := engine.ClientCredentials(ctx, bad); err == nil {
		t.Error("bad authority url accepted")
	}
	noEngine := httptest.NewServer(http.NotFoundHandler())
	noEngine.Close()
	bad.AuthorityURL, bad.EngineURL = "", noEngine.URL
	if _, err := engine.ClientCredentials(ctx, bad); !engine.IsTemporary(err) {
		t.Errorf("engine down: %v (temporary %v)", err, engine.IsTemporary(err))
	}

	for name, cfg := range map[string]engine.CredentialsConfig{
		"no id":      {AuthorityURL: "http://a", ClientSecret: "s"},
		"no secret":  {AuthorityURL: "http://a", ClientID: "c"},
		"no url":     {ClientID: "c", ClientSecret: "s"},
		"neg before": {AuthorityURL: "http://a", ClientID: "c", ClientSecret: "s", RefreshBefore: -1},
	} {
		if _, err := engine.ClientCredentials(ctx, cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if strings.Contains(logs.String(), workerSecret) || !strings.Contains(logs.String(), "REDACTED") {
		t.Errorf("log: %s", logs.String())
	}
}

// An authority that echoes the request (with the secret) in a 503: the
// error hides the secret but still classifies as the 503 it was, so the
// caller retries it.
func TestClientCredentialsEchoRedactedKeepsKind(t *testing.T) {
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/.well-known/openid-configuration" {
			w.Header().Set("Content-Type", "application/json")
			_, _ = fmt.Fprintf(w, `{"issuer":"x","token_endpoint":"http://%s/token"}`, r.Host)
			return
		}
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintf(w, `{"error":"temporarily_unavailable","error_description":"you sent %s and %s"}`, body, r.Header.Get("Authorization"))
	}))
	defer echo.Close()
	_, err := engine.ClientCredentials(t.Context(), engine.CredentialsConfig{AuthorityURL: echo.URL, ClientID: workerID, ClientSecret: workerSecret})
	if err == nil || !strings.Contains(err.Error(), "[REDACTED]") {
		t.Fatalf("err = %v, want the echo with the secret redacted", err)
	}
	checkNoSecret(t, err, workerSecret)
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.Response == nil || re.Response.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("errors.As RetrieveError = %v (%+v): the 503 was lost", re != nil, re)
	}
	if strings.Contains(string(re.Body), workerSecret) || strings.Contains(re.ErrorDescription, workerSecret) || re.ErrorCode != "temporarily_unavailable" {
		t.Errorf("RetrieveError keeps the secret or lost its code: %q %q %q", re.Body, re.ErrorDescription, re.ErrorCode)
	}
}

func checkNoSecret(t *testing.T, err error, secrets ...string) {
	t.Helper()
	if err == nil {
		return
	}
	for _, s := range secrets {
		if strings.Contains(err.Error(), s) || strings.Contains(fmt.Sprintf("%+v %#v", err, err), s) {
			t.Errorf("error leaks a secret: %v", err)
		}
	}
}

// TestTokenRefreshBeforeExpiry drives the authority and the token source on
// fake time: tokens are reused until RefreshBefore (clamped to half the
// lifetime) ahead of expiry, then replaced.
func TestTokenRefreshBeforeExpiry(t *testing.T) {
	for _, tt := range []struct {
		name     string
		ttl      time.Duration
		before   time.Duration
		reuseFor time.Duration // still the first token at this age
		newAt    time.Duration // a new token at this age
	}{
		{"default 5m of 1h", time.Hour, 0, 55 * time.Minute, 55*time.Minute + time.Second},
		{"clamped to half of 2m", 2 * time.Minute, 0, time.Minute, time.Minute + time.Second},
		{"explicit 10m", time.Hour, 10 * time.Minute, 50 * time.Minute, 50*time.Minute + time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				a, err := authority.New(authority.Config{Issuer: "http://authority.test", Clients: testClients(), TokenTTL: tt.ttl})
				if err != nil {
					t.Fatal(err)
				}
				ch := &countingHandler{h: a}
				hc := &http.Client{Transport: engine.HandlerTransport{"authority.test": ch}}
				ts, err := engine.ClientCredentials(t.Context(), engine.CredentialsConfig{
					AuthorityURL: "http://authority.test", ClientID: workerID, ClientSecret: workerSecret,
					HTTPClient: hc, RefreshBefore: tt.before,
				})
				if err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				first, err := ts.Token()
				if err != nil {
					t.Fatal(err)
				}
				time.Sleep(tt.reuseFor)
				if tok, err := ts.Token(); err != nil || tok.AccessToken != first.AccessToken {
					t.Fatalf("at %v: new token (err %v), want reuse", time.Since(start), err)
				}
				time.Sleep(tt.newAt - tt.reuseFor)
				second, err := ts.Token()
				if err != nil || second.AccessToken == first.AccessToken {
					t.Fatalf("at %v: token not refreshed (err %v)", time.Since(start), err)
				}
				// The old token is still valid at the authority: the refresh was early.
				if _, err := a.Verify(first.AccessToken); err != nil {
					t.Errorf("old token already rejected: %v", err)
				}
				if _, err := a.Verify(second.AccessToken); err != nil {
					t.Errorf("new token: %v", err)
				}
				if n := ch.tokens.Load(); n != 2 {
					t.Errorf("%d token requests, want 2", n)
				}
				// The replacement is reused in turn.
				if tok, _ := ts.Token(); tok.AccessToken != second.AccessToken {
					t.Error("second token not reused")
				}
			})
		})
	}
}

func TestRefreshCoalesces(t *testing.T) {
	_, asrv, ch := startAuthority(t, authority.Config{})
	ts, err := engine.ClientCredentials(t.Context(), engine.CredentialsConfig{
		AuthorityURL: asrv.URL, ClientID: workerID, ClientSecret: workerSecret,
	})
	if err != nil {
		t.Fatal(err)
	}
	stale, _ := ts.Token()
	r := ts.(engine.TokenRefresher)
	var wg sync.WaitGroup
	toks := make([]*oauth2.Token, 16)
	for i := range toks {
		wg.Go(func() {
			tok, err := r.Refresh(stale)
			if err != nil {
				t.Error(err)
			}
			toks[i] = tok
		})
	}
	wg.Wait()
	for _, tok := range toks {
		if tok == nil || tok.AccessToken == stale.AccessToken || tok.AccessToken != toks[0].AccessToken {
			t.Fatal("refresh did not yield one shared new token")
		}
	}
	if n := ch.tokens.Load(); n != 2 {
		t.Errorf("%d token requests, want 2 (initial + one refresh)", n)
	}
	if cur, _ := ts.Token(); cur.AccessToken != toks[0].AccessToken {
		t.Error("Token does not return the refreshed token")
	}
}

func TestDummyTokenSource(t *testing.T) {
	tok, err := engine.DummyTokenSource().Token()
	if err != nil || tok.AccessToken != engine.DummyToken || !tok.Valid() {
		t.Fatalf("%+v %v", tok, err)
	}
	_ = context.Background
	_ = errors.New
}
