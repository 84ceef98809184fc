package natsserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// DefaultListen is the address the embedded server listens on by default.
const DefaultListen = "127.0.0.1:4222"

// Config configures an embedded server. The zero value listens on
// DefaultListen with JetStream on, in a temporary store directory, without auth.
type Config struct {
	// Listen is host:port; "" means DefaultListen, port 0 picks a free port.
	Listen string
	// StoreDir is the JetStream store directory. "" means a new temporary
	// directory that Close removes; a given directory is kept.
	StoreDir string
	// NoJetStream turns JetStream off (it is on by default).
	NoJetStream bool
	// User and Password, when User is set, are required from every client.
	User     string
	Password string
	// Token, when set (and User is not), is required from every client.
	Token string
	// ConfigFile is a nats-server configuration file (the format of
	// `nats-server -c`), e.g. deploy/nats/secure.conf: its authorization,
	// accounts, TLS and limits apply. Listen, StoreDir and NoJetStream still
	// decide the listen address, the store directory (the file's store_dir
	// when StoreDir is "") and JetStream; User, Password and Token must be
	// empty, the file's authorization rules. $VARIABLES in the file are read
	// from the environment.
	ConfigFile string
	// ReadyTimeout bounds the wait for the server to accept connections;
	// 0 means 10 s.
	ReadyTimeout time.Duration
	// Logger receives the server's log lines (notices at debug level); nil discards.
	Logger *slog.Logger
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if c.Listen != "" {
		if _, _, err := splitListen(c.Listen); err != nil {
			return err
		}
	}
	if c.User == "" && c.Password != "" {
		return errors.New("natsserver: password given without user")
	}
	if c.User != "" && c.Token != "" {
		return errors.New("natsserver: user and token are exclusive")
	}
	if c.ConfigFile != "" && (c.User != "" || c.Token != "") {
		return errors.New("natsserver: user, password and token come from the config file when one is given")
	}
	return nil
}

func splitListen(listen string) (string, int, error) {
	host, p, err := net.SplitHostPort(listen)
	if err != nil {
		return "", 0, fmt.Errorf("natsserver: listen address %q: %w", listen, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("natsserver: listen address %q: invalid port", listen)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	return host, port, nil
}

// ListenError is returned by Start when the listen address cannot be
// bound (typically: the port is taken), at once rather than after
// ReadyTimeout.
type ListenError struct {
	Addr string
	Err  error
}

func (e *ListenError) Error() string {
	return fmt.Sprintf("natsserver: listening on %s: %v", e.Addr, e.Err)
}
func (e *ListenError) Unwrap() error { return e.Err }

// Server is a running embedded nats-server.
type Server struct {
	ns      *server.Server
	dir     string
	tempDir bool
	cfg     Config

	closeOnce sync.Once
	closeErr  error
}

// Start starts a server and waits until it accepts connections.
func Start(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	listen := cfg.Listen
	if listen == "" {
		listen = DefaultListen
	}
	host, port, err := splitListen(listen)
	if err != nil {
		return nil, err
	}
	opts := &server.Options{}
	if cfg.ConfigFile != "" {
		if opts, err = server.ProcessConfigFile(cfg.ConfigFile); err != nil {
			return nil, fmt.Errorf("natsserver: loading config file %s: %w", cfg.ConfigFile, err)
		}
	}
	if port != server.RANDOM_PORT {
		// nats-server reports a failed bind only in its log and then never
		// becomes ready; try the address first to fail at once.
		addr := net.JoinHostPort(host, strconv.Itoa(port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, &ListenError{Addr: addr, Err: err}
		}
		_ = ln.Close()
	}
	dir, temp := cfg.StoreDir, false
	if dir == "" {
		dir = opts.StoreDir
	}
	if dir == "" {
		if dir, err = os.MkdirTemp("", "pe-bridge-nats-"); err != nil {
			return nil, fmt.Errorf("natsserver: creating store directory: %w", err)
		}
		temp = true
	} else if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("natsserver: creating store directory: %w", err)
	}
	if opts.ServerName == "" {
		opts.ServerName = "pe-bridge-embedded"
	}
	opts.Host, opts.Port = host, port
	opts.JetStream = !cfg.NoJetStream
	opts.StoreDir = dir
	opts.NoSigs = true
	if cfg.ConfigFile == "" {
		opts.Username, opts.Password, opts.Authorization = cfg.User, cfg.Password, cfg.Token
	}
	if opts.MaxPayload == 0 {
		opts.MaxPayload = 8 << 20
	}
	cleanup := func() {
		if temp {
			_ = os.RemoveAll(dir)
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("natsserver: configuring server: %w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ns.SetLoggerV2(slogLogger{logger.With("component", "nats-server")}, false, false, false)
	ns.Start()
	timeout := cfg.ReadyTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	if !ns.ReadyForConnections(timeout) {
		ns.Shutdown()
		ns.WaitForShutdown()
		cleanup()
		return nil, fmt.Errorf("natsserver: not ready to accept connections on %s within %s", listen, timeout)
	}
	return &Server{ns: ns, dir: dir, tempDir: temp, cfg: cfg}, nil
}

// ClientURL is the URL clients connect to, without credentials.
func (s *Server) ClientURL() string {
	u := s.ns.ClientURL()
	// ClientURL reports 0.0.0.0 for a wildcard listen; loopback is reachable.
	if pu, err := url.Parse(u); err == nil {
		if h := pu.Hostname(); h == "0.0.0.0" || h == "::" {
			pu.Host = net.JoinHostPort("127.0.0.1", pu.Port())
			u = pu.String()
		}
	}
	return u
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ns.Addr() }

// StoreDir is the JetStream store directory.
func (s *Server) StoreDir() string { return s.dir }

// JetStreamEnabled reports whether JetStream runs.
func (s *Server) JetStreamEnabled() bool { return s.ns.JetStreamEnabled() }

// NATS returns the underlying server, for tests and advanced wiring.
func (s *Server) NATS() *server.Server { return s.ns }

// Run blocks until ctx is done, then closes the server.
func (s *Server) Run(ctx context.Context) error {
	<-ctx.Done()
	return s.Close()
}

// Close shuts the server down, waits for it and removes a temporary store
// directory. It is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
		if s.tempDir {
			if err := os.RemoveAll(s.dir); err != nil {
				s.closeErr = fmt.Errorf("natsserver: removing store directory: %w", err)
			}
		}
	})
	return s.closeErr
}

// slogLogger adapts slog to the nats-server Logger interface. Server notices
// are chatty, so they go to debug level.
type slogLogger struct{ l *slog.Logger }

func (l slogLogger) Noticef(format string, v ...any) { l.l.Debug(fmt.Sprintf(format, v...)) }
func (l slogLogger) Warnf(format string, v ...any)   { l.l.Warn(fmt.Sprintf(format, v...)) }
func (l slogLogger) Fatalf(format string, v ...any)  { l.l.Error(fmt.Sprintf(format, v...)) }
func (l slogLogger) Errorf(format string, v ...any)  { l.l.Error(fmt.Sprintf(format, v...)) }
func (l slogLogger) Debugf(format string, v ...any)  { l.l.Debug(fmt.Sprintf(format, v...)) }
func (l slogLogger) Tracef(format string, v ...any)  { l.l.Debug(fmt.Sprintf(format, v...)) }
