package testutil

import (
	"go/build"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// NATSCLIVersion is the nats CLI the tests and the documentation are checked
// with (make nats-cli installs it; skip v0.5.1).
const NATSCLIVersion = "v0.5.0"

// NATSCLI returns the path of the nats CLI NATSCLIVersion: $PE_NATS_CLI,
// else $GOPATH/bin/nats (where make nats-cli installs it), else nats on
// $PATH. It fails the test, never skips, when the CLI is missing or another
// version.
func NATSCLI(t testing.TB) string {
	t.Helper()
	path := os.Getenv("PE_NATS_CLI")
	if path == "" {
		path = filepath.Join(build.Default.GOPATH, "bin", "nats")
		if _, err := os.Stat(path); err != nil {
			if p, err := exec.LookPath("nats"); err == nil {
				path = p
			}
		}
	}
	out, err := exec.Command(path, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("the nats CLI %s is missing (%s: %v): run `make nats-cli` (go install github.com/nats-io/natscli/nats@%s) or set PE_NATS_CLI",
			NATSCLIVersion, path, err, NATSCLIVersion)
	}
	if v := strings.TrimSpace(string(out)); v != NATSCLIVersion {
		t.Fatalf("%s is the nats CLI %s, the tests need %s: run `make nats-cli` or set PE_NATS_CLI", path, v, NATSCLIVersion)
	}
	return path
}
