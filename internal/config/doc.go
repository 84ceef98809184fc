// Package config holds the settings of the bridge binary's commands and reads
// them from flags, environment variables and an optional config file, with
// the same names everywhere (github.com/peterbourgon/ff/v3):
//
//   - a flag --lock-duration;
//   - its environment variable PE_LOCK_DURATION: the flag name upper-cased,
//     dashes turned into underscores, prefixed with PE_;
//   - its config file key lock-duration (or PE_LOCK_DURATION), given with
//     --config FILE (env PE_CONFIG). A file whose content starts with '{' is a
//     JSON object {"lock-duration":"10s","topics":["a","b"]}; any other file
//     has one setting per line: "lock-duration 10s", "lock-duration = 10s" or
//     "PE_LOCK_DURATION=10s"; '#' starts a comment.
//
// Precedence: flag, then environment, then file, then the default.
// List settings (--topics, --events, --scopes) take comma-separated values.
//
// It owns validation (errors name the flag) and redaction of secrets in logs
// (Settings implements slog.LogValuer). It must not import NATS or HTTP
// packages, nor the bridge's engine wiring.
package config
