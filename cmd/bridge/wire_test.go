package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/pe-bridge/pe-bridge/internal/config"
	"github.com/pe-bridge/pe-bridge/internal/natsserver"
)

func TestNATSOptionsNkeyAndToken(t *testing.T) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	seedFile := filepath.Join(t.TempDir(), "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, Nkeys: []*server.NkeyUser{{Nkey: pub}}})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	logger := slog.New(slog.DiscardHandler)
	opts, err := natsOptions(&config.Settings{NATSNkey: seedFile}, "t", logger)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(ns.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("connecting with --nats-nkey: %v", err)
	}
	nc.Close()
	if _, err := nats.Connect(ns.ClientURL(), nats.Timeout(2*time.Second)); err == nil {
		t.Fatal("server accepts clients without the nkey")
	}
	if _, err := natsOptions(&config.Settings{NATSNkey: filepath.Join(t.TempDir(), "missing")}, "t", logger); err == nil {
		t.Fatal("missing seed file accepted")
	}

	tok, err := natsserver.Start(natsserver.Config{Listen: "127.0.0.1:0", Token: "tkn"})
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	opts, _ = natsOptions(&config.Settings{NATSToken: "tkn"}, "t", logger)
	nc, err = nats.Connect(tok.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("connecting with --nats-token: %v", err)
	}
	nc.Close()
}
