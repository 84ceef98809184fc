package main

import (
	"encoding/pem"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/engine/emulator"
)

// An https engine whose certificate only --engine-tls-ca can verify: with
// the CA the bridge identifies the engine, joins its Socket.IO feed and
// serves requests over TLS; without it, it stays not ready naming the
// certificate problem; a file that holds no certificate exits 2 naming the
// flag.
func TestRunEngineOverTLS(t *testing.T) {
	_, srv := serveEngine(t, emulator.Config{}, httptest.NewTLSServer)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	ns := testNATS(t)

	t.Run("without the CA", func(t *testing.T) {
		p := startBridge(t, nil, "run", "--engine-url", srv.URL, "--nats-url", ns.ClientURL())
		addr := p.httpAddr()
		eventually(t, 20*time.Second, func() error {
			if code, _, body := get(t, "http://"+addr+"/readyz"); code != 503 || !strings.Contains(body, "certificate") {
				return fmt.Errorf("/readyz: %d %s", code, body)
			}
			return nil
		})
		p.signal(syscall.SIGTERM)
		if code := p.wait(30 * time.Second); code != 0 || strings.Contains(p.output(false), "bridge ready") {
			t.Fatalf("exit %d:\n%s", code, p.output(false))
		}
	})

	t.Run("with the CA", func(t *testing.T) {
		nc := connect(t, ns.ClientURL())
		sub, err := nc.Subscribe("pe.task.SampleExternalTask", func(m *nats.Msg) { _ = m.Respond([]byte(`{"ok":true}`)) })
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		p := startBridge(t, nil, "run", "--engine-url", srv.URL, "--nats-url", ns.ClientURL(), "--engine-tls-ca", ca)
		addr := p.httpAddr()
		p.waitLine("bridge ready", 30*time.Second)
		if code, _, body := get(t, "http://"+addr+"/readyz"); code != 200 || !strings.Contains(body, `"events":"ok"`) {
			t.Fatalf("/readyz: %d %s", code, body)
		}
		reply, err := nc.Request("pe.process.start", []byte(`{"processModelId":"hello_world","returnOn":"finished"}`), 30*time.Second)
		if err != nil || reply.Header.Get("Nats-Service-Error-Code") != "" || !strings.Contains(string(reply.Data), "the_end_event") {
			t.Fatalf("pe.process.start over TLS: %v %v", err, reply)
		}
		p.signal(syscall.SIGTERM)
		if code := p.wait(30 * time.Second); code != 0 {
			t.Fatalf("exit %d", code)
		}
	})

	t.Run("not a certificate", func(t *testing.T) {
		bad := filepath.Join(dir, "bad.pem")
		if err := os.WriteFile(bad, []byte("not a certificate\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		p := startBridge(t, nil, "run", "--engine-url", srv.URL, "--nats-url", ns.ClientURL(), "--engine-tls-ca", bad)
		if code := p.wait(10 * time.Second); code != 2 || !strings.Contains(p.output(true), "--engine-tls-ca") {
			t.Fatalf("exit %d:\n%s", code, p.output(true))
		}
	})
}
