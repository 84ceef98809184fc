package config

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3"

	"github.com/pe-bridge/pe-bridge/events"
)

// EnvPrefix prefixes every environment variable.
const EnvPrefix = "PE"

// Defaults that are not the bridge package's.
const (
	DefaultNATSListen = "127.0.0.1:4222"
	DefaultScopes     = "engine_etw engine_read engine_write"
	DefaultEngineAddr = "127.0.0.1:8000"
	// DefaultInboxPrefix is the inbox prefix of the bridge's NATS
	// connection, so a permission "_INBOX_pebridge.>" can keep its task
	// replies to itself (deploy/nats/secure.conf).
	DefaultInboxPrefix = "_INBOX_pebridge"
	// DefaultHTTPAddr serves /healthz, /readyz and /metrics on loopback
	// only; containers set 0.0.0.0:8080 to be scraped.
	DefaultHTTPAddr = "127.0.0.1:8080"
)

// Service defaults, equal to the service package's zero-value defaults (a
// test in cmd/bridge keeps them in step).
const (
	DefaultMaxInFlight       = 1000
	DefaultMaxBlockingStarts = 1000
)

// UserTokenGroups are the values of --require-user-token besides "all".
var UserTokenGroups = []string{"process", "usertask", "trigger"}

// Pump defaults, equal to the bridge package's zero-value defaults (a test
// in cmd/bridge keeps them in step).
const (
	DefaultLockDuration      = 30 * time.Second
	DefaultLongPollTimeout   = 10 * time.Second
	DefaultWindow            = 100
	DefaultMaxProcessingTime = 30 * time.Minute
	DefaultHandlerTimeout    = 5 * time.Minute
	DefaultMaxAttempts       = 3
	DefaultFailureErrorCode  = "TechnicalFailure"
	DefaultDrainTimeout      = 30 * time.Second
	DefaultReportConcurrency = 64
	DefaultExtendConcurrency = 64
)

// Defaults of the event forwarder flags.
const (
	DefaultEventsFeed        = "socketio"
	DefaultEventsDedupWindow = 2 * time.Minute
	DefaultEventsLeaseTTL    = 6 * time.Second
	DefaultTopicRefresh      = 30 * time.Second
)

// validStreamName reports whether n is a JetStream stream or bucket name we
// accept: letters, digits, '_' and '-'.
func validStreamName(n string) bool {
	if n == "" || len(n) > 64 {
		return false
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// DefaultEvents are the engine notifications forwarded by default.
var DefaultEvents = []string{
	"user_task_waiting", "user_task_finished", "user_task_reserved",
	"process_started", "process_ended", "process_error", "process_terminated",
}

// FlagError is a validation error naming the flag at fault.
type FlagError struct {
	Flag string // without dashes
	Msg  string
}

func (e *FlagError) Error() string { return fmt.Sprintf("config: --%s: %s", e.Flag, e.Msg) }

func flagErr(name, format string, a ...any) error {
	return &FlagError{Flag: name, Msg: fmt.Sprintf(format, a...)}
}

// Settings are every setting of `bridge run` and `bridge dev`. Which ones a
// command offers depends on the Register* calls made on its flag set.
type Settings struct {
	ConfigFile string

	// Log
	LogFormat string
	LogLevel  string

	// Engine
	EngineURL        string
	ClientID         string
	ClientSecret     string
	ClientSecretFile string
	AuthorityURL     string
	Scopes           List
	EngineTLSCA      string
	engineTLS        *tls.Config // parsed EngineTLSCA (of file engineTLSFrom)
	engineTLSFrom    string

	// NATS client
	NATSURL      string
	NATSCreds    string
	NATSNkey     string
	NATSUser     string
	NATSPassword string
	NATSToken    string
	NATSTLSCA    string
	NATSTLSCert  string
	NATSTLSKey   string
	// NATSInboxPrefix is the bridge connection's inbox prefix.
	NATSInboxPrefix string
	// Embedded NATS (when NATSURL is empty)
	NATSListen   string
	NATSStoreDir string
	NATSConfig   string // nats-server config file of the embedded server

	// Pump
	Topics            List
	LockDuration      time.Duration
	LongPollTimeout   time.Duration
	Window            int
	MaxProcessingTime time.Duration
	HandlerTimeout    time.Duration
	MaxAttempts       int
	FailureErrorCode  string
	ContentMode       string
	StructuredTopics  List
	DrainTimeout      time.Duration
	WorkerID          string
	ReportConcurrency int
	ExtendConcurrency int

	TopicRefresh time.Duration

	// Service and events
	Events               List
	NoService            bool
	NoEvents             bool
	RequireUserToken     List
	MaxInFlight          int
	MaxBlockingStarts    int
	EventsFeed           string
	EventsStream         string
	EventsStreamReplicas int
	EventsDedupWindow    time.Duration
	EventsLease          string
	EventsLeaseTTL       time.Duration

	// Diagnostics (bridge run only)
	PprofAddr string

	// Operations: health, readiness and metrics
	HTTPAddr string

	// dev only
	EngineAddr string
	Demo       bool

	registered map[string]bool // flag groups in use
}

// List is a comma-separated list flag. The first Set replaces the default,
// later ones (a repeated flag, a JSON array) append.
type List struct {
	Values []string
	set    bool
	// sep also splits on spaces when true (scopes).
	spaces bool
}

func (l *List) String() string {
	if l == nil {
		return ""
	}
	if l.spaces {
		return strings.Join(l.Values, " ")
	}
	return strings.Join(l.Values, ",")
}

// Set implements flag.Value.
func (l *List) Set(s string) error {
	if !l.set {
		l.Values = nil
		l.set = true
	}
	f := func(r rune) bool { return r == ',' || (l.spaces && (r == ' ' || r == '\t')) }
	for _, v := range strings.FieldsFunc(s, f) {
		if v = strings.TrimSpace(v); v != "" {
			l.Values = append(l.Values, v)
		}
	}
	return nil
}

func (s *Settings) mark(group string) {
	if s.registered == nil {
		s.registered = map[string]bool{}
	}
	s.registered[group] = true
}

// RegisterLog adds --log-format and --log-level.
func (s *Settings) RegisterLog(fs *flag.FlagSet) {
	s.mark("log")
	fs.StringVar(&s.LogFormat, "log-format", "text", "log format: text or json (logs go to stderr)")
	fs.StringVar(&s.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
}

// RegisterConfigFile adds --config.
func (s *Settings) RegisterConfigFile(fs *flag.FlagSet) {
	fs.StringVar(&s.ConfigFile, "config", "", "config file: a JSON object, or lines of \"flag-name value\"; flags and env vars win over it")
}

// RegisterEngine adds the engine connection and auth flags.
func (s *Settings) RegisterEngine(fs *flag.FlagSet) {
	s.mark("engine")
	fs.StringVar(&s.EngineURL, "engine-url", "", "engine root URL, e.g. http://localhost:8000 (required)")
	fs.StringVar(&s.ClientID, "client-id", "", "OAuth client id for client credentials; empty: the dummy token (development engines only)")
	fs.StringVar(&s.ClientSecret, "client-secret", "", "OAuth client secret (prefer --client-secret-file or the env var)")
	fs.StringVar(&s.ClientSecretFile, "client-secret-file", "", "file holding the OAuth client secret")
	fs.StringVar(&s.AuthorityURL, "authority-url", "", "OAuth authority URL; empty: asked from the engine (GET /atlas_engine/api/v1/authority)")
	s.Scopes = List{Values: strings.Fields(DefaultScopes), spaces: true}
	fs.Var(&s.Scopes, "scopes", "OAuth scopes to request, a space- or comma-separated `list` (default \""+DefaultScopes+"\")")
	fs.StringVar(&s.EngineTLSCA, "engine-tls-ca", "", "PEM `file` of CA certificates that verify an https engine and authority (REST, token requests and Socket.IO); empty: the system's roots")
}

// EngineTLSConfig is the TLS configuration for the engine and the authority:
// nil (the system's roots) without --engine-tls-ca, else a pool of its
// certificates.
func (s *Settings) EngineTLSConfig() (*tls.Config, error) {
	if s.EngineTLSCA == "" {
		return nil, nil
	}
	if s.engineTLS != nil && s.engineTLSFrom == s.EngineTLSCA {
		return s.engineTLS, nil // read once: validation, the engine client and the feed share it
	}
	pem, err := os.ReadFile(s.EngineTLSCA)
	if err != nil {
		return nil, flagErr("engine-tls-ca", "%v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, flagErr("engine-tls-ca", "%s holds no PEM certificate", s.EngineTLSCA)
	}
	s.engineTLS, s.engineTLSFrom = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, s.EngineTLSCA
	return s.engineTLS, nil
}

// RegisterNATSClient adds the NATS connection and auth flags.
func (s *Settings) RegisterNATSClient(fs *flag.FlagSet) {
	s.mark("natsclient")
	fs.StringVar(&s.NATSURL, "nats-url", "", "NATS server URL(s), comma separated; empty: start an embedded nats-server")
	fs.StringVar(&s.NATSCreds, "nats-creds", "", "NATS credentials file (JWT + nkey seed)")
	fs.StringVar(&s.NATSNkey, "nats-nkey", "", "NATS nkey seed file")
	fs.StringVar(&s.NATSToken, "nats-token", "", "NATS auth token; the embedded server then requires it")
	fs.StringVar(&s.NATSTLSCA, "nats-tls-ca", "", "CA certificate file to verify the NATS server")
	fs.StringVar(&s.NATSTLSCert, "nats-tls-cert", "", "client certificate file for NATS mutual TLS")
	fs.StringVar(&s.NATSTLSKey, "nats-tls-key", "", "client key file for NATS mutual TLS")
	fs.StringVar(&s.NATSInboxPrefix, "nats-inbox-prefix", DefaultInboxPrefix, "inbox prefix of the bridge's NATS connection (its task replies arrive under <prefix>.>); grant the bridge alone subscribe on \"<prefix>.>\" (docs/security.md)")
}

// RegisterNATSEmbedded adds the embedded server flags and --nats-user and
// --nats-password (client credentials, and the embedded server's user).
func (s *Settings) RegisterNATSEmbedded(fs *flag.FlagSet) {
	s.mark("natsembedded")
	fs.StringVar(&s.NATSListen, "nats-listen", DefaultNATSListen, "listen address of the embedded nats-server (port 0: any free port)")
	fs.StringVar(&s.NATSStoreDir, "nats-store-dir", "", "JetStream store directory of the embedded nats-server; empty: a temporary directory removed on exit")
	fs.StringVar(&s.NATSUser, "nats-user", "", "NATS user name (with --nats-password); the embedded server then requires it")
	fs.StringVar(&s.NATSPassword, "nats-password", "", "NATS password")
	fs.StringVar(&s.NATSConfig, "nats-config", "", "nats-server config `file` for the embedded server (authorization, accounts, TLS), e.g. deploy/nats/secure.conf; --nats-listen and --nats-store-dir still apply, --nats-user/--nats-password/--nats-token are then only the bridge's own credentials")
}

// RegisterPump adds the task pump flags.
func (s *Settings) RegisterPump(fs *flag.FlagSet) {
	s.mark("pump")
	fs.Var(&s.Topics, "topics", "engine topics to bridge, a comma-separated `list`; empty: every deployed topic (see --topic-refresh)")
	fs.DurationVar(&s.LockDuration, "lock-duration", DefaultLockDuration, "engine lock of each task, renewed ahead of expiry while a handler works (at least 1s)")
	fs.DurationVar(&s.LongPollTimeout, "long-poll-timeout", DefaultLongPollTimeout, "fetch_and_lock long-poll timeout")
	fs.IntVar(&s.Window, "window", DefaultWindow, "tasks per topic handed to handlers at once (fetched, handler outcome not yet in); up to another window's worth may be waiting for the engine to accept their outcome")
	fs.DurationVar(&s.MaxProcessingTime, "max-processing-time", DefaultMaxProcessingTime, "longest time one task is kept locked, over all attempts")
	fs.DurationVar(&s.HandlerTimeout, "handler-timeout", DefaultHandlerTimeout, "wait for one handler reply; no reply in time is a technical failure")
	fs.IntVar(&s.MaxAttempts, "max-attempts", DefaultMaxAttempts, "handler attempts before a technical failure is reported as a BPMN error")
	fs.StringVar(&s.FailureErrorCode, "failure-error-code", DefaultFailureErrorCode, "BPMN error code reported after the retry budget")
	fs.StringVar(&s.ContentMode, "content-mode", "binary", "CloudEvents content mode of task events: binary or structured")
	fs.Var(&s.StructuredTopics, "structured-topics", "engine topics whose task and cancel events use structured content mode whatever --content-mode says, a comma-separated `list` (for handlers that see only the body, like nats reply --command)")
	fs.DurationVar(&s.DrainTimeout, "drain-timeout", DefaultDrainTimeout, "on shutdown, how long in-flight tasks may still finish")
	fs.StringVar(&s.WorkerID, "worker-id", "", "engine worker id; empty: pe-bridge-<hostname>-<random>")
	fs.IntVar(&s.ReportConcurrency, "report-concurrency", DefaultReportConcurrency, "finish/error calls to the engine open at once, over all topics; further outcomes wait in a queue")
	fs.IntVar(&s.ExtendConcurrency, "extend-concurrency", DefaultExtendConcurrency, "extend_lock calls to the engine open at once, apart from the reports so queued outcomes never delay an extension")
	fs.DurationVar(&s.TopicRefresh, "topic-refresh", DefaultTopicRefresh, "interval of the periodic re-read of the deployed topics (without --topics); besides, the engine's process_deployed and external_task_created events (received also with --no-events) trigger one at once, so a new model is served within about a second")
}

// RegisterPprof adds --pprof-addr.
func (s *Settings) RegisterPprof(fs *flag.FlagSet) {
	s.mark("pprof")
	fs.StringVar(&s.PprofAddr, "pprof-addr", "", "serve net/http/pprof (/debug/pprof/) on this address, e.g. 127.0.0.1:6060; empty: off. No auth: keep it on loopback")
}

// RegisterHTTP adds --http-addr.
func (s *Settings) RegisterHTTP(fs *flag.FlagSet) {
	s.mark("http")
	fs.StringVar(&s.HTTPAddr, "http-addr", DefaultHTTPAddr, "serve /healthz, /readyz and /metrics (Prometheus) on this address; empty: off. No auth: loopback by default, 0.0.0.0:8080 in containers")
}

// RegisterBridge adds the service and event forwarder flags.
func (s *Settings) RegisterBridge(fs *flag.FlagSet) {
	s.mark("bridge")
	s.Events = List{Values: append([]string(nil), DefaultEvents...)}
	fs.Var(&s.Events, "events", "engine notifications forwarded on pe.event.<name>, a comma-separated `list` (default "+strings.Join(DefaultEvents, ",")+")")
	fs.BoolVar(&s.NoService, "no-service", false, "do not serve the request/reply service (pe.process.*, pe.usertask.*, ...)")
	fs.BoolVar(&s.NoEvents, "no-events", false, "publish no engine events (nothing on pe.event.>, no gap announcements); without --topics the engine event feed (--events-feed) still runs, receiving only process_deployed and external_task_created, so that new models are picked up at once")
	fs.Var(&s.RequireUserToken, "require-user-token", "endpoint groups whose requests must carry an end user's token (Pe-User-Token or Authorization: Bearer), else 401: a comma-separated `list` of process, usertask, trigger, or all; empty: a request without a token runs with the bridge's identity")
	fs.IntVar(&s.MaxInFlight, "max-in-flight", DefaultMaxInFlight, "service requests handled at once, blocking starts apart; beyond it 503 with a retry hint")
	fs.IntVar(&s.MaxBlockingStarts, "max-blocking-starts", DefaultMaxBlockingStarts, "blocking process starts (returnOn finished or end_event) waiting at once, apart from --max-in-flight; beyond it 503 with a retry hint")
	fs.StringVar(&s.EventsFeed, "events-feed", DefaultEventsFeed, "how engine events are received: socketio (what the engine's own clients use; a reconnect is announced on pe.event.gap) or poll (REST long polls, loses events between polls; for engines without Socket.IO)")
	fs.StringVar(&s.EventsStream, "events-stream", "", "JetStream stream NAME on pe.event.> to create or adopt; events are then published with acks and de-duplicated on Nats-Msg-Id; empty: core NATS only")
	fs.IntVar(&s.EventsStreamReplicas, "events-stream-replicas", 1, "replicas of a stream created by --events-stream (clustered NATS: 3)")
	fs.DurationVar(&s.EventsDedupWindow, "events-dedup-window", DefaultEventsDedupWindow, "duplicate window of a stream created by --events-stream")
	fs.StringVar(&s.EventsLease, "events-lease", "", "JetStream KV bucket of the forwarding lease: with several bridge replicas only the holder publishes events, another takes over when it dies; empty: every replica publishes")
	fs.DurationVar(&s.EventsLeaseTTL, "events-lease-ttl", DefaultEventsLeaseTTL, "how long a lease outlives its holder: the most events may go unpublished when the forwarding replica dies")
}

// UserTokenGroups returns the service endpoint groups of
// --require-user-token, "all" expanded.
func (s *Settings) UserTokenGroups() []string {
	var out []string
	for _, g := range s.RequireUserToken.Values {
		if g == "all" {
			return append([]string(nil), UserTokenGroups...)
		}
		out = append(out, g)
	}
	return out
}

// RegisterDev adds the flags of `bridge dev`.
func (s *Settings) RegisterDev(fs *flag.FlagSet) {
	s.mark("dev")
	fs.StringVar(&s.EngineAddr, "engine-addr", DefaultEngineAddr, "listen address of the in-process engine emulator (port 0: any free port)")
	fs.BoolVar(&s.Demo, "demo", false, "run a sample handler on pe.task.SampleExternalTask and start hello_world every second")
}

// Parse reads args, then PE_* environment variables, then the config file
// (--config), into the flags of fs. Unknown positional arguments are an error.
func Parse(fs *flag.FlagSet, args []string) error {
	err := ff.Parse(fs, args,
		ff.WithEnvVarPrefix(EnvPrefix),
		ff.WithConfigFileFlag("config"),
		ff.WithConfigFileParser(fileParser))
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return flag.ErrHelp
		}
		return fmt.Errorf("config: %w", err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("config: unexpected argument %q", fs.Arg(0))
	}
	return nil
}

// EnvName is the environment variable of flag name.
func EnvName(name string) string {
	return EnvPrefix + "_" + strings.NewReplacer("-", "_", ".", "_").Replace(strings.ToUpper(name))
}

// fileParser reads a JSON object (content starting with '{'), else "key value" lines.
func fileParser(r io.Reader, set func(name, value string) error) error {
	// ff gives no file name; sniff the first non-space byte.
	br := bufio.NewReader(r)
	for {
		b, err := br.Peek(1)
		if err != nil {
			return nil // empty file
		}
		if b[0] == ' ' || b[0] == '\t' || b[0] == '\n' || b[0] == '\r' {
			_, _ = br.ReadByte()
			continue
		}
		if b[0] == '{' {
			return ff.JSONParser(br, set)
		}
		break
	}
	return linesParser(br, set)
}

func linesParser(r io.Reader, set func(name, value string) error) error {
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		line = strings.TrimLeft(line, "-")
		i := strings.IndexFunc(line, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
		})
		name, rest := line, ""
		if i >= 0 {
			name, rest = line[:i], strings.TrimSpace(line[i:])
			if rest != "" && (rest[0] == '=' || rest[0] == ':') {
				rest = strings.TrimSpace(rest[1:])
			}
		}
		if name == "" {
			return fmt.Errorf("config file line %d: no setting name", n)
		}
		if len(rest) >= 2 && (rest[0] == '"' && rest[len(rest)-1] == '"' || rest[0] == '\'' && rest[len(rest)-1] == '\'') {
			rest = rest[1 : len(rest)-1]
		} else if j := strings.Index(rest, " #"); j >= 0 {
			rest = strings.TrimSpace(rest[:j])
		}
		if i < 0 {
			rest = "true" // a bare name is a boolean
		}
		if err := set(name, rest); err != nil {
			return fmt.Errorf("config file line %d: %w", n, err)
		}
	}
	return sc.Err()
}

// ReadClientSecret returns the client secret, from --client-secret or the
// file named by --client-secret-file (trailing newlines trimmed).
func (s *Settings) ReadClientSecret() (string, error) {
	if s.ClientSecretFile == "" {
		return s.ClientSecret, nil
	}
	b, err := os.ReadFile(s.ClientSecretFile)
	if err != nil {
		return "", flagErr("client-secret-file", "reading: %v", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// Validate checks the registered settings; the error is a *FlagError (or
// several joined) naming the flag.
func (s *Settings) Validate() error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	r := s.registered
	if r["log"] {
		if s.LogFormat != "text" && s.LogFormat != "json" {
			add(flagErr("log-format", "%q is not text or json", s.LogFormat))
		}
		if _, err := ParseLevel(s.LogLevel); err != nil {
			add(flagErr("log-level", "%q is not debug, info, warn or error", s.LogLevel))
		}
	}
	if r["engine"] {
		if s.EngineURL == "" {
			add(flagErr("engine-url", "required (env %s)", EnvName("engine-url")))
		} else {
			add(checkHTTPURL("engine-url", s.EngineURL))
		}
		if s.AuthorityURL != "" {
			add(checkHTTPURL("authority-url", s.AuthorityURL))
		}
		if s.ClientSecret != "" && s.ClientSecretFile != "" {
			add(flagErr("client-secret-file", "give either --client-secret or --client-secret-file, not both"))
		}
		if s.ClientID == "" && (s.ClientSecret != "" || s.ClientSecretFile != "") {
			add(flagErr("client-id", "required with a client secret"))
		}
		if s.ClientID != "" && s.ClientSecret == "" && s.ClientSecretFile == "" {
			add(flagErr("client-secret", "required with --client-id (or --client-secret-file)"))
		}
		if s.ClientSecretFile != "" {
			if _, err := os.Stat(s.ClientSecretFile); err != nil {
				add(flagErr("client-secret-file", "%v", err))
			}
		}
		if _, err := s.EngineTLSConfig(); err != nil {
			add(err)
		}
	}
	if r["natsclient"] {
		if s.NATSURL != "" {
			for _, u := range strings.Split(s.NATSURL, ",") {
				if err := checkNATSURL(strings.TrimSpace(u)); err != nil {
					add(err)
					break
				}
			}
		}
		nAuth := 0
		for _, v := range []string{s.NATSCreds, s.NATSNkey, s.NATSToken, s.NATSUser} {
			if v != "" {
				nAuth++
			}
		}
		if nAuth > 1 {
			add(flagErr("nats-creds", "give only one of --nats-creds, --nats-nkey, --nats-token, --nats-user"))
		}
		for name, f := range map[string]string{"nats-creds": s.NATSCreds, "nats-nkey": s.NATSNkey,
			"nats-tls-ca": s.NATSTLSCA, "nats-tls-cert": s.NATSTLSCert, "nats-tls-key": s.NATSTLSKey} {
			if f == "" {
				continue
			}
			if _, err := os.Stat(f); err != nil {
				add(flagErr(name, "%v", err))
			}
		}
		if (s.NATSTLSCert == "") != (s.NATSTLSKey == "") {
			add(flagErr("nats-tls-cert", "--nats-tls-cert and --nats-tls-key go together"))
		}
		if s.NATSURL == "" && r["natsembedded"] && s.NATSConfig == "" && (s.NATSCreds != "" || s.NATSNkey != "" || s.NATSTLSCert != "") {
			add(flagErr("nats-url", "required with --nats-creds, --nats-nkey or --nats-tls-cert (the embedded server supports --nats-user/--nats-password and --nats-token, or any user of --nats-config)"))
		}
		if err := checkInboxPrefix(s.NATSInboxPrefix); err != nil {
			add(err)
		}
	}
	if r["natsembedded"] {
		if s.NATSUser == "" && s.NATSPassword != "" {
			add(flagErr("nats-user", "required with --nats-password"))
		}
		if s.NATSUser != "" && s.NATSPassword == "" {
			add(flagErr("nats-password", "required with --nats-user"))
		}
		if s.NATSURL == "" || !r["natsclient"] {
			add(checkListen("nats-listen", s.NATSListen))
		}
		if s.NATSConfig != "" {
			if r["natsclient"] && s.NATSURL != "" {
				add(flagErr("nats-config", "configures the embedded server, which does not run with --nats-url"))
			} else if _, err := os.Stat(s.NATSConfig); err != nil {
				add(flagErr("nats-config", "%v", err))
			}
		}
	}
	if r["pump"] {
		for _, t := range s.Topics.Values {
			if _, err := events.TaskSubject(t); err != nil {
				add(flagErr("topics", "topic %q: %v", t, err))
			}
		}
		if s.LockDuration < time.Second {
			add(flagErr("lock-duration", "%s is below 1s", s.LockDuration))
		}
		if s.LongPollTimeout <= 0 {
			add(flagErr("long-poll-timeout", "%s is not positive", s.LongPollTimeout))
		}
		if s.Window < 1 {
			add(flagErr("window", "%d is below 1", s.Window))
		}
		if s.MaxProcessingTime <= 0 {
			add(flagErr("max-processing-time", "%s is not positive", s.MaxProcessingTime))
		}
		if s.HandlerTimeout <= 0 {
			add(flagErr("handler-timeout", "%s is not positive", s.HandlerTimeout))
		}
		if s.MaxAttempts < 1 {
			add(flagErr("max-attempts", "%d is below 1", s.MaxAttempts))
		}
		if strings.TrimSpace(s.FailureErrorCode) == "" {
			add(flagErr("failure-error-code", "empty"))
		}
		if s.ContentMode != "binary" && s.ContentMode != "structured" {
			add(flagErr("content-mode", "%q is not binary or structured", s.ContentMode))
		}
		for _, t := range s.StructuredTopics.Values {
			if _, err := events.TaskSubject(t); err != nil {
				add(flagErr("structured-topics", "topic %q: %v", t, err))
			}
		}
		if s.DrainTimeout < 0 {
			add(flagErr("drain-timeout", "%s is negative", s.DrainTimeout))
		}
		if s.ReportConcurrency < 1 {
			add(flagErr("report-concurrency", "%d is below 1", s.ReportConcurrency))
		}
		if s.ExtendConcurrency < 1 {
			add(flagErr("extend-concurrency", "%d is below 1", s.ExtendConcurrency))
		}
	}
	if r["pprof"] && s.PprofAddr != "" {
		if _, _, err := net.SplitHostPort(s.PprofAddr); err != nil {
			add(flagErr("pprof-addr", "%q is not host:port: %v", s.PprofAddr, err))
		}
	}
	if r["bridge"] {
		for _, g := range s.RequireUserToken.Values {
			if g != "all" && !slices.Contains(UserTokenGroups, g) {
				add(flagErr("require-user-token", "%q is not process, usertask, trigger or all", g))
			}
		}
		if s.MaxInFlight < 1 {
			add(flagErr("max-in-flight", "%d is below 1", s.MaxInFlight))
		}
		if s.MaxBlockingStarts < 1 {
			add(flagErr("max-blocking-starts", "%d is below 1", s.MaxBlockingStarts))
		}
	}
	if r["pump"] && s.TopicRefresh < time.Second {
		add(flagErr("topic-refresh", "%s is below 1s", s.TopicRefresh))
	}
	if r["http"] && s.HTTPAddr != "" {
		add(checkListen("http-addr", s.HTTPAddr))
	}
	if r["bridge"] && s.EventsFeed != "socketio" && s.EventsFeed != "poll" {
		add(flagErr("events-feed", "%q is neither socketio nor poll", s.EventsFeed))
	}
	if r["bridge"] && !s.NoEvents {
		if s.EventsStream != "" && !validStreamName(s.EventsStream) {
			add(flagErr("events-stream", "%q is not a stream name (letters, digits, '_', '-')", s.EventsStream))
		}
		if s.EventsLease != "" && !validStreamName(s.EventsLease) {
			add(flagErr("events-lease", "%q is not a bucket name (letters, digits, '_', '-')", s.EventsLease))
		}
		if s.EventsStreamReplicas < 1 || s.EventsStreamReplicas > 5 {
			add(flagErr("events-stream-replicas", "%d is not between 1 and 5", s.EventsStreamReplicas))
		}
		if s.EventsDedupWindow < time.Second {
			add(flagErr("events-dedup-window", "%s is below 1s", s.EventsDedupWindow))
		}
		if s.EventsLeaseTTL < time.Second {
			add(flagErr("events-lease-ttl", "%s is below 1s", s.EventsLeaseTTL))
		}
		for _, e := range s.Events.Values {
			if _, err := events.TopicToken(e); err != nil || strings.ContainsAny(e, ".*>% ") {
				add(flagErr("events", "%q is not a notification name (letters, digits, '_', '-')", e))
			}
		}
	}
	if r["dev"] {
		add(checkListen("engine-addr", s.EngineAddr))
	}
	return errors.Join(errs...)
}

// checkInboxPrefix accepts "" (nats.go's default) or subject tokens
// without wildcards, spaces or a trailing dot.
func checkInboxPrefix(p string) error {
	if p == "" {
		return nil
	}
	for _, tok := range strings.Split(p, ".") {
		if tok == "" || tok == "*" || tok == ">" || strings.ContainsAny(tok, " \t\r\n*>") {
			return flagErr("nats-inbox-prefix", "%q is not a subject prefix (dot-separated tokens, no wildcards or spaces)", p)
		}
	}
	return nil
}

func checkHTTPURL(name, raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return flagErr(name, "not a URL: %v", redactErr(err, raw))
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return flagErr(name, "%q is not an http(s) URL with a host", RedactURL(raw))
	}
	return nil
}

func checkNATSURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return flagErr("nats-url", "not a URL: %v", redactErr(err, raw))
	}
	switch u.Scheme {
	case "nats", "tls", "ws", "wss":
	default:
		return flagErr("nats-url", "%q: scheme must be nats, tls, ws or wss", RedactURL(raw))
	}
	if u.Host == "" {
		return flagErr("nats-url", "%q has no host", RedactURL(raw))
	}
	return nil
}

func checkListen(name, addr string) error {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return flagErr(name, "%q is not host:port", addr)
	}
	var port int
	if _, err := fmt.Sscanf(p, "%d", &port); err != nil || port < 0 || port > 65535 {
		return flagErr(name, "%q has an invalid port", addr)
	}
	return nil
}

func redactErr(err error, raw string) string {
	return strings.ReplaceAll(err.Error(), raw, RedactURL(raw))
}

// RedactURL replaces the password (or lone user token) of a URL's userinfo.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		if i := strings.Index(raw, "@"); i >= 0 {
			if j := strings.Index(raw, "://"); j >= 0 && j < i {
				return raw[:j+3] + "REDACTED" + raw[i:]
			}
		}
		return raw
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "REDACTED")
	} else {
		u.User = url.User("REDACTED")
	}
	return u.String()
}

// ParseLevel parses debug, info, warn or error.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	switch strings.ToLower(s) {
	case "debug":
		l = slog.LevelDebug
	case "info", "":
		l = slog.LevelInfo
	case "warn", "warning":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		return 0, fmt.Errorf("config: unknown log level %q", s)
	}
	return l, nil
}

// NewLogger returns the slog logger the settings ask for, writing to w.
func (s *Settings) NewLogger(w io.Writer) *slog.Logger {
	lvl, _ := ParseLevel(s.LogLevel)
	opts := &slog.HandlerOptions{Level: lvl}
	if s.LogFormat == "json" {
		opts.ReplaceAttr = HumanDurations
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// HumanDurations is a slog ReplaceAttr that renders a time.Duration as its
// String ("1.5s") instead of JSON's integer nanoseconds.
func HumanDurations(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return a
}

const redacted = "REDACTED"

func secret(v string) string {
	if v == "" {
		return ""
	}
	return redacted
}

// LogValue implements slog.LogValuer: the registered settings, secrets
// replaced by REDACTED and URL passwords masked.
func (s *Settings) LogValue() slog.Value {
	var a []slog.Attr
	str := func(k, v string) {
		if v != "" {
			a = append(a, slog.String(k, v))
		}
	}
	r := s.registered
	if s.ConfigFile != "" {
		str("config", s.ConfigFile)
	}
	if r["engine"] {
		str("engine_url", RedactURL(s.EngineURL))
		str("client_id", s.ClientID)
		str("client_secret", secret(s.ClientSecret))
		str("client_secret_file", s.ClientSecretFile)
		str("authority_url", RedactURL(s.AuthorityURL))
		str("scopes", s.Scopes.String())
		str("engine_tls_ca", s.EngineTLSCA)
	}
	if r["natsclient"] {
		urls := strings.Split(s.NATSURL, ",")
		for i := range urls {
			urls[i] = RedactURL(strings.TrimSpace(urls[i]))
		}
		str("nats_url", strings.Join(urls, ","))
		str("nats_creds", s.NATSCreds)
		str("nats_nkey", s.NATSNkey)
		str("nats_token", secret(s.NATSToken))
		str("nats_tls_ca", s.NATSTLSCA)
		str("nats_tls_cert", s.NATSTLSCert)
		str("nats_tls_key", s.NATSTLSKey)
		str("nats_inbox_prefix", s.NATSInboxPrefix)
	}
	if r["natsembedded"] {
		str("nats_listen", s.NATSListen)
		str("nats_store_dir", s.NATSStoreDir)
		str("nats_user", s.NATSUser)
		str("nats_password", secret(s.NATSPassword))
		str("nats_config", s.NATSConfig)
	}
	if r["pump"] {
		str("topics", s.Topics.String())
		a = append(a,
			slog.Duration("lock_duration", s.LockDuration),
			slog.Duration("long_poll_timeout", s.LongPollTimeout),
			slog.Int("window", s.Window),
			slog.Duration("max_processing_time", s.MaxProcessingTime),
			slog.Duration("handler_timeout", s.HandlerTimeout),
			slog.Int("max_attempts", s.MaxAttempts),
			slog.String("failure_error_code", s.FailureErrorCode),
			slog.String("content_mode", s.ContentMode),
			slog.String("structured_topics", s.StructuredTopics.String()),
			slog.Duration("drain_timeout", s.DrainTimeout),
			slog.Int("report_concurrency", s.ReportConcurrency),
			slog.Int("extend_concurrency", s.ExtendConcurrency),
			slog.Duration("topic_refresh", s.TopicRefresh))
		str("worker_id", s.WorkerID)
	}
	if r["pprof"] {
		str("pprof_addr", s.PprofAddr)
	}
	if r["http"] {
		str("http_addr", s.HTTPAddr)
	}
	if r["bridge"] {
		a = append(a, slog.Bool("service", !s.NoService), slog.Bool("events_forwarded", !s.NoEvents),
			slog.Int("max_in_flight", s.MaxInFlight), slog.Int("max_blocking_starts", s.MaxBlockingStarts))
		str("require_user_token", s.RequireUserToken.String())
		if s.NoEvents {
			if r["pump"] && len(s.Topics.Values) == 0 {
				str("events_feed", s.EventsFeed+" (deployments only)")
			}
		} else {
			str("events", s.Events.String())
			str("events_feed", s.EventsFeed)
			str("events_stream", s.EventsStream)
			str("events_lease", s.EventsLease)
			if s.EventsStream != "" {
				a = append(a, slog.Int("events_stream_replicas", s.EventsStreamReplicas), slog.Duration("events_dedup_window", s.EventsDedupWindow))
			}
			if s.EventsLease != "" {
				a = append(a, slog.Duration("events_lease_ttl", s.EventsLeaseTTL))
			}
		}
	}
	if r["dev"] {
		str("engine_addr", s.EngineAddr)
		a = append(a, slog.Bool("demo", s.Demo))
	}
	if r["log"] {
		str("log_format", s.LogFormat)
		str("log_level", s.LogLevel)
	}
	return slog.GroupValue(a...)
}

// String redacts secrets too, for %v.
func (s *Settings) String() string {
	var b strings.Builder
	for _, at := range s.LogValue().Group() {
		fmt.Fprintf(&b, "%s=%s ", at.Key, at.Value)
	}
	return strings.TrimSpace(b.String())
}

// PrintUsage writes a command's help: the description, then each flag with
// its default and environment variable.
func PrintUsage(w io.Writer, fs *flag.FlagSet, usage, description string) {
	fmt.Fprintf(w, "Usage: %s\n\n%s\n\nFlags (each also settable as the environment variable shown, or in --config FILE):\n", usage, strings.TrimSpace(description))
	var flags []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) { flags = append(flags, f) })
	for _, f := range flags {
		name, u := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if name != "" {
			line += " " + name
		}
		fmt.Fprintln(w, line)
		text := u
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && !strings.Contains(u, "(default") {
			text += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, "      %s [env %s]\n", text, EnvName(f.Name))
	}
}
