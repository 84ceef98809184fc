package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/pe-bridge/pe-bridge/engine/emulator"
	"github.com/pe-bridge/pe-bridge/events"
	"github.com/pe-bridge/pe-bridge/internal/natsserver"
)

// secureConfPermissions loads deploy/nats/secure.conf with the credentials
// of roles and returns the permissions it gives each role, by role name:
// "bridge", "sample", "credit", "starter", "tasklist".
func secureConfPermissions(t *testing.T, roles *secureEnv) map[string]*server.Permissions {
	t.Helper()
	vars := map[string]string{}
	for _, kv := range roles.env {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
		t.Setenv(k, v)
	}
	opts, err := server.ProcessConfigFile(secureConf)
	if err != nil {
		t.Fatal(err)
	}
	perms := map[string]*server.Permissions{}
	for _, u := range opts.Users {
		perms[strings.TrimPrefix(u.Username, "pe-")] = u.Permissions
	}
	for _, u := range opts.Nkeys {
		switch u.Nkey {
		case vars["NATS_PE_HANDLER_SAMPLE_NKEY"]:
			perms["sample"] = u.Permissions
		case vars["NATS_PE_HANDLER_CREDIT_NKEY"]:
			perms["credit"] = u.Permissions
		}
	}
	for _, name := range []string{"bridge", "sample", "credit", "starter", "tasklist"} {
		if perms[name] == nil {
			t.Fatalf("secure.conf gives role %s no permissions", name)
		}
	}
	return perms
}

// jwtPermissions is p as user JWT permissions (allow_responses is Resp).
func jwtPermissions(p *server.Permissions) jwt.Permissions {
	var j jwt.Permissions
	if p.Publish != nil {
		j.Pub.Allow, j.Pub.Deny = p.Publish.Allow, p.Publish.Deny
	}
	if p.Subscribe != nil {
		j.Sub.Allow, j.Sub.Deny = p.Subscribe.Allow, p.Subscribe.Deny
	}
	if p.Response != nil {
		j.Resp = &jwt.ResponsePermission{MaxMsgs: p.Response.MaxMsgs, Expires: p.Response.Expires}
	}
	return j
}

// TestCredsJWTOperatorMode: in operator mode (a nats-server trusting an
// operator, its account in a memory resolver) the roles of secure.conf are
// user JWTs with the same permissions, and the bridge, handlers and
// clients authenticate with .creds files. The real bridge binary connects
// with --nats-creds, a SampleExternalTask handler (nats.UserCredentials)
// finishes a blocking start requested by a pe-starter client, and the
// JWTs keep the file's limits: the SampleExternalTask handler cannot
// subscribe pe.task.>, the CheckCredit handler cannot answer its task (nor
// subscribe to it), pe-starter cannot subscribe _INBOX.>, the bridge user
// cannot subscribe a service subject outside queue group pe-bridge.
func TestCredsJWTOperatorMode(t *testing.T) {
	perms := secureConfPermissions(t, newSecureEnv(t))

	op, err := nkeys.CreateOperator()
	if err != nil {
		t.Fatal(err)
	}
	opPub, _ := op.PublicKey()
	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = "pe-operator"
	opJWT, err := oc.Encode(op)
	if err != nil {
		t.Fatal(err)
	}
	acc, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	accPub, _ := acc.PublicKey()
	ac := jwt.NewAccountClaims(accPub)
	ac.Name = "PE"
	accJWT, err := ac.Encode(op)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	creds := map[string]string{} // role name -> .creds file
	for name, p := range perms {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := kp.PublicKey()
		uc := jwt.NewUserClaims(pub)
		uc.Name = "pe-" + name
		uc.Permissions = jwtPermissions(p)
		var vr jwt.ValidationResults
		uc.Validate(&vr)
		if vr.IsBlocking(true) {
			t.Fatalf("user JWT of %s: %v", name, vr.Errors())
		}
		userJWT, err := uc.Encode(acc)
		if err != nil {
			t.Fatal(err)
		}
		seed, _ := kp.Seed()
		file, err := jwt.FormatUserConfig(userJWT, seed)
		if err != nil {
			t.Fatal(err)
		}
		creds[name] = filepath.Join(dir, name+".creds")
		if err := os.WriteFile(creds[name], file, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(dir, "operator.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "operator: %q\nresolver: MEMORY\nresolver_preload: {\n  %s: %q\n}\n",
		opJWT, accPub, accJWT), 0o600); err != nil {
		t.Fatal(err)
	}
	ns, err := natsserver.Start(natsserver.Config{Listen: "127.0.0.1:0", ConfigFile: conf, NoJetStream: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })

	_, engineURL := testEngine(t, emulator.Config{})
	p := startBridge(t, nil, "run", "--engine-url", engineURL, "--nats-url", ns.ClientURL(), "--nats-creds", creds["bridge"],
		"--topics", "SampleExternalTask")
	p.waitLine("bridge ready", 30*time.Second)

	connect := func(name string, extra ...nats.Option) (*nats.Conn, <-chan error) {
		t.Helper()
		errs := make(chan error, 64)
		opts := append([]nats.Option{nats.UserCredentials(creds[name]), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		})}, extra...)
		nc, err := nats.Connect(ns.ClientURL(), opts...)
		if err != nil {
			t.Fatalf("connecting as %s with its creds: %v", name, err)
		}
		t.Cleanup(nc.Close)
		return nc, errs
	}
	if nc, err := nats.Connect(ns.ClientURL(), nats.Timeout(5*time.Second), nats.NoReconnect()); err == nil {
		nc.Close()
		t.Fatal("operator-mode server accepted a client without creds")
	}

	// Each user JWT's subscribe permissions apply.
	for _, c := range []struct{ role, subject string }{
		{"sample", "pe.task.>"},
		{"credit", "pe.task.SampleExternalTask"},
		{"starter", "_INBOX.>"},
		{"tasklist", "pe.event.process_started"},
		{"bridge", "_INBOX.>"},
		{"bridge", events.SubjectProcessStart}, // outside its queue group
	} {
		nc, errs := connect(c.role)
		if _, err := nc.Subscribe(c.subject, func(*nats.Msg) {}); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		permissionErrorFor(t, c.role+" subscribing to "+c.subject, errs, fmt.Sprintf("Subscription to %q", c.subject))
	}

	handler, _ := connect("sample")
	credit, creditErrs := connect("credit")
	refused := make(chan error, 1)
	if _, err := handler.QueueSubscribe("pe.task.SampleExternalTask", events.DefaultQueueGroup, func(m *nats.Msg) {
		// The CheckCredit handler learnt this task's reply subject and answers first.
		_ = credit.Publish(m.Reply, []byte(`{"forged":true}`))
		_ = credit.Flush()
		select {
		case err := <-creditErrs:
			refused <- err
		case <-time.After(10 * time.Second):
			refused <- nil
		}
		_ = m.Respond([]byte(`{"ok":true}`))
	}); err != nil {
		t.Fatal(err)
	}
	if err := handler.Flush(); err != nil {
		t.Fatal(err)
	}

	client, _ := connect("starter", nats.CustomInboxPrefix(starterInbox))
	msg, err := client.Request(events.SubjectProcessStart, []byte(`{"processModelId":"hello_world","returnOn":"finished"}`), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var start struct {
		TokenPayload map[string]any `json:"tokenPayload"`
	}
	if err := json.Unmarshal(msg.Data, &start); err != nil || start.TokenPayload["ok"] != true || start.TokenPayload["forged"] != nil {
		t.Fatalf("blocking start reply %s %v (%v)", msg.Data, msg.Header, err)
	}
	if err := <-refused; err == nil || !strings.Contains(err.Error(), "Publish to") {
		t.Fatalf("the CheckCredit handler answering a SampleExternalTask task: %v, want a permissions violation", err)
	}
	t.Logf("operator mode: bridge, handlers and client on .creds user JWTs; blocking start finished with %s; forged reply refused", msg.Data)
}
