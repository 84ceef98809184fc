package forwarder

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zishang520/socket.io/clients/socket/v3"
	"github.com/zishang520/socket.io/v3/pkg/types"
	"golang.org/x/oauth2"

	"github.com/pe-bridge/pe-bridge/engine"
)

// Defaults of SocketConfig.
const (
	// DefaultConnectTimeout bounds one connection attempt. (Attempts that
	// lose the Engine.IO "open" event, see errOpenLost, end much sooner.)
	DefaultConnectTimeout = 5 * time.Second
)

// Workarounds for three races in the Socket.IO client (github.com/zishang520/
// socket.io/clients/socket/v3 v3.0.6) when the Engine.IO "open" arrives
// fast. Manager.Open (manager.go:285-331) calls engine.NewSocket, which
// opens the transport before it returns (for WebSocket it dials
// synchronously and starts the reader goroutine, websocket.go:123,203), and
// only then subscribes to the engine socket's "open" and arms its connect
// timer. EventEmitter.Emit is synchronous and drops events nobody listens
// to. So, when the reader goroutine handles the server's open packet:
//
//  1. before the "open" subscription: the manager never learns the engine
//     is open and the namespace CONNECT is never sent; the attempt hangs.
//     session detects it (the engine socket is open but the manager has not
//     emitted "open" for openLostGrace) and gives up the attempt with
//     errOpenLost; Run retries at once, up to maxOpenLost times in a row.
//  2. between the subscription and the timer: Manager.onopen has already
//     cleared the subscriptions, so the timer is never stopped and closes
//     the established connection ConnectTimeout later ("transport close",
//     a reconnect and a gap). session sets the library's timer to
//     libraryTimeout (never, in practice; it is cleared when the session
//     ends) and bounds the handshake with its own ConnectTimeout.
//  3. while Socket.Connect runs (socket.go:245-256): Connect subscribes to
//     the manager's "open", calls Open, then sends CONNECT itself if the
//     manager is open; the "open" handler sends it too. The server then
//     has two sockets for this client and every event arrives twice.
//     session opens the manager first and calls Socket.Connect from the
//     manager's "open" listener, so CONNECT is sent once.
//
// Under CPU load each hit about 1 connect in 100.
var errOpenLost = errors.New("the Socket.IO client lost the Engine.IO open event (zishang520/socket.io v3.0.6 race)")

const (
	// openLostGrace: how long the engine socket may be open without the
	// manager's "open" before the event counts as lost. The library sets
	// the state and emits "open" within microseconds; a false alarm costs
	// only a retry.
	openLostGrace = 100 * time.Millisecond
	// openCheckInterval: how often session looks for a lost open.
	openCheckInterval = 20 * time.Millisecond
	// maxOpenLost: immediate retries after lost opens before Run falls
	// back to its backoff.
	maxOpenLost = 3
	// libraryTimeout is the library's own connect timer (race 2 above).
	libraryTimeout = 1000 * time.Hour
)

// SocketConfig tunes SocketFeed. Zero fields take the documented defaults.
type SocketConfig struct {
	// MinBackoff and MaxBackoff bound the exponential, jittered wait
	// between connection attempts. Defaults DefaultMinBackoff and
	// DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// ConnectTimeout bounds one connection attempt, up to the namespace
	// connect. Default DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// UserID is sent as the "userId" header, as the official client does.
	// Default engine.DummyUserID.
	UserID string
	// TLSConfig verifies an https engine. nil: the system's roots.
	TLSConfig *tls.Config
}

// SocketFeed receives the engine's notifications over Socket.IO, as the
// engine's own TypeScript client and the Node-RED nodes do (API.md §2.7 b):
// one connection to namespace "api" at "<engine url path>/socket.io", the
// token in an "Authorization" header without "Bearer". Nothing is lost
// while the connection stands; when it drops, SocketFeed reconnects with
// jittered exponential backoff (a fresh token each time) and reports
// Sink.Connected(false): what the engine emitted in between is gone.
type SocketFeed struct {
	base   *url.URL
	tokens oauth2.TokenSource
	cfg    SocketConfig
	log    *slog.Logger

	onPing func() // tests: called on every Engine.IO ping
}

// NewSocketFeed builds a Socket.IO feed for the engine at engineURL (the
// URL the REST client uses, without /atlas_engine/api/v1). tokens gives the
// engine token (engine.DummyTokenSource() for the dummy token). logger nil
// discards.
func NewSocketFeed(engineURL string, tokens oauth2.TokenSource, cfg SocketConfig, logger *slog.Logger) (*SocketFeed, error) {
	u, err := url.Parse(engineURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("forwarder: engine URL %q is not an http(s) URL", engineURL)
	}
	if tokens == nil {
		return nil, errors.New("forwarder: nil token source")
	}
	if cfg.MinBackoff < 0 || cfg.MaxBackoff < 0 || cfg.ConnectTimeout < 0 {
		return nil, errors.New("forwarder: negative duration")
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = max(DefaultMaxBackoff, cfg.MinBackoff)
	}
	if cfg.MinBackoff > cfg.MaxBackoff {
		return nil, errors.New("forwarder: MinBackoff is longer than MaxBackoff")
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.UserID == "" {
		cfg.UserID = engine.DummyUserID
	}
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &SocketFeed{base: u, tokens: tokens, cfg: cfg, log: logger}, nil
}

// Run connects, delivers, and reconnects until ctx is done; then it closes
// the connection and returns nil.
func (f *SocketFeed) Run(ctx context.Context, names []string, sink Sink) error {
	backoff := f.cfg.MinBackoff
	first := true
	inOutage := false // logged once when it begins; session logs its end
	lost := 0         // attempts in a row that ended with errOpenLost
	for ctx.Err() == nil {
		connected, err := f.session(ctx, names, sink, first)
		if ctx.Err() != nil {
			return nil
		}
		if !connected && errors.Is(err, errOpenLost) && lost < maxOpenLost {
			lost++
			f.log.Debug("forwarder: engine event connection attempt failed; retrying at once", "error", err)
			continue
		}
		lost = 0
		var refused *refusedError
		if errors.As(err, &refused) {
			f.refreshToken(refused.token)
		}
		switch {
		case connected:
			first = false
			backoff = f.cfg.MinBackoff
			inOutage = true
			f.log.Warn("forwarder: engine event connection lost; reconnecting", "error", err)
		case !inOutage:
			inOutage = true
			f.log.Warn("forwarder: cannot connect to the engine's Socket.IO endpoint; retrying", "error", err)
		default:
			f.log.Debug("forwarder: engine event connection attempt failed", "error", err)
		}
		if !sleep(ctx, jitter(backoff)) {
			return nil
		}
		backoff = min(backoff*2, f.cfg.MaxBackoff)
	}
	return nil
}

// session runs one connection. connected reports whether it was
// established; err says why it ended.
func (f *SocketFeed) session(ctx context.Context, names []string, sink Sink, first bool) (connected bool, err error) {
	tok, err := f.tokens.Token()
	if err != nil {
		return false, fmt.Errorf("getting an engine token: %w", err)
	}
	opts := socket.DefaultOptions()
	opts.SetPath(strings.TrimSuffix(f.base.Path, "/") + engine.SocketPath)
	opts.SetReconnection(false) // Run reconnects, with a fresh token
	opts.SetAutoConnect(false)
	opts.SetForceNew(true)
	opts.SetTimeout(libraryTimeout) // session's own timer bounds the handshake (race 2)
	// WebSocket first (the headers travel on its upgrade request), HTTP
	// long-polling when that fails. Starting with polling and upgrading, as
	// browsers must, leaves the polling transport's idle keep-alive
	// connection behind on every reconnect (socket.io clients/engine v3.0.6).
	opts.SetTransports(types.NewSet(socket.WebSocket, socket.Polling))
	opts.SetTryAllTransports(true)
	opts.SetExtraHeaders(http.Header{"Authorization": {tok.AccessToken}, "userId": {f.cfg.UserID}})
	if f.cfg.TLSConfig != nil {
		opts.SetTLSClientConfig(f.cfg.TLSConfig.Clone())
	}
	origin := f.base.Scheme + "://" + f.base.Host
	mgr := socket.NewManager(origin, opts)
	s := mgr.Socket(engine.SocketNamespace, opts)

	var (
		once  sync.Once
		ended = make(chan error, 1)
		up    = make(chan struct{})
		upped sync.Once
		mu    sync.Mutex // serialises the sink calls of this connection
		gone  bool       // guarded by mu: session gave up on this connection
	)
	end := func(err error) { once.Do(func() { ended <- err }) }
	_ = s.On("connect", func(...any) {
		mu.Lock()
		defer mu.Unlock()
		if gone {
			return
		}
		upped.Do(func() {
			close(up)
			sink.Connected(first)
		})
	})
	_ = s.On("connect_error", func(args ...any) {
		if isAuthRefusal(args) {
			end(&refusedError{token: tok, reason: argErr(args)})
			return
		}
		end(fmt.Errorf("connecting: %v", argErr(args)))
	})
	_ = s.On("disconnect", func(args ...any) { end(fmt.Errorf("disconnected: %v", argErr(args))) })
	if f.onPing != nil {
		_ = mgr.On("ping", func(...any) { f.onPing() })
	}
	for _, name := range names {
		_ = s.On(types.EventName(engine.SocketEventName(name)), func(args ...any) {
			if len(args) == 0 {
				return
			}
			body, err := json.Marshal(args[0])
			if err != nil {
				f.log.Warn("forwarder: encoding engine event", "event", name, "error", err)
				return
			}
			var m engine.EventMessage
			if err := json.Unmarshal(body, &m); err != nil {
				f.log.Warn("forwarder: decoding engine event", "event", name, "error", err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if !gone {
				sink.Event(name, m, body)
			}
		})
	}
	var (
		mgrOpen     atomic.Bool // the manager saw the engine open (race 1)
		connectOnce sync.Once
	)
	// The manager first, the namespace once it is open (race 3), from
	// within the manager's "open": the CONNECT is then flushed while the
	// engine handles its open packet, before the polling transport queues
	// its next long poll (a write waits behind that poll, polling.go:115-173,
	// so a CONNECT sent later would wait for the server's next ping). The
	// emitter calls the listeners it had when the emit began, so the
	// socket's listener for the manager's "open", which Connect adds, does
	// not run now and send a second CONNECT.
	_ = mgr.On("open", func(...any) {
		mgrOpen.Store(true)
		connectOnce.Do(func() { s.Connect() })
	})
	mgr.Open(func(err error) {
		if err != nil {
			end(fmt.Errorf("connecting: %s", errorChain(err)))
		}
	})
	defer s.Disconnect() // closes the manager too, and clears its timers
	// giveUp ends the attempt unless "connect" came just now.
	giveUp := func() bool {
		mu.Lock()
		defer mu.Unlock()
		select {
		case <-up:
			return false
		default:
			gone = true
			return true
		}
	}
	// ConnectTimeout bounds the whole handshake up to the namespace's
	// "connect" (the library's own timer is off, race 2): neither an
	// Engine.IO open nor a namespace connect that never completes may stall
	// the feed.
	timeout := time.NewTimer(f.cfg.ConnectTimeout)
	defer timeout.Stop()
	openCheck := time.NewTicker(openCheckInterval)
	defer openCheck.Stop()
	var openSince time.Time // when the engine was first seen open without the manager
handshake:
	for {
		select {
		case <-ctx.Done():
			return false, nil
		case <-timeout.C:
			if giveUp() {
				return false, fmt.Errorf("no Socket.IO connect within %s", f.cfg.ConnectTimeout)
			}
			break handshake
		case err := <-ended:
			select {
			case <-up:
				return true, err
			default:
				return false, err
			}
		case <-up:
			break handshake
		case <-openCheck.C:
			// "open" is the engine's SocketStateOpen (package
			// clients/engine, not imported here).
			if e := mgr.Engine(); e == nil || e.ReadyState() != "open" || mgrOpen.Load() {
				openSince = time.Time{}
				continue
			}
			if openSince.IsZero() {
				openSince = time.Now()
			} else if time.Since(openSince) >= openLostGrace && giveUp() {
				return false, errOpenLost
			}
		}
	}
	f.log.Info("forwarder: receiving engine events over Socket.IO", "engine_url", origin+f.base.Path)
	select {
	case <-ctx.Done():
		err = nil
	case err = <-ended:
	}
	mu.Lock()
	gone = true // nothing of this connection reaches the sink after it ended
	mu.Unlock()
	return true, err
}

// refusedError: the engine refused the handshake's token.
type refusedError struct {
	token  *oauth2.Token
	reason any
}

func (e *refusedError) Error() string {
	return fmt.Sprintf("the engine refused the token: %v", e.reason)
}

// isAuthRefusal reports whether a connect_error is the namespace middleware
// refusing the token (data.code 401), not a transport failure.
func isAuthRefusal(args []any) bool {
	if len(args) == 0 {
		return false
	}
	e, ok := args[0].(*types.ExtendedError)
	if !ok {
		return false
	}
	m, _ := e.Data.(map[string]any)
	switch c := m["code"].(type) {
	case float64:
		return c == 401
	case int:
		return c == 401
	case int64:
		return c == 401
	}
	return false
}

// refreshToken replaces a refused token when the source can
// (engine.TokenRefresher), so the next attempt does not send it again.
func (f *SocketFeed) refreshToken(stale *oauth2.Token) {
	if r, ok := f.tokens.(engine.TokenRefresher); ok {
		if _, err := r.Refresh(stale); err != nil {
			f.log.Debug("forwarder: refreshing the engine token", "error", err)
		}
	}
}

func argErr(args []any) any {
	if len(args) == 0 {
		return "no reason"
	}
	if err, ok := args[0].(error); ok {
		return errorChain(err)
	}
	return args[0]
}

// errorChain is err's message followed by those of the errors it wraps
// that it does not already contain: the Socket.IO client reports a refused
// connection as "fetch read error" and keeps the cause ("dial tcp ...:
// connection refused") in the wrapped error.
func errorChain(err error) string {
	msg := err.Error()
	var next []error
	switch u := err.(type) {
	case interface{ Unwrap() []error }:
		next = u.Unwrap()
	case interface{ Unwrap() error }:
		next = []error{u.Unwrap()}
	}
	for _, e := range next {
		if e == nil {
			continue
		}
		if c := errorChain(e); c != "" && !strings.Contains(msg, c) {
			if msg == "" {
				msg = c
			} else {
				msg += ": " + c
			}
		}
	}
	return msg
}
