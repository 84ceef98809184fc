package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/oauth2"
	"golang.org/x/sync/errgroup"

	"github.com/pe-bridge/pe-bridge/bridge"
	"github.com/pe-bridge/pe-bridge/bridge/forwarder"
	"github.com/pe-bridge/pe-bridge/bridge/service"
	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/internal/config"
	"github.com/pe-bridge/pe-bridge/internal/telemetry"
)

// engineClient builds the engine client: client credentials when a client id
// is configured, else the dummy token (with a warning). Getting the first
// token waits, with backoff, while the authority (or the engine, asked for
// it) does not answer; a refusal is an error.
func engineClient(ctx context.Context, s *config.Settings, obs engine.CallObserver, rd *readiness, logger *slog.Logger) (*engine.Client, error) {
	tc, err := s.EngineTLSConfig()
	if err != nil {
		return nil, err
	}
	var ts oauth2.TokenSource
	if s.ClientID != "" {
		secret, err := s.ReadClientSecret()
		if err != nil {
			return nil, err
		}
		cfg := engine.CredentialsConfig{
			EngineURL:    s.EngineURL,
			AuthorityURL: s.AuthorityURL,
			ClientID:     s.ClientID,
			ClientSecret: secret,
			Scopes:       s.Scopes.Values,
			TLSConfig:    tc,
		}
		if ts, err = firstToken(ctx, cfg, rd, logger); err != nil {
			return nil, err
		}
		logger.Info("engine auth: client credentials", "client_id", s.ClientID, "scopes", s.Scopes.String())
	} else {
		logger.Warn("engine auth: no --client-id, using the dummy token; it works only with engines that allow anonymous root access (development)")
		ts = engine.DummyTokenSource()
	}
	return engine.NewClient(s.EngineURL, engine.ClientConfig{
		TokenSource:         ts,
		UserAgent:           "pe-bridge/" + buildVersion(),
		Logger:              logger.With("component", "engine"),
		MaxIdleConnsPerHost: idleConnsPerHost(s),
		TLSConfig:           tc,
		Observer:            obs,
	})
}

// firstToken gets the client credentials token source, retrying (1 s
// doubling to 30 s, 30 s per attempt) while the failure is no answer or a
// 5xx/429; other failures (the client refused, a bad authority URL) are
// returned. ctx ending first returns ctx.Err().
func firstToken(ctx context.Context, cfg engine.CredentialsConfig, rd *readiness, logger *slog.Logger) (oauth2.TokenSource, error) {
	backoff := time.Second
	var last string
	for {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		ts, err := engine.ClientCredentials(cctx, cfg)
		cancel()
		if err == nil {
			return ts, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !tokenRetryable(err) {
			return nil, fmt.Errorf("getting an engine token for client %q: %w", cfg.ClientID, err)
		}
		rd.setEngine("no engine token yet: " + err.Error())
		if msg := err.Error(); msg != last {
			last = msg
			logger.Warn("cannot get an engine token yet; retrying with backoff (not ready)", "client_id", cfg.ClientID, "error", err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// tokenRetryable: no answer from the authority or the engine, or a 5xx/429.
func tokenRetryable(err error) bool {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		return re.Response == nil || re.Response.StatusCode >= 500 || re.Response.StatusCode == http.StatusTooManyRequests
	}
	var ue *url.Error
	return engine.IsTemporary(err) || errors.As(err, &ue) || errors.Is(err, context.DeadlineExceeded)
}

// idleConnsPerHost keeps an idle engine connection for every call the bridge
// may have open at once: the pump's reports and extensions, one long poll
// per topic and per forwarded event, and some room for the service.
func idleConnsPerHost(s *config.Settings) int {
	n := s.ReportConcurrency + s.ExtendConcurrency + len(s.Topics.Values) + len(s.Events.Values) + 32
	return max(n, engine.DefaultMaxIdleConnsPerHost)
}

// natsOptions are the connection options of the bridge's NATS connection.
func natsOptions(s *config.Settings, name string, logger *slog.Logger) ([]nats.Option, error) {
	prefix := s.NATSInboxPrefix
	if prefix == "" {
		prefix = config.DefaultInboxPrefix
	}
	opts := []nats.Option{
		nats.Name(name),
		// Replies to the bridge (task outcomes) arrive under this prefix
		// only, which a permission can keep to the bridge (docs/security.md).
		nats.CustomInboxPrefix(prefix),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectBufSize(64 << 20),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				logger.Warn("nats disconnected", "error", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { logger.Info("nats reconnected", "url", nc.ConnectedUrlRedacted()) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			logger.Error("nats error", "subject", subj, "error", err)
		}),
	}
	switch {
	case s.NATSCreds != "":
		opts = append(opts, nats.UserCredentials(s.NATSCreds))
	case s.NATSNkey != "":
		o, err := nats.NkeyOptionFromSeed(s.NATSNkey)
		if err != nil {
			return nil, &config.FlagError{Flag: "nats-nkey", Msg: fmt.Sprintf("reading seed: %v", err)}
		}
		opts = append(opts, o)
	case s.NATSUser != "":
		opts = append(opts, nats.UserInfo(s.NATSUser, s.NATSPassword))
	case s.NATSToken != "":
		opts = append(opts, nats.Token(s.NATSToken))
	}
	if s.NATSTLSCA != "" {
		opts = append(opts, nats.RootCAs(s.NATSTLSCA))
	}
	if s.NATSTLSCert != "" {
		opts = append(opts, nats.ClientCert(s.NATSTLSCert, s.NATSTLSKey))
	}
	if s.NATSTLSCA != "" || s.NATSTLSCert != "" {
		opts = append(opts, nats.Secure(&tls.Config{MinVersion: tls.VersionTLS12}))
	}
	return opts, nil
}

// pumpConfig maps the settings to the pump's config.
func pumpConfig(s *config.Settings, source string) (bridge.Config, error) {
	mode, err := bridge.ParseContentMode(s.ContentMode)
	if err != nil {
		return bridge.Config{}, &config.FlagError{Flag: "content-mode", Msg: err.Error()}
	}
	c := bridge.Config{
		WorkerID:          s.WorkerID,
		Topics:            s.Topics.Values,
		LockDuration:      s.LockDuration,
		LongPollTimeout:   s.LongPollTimeout,
		Window:            s.Window,
		MaxProcessingTime: s.MaxProcessingTime,
		HandlerTimeout:    s.HandlerTimeout,
		MaxAttempts:       s.MaxAttempts,
		FailureErrorCode:  s.FailureErrorCode,
		ContentMode:       mode,
		DrainTimeout:      s.DrainTimeout,
		Source:            source,
		ReportConcurrency: s.ReportConcurrency,
		ExtendConcurrency: s.ExtendConcurrency,
		TopicRefresh:      s.TopicRefresh,
	}
	for _, t := range s.StructuredTopics.Values {
		if c.ContentModeByTopic == nil {
			c.ContentModeByTopic = map[string]bridge.ContentMode{}
		}
		c.ContentModeByTopic[t] = bridge.Structured
	}
	if err := c.Validate(); err != nil {
		return c, usageError{err}
	}
	return c, nil
}

// bridgeParts are the long-lived parts of the bridge on one NATS connection.
type bridgeParts struct {
	pump  *bridge.Pump
	svc   *service.Service
	fwd   *forwarder.Forwarder
	lease *forwarder.Lease

	deployOnly bool // fwd only watches deployments (--no-events)
}

// hooks are the telemetry handed to the parts; each nil when off.
type hooks struct {
	metrics *telemetry.Metrics
	tracing *telemetry.Tracing
}

func newBridgeParts(s *config.Settings, nc *nats.Conn, eng *engine.Client, events []string, h hooks, logger *slog.Logger) (*bridgeParts, error) {
	source := "pe-bridge://" + strings.TrimPrefix(strings.TrimPrefix(config.RedactURL(s.EngineURL), "http://"), "https://")
	pc, err := pumpConfig(s, source)
	if err != nil {
		return nil, err
	}
	sc := serviceConfig(s)
	// A nil *Metrics or *Tracing must not become a non-nil interface.
	if h.metrics != nil {
		pc.Observer, sc.Observer = h.metrics, h.metrics
	}
	if h.tracing != nil {
		pc.Tracer, sc.Tracer = h.tracing, h.tracing
	}
	var p bridgeParts
	if p.pump, err = bridge.NewPump(eng, nc, pc, logger.With("component", "pump")); err != nil {
		return nil, fmt.Errorf("creating task pump: %w", err)
	}
	if !s.NoService {
		if p.svc, err = service.New(nc, eng, sc, logger.With("component", "service")); err != nil {
			return nil, fmt.Errorf("creating service: %w", err)
		}
	}
	switch {
	case !s.NoEvents:
		if err := p.newForwarder(s, nc, eng, events, source, h, logger.With("component", "forwarder")); err != nil {
			return nil, err
		}
	case len(s.Topics.Values) == 0:
		// --no-events: nothing is published on pe.event.>, but the engine's
		// process_deployed and external_task_created still make the pump
		// re-read the deployed topics at once.
		if err := p.newDeployWatcher(s, eng, logger.With("component", "forwarder")); err != nil {
			return nil, err
		}
	}
	return &p, nil
}

// serviceConfig maps the settings to the service's config.
func serviceConfig(s *config.Settings) service.Config {
	return service.Config{
		Version:           serviceVersion(),
		MaxInFlight:       s.MaxInFlight,
		MaxBlockingStarts: s.MaxBlockingStarts,
		RequireUserToken:  s.UserTokenGroups(),
	}
}

// newForwarder builds the event forwarder: its feed (Socket.IO or long
// polls), its Watermill publisher (JetStream acks with --events-stream), the
// stream and the lease when configured.
func (p *bridgeParts) newForwarder(s *config.Settings, nc *nats.Conn, eng *engine.Client, events []string, source string, h hooks, logger *slog.Logger) error {
	feed, err := newFeed(s, eng, logger)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if s.EventsStream != "" || s.EventsLease != "" {
		js, err := jetstream.New(nc)
		if err != nil {
			return fmt.Errorf("opening JetStream: %w", err)
		}
		if s.EventsStream != "" {
			info, err := forwarder.EnsureStream(ctx, js, forwarder.StreamConfig{
				Name: s.EventsStream, Replicas: s.EventsStreamReplicas, DuplicateWindow: s.EventsDedupWindow})
			if err != nil {
				return fmt.Errorf("--events-stream: %w", err)
			}
			logger.Info("forwarder: events stream", "stream", info.Config.Name, "subjects", info.Config.Subjects,
				"duplicate_window", info.Config.Duplicates, "replicas", info.Config.Replicas)
		}
		if s.EventsLease != "" {
			if p.lease, err = forwarder.NewLease(ctx, js, forwarder.LeaseConfig{
				Bucket: s.EventsLease, Key: forwarder.LeaseKey(config.RedactURL(s.EngineURL)), Holder: p.pump.WorkerID(),
				TTL: s.EventsLeaseTTL, Replicas: s.EventsStreamReplicas}, logger); err != nil {
				return fmt.Errorf("--events-lease: %w", err)
			}
		}
	}
	pub, err := forwarder.NewPublisher(nc, s.EventsStream != "", logger)
	if err != nil {
		return err
	}
	cfg := forwarder.Config{Events: events, Source: source}
	if h.metrics != nil {
		cfg.Observer = h.metrics
	}
	if p.lease != nil {
		cfg.Leader = p.lease
	}
	// A deployment, or a task of a topic not seen before, makes the pump
	// re-read the deployed topics at once (with --topics the list is fixed).
	if len(s.Topics.Values) == 0 {
		cfg.OnDeploy = p.pump.RefreshTopics
	}
	if p.fwd, err = forwarder.New(feed, pub, cfg, logger); err != nil {
		return fmt.Errorf("creating event forwarder: %w", err)
	}
	return nil
}

// newFeed is the engine event feed chosen by --events-feed.
func newFeed(s *config.Settings, eng *engine.Client, logger *slog.Logger) (forwarder.Feed, error) {
	var (
		feed forwarder.Feed
		err  error
	)
	if s.EventsFeed == "poll" {
		feed, err = forwarder.NewPollFeed(eng, forwarder.PollConfig{}, logger)
	} else {
		var tc *tls.Config
		if tc, err = s.EngineTLSConfig(); err != nil {
			return nil, err
		}
		feed, err = forwarder.NewSocketFeed(s.EngineURL, eng.Tokens(), forwarder.SocketConfig{TLSConfig: tc}, logger)
	}
	if err != nil {
		return nil, fmt.Errorf("creating the engine event feed: %w", err)
	}
	return feed, nil
}

// newDeployWatcher builds, for --no-events, a forwarder that publishes
// nothing: it only receives process_deployed and external_task_created so
// that a deployment makes the pump re-read the deployed topics at once.
func (p *bridgeParts) newDeployWatcher(s *config.Settings, eng *engine.Client, logger *slog.Logger) error {
	feed, err := newFeed(s, eng, logger)
	if err != nil {
		return err
	}
	p.deployOnly = true
	cfg := forwarder.Config{DeployOnly: true, OnDeploy: p.pump.RefreshTopics}
	if p.fwd, err = forwarder.New(feed, nopPublisher{}, cfg, logger); err != nil {
		return fmt.Errorf("creating the deployment watcher: %w", err)
	}
	return nil
}

// nopPublisher is the publisher of a DeployOnly forwarder, which never
// publishes.
type nopPublisher struct{}

func (nopPublisher) Publish(topic string, _ ...*message.Message) error {
	return fmt.Errorf("publishing on %s: event forwarding is off (--no-events)", topic)
}
func (nopPublisher) Close() error { return nil }

// start runs every part in g until ctx is done.
func (p *bridgeParts) start(ctx context.Context, g *errgroup.Group) {
	g.Go(func() error { return p.pump.Run(ctx) })
	if p.svc != nil {
		g.Go(func() error { return p.svc.Run(ctx) })
	}
	if p.fwd != nil {
		g.Go(func() error { return p.fwd.Run(ctx) })
	}
	if p.lease != nil {
		g.Go(func() error { return p.lease.Run(ctx) })
	}
}

// discovered is closed once the pump's first topic discovery is done.
func (p *bridgeParts) discovered() <-chan struct{} { return p.pump.Discovered() }

// serviceReady is closed once the micro service is registered (at once with
// --no-service).
func (p *bridgeParts) serviceReady() <-chan struct{} {
	if p.svc != nil {
		return p.svc.Ready()
	}
	ch := make(chan struct{})
	close(ch)
	return ch
}

// eventsUp is closed once the engine event feed first connected, so an
// instance started after "bridge ready" has its events on NATS; at once
// when no event is forwarded (--no-events: the feed only re-reads topics).
func (p *bridgeParts) eventsUp() <-chan struct{} {
	if p.fwd != nil && !p.deployOnly {
		return p.fwd.FeedUp()
	}
	ch := make(chan struct{})
	close(ch)
	return ch
}

// summary is the one-line account printed on shutdown.
func (p *bridgeParts) summary() string {
	st := p.pump.Stats()
	return fmt.Sprintf("bridge summary: fetched=%d published=%d finished=%d bpmn_errors=%d failures=%d cancelled=%d dropped=%d released=%d retries=%d no_responders=%d lock_extensions=%d in_flight=%d",
		st.Fetched, st.Published, st.Finished, st.BPMNErrors, st.Failures, st.Cancelled, st.Dropped, st.Released,
		st.Retries, st.NoResponders, st.LockExtensions, st.InFlight)
}
