package config

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func runSettings() (*Settings, *flag.FlagSet) {
	s := &Settings{}
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	s.RegisterConfigFile(fs)
	s.RegisterLog(fs)
	s.RegisterEngine(fs)
	s.RegisterNATSClient(fs)
	s.RegisterNATSEmbedded(fs)
	s.RegisterPump(fs)
	s.RegisterBridge(fs)
	return s, fs
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaults(t *testing.T) {
	s, fs := runSettings()
	if err := Parse(fs, []string{"--engine-url", "http://127.0.0.1:8000"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if s.LockDuration != 30*time.Second || s.Window != 100 || s.MaxAttempts != 3 || s.ContentMode != "binary" ||
		s.NATSListen != "127.0.0.1:4222" || s.Scopes.String() != DefaultScopes || len(s.Events.Values) != len(DefaultEvents) ||
		len(s.Topics.Values) != 0 || s.LogFormat != "text" || s.LogLevel != "info" {
		t.Fatalf("unexpected defaults: %v", s)
	}
	if s.TopicRefresh != 30*time.Second || s.EventsFeed != "socketio" || s.EventsStream != "" || s.EventsLease != "" ||
		s.EventsStreamReplicas != 1 || s.EventsDedupWindow != 2*time.Minute || s.EventsLeaseTTL != 6*time.Second {
		t.Fatalf("unexpected event defaults: %v", s)
	}
}

func TestPrecedenceFlagEnvFile(t *testing.T) {
	file := writeFile(t, "bridge.conf", `
# comment
engine-url http://file:1
lock-duration = 7s
window: 11
PE_MAX_ATTEMPTS=9
topics a,b
log-level "debug"
no-events
`)
	t.Setenv("PE_CONFIG", file)
	t.Setenv("PE_LOCK_DURATION", "8s")     // env beats file
	t.Setenv("PE_WINDOW", "12")            // flag beats env
	t.Setenv("PE_NATS_URL", "nats://e:42") // env only
	s, fs := runSettings()
	if err := Parse(fs, []string{"--window", "13"}); err != nil {
		t.Fatal(err)
	}
	if s.ConfigFile != file {
		t.Errorf("config file %q from PE_CONFIG not used", s.ConfigFile)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"engine-url (file)", s.EngineURL, "http://file:1"},
		{"lock-duration (env over file)", s.LockDuration, 8 * time.Second},
		{"window (flag over env)", s.Window, 13},
		{"max-attempts (file, env-style key)", s.MaxAttempts, 9},
		{"topics (file list)", s.Topics.String(), "a,b"},
		{"log-level (quoted)", s.LogLevel, "debug"},
		{"no-events (bare bool)", s.NoEvents, true},
		{"nats-url (env)", s.NATSURL, "nats://e:42"},
		{"handler-timeout (default)", s.HandlerTimeout, 5 * time.Minute},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestJSONConfigFile(t *testing.T) {
	file := writeFile(t, "bridge.json", `{"engine-url":"http://j:2","topics":["x","y"],"window":5,"content-mode":"structured","structured-topics":["x"]}`)
	s, fs := runSettings()
	if err := Parse(fs, []string{"--config", file, "--topics", "z"}); err != nil {
		t.Fatal(err)
	}
	if s.EngineURL != "http://j:2" || s.Window != 5 || s.ContentMode != "structured" {
		t.Fatalf("json file not applied: %v", s)
	}
	if s.Topics.String() != "z" {
		t.Fatalf("topics = %q, want the flag's z", s.Topics.String())
	}
	if s.StructuredTopics.String() != "x" {
		t.Fatalf("structured-topics = %q, want the file's x", s.StructuredTopics.String())
	}
}

func TestConfigFileUnknownKeyAndMissingFile(t *testing.T) {
	file := writeFile(t, "bad.conf", "no-such-setting 1\n")
	_, fs := runSettings()
	if err := Parse(fs, []string{"--config", file}); err == nil || !strings.Contains(err.Error(), "no-such-setting") {
		t.Fatalf("unknown key: err = %v", err)
	}
	_, fs = runSettings()
	if err := Parse(fs, []string{"--config", filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Fatal("missing config file accepted")
	}
}

func TestValidationNamesFlag(t *testing.T) {
	secretFile := writeFile(t, "secret", "s\n")
	cases := []struct {
		args []string
		flag string
	}{
		{[]string{}, "engine-url"},
		{[]string{"--engine-url", "ftp://x"}, "engine-url"},
		{[]string{"--engine-url", "http://e", "--lock-duration", "500ms"}, "lock-duration"},
		{[]string{"--engine-url", "http://e", "--window", "0"}, "window"},
		{[]string{"--engine-url", "http://e", "--max-attempts", "0"}, "max-attempts"},
		{[]string{"--engine-url", "http://e", "--content-mode", "xml"}, "content-mode"},
		{[]string{"--engine-url", "http://e", "--structured-topics", "a," + strings.Repeat("x", 300)}, "structured-topics"},
		{[]string{"--engine-url", "http://e", "--log-format", "yaml"}, "log-format"},
		{[]string{"--engine-url", "http://e", "--log-level", "loud"}, "log-level"},
		{[]string{"--engine-url", "http://e", "--nats-url", "http://n"}, "nats-url"},
		{[]string{"--engine-url", "http://e", "--client-id", "c"}, "client-secret"},
		{[]string{"--engine-url", "http://e", "--client-secret", "s"}, "client-id"},
		{[]string{"--engine-url", "http://e", "--client-id", "c", "--client-secret", "s", "--client-secret-file", secretFile}, "client-secret-file"},
		{[]string{"--engine-url", "http://e", "--nats-user", "u"}, "nats-password"},
		{[]string{"--engine-url", "http://e", "--nats-creds", "/nonexistent/creds", "--nats-url", "nats://n:1"}, "nats-creds"},
		{[]string{"--engine-url", "http://e", "--nats-tls-cert", secretFile, "--nats-url", "nats://n:1"}, "nats-tls-cert"},
		{[]string{"--engine-url", "http://e", "--topics", "ok," + strings.Repeat("x", 300)}, "topics"},
		{[]string{"--engine-url", "http://e", "--events", "process.ended"}, "events"},
		{[]string{"--engine-url", "http://e", "--nats-listen", "nowhere"}, "nats-listen"},
		{[]string{"--engine-url", "http://e", "--failure-error-code", " "}, "failure-error-code"},
		{[]string{"--engine-url", "http://e", "--nats-config", "/nonexistent/secure.conf"}, "nats-config"},
		{[]string{"--engine-url", "http://e", "--nats-config", secretFile, "--nats-url", "nats://n:1"}, "nats-config"},
		{[]string{"--engine-url", "http://e", "--nats-inbox-prefix", "_INBOX.*"}, "nats-inbox-prefix"},
		{[]string{"--engine-url", "http://e", "--nats-inbox-prefix", "a b"}, "nats-inbox-prefix"},
		{[]string{"--engine-url", "http://e", "--nats-inbox-prefix", "x."}, "nats-inbox-prefix"},
		{[]string{"--engine-url", "http://e", "--require-user-token", "usertask,everything"}, "require-user-token"},
		{[]string{"--engine-url", "http://e", "--max-in-flight", "0"}, "max-in-flight"},
		{[]string{"--engine-url", "http://e", "--max-blocking-starts", "-1"}, "max-blocking-starts"},
		{[]string{"--engine-url", "http://e", "--topic-refresh", "10ms"}, "topic-refresh"},
		{[]string{"--engine-url", "http://e", "--events-feed", "sse"}, "events-feed"},
		{[]string{"--engine-url", "http://e", "--events-stream", "pe.events"}, "events-stream"},
		{[]string{"--engine-url", "http://e", "--events-lease", "a b"}, "events-lease"},
		{[]string{"--engine-url", "http://e", "--events-stream-replicas", "7"}, "events-stream-replicas"},
		{[]string{"--engine-url", "http://e", "--events-dedup-window", "1ms"}, "events-dedup-window"},
		{[]string{"--engine-url", "http://e", "--events-lease-ttl", "0s"}, "events-lease-ttl"},
	}
	for _, c := range cases {
		s, fs := runSettings()
		if err := Parse(fs, c.args); err != nil {
			t.Fatalf("%v: parse: %v", c.args, err)
		}
		err := s.Validate()
		var fe *FlagError
		if !errors.As(err, &fe) {
			t.Errorf("%v: err = %v, want a FlagError", c.args, err)
			continue
		}
		if !strings.Contains(err.Error(), "--"+c.flag+":") {
			t.Errorf("%v: error %q does not name --%s", c.args, err, c.flag)
		}
	}
}

func TestBadValueFromEnvNamesVariable(t *testing.T) {
	t.Setenv("PE_LOCK_DURATION", "soon")
	_, fs := runSettings()
	err := Parse(fs, nil)
	if err == nil || !strings.Contains(err.Error(), "PE_LOCK_DURATION") || !strings.Contains(err.Error(), "lock-duration") {
		t.Fatalf("err = %v, want it to name PE_LOCK_DURATION and lock-duration", err)
	}
}

func TestSecretsRedacted(t *testing.T) {
	secretFile := writeFile(t, "secret", "file-secret-xyz\n")
	s, fs := runSettings()
	args := []string{
		"--engine-url", "http://eu:engine-pass-1@e:1",
		"--client-id", "cid", "--client-secret-file", secretFile,
		"--nats-url", "nats://nu:nats-url-pass-2@n:1,nats://tok-in-url-3@m:2",
		"--nats-token", "nats-token-4",
	}
	if err := Parse(fs, args); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PE_CLIENT_SECRET", "") // keep env clean
	sec, err := s.ReadClientSecret()
	if err != nil || sec != "file-secret-xyz" {
		t.Fatalf("ReadClientSecret = %q, %v", sec, err)
	}
	s2, fs2 := runSettings()
	if err := Parse(fs2, []string{"--engine-url", "http://e", "--client-id", "c", "--client-secret", "flag-secret-5",
		"--nats-user", "u", "--nats-password", "nats-pass-6"}); err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"text", "json"} {
		var buf bytes.Buffer
		var l *slog.Logger
		if format == "json" {
			l = slog.New(slog.NewJSONHandler(&buf, nil))
		} else {
			l = slog.New(slog.NewTextHandler(&buf, nil))
		}
		l.Info("config", "config", s, "other", s2)
		l.Info("printf", "s", s.String(), "s2", s2.String())
		out := buf.String()
		for _, secret := range []string{"engine-pass-1", "nats-url-pass-2", "tok-in-url-3", "nats-token-4", "file-secret-xyz", "flag-secret-5", "nats-pass-6"} {
			if strings.Contains(out, secret) {
				t.Errorf("%s log contains secret %q:\n%s", format, secret, out)
			}
		}
		for _, want := range []string{"REDACTED", "cid", "lock_duration"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s log lacks %q:\n%s", format, want, out)
			}
		}
	}
	// validation errors do not leak URL passwords either
	s3, fs3 := runSettings()
	_ = Parse(fs3, []string{"--engine-url", "ftp://u:leak-7@e"})
	if err := s3.Validate(); err == nil || strings.Contains(err.Error(), "leak-7") {
		t.Fatalf("validation error %v leaks or is missing", err)
	}
}

func TestUsageShowsEnvAndDefaults(t *testing.T) {
	_, fs := runSettings()
	var buf bytes.Buffer
	PrintUsage(&buf, fs, "bridge run [flags]", "Bridges tasks.")
	out := buf.String()
	for _, want := range []string{"--engine-url", "[env PE_ENGINE_URL]", "--lock-duration", "(default 30s)", "[env PE_NATS_TLS_CA]", "(default \"" + DefaultScopes + "\")"} {
		if !strings.Contains(out, want) {
			t.Errorf("usage lacks %q:\n%s", want, out)
		}
	}
	if EnvName("nats-tls-ca") != "PE_NATS_TLS_CA" {
		t.Fatal(EnvName("nats-tls-ca"))
	}
}

func TestLoggerFormats(t *testing.T) {
	var buf bytes.Buffer
	s := &Settings{LogFormat: "json", LogLevel: "warn"}
	l := s.NewLogger(&buf)
	l.Info("hidden")
	l.Warn("shown", "task_id", "t1")
	if strings.Contains(buf.String(), "hidden") || !strings.Contains(buf.String(), `"task_id":"t1"`) {
		t.Fatalf("json/warn logger output: %s", buf.String())
	}
}

func TestPositionalArgumentRejected(t *testing.T) {
	_, fs := runSettings()
	if err := Parse(fs, []string{"--engine-url", "http://e", "extra"}); err == nil {
		t.Fatal("positional argument accepted")
	}
}

func TestSecurityFlags(t *testing.T) {
	conf := writeFile(t, "secure.conf", "authorization {}\n")
	s, fs := runSettings()
	if err := Parse(fs, []string{"--engine-url", "http://e"}); err != nil {
		t.Fatal(err)
	}
	if s.NATSInboxPrefix != DefaultInboxPrefix || s.MaxInFlight != DefaultMaxInFlight || s.MaxBlockingStarts != DefaultMaxBlockingStarts ||
		len(s.UserTokenGroups()) != 0 || s.NATSConfig != "" {
		t.Fatalf("defaults: %v", s)
	}
	s, fs = runSettings()
	t.Setenv("PE_REQUIRE_USER_TOKEN", "usertask,trigger")
	if err := Parse(fs, []string{"--engine-url", "http://e", "--nats-config", conf, "--nats-user", "pe-bridge", "--nats-password", "pw",
		"--max-in-flight", "7", "--max-blocking-starts", "9", "--nats-inbox-prefix", "_INBOX_me"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if g := strings.Join(s.UserTokenGroups(), ","); g != "usertask,trigger" || s.MaxInFlight != 7 || s.MaxBlockingStarts != 9 ||
		s.NATSConfig != conf || s.NATSInboxPrefix != "_INBOX_me" {
		t.Fatalf("parsed: %v (groups %s)", s, g)
	}
	s.RequireUserToken = List{Values: []string{"all"}}
	if g := strings.Join(s.UserTokenGroups(), ","); g != "process,usertask,trigger" {
		t.Fatalf("all = %s", g)
	}
	if strings.Contains(s.String(), "pw") {
		t.Fatalf("password in %s", s.String())
	}
	// --nats-nkey works with the embedded server when a config file defines the users.
	seed := writeFile(t, "u.nk", "SU...")
	s, fs = runSettings()
	if err := Parse(fs, []string{"--engine-url", "http://e", "--nats-config", conf, "--nats-nkey", seed}); err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(); err != nil {
		t.Fatalf("nkey with --nats-config: %v", err)
	}
}

// JSON logs give durations in a human unit, nested ones (the settings
// group) included.
func TestJSONLogDurations(t *testing.T) {
	var s Settings
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	s.RegisterLog(fs)
	s.RegisterPump(fs)
	if err := Parse(fs, []string{"--log-format", "json", "--lock-duration", "1500ms"}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	s.NewLogger(&buf).Info("x", "down_for", 90*time.Second, "config", &s)
	out := buf.String()
	for _, want := range []string{`"down_for":"1m30s"`, `"lock_duration":"1.5s"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log %s lacks %s", out, want)
		}
	}
}
