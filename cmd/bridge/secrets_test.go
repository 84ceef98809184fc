package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/engine/authority"
	"github.com/pe-bridge/pe-bridge/engine/emulator"
	"github.com/pe-bridge/pe-bridge/events"
)

// surface is one thing the bridge shows to the outside; read returns all
// of its content.
type surface struct {
	name string
	read func(t *testing.T) string
}

// httpSurface reads url (a surface served over HTTP).
func httpSurface(name, url string) surface {
	return surface{name: name, read: func(t *testing.T) string {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("reading %s: %v", url, err)
		}
		return fmt.Sprintf("%d %v\n%s", resp.StatusCode, resp.Header, b)
	}}
}

// TestNoSecretOnAnySurface runs bridge run with the engine client secret
// and the NATS password on its command line, debug logging and pprof,
// sends service requests carrying an end user's token (accepted, refused
// by the engine, malformed, blocking), and greps every surface for the
// three secrets. A new surface (an HTTP endpoint, say) is one row in live.
func TestNoSecretOnAnySurface(t *testing.T) {
	const (
		clientSecret = "client-secret-s3cr3t-9f2c"
		natsPassword = "nats-password-s3cr3t-77aa"
		userToken    = "user-token-s3cr3t-4d1e" // token68, so it reaches the engine
	)
	secrets := []string{clientSecret, natsPassword, userToken}
	auth, err := authority.New(authority.Config{Clients: []authority.Client{{ID: "worker", Secret: clientSecret,
		Scopes: []string{emulator.ScopeETW, emulator.ScopeRead, emulator.ScopeWrite, emulator.ScopeObserver}}}})
	if err != nil {
		t.Fatal(err)
	}
	authSrv := newHTTPServer(t, auth)
	auth.SetIssuer(authSrv)
	_, engineURL := testEngine(t, emulator.Config{AuthorityURL: authSrv + "/", Verify: auth.Verify})
	natsAddr, pprofAddr := freeAddr(t), freeAddr(t)
	p := startBridge(t, nil, "run", "--engine-url", engineURL, "--client-id", "worker", "--client-secret", clientSecret,
		"--nats-listen", natsAddr, "--nats-user", "bridge", "--nats-password", natsPassword,
		"--topics", "SampleExternalTask", "--log-level", "debug", "--pprof-addr", pprofAddr)
	p.waitLine("bridge ready", 30*time.Second)

	nc, err := nats.Connect("nats://"+natsAddr, nats.UserInfo("bridge", natsPassword))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Subscribe("pe.task.SampleExternalTask", func(m *nats.Msg) { _ = m.Respond([]byte(`{"ok":true}`)) }); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var replies strings.Builder
	ask := func(subject, body string, hdr nats.Header) {
		t.Helper()
		msg, err := nc.RequestMsg(&nats.Msg{Subject: subject, Data: []byte(body), Header: hdr}, 30*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", subject, err)
		}
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(&replies, "%s %v %s\n", subject, msg.Header, msg.Data)
	}
	bearer := nats.Header{"Authorization": {"Bearer " + userToken}}
	user := nats.Header{"Pe-User-Token": {userToken}}
	ask(events.SubjectUserTaskList, `{}`, user)                                       // the engine refuses the token: 401
	ask(events.SubjectProcessStart, `{"processModelId":"hello_world"}`, bearer)       // 401 too
	ask(events.SubjectUserTaskGet, `{"userTaskInstanceId":".."}`, user)               // 400
	ask(events.SubjectUserTaskFinish, `{"userTaskInstanceId":"u","x":1,"x":2}`, user) // 400
	ask(events.SubjectSignalTrigger, `{"name":"s"}`, nats.Header{"Pe-User-Token": {userToken + " " + userToken}})
	ask(events.SubjectProcessStart, `{"processModelId":"hello_world","returnOn":"finished"}`, nil) // 200, through the handler
	ask("$SRV.INFO."+events.ServiceName, ``, nil)
	ask("$SRV.STATS."+events.ServiceName, ``, nil)

	base := "http://" + pprofAddr + "/debug/pprof/"
	ops := "http://" + p.httpAddr()
	live := []surface{
		{name: "NATS replies (service, $SRV.INFO, $SRV.STATS)", read: func(*testing.T) string {
			mu.Lock()
			defer mu.Unlock()
			return replies.String()
		}},
		httpSurface("pprof index", base),
		httpSurface("pprof cmdline", base+"cmdline"),
		httpSurface("pprof goroutine", base+"goroutine?debug=2"),
		httpSurface("pprof heap", base+"heap?debug=1"),
		httpSurface("pprof allocs", base+"allocs?debug=1"),
		httpSurface("pprof threadcreate", base+"threadcreate?debug=1"),
		httpSurface("pprof block", base+"block?debug=1"),
		httpSurface("pprof mutex", base+"mutex?debug=1"),
		httpSurface("metrics", ops+"/metrics"),
		httpSurface("healthz", ops+"/healthz"),
		httpSurface("readyz", ops+"/readyz"),
	}
	after := []surface{ // read once the bridge has stopped
		{name: "stdout", read: func(*testing.T) string { return p.output(false) }},
		{name: "stderr: logs at debug level", read: func(*testing.T) string { return p.output(true) }},
	}
	check := func(rows []surface) {
		for _, s := range rows {
			content := s.read(t)
			if strings.TrimSpace(content) == "" {
				t.Errorf("%s: empty (the test reads nothing there)", s.name)
			}
			for _, sec := range secrets {
				if i := strings.Index(content, sec); i >= 0 {
					t.Errorf("%s shows a secret: ...%s...", s.name, content[max(0, i-60):min(len(content), i+len(sec)+20)])
				}
			}
		}
	}
	check(live)
	if !strings.Contains(replies.String(), "401") || !strings.Contains(replies.String(), "tokenPayload") {
		t.Fatalf("the requests did not take the paths meant (401s and a finished start):\n%s", replies.String())
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	check(after)
	if !strings.Contains(p.output(true), "level=DEBUG") {
		t.Fatal("no debug logs written: the stderr surface is not what it should be")
	}
}
