package forwarder

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/bridge/forwarder/watermillce"
	"github.com/pe-bridge/pe-bridge/events"
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
	return keepConn{Publisher: p, nc: nc}, nil
}

// keepConn is a publisher whose Close leaves the NATS connection open and
// whose Publish turns nats.ErrMaxPayload into a *TooLargeError.
type keepConn struct {
	*wmnats.Publisher
	nc *nats.Conn
}

func (keepConn) Close() error { return nil }

func (k keepConn) Publish(topic string, msgs ...*message.Message) error {
	err := k.Publisher.Publish(topic, msgs...)
	if err == nil || !errors.Is(err, nats.ErrMaxPayload) {
		return err
	}
	tl := &TooLargeError{Limit: k.nc.MaxPayload()}
	for _, m := range msgs {
		if nm, merr := (watermillce.Marshaler{}).Marshal(topic, m); merr == nil {
			tl.Size = max(tl.Size, events.MsgSize(nm.Header, nm.Data))
		}
	}
	return tl
}

// TooLargeError is a publish refused because the message (headers and body)
// is above the NATS server's max_payload. It is permanent: retrying cannot
// help. errors.Is(err, nats.ErrMaxPayload) holds.
type TooLargeError struct {
	Size  int   // bytes of the message, headers included (0: unknown)
	Limit int64 // the server's max_payload
}

func (e *TooLargeError) Error() string {
	if e.Size > 0 {
		return fmt.Sprintf("the event is %d bytes, above the NATS server's max_payload of %d bytes", e.Size, e.Limit)
	}
	return fmt.Sprintf("the event is above the NATS server's max_payload of %d bytes", e.Limit)
}

func (e *TooLargeError) Unwrap() error { return nats.ErrMaxPayload }
