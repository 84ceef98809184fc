package authority

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const secret = "wkr-s3cret+/&="

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestAuthority(t *testing.T, clk *clock) (*Authority, *httptest.Server) {
	t.Helper()
	cfg := Config{Clients: []Client{
		{ID: "worker", Secret: secret, Scopes: []string{"engine_etw", "engine_read", "engine_write"}},
		{ID: "reader", Secret: "reader-secret", Scopes: []string{"engine_read"}},
	}}
	if clk != nil {
		cfg.Now = clk.Now
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	a.SetIssuer(srv.URL + "/")
	return a, srv
}

type tokenAnswer struct {
	status int
	header http.Header
	body   map[string]any
}

func postToken(t *testing.T, srv *httptest.Server, form url.Values, basicID, basicSecret string) tokenAnswer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basicID != "" {
		req.SetBasicAuth(url.QueryEscape(basicID), url.QueryEscape(basicSecret))
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("decoding token answer: %v", err)
	}
	return tokenAnswer{resp.StatusCode, resp.Header, body}
}

func TestDiscovery(t *testing.T) {
	_, srv := newTestAuthority(t, nil)
	resp, err := http.Get(srv.URL + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Issuer        string   `json:"issuer"`
		TokenEndpoint string   `json:"token_endpoint"`
		Grants        []string `json:"grant_types_supported"`
		AuthMethods   []string `json:"token_endpoint_auth_methods_supported"`
		Scopes        []string `json:"scopes_supported"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || doc.Issuer != srv.URL || doc.TokenEndpoint != srv.URL+"/token" ||
		!slices.Equal(doc.Grants, []string{"client_credentials"}) ||
		!slices.Contains(doc.AuthMethods, "client_secret_post") || !slices.Contains(doc.AuthMethods, "client_secret_basic") ||
		!slices.Equal(doc.Scopes, []string{"engine_etw", "engine_read", "engine_write"}) {
		t.Fatalf("discovery %d %+v", resp.StatusCode, doc)
	}

	// Without an issuer the request's host is used.
	a, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	a.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://auth.example:11560/.well-known/openid-configuration", nil))
	if !strings.Contains(rec.Body.String(), `"token_endpoint":"http://auth.example:11560/token"`) {
		t.Errorf("derived issuer: %s", rec.Body)
	}
	rec = httptest.NewRecorder()
	a.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/nope", nil))
	if rec.Code != 404 {
		t.Errorf("unknown path: %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	a.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/token", nil))
	if rec.Code != 405 {
		t.Errorf("GET /token: %d", rec.Code)
	}
}

func TestTokenGrant(t *testing.T) {
	a, srv := newTestAuthority(t, nil)
	check := func(name string, ans tokenAnswer, wantScopes []string) {
		t.Helper()
		if ans.status != 200 || ans.body["token_type"] != "Bearer" || ans.body["expires_in"] != float64(3600) ||
			ans.header.Get("Cache-Control") != "no-store" {
			t.Fatalf("%s: %d %v", name, ans.status, ans.body)
		}
		if got := ans.body["scope"]; got != strings.Join(wantScopes, " ") {
			t.Errorf("%s: scope %q", name, got)
		}
		id, err := a.Verify(ans.body["access_token"].(string))
		if err != nil || id.UserID != "worker" || !slices.Equal(id.Scopes, wantScopes) {
			t.Fatalf("%s: Verify = %+v, %v", name, id, err)
		}
	}
	all := []string{"engine_etw", "engine_read", "engine_write"}
	check("post", postToken(t, srv, url.Values{"grant_type": {"client_credentials"}, "client_id": {"worker"}, "client_secret": {secret}}, "", ""), all)
	check("basic", postToken(t, srv, url.Values{"grant_type": {"client_credentials"}}, "worker", secret), all)
	check("basic with client_id", postToken(t, srv, url.Values{"grant_type": {"client_credentials"}, "client_id": {"worker"}}, "worker", secret), all)
	check("scoped", postToken(t, srv, url.Values{"grant_type": {"client_credentials"}, "client_id": {"worker"}, "client_secret": {secret},
		"scope": {"engine_etw  engine_etw"}}, "", ""), []string{"engine_etw"})
}

func TestTokenErrors(t *testing.T) {
	_, srv := newTestAuthority(t, nil)
	cc := url.Values{"grant_type": {"client_credentials"}}
	with := func(kv ...string) url.Values {
		v := url.Values{}
		for k, vs := range cc {
			v[k] = vs
		}
		for i := 0; i < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return v
	}
	tests := []struct {
		name          string
		form          url.Values
		bid, bsecret  string
		status        int
		code          string
		wwwAuthPrefix string
	}{
		{"wrong secret post", with("client_id", "worker", "client_secret", "nope"), "", "", 401, "invalid_client", "Bearer"},
		{"wrong secret basic", cc, "worker", "nope", 401, "invalid_client", "Basic"},
		{"unknown client", with("client_id", "ghost", "client_secret", secret), "", "", 401, "invalid_client", "Bearer"},
		{"no credentials", cc, "", "", 401, "invalid_client", "Bearer"},
		{"two methods", with("client_id", "worker", "client_secret", secret), "worker", secret, 400, "invalid_request", ""},
		{"client id mismatch", with("client_id", "reader"), "worker", secret, 400, "invalid_request", ""},
		{"grant", with("client_id", "worker", "client_secret", secret, "grant_type", "password"), "", "", 400, "unsupported_grant_type", ""},
		{"no grant", url.Values{"client_id": {"worker"}, "client_secret": {secret}}, "", "", 400, "invalid_request", ""},
		{"scope", with("client_id", "reader", "client_secret", "reader-secret", "scope", "engine_read engine_etw"), "", "", 400, "invalid_scope", ""},
	}
	for _, tt := range tests {
		ans := postToken(t, srv, tt.form, tt.bid, tt.bsecret)
		if ans.status != tt.status || ans.body["error"] != tt.code || ans.body["error_description"] == "" {
			t.Errorf("%s: %d %v, want %d %s", tt.name, ans.status, ans.body, tt.status, tt.code)
		}
		if w := ans.header.Get("WWW-Authenticate"); !strings.HasPrefix(w, tt.wwwAuthPrefix) || (tt.wwwAuthPrefix == "") != (w == "") {
			t.Errorf("%s: WWW-Authenticate %q", tt.name, w)
		}
		if _, ok := ans.body["access_token"]; ok {
			t.Errorf("%s: token issued", tt.name)
		}
		if b, _ := json.Marshal(ans.body); bytes.Contains(b, []byte(secret)) {
			t.Errorf("%s: answer echoes the secret", tt.name)
		}
	}
}

func TestVerify(t *testing.T) {
	clk := &clock{t: time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)}
	a, _ := newTestAuthority(t, clk)
	tok, err := a.Issue("reader", nil)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := a.Verify(tok); err != nil || id.UserID != "reader" || !slices.Equal(id.Scopes, []string{"engine_read"}) {
		t.Fatalf("Verify = %+v, %v", id, err)
	}
	if _, err := a.Verify("Bearer " + tok); err != nil {
		t.Errorf("Verify with Bearer prefix: %v", err)
	}
	clk.Add(time.Hour - time.Second)
	if _, err := a.Verify(tok); err != nil {
		t.Fatalf("just before expiry: %v", err)
	}
	clk.Add(time.Second)
	_, err = a.Verify(tok)
	if !errors.Is(err, ErrExpired) || !strings.Contains(err.Error(), "expired") || strings.Contains(err.Error(), tok) {
		t.Fatalf("expired: %v", err)
	}

	other, _ := newTestAuthority(t, clk)
	foreign, _ := other.Issue("reader", nil)
	parts := strings.Split(tok, ".")
	forged := parts[0] + "." + strings.Split(foreign, ".")[1] + "." + parts[2]
	for name, bad := range map[string]string{
		"foreign": foreign, "forged": forged, "garbage": "abc", "empty": "", "dummy": "ZHVtbXlfdG9rZW4=",
		"two parts": parts[0] + "." + parts[1], "bad payload": parts[0] + ".!!!." + parts[2],
	} {
		_, err := a.Verify(bad)
		if !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: %v", name, err)
		}
		if bad != "" && strings.Contains(err.Error(), bad) {
			t.Errorf("%s: error contains the token", name)
		}
	}
	if _, err := a.Issue("ghost", nil); err == nil {
		t.Error("Issue for unknown client")
	}
	if _, err := a.Issue("reader", []string{"engine_write"}); err == nil {
		t.Error("Issue with disallowed scope")
	}
}

func TestConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"issuer":     {Issuer: "localhost:1"},
		"ttl":        {TokenTTL: time.Millisecond},
		"empty id":   {Clients: []Client{{Secret: "s"}}},
		"no secret":  {Clients: []Client{{ID: "a"}}},
		"duplicated": {Clients: []Client{{ID: "a", Secret: "s"}, {ID: "a", Secret: "t"}}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	cfg := Config{Issuer: "http://a", Clients: []Client{{ID: "worker", Secret: secret}}}
	log.Info("config", "cfg", cfg, "client", cfg.Clients[0])
	if strings.Contains(buf.String(), secret) || !strings.Contains(buf.String(), "worker") {
		t.Errorf("log: %s", buf.String())
	}
}
