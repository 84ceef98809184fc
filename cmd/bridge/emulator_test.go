package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pe-bridge/pe-bridge/engine"
)

func getJSON(url string, v any) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+engine.DummyToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return json.Unmarshal(b, v)
}

func TestEmulatorCommandServesAndStopsOnSIGTERM(t *testing.T) {
	addr := freeAddr(t)
	p := startBridge(t, nil, "emulator", "--addr", addr)
	p.waitLine("listening on http://"+addr, 20*time.Second)
	loaded := p.waitLine("loaded", 5*time.Second)
	if !strings.Contains(loaded, "hello_world") || !strings.Contains(loaded, "embedded samples") {
		t.Errorf("load line %q does not list the embedded hello_world", loaded)
	}
	var info engine.ApplicationInfo
	if err := getJSON("http://"+addr+engine.BasePath+"/info", &info); err != nil {
		t.Fatal(err)
	}
	if info.Name == "" {
		t.Errorf("info has no name: %+v", info)
	}
	// a long poll must not hold up the shutdown
	go func() {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+engine.BasePath+"/notifications/long_polling/process_ended", nil)
		req.Header.Set("Authorization", "Bearer "+engine.DummyToken)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	p.signal(syscall.SIGTERM)
	if code := p.wait(15 * time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM, want 0", code)
	}
	p.waitLine("engine emulator stopped", time.Second)
}

func TestEmulatorCommandModelsDirAndAuthority(t *testing.T) {
	dir := t.TempDir()
	hello, err := os.ReadFile(filepath.Join("..", "..", "examples", "models", "hello_world.bpmn"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hello_world.bpmn"), hello, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	p := startBridge(t, []string{"PE_CLIENT_SECRET=s3cret-from-env"},
		"emulator", "--addr", addr, "--models", dir, "--authority", "--client-id", "worker")
	loaded := p.waitLine("loaded 1 process models from "+dir, 20*time.Second)
	if !strings.Contains(loaded, "hello_world") {
		t.Fatalf("load line %q", loaded)
	}
	base := "http://" + addr
	var authorityURL string
	if err := getJSON(base+engine.BasePath+"/authority", &authorityURL); err != nil {
		t.Fatal(err)
	}
	if strings.TrimRight(authorityURL, "/") != base+authorityPath {
		t.Fatalf("authority %q, want %s%s", authorityURL, base, authorityPath)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// client credentials, the authority discovered through the engine
	ts, err := engine.ClientCredentials(ctx, engine.CredentialsConfig{EngineURL: base, ClientID: "worker", ClientSecret: "s3cret-from-env", Scopes: []string{"engine_read"}})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := engine.NewClient(base, engine.ClientConfig{TokenSource: ts})
	defer c.Close()
	list, err := c.ProcessModels(ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if list.TotalCount != 1 {
		t.Fatalf("process models: %+v", list)
	}
	if _, err := engine.ClientCredentials(ctx, engine.CredentialsConfig{EngineURL: base, ClientID: "worker", ClientSecret: "wrong"}); err == nil {
		t.Fatal("wrong secret accepted")
	}
	p.signal(syscall.SIGINT)
	if code := p.wait(15 * time.Second); code != 0 {
		t.Fatalf("exit %d after SIGINT", code)
	}
	if strings.Contains(p.output(false)+p.output(true), "s3cret-from-env") {
		t.Fatal("client secret printed")
	}

	// --deny-anonymous: the dummy token is refused, issued tokens pass
	addr = freeAddr(t)
	p = startBridge(t, nil, "emulator", "--addr", addr, "--authority", "--client-id", "w2", "--client-secret", "x", "--deny-anonymous")
	p.waitLine("emulated authority:", 20*time.Second)
	base = "http://" + addr
	dummy, _ := engine.NewClient(base, engine.ClientConfig{})
	defer dummy.Close()
	if _, err := dummy.ProcessModels(ctx, 0, 10); err == nil {
		t.Fatal("dummy token accepted with --deny-anonymous")
	}
	ts, err = engine.ClientCredentials(ctx, engine.CredentialsConfig{AuthorityURL: base + authorityPath, ClientID: "w2", ClientSecret: "x"})
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := engine.NewClient(base, engine.ClientConfig{TokenSource: ts})
	defer c2.Close()
	if _, err := c2.ProcessModels(ctx, 0, 10); err != nil {
		t.Fatal(err)
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(15 * time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}
}

// --fault-path extend_lock --fault-answer-delay: an extend_lock takes
// effect but its answer is held (the client's request timeout ends it with
// no answer), while fetch_and_lock and finish on the same client are
// answered at once.
func TestEmulatorCommandFaultPathAnswerDelay(t *testing.T) {
	addr := freeAddr(t)
	p := startBridge(t, nil, "emulator", "--addr", addr, "--fault-path", "extend_lock", "--fault-answer-delay", "1h")
	line := p.waitLine("fault injection", 20*time.Second)
	if want := `fault injection on request paths containing "extend_lock": answer delay 1h0m0s`; line != want {
		t.Errorf("startup line %q, want %q", line, want)
	}
	base := "http://" + addr
	// The request timeout bounds every call: an answer held for 1h cannot
	// come back within it, an unfaulted one comes at once.
	c, err := engine.NewClient(base, engine.ClientConfig{RequestTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.StartProcess(ctx, engine.ProcessStartRequest{ProcessModelID: "hello_world"}); err != nil {
		t.Fatal(err)
	}
	tasks, err := c.FetchAndLock(ctx, engine.FetchAndLockRequest{WorkerID: "w", Topics: []string{"SampleExternalTask"}, MaxTasks: 1,
		LongPollingTimeout: time.Second, LockDuration: time.Minute})
	if err != nil {
		t.Fatalf("fetch_and_lock (not matched by --fault-path): %v", err)
	}
	if len(tasks) != 1 {
		t.Fatalf("fetched %d tasks, want 1", len(tasks))
	}
	err = c.ExtendLock(ctx, tasks[0].ID, "w", time.Minute)
	if err == nil {
		t.Fatal("extend_lock answered although its answer is held for 1h")
	}
	if ctx.Err() != nil || !strings.Contains(err.Error(), "no answer within the request timeout") {
		t.Fatalf("extend_lock: %v, want no answer within the request timeout", err)
	}
	t.Logf("extend_lock: %v", err)
	if err := c.FinishTask(ctx, tasks[0].ID, "w", []byte(`{}`)); err != nil {
		t.Fatalf("finish (not matched by --fault-path): %v", err)
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(15 * time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM, want 0", code)
	}
}
