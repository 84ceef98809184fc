package integration_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The SDK module stays small: a program that imports it gets the SDK,
// events, nats.go and nats.go's own dependencies, nothing of the bridge
// (handlers-sdk/README.md, "Modules and releases"). events stays stdlib-only.
func TestSDKModuleGraph(t *testing.T) {
	allowed := []string{
		"github.com/pe-bridge/pe-bridge/handlers-sdk", "github.com/pe-bridge/pe-bridge/events",
		"github.com/nats-io/nats.go", "github.com/nats-io/nkeys", "github.com/nats-io/nuid",
		"github.com/klauspost/compress", "golang.org/x/",
	}
	for _, m := range goList(t, "..", "-m", "all") {
		path := strings.Fields(m)[0]
		ok := false
		for _, a := range allowed {
			ok = ok || path == a || strings.HasSuffix(a, "/") && strings.HasPrefix(path, a)
		}
		if !ok {
			t.Errorf("the handlers-sdk module graph has %s; a handler author's program would get it too", m)
		}
	}
	if ms := goList(t, "../../events", "-m", "all"); len(ms) != 1 {
		t.Errorf("the events module requires other modules: %v", ms)
	}
	if deps := goList(t, "../../events", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "./..."); len(deps) != 1 {
		t.Errorf("events imports more than the standard library: %v", deps)
	}
}

// goList runs go list in dir without go.work (as the module builds for a
// user) and returns its non-empty output lines.
func goList(t *testing.T, dir string, args ...string) []string {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %v in %s: %v", args, dir, err)
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}
