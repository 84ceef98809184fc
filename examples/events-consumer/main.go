// Command events-consumer is an engine-event consumer the Watermill way: it
// reads pe.event.user_task_waiting from the bridge's durable JetStream
// stream (bridge run|dev --events-stream PE_EVENTS) with a Watermill router
// and finishes every "manual_approval" user task through pe.usertask.finish:
// amounts up to -approve-up-to are approved, larger ones rejected.
//
// The router's middleware, outermost first:
//
//   - de-duplication on the CloudEvent id (ce-id = the Watermill message
//     UUID, through the watermillce unmarshaler), so an event the stream
//     redelivers, or that the bridge published twice, is handled once;
//   - a poison queue: a message that still fails after the retries is
//     published on -poison-subject (with Watermill's reason metadata) and
//     acknowledged, so it does not block the stream;
//   - retries with exponential backoff for failures such as a bridge that
//     does not answer.
//
// Run it next to `bridge dev --events-stream PE_EVENTS`:
//
//	go run ./examples/events-consumer -nats-url nats://127.0.0.1:4222
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/bridge/forwarder/watermillce"
	"github.com/pe-bridge/pe-bridge/events"
)

// Config of the consumer.
type Config struct {
	NATSURL       string
	Stream        string        // the bridge's --events-stream
	Durable       string        // JetStream durable consumer name
	ApproveUpTo   float64       // amounts up to this are approved
	PoisonSubject string        // where messages go that keep failing
	Retries       int           // retries of a failing message before the poison queue
	RetryInterval time.Duration // first retry wait (doubling)
	DedupWindow   time.Duration // how long a ce-id is remembered
	Logger        *slog.Logger
}

// TaskFlowNode is the user task the consumer decides.
const TaskFlowNode = "manual_approval"

// waiting is the part of a user_task_waiting event the consumer reads.
type waiting struct {
	FlowNodeID         string `json:"flowNodeId"`
	FlowNodeInstanceID string `json:"flowNodeInstanceId"`
	CurrentToken       struct {
		Amount *float64 `json:"amount"`
	} `json:"currentToken"`
}

// errPermanent marks failures a retry cannot fix.
var errPermanent = errors.New("permanent")

// Run consumes until ctx is done.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	nc, err := nats.Connect(cfg.NATSURL, nats.Name("events-consumer"), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connecting to NATS: %w", err)
	}
	defer nc.Close()
	wlog := watermill.NewSlogLogger(log)

	sub, err := wmnats.NewSubscriberWithNatsConn(nc, wmnats.SubscriberSubscriptionConfig{
		Unmarshaler:      watermillce.Marshaler{},
		SubscribersCount: 1,
		AckWaitTimeout:   30 * time.Second,
		CloseTimeout:     10 * time.Second,
		SubjectCalculator: func(_, topic string) *wmnats.SubjectDetail {
			return &wmnats.SubjectDetail{Primary: topic}
		},
		JetStream: wmnats.JetStreamConfig{
			DurablePrefix: cfg.Durable,
			SubscribeOptions: []nats.SubOpt{
				nats.BindStream(cfg.Stream), nats.DeliverAll(), nats.AckExplicit(), nats.ManualAck(),
			},
		},
	}, wlog)
	if err != nil {
		return fmt.Errorf("creating the subscriber: %w", err)
	}
	// The poison queue is the consumer's own subject, outside pe.event.>, in
	// Watermill's own format (it adds reason metadata).
	poisonPub, err := wmnats.NewPublisherWithNatsConn(nc, wmnats.PublisherPublishConfig{
		Marshaler:         &wmnats.NATSMarshaler{},
		SubjectCalculator: wmnats.DefaultSubjectCalculator,
		JetStream:         wmnats.JetStreamConfig{Disabled: true},
	}, wlog)
	if err != nil {
		return err
	}

	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, wlog)
	if err != nil {
		return err
	}
	repo, err := middleware.NewMapExpiringKeyRepository(cfg.DedupWindow)
	if err != nil {
		return err
	}
	dedup := middleware.Deduplicator{
		KeyFactory: func(m *message.Message) (string, error) { return m.UUID, nil }, // UUID = ce-id
		Repository: repo,
	}
	poison, err := middleware.PoisonQueue(poisonPub, cfg.PoisonSubject)
	if err != nil {
		return err
	}
	retry := middleware.Retry{MaxRetries: cfg.Retries, InitialInterval: cfg.RetryInterval, Multiplier: 2, Logger: wlog}
	router.AddMiddleware(dedup.Middleware, poison, retry.Middleware)

	router.AddConsumerHandler("finish_user_tasks", events.EventPrefix+"user_task_waiting", sub, func(msg *message.Message) error {
		err := decide(msg.Context(), nc, cfg, msg)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, errPermanent):
			log.Warn("events-consumer: giving up on an event", "ce_id", msg.UUID, "error", err)
		default:
			log.Debug("events-consumer: handling an event failed, will retry", "ce_id", msg.UUID, "error", err)
		}
		return err
	})

	errc := make(chan error, 1)
	go func() { errc <- router.Run(ctx) }()
	select {
	case <-router.Running():
		log.Info("events-consumer: consuming", "stream", cfg.Stream, "durable", cfg.Durable, "subject", events.EventPrefix+"user_task_waiting")
	case err := <-errc:
		return err
	}
	<-ctx.Done()
	// Close, not the cancelled context, stops the router gracefully (it
	// lets in-flight handlers finish).
	if err := router.Close(); err != nil {
		return err
	}
	return <-errc
}

// decide finishes one waiting manual_approval task.
func decide(ctx context.Context, nc *nats.Conn, cfg Config, msg *message.Message) error {
	var w waiting
	if err := json.Unmarshal(msg.Payload, &w); err != nil {
		return fmt.Errorf("%w: event body: %v", errPermanent, err)
	}
	if w.FlowNodeID != TaskFlowNode {
		return nil // another user task: not ours
	}
	if w.FlowNodeInstanceID == "" || w.CurrentToken.Amount == nil {
		return fmt.Errorf("%w: user_task_waiting without flowNodeInstanceId or amount", errPermanent)
	}
	approved := *w.CurrentToken.Amount <= cfg.ApproveUpTo
	body, _ := json.Marshal(map[string]any{
		"userTaskInstanceId": w.FlowNodeInstanceID,
		"result": map[string]any{
			"approved": approved,
			"comment":  "decided by events-consumer (limit " + strconv.FormatFloat(cfg.ApproveUpTo, 'f', -1, 64) + ")",
		},
	})
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	reply, err := nc.RequestWithContext(rctx, events.SubjectUserTaskFinish, body)
	if err != nil {
		return fmt.Errorf("finishing user task %s: %w", w.FlowNodeInstanceID, err)
	}
	switch code := reply.Header.Get("Nats-Service-Error-Code"); code {
	case "":
		return nil
	case "404", "409": // gone or already finished: done
		return nil
	case "400", "403":
		return fmt.Errorf("%w: finishing user task %s: %s %s", errPermanent, w.FlowNodeInstanceID, code, reply.Data)
	default:
		return fmt.Errorf("finishing user task %s: %s %s", w.FlowNodeInstanceID, code, reply.Data)
	}
}

func main() {
	cfg := Config{Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	flag.StringVar(&cfg.NATSURL, "nats-url", envOr("NATS_URL", nats.DefaultURL), "NATS server URL (env NATS_URL)")
	flag.StringVar(&cfg.Stream, "stream", "PE_EVENTS", "the bridge's events stream (--events-stream)")
	flag.StringVar(&cfg.Durable, "durable", "events-consumer", "durable consumer name")
	flag.Float64Var(&cfg.ApproveUpTo, "approve-up-to", 10000, "approve amounts up to this, reject larger ones")
	flag.StringVar(&cfg.PoisonSubject, "poison-subject", "events-consumer.poison", "subject of messages that keep failing")
	flag.IntVar(&cfg.Retries, "retries", 3, "retries of a failing message before the poison queue")
	flag.DurationVar(&cfg.RetryInterval, "retry-interval", 200*time.Millisecond, "first retry wait (doubling)")
	flag.DurationVar(&cfg.DedupWindow, "dedup-window", 10*time.Minute, "how long a ce-id is remembered for de-duplication")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, cfg); err != nil {
		cfg.Logger.Error("events-consumer", "error", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
