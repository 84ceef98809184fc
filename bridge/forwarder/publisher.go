package forwarder

import (
	"fmt"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/bridge/forwarder/watermillce"
)

// NewPublisher is the forwarder's Watermill publisher on nc: watermill-nats
// with the CloudEvents marshaler (watermillce: ce-* headers, Nats-Msg-Id =
// ce-id, no Watermill headers), topic = subject. With jetStream each
// publish waits for the stream's ack (the subject must belong to a stream,
// see EnsureStream), so an event counts as published only once stored;
// without, it is a core NATS publish.
//
// Its Close does not close nc: watermill-nats' Publisher.Close closes the
// connection it was given, which the bridge shares with the pump and the
// service; the bridge closes nc itself after draining.
func NewPublisher(nc *nats.Conn, jetStream bool, logger *slog.Logger) (message.Publisher, error) {
	if nc == nil {
		return nil, fmt.Errorf("forwarder: nil NATS connection")
	}
	var wl watermill.LoggerAdapter = watermill.NopLogger{}
	if logger != nil {
		wl = watermill.NewSlogLogger(logger)
	}
	p, err := wmnats.NewPublisherWithNatsConn(nc, wmnats.PublisherPublishConfig{
		Marshaler:         watermillce.Marshaler{},
		SubjectCalculator: wmnats.DefaultSubjectCalculator,
		JetStream:         wmnats.JetStreamConfig{Disabled: !jetStream},
	}, wl)
	if err != nil {
		return nil, fmt.Errorf("forwarder: creating the Watermill publisher: %w", err)
	}
	return keepConn{p}, nil
}

// keepConn is a publisher whose Close leaves the NATS connection open.
type keepConn struct{ *wmnats.Publisher }

func (keepConn) Close() error { return nil }
