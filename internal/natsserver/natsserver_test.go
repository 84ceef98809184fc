package natsserver

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

func TestStartJetStreamTempDirRemoved(t *testing.T) {
	s, err := Start(Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	dir := s.StoreDir()
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("store dir: %v", err)
	}
	if !s.JetStreamEnabled() {
		t.Fatal("JetStream is off")
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatalf("creating stream: %v", err)
	}
	if _, err := js.Publish(ctx, "t.x", []byte("hi")); err != nil {
		t.Fatalf("publishing to stream: %v", err)
	}
	nc.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary store dir %s still there: %v", dir, err)
	}
	if _, err := nats.Connect(s.ClientURL(), nats.Timeout(time.Second)); err == nil {
		t.Fatal("server still accepts connections after Close")
	}
}

func TestGivenStoreDirKeptAndReused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	start := func() *Server {
		s, err := Start(Config{Listen: "127.0.0.1:0", StoreDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := start()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "KEEP", Subjects: []string{"k"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(t.Context(), "k", []byte("1")); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	s.Close()
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("given store dir removed: %v", err)
	}

	s = start()
	defer s.Close()
	nc, err = nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ = jetstream.New(nc)
	st, err := js.Stream(t.Context(), "KEEP")
	if err != nil {
		t.Fatalf("stream lost across restart: %v", err)
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("messages after restart = %d, want 1", info.State.Msgs)
	}
}

func TestUserPasswordAuth(t *testing.T) {
	s, err := Start(Config{Listen: "127.0.0.1:0", User: "bridge", Password: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := nats.Connect(s.ClientURL(), nats.Timeout(2*time.Second)); err == nil {
		t.Fatal("anonymous connect succeeded on a server with users")
	}
	if _, err := nats.Connect(s.ClientURL(), nats.UserInfo("bridge", "wrong"), nats.Timeout(2*time.Second)); err == nil {
		t.Fatal("wrong password accepted")
	}
	nc, err := nats.Connect(s.ClientURL(), nats.UserInfo("bridge", "s3cret"))
	if err != nil {
		t.Fatalf("connecting with the right password: %v", err)
	}
	nc.Close()
}

func TestTokenAuth(t *testing.T) {
	s, err := Start(Config{Listen: "127.0.0.1:0", Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := nats.Connect(s.ClientURL(), nats.Timeout(2*time.Second)); err == nil {
		t.Fatal("connect without token succeeded")
	}
	nc, err := nats.Connect(s.ClientURL(), nats.Token("tok"))
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
}

func TestValidateAndListenErrors(t *testing.T) {
	for _, c := range []Config{
		{Listen: "nohostport"},
		{Listen: "127.0.0.1:99999"},
		{Password: "x"},
		{User: "u", Token: "t"},
	} {
		if _, err := Start(c); err == nil {
			t.Errorf("Start(%+v) succeeded, want error", c)
		}
	}
	// a busy port is reported, not hung on
	s, err := Start(Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := Start(Config{Listen: s.Addr().String(), ReadyTimeout: 2 * time.Second}); err == nil {
		t.Fatal("second server on a busy port started")
	}
}

func TestNoJetStream(t *testing.T) {
	s, err := Start(Config{Listen: "127.0.0.1:0", NoJetStream: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.JetStreamEnabled() {
		t.Fatal("JetStream on despite NoJetStream")
	}
}

// TestConfigFile loads the shipped permission model: every variable it
// reads must be set (a missing one is an error naming it), the file's users
// apply, and Listen still decides the address.
func TestConfigFile(t *testing.T) {
	const conf = "../../deploy/nats/secure.conf"
	pub := func() string {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		p, _ := kp.PublicKey()
		return p
	}
	vars := map[string]string{
		"NATS_PE_BRIDGE_PASSWORD":     "b",
		"NATS_PE_HANDLER_SAMPLE_NKEY": pub(),
		"NATS_PE_HANDLER_CREDIT_NKEY": pub(),
		"NATS_PE_STARTER_PASSWORD":    "s",
	}
	for k, v := range vars {
		t.Setenv(k, v)
	}
	if _, err := Start(Config{Listen: "127.0.0.1:0", ConfigFile: conf}); err == nil || !strings.Contains(err.Error(), "NATS_PE_TASKLIST_PASSWORD") {
		t.Fatalf("missing variable: %v", err)
	}
	t.Setenv("NATS_PE_TASKLIST_PASSWORD", "l")
	if _, err := Start(Config{Listen: "127.0.0.1:0", ConfigFile: conf, User: "u", Password: "p"}); err == nil {
		t.Fatal("user beside a config file accepted")
	}
	s, err := Start(Config{Listen: "127.0.0.1:0", ConfigFile: conf})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !strings.HasPrefix(s.ClientURL(), "nats://127.0.0.1:") || !s.JetStreamEnabled() {
		t.Fatalf("url %s, JetStream %v", s.ClientURL(), s.JetStreamEnabled())
	}
	if _, err := nats.Connect(s.ClientURL(), nats.Timeout(2*time.Second)); err == nil {
		t.Fatal("anonymous client accepted")
	}
	nc, err := nats.Connect(s.ClientURL(), nats.UserInfo("pe-starter", "s"))
	if err != nil {
		t.Fatalf("pe-starter: %v", err)
	}
	nc.Close()
}

func TestStartPortTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	start := time.Now()
	_, err = Start(Config{Listen: ln.Addr().String(), ReadyTimeout: time.Minute})
	var le *ListenError
	if !errors.As(err, &le) || le.Addr != ln.Addr().String() {
		t.Fatalf("Start on a taken port: %v, want a *ListenError naming %s", err, ln.Addr())
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Start took %s to fail; want at once", d)
	}
}
