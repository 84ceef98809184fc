package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestTagModule runs tools/tag-module.sh (make tag) in a scratch repository
// shaped like this one and checks what it refuses and what it tags.
func TestTagModule(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatal("git is required: ", err)
	}
	script, err := filepath.Abs("../tools/tag-module.sh")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	env := append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com",
		"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com", "GOWORK=off", "GOFLAGS=-mod=mod", "GOPROXY=off")
	run := func(name string, args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("%s %v: %v", name, args, err)
		}
		return string(out), code
	}
	must := func(name string, args ...string) {
		t.Helper()
		if out, code := run(name, args...); code != 0 {
			t.Fatalf("%s %v: exit %d: %s", name, args, code, out)
		}
	}
	write := func(path, text string) {
		t.Helper()
		p := filepath.Join(dir, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	must("git", "init", "-q")
	write("events/go.mod", "module github.com/pe-bridge/pe-bridge/events\n\ngo 1.26.0\n")
	write("events/events.go", "package events\n")
	write("handlers-sdk/go.mod", "module github.com/pe-bridge/pe-bridge/handlers-sdk\n\ngo 1.26.0\n\n"+
		"require github.com/pe-bridge/pe-bridge/events v0.1.0\n\nreplace github.com/pe-bridge/pe-bridge/events => ../events\n")
	write("handlers-sdk/sdk.go", "package sdk\n")
	must("git", "add", "-A")
	must("git", "commit", "-qm", "init")

	for _, c := range []struct {
		name, mod, ver string
		code           int
		says           string
	}{
		{"unknown module", "bridge", "v0.1.0", 2, "usage: make tag MODULE=events|handlers-sdk"},
		{"no v prefix", "events", "0.1.0", 2, "VERSION must be vX.Y.Z, got '0.1.0'"},
		{"v2 without /v2 path", "events", "v2.0.0", 2, "a v2+ module needs a /vN module path"},
		{"SDK before its events version", "handlers-sdk", "v0.1.0", 1, "requires events v0.1.0, which is not tagged"},
		{"events", "events", "v0.1.0", 0, "tagged events/v0.1.0; publish with: git push origin events/v0.1.0"},
		{"events again", "events", "v0.1.0", 1, "events/v0.1.0 exists"},
	} {
		out, code := run("bash", script, c.mod, c.ver)
		if code != c.code || !strings.Contains(out, c.says) {
			t.Errorf("%s: exit %d, %q; want exit %d saying %q", c.name, code, out, c.code, c.says)
		}
	}

	write("handlers-sdk/sdk.go", "package sdk // edited\n")
	if out, code := run("bash", script, "handlers-sdk", "v0.1.0"); code != 1 || !strings.Contains(out, "handlers-sdk/ has uncommitted changes") {
		t.Errorf("uncommitted SDK: exit %d, %q", code, out)
	}
	must("git", "checkout", "-q", "--", "handlers-sdk")

	write("events/events.go", "package events // changed after the tag\n")
	must("git", "commit", "-qam", "events changed")
	if out, code := run("bash", script, "handlers-sdk", "v0.1.0"); code != 1 || !strings.Contains(out, "events/ changed since events/v0.1.0") {
		t.Errorf("SDK on changed events: exit %d, %q", code, out)
	}
	must("git", "revert", "--no-edit", "HEAD")
	if out, code := run("bash", script, "handlers-sdk", "v0.1.0"); code != 0 || !strings.Contains(out, "tagged handlers-sdk/v0.1.0") {
		t.Errorf("SDK: exit %d, %q", code, out)
	}
	if out, _ := run("git", "tag", "-l"); out != "events/v0.1.0\nhandlers-sdk/v0.1.0\n" {
		t.Errorf("tags %q", out)
	}
}
