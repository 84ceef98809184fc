package bridge_test

import (
	"context"
	"log/slog"
	"os"
	"os/signal"

	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/bridge"
	"github.com/pe-bridge/pe-bridge/engine"
)

// Wiring the pump in a main package: the engine client and the NATS
// connection are owned by the caller; Run drains on cancellation.
func ExampleNewPump() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	eng, err := engine.NewClient("http://localhost:8000", engine.ClientConfig{Logger: logger})
	if err != nil {
		logger.Error("engine client", "error", err)
		return
	}
	defer eng.Close()
	nc, err := nats.Connect(nats.DefaultURL, nats.MaxReconnects(-1))
	if err != nil {
		logger.Error("connecting to NATS", "error", err)
		return
	}
	defer nc.Drain()

	pump, err := bridge.NewPump(eng, nc, bridge.Config{Source: "pe-bridge://localhost:8000"}, logger)
	if err != nil {
		logger.Error("configuring the pump", "error", err)
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := pump.Run(ctx); err != nil { // blocks until ctx is cancelled and the drain is over
		logger.Error("pump", "error", err)
	}
	logger.Info("done", "finished", pump.Stats().Finished)
}
