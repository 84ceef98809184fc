// Package deploy_test validates docker-compose.yml, the Dockerfile and the
// config files under deploy/ without a Docker daemon: the compose file is
// loaded with compose-go (the library docker compose itself uses).
package deploy_test

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/pe-bridge/pe-bridge/internal/config"
)

const root = ".."

func loadProject(t *testing.T) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml")},
		cli.WithWorkingDirectory(root), cli.WithName("pe-bridge"), cli.WithEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("loading docker-compose.yml: %v", err)
	}
	return p
}

// bridgeRunEnv lists the environment variables `bridge run` reads: the flags
// cmd/bridge/run.go registers (the same Register* calls, from
// internal/config), each mapped by config.EnvName (PE_ + upper-cased flag
// name, dashes to underscores).
func bridgeRunEnv(t *testing.T) map[string]bool {
	t.Helper()
	var s config.Settings
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	s.RegisterConfigFile(fs)
	s.RegisterEngine(fs)
	s.RegisterNATSClient(fs)
	s.RegisterNATSEmbedded(fs)
	s.RegisterPump(fs)
	s.RegisterBridge(fs)
	s.RegisterLog(fs)
	s.RegisterPprof(fs)
	s.RegisterHTTP(fs)
	env := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { env[config.EnvName(f.Name)] = true })
	for _, want := range []string{"PE_ENGINE_URL", "PE_NATS_URL", "PE_CLIENT_ID", "PE_CLIENT_SECRET", "PE_AUTHORITY_URL", "PE_SCOPES"} {
		if !env[want] {
			t.Fatalf("bridge run does not read %s any more (flags: %v)", want, env)
		}
	}
	return env
}

func TestCompose(t *testing.T) {
	p := loadProject(t)
	names := p.ServiceNames()
	slices.Sort(names)
	if want := []string{"approver-go", "authority", "bridge", "engine", "handler-go", "nats", "postgres"}; !slices.Equal(names, want) {
		t.Fatalf("services %v, want %v", names, want)
	}
	svc := func(name string) types.ServiceConfig {
		s, err := p.GetService(name)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	images := map[string]string{
		"postgres":  "postgres:17",
		"authority": "ghcr.io/5minds/processcube_authority:3.5.2",
		"engine":    "ghcr.io/5minds/processcube_engine:20.1.1",
		"nats":      "nats:2",
	}
	for name, image := range images {
		if got := svc(name).Image; got != image {
			t.Errorf("%s: image %q, want %q", name, got, image)
		}
	}
	if c := svc("nats").Command; !slices.Contains(c, "-js") {
		t.Errorf("nats command %v: JetStream (-js) not on", c)
	}
	ports := map[string]uint32{"nats": 4222, "engine": 8000, "authority": 11560}
	for name, port := range ports {
		ok := false
		for _, pc := range svc(name).Ports {
			ok = ok || pc.Target == port && pc.Published == strings.TrimSpace(pc.Published) && pc.Published != ""
		}
		if !ok {
			t.Errorf("%s: port %d not published (%+v)", name, port, svc(name).Ports)
		}
	}
	for name, target := range map[string]string{"bridge": "bridge", "handler-go": "example-go", "approver-go": "example-go"} {
		b := svc(name).Build
		if b == nil || b.Target != target || filepath.Base(b.Dockerfile) != "Dockerfile" {
			t.Errorf("%s: build %+v, want ./Dockerfile target %s", name, b, target)
			continue
		}
		if abs, _ := filepath.Abs(root); b.Context != abs {
			t.Errorf("%s: build context %s, want the repository root", name, b.Context)
		}
	}
	deps := map[string]map[string]string{
		"engine":      {"postgres": types.ServiceConditionHealthy, "authority": types.ServiceConditionHealthy},
		"bridge":      {"engine": types.ServiceConditionHealthy, "authority": types.ServiceConditionHealthy, "nats": types.ServiceConditionStarted},
		"handler-go":  {"nats": types.ServiceConditionStarted, "bridge": types.ServiceConditionHealthy},
		"approver-go": {"nats": types.ServiceConditionStarted, "bridge": types.ServiceConditionHealthy},
	}
	for name, want := range deps {
		got := svc(name).DependsOn
		for dep, cond := range want {
			if got[dep].Condition != cond {
				t.Errorf("%s depends_on %s: condition %q, want %q", name, dep, got[dep].Condition, cond)
			}
		}
	}
	// The bridge's health check is its own readiness probe, on the address
	// it serves (the image has no shell or curl).
	if hc := svc("bridge").HealthCheck; hc == nil || !slices.Equal(hc.Test, []string{"CMD", "/bridge", "probe"}) {
		t.Errorf("bridge healthcheck %+v, want [CMD /bridge probe]", hc)
	}
	if v := svc("bridge").Environment["PE_HTTP_ADDR"]; v == nil || !strings.HasPrefix(*v, "0.0.0.0:") {
		t.Errorf("bridge: PE_HTTP_ADDR %v, want a wildcard listen so the port can be published", v)
	} else {
		published := false
		for _, pc := range svc("bridge").Ports {
			published = published || "0.0.0.0:"+strconv.Itoa(int(pc.Target)) == *v
		}
		if !published {
			t.Errorf("bridge: %s not published (%+v)", *v, svc("bridge").Ports)
		}
	}
	if b := svc("bridge").Build; b == nil || b.Args["VERSION"] == nil || *b.Args["VERSION"] != "dev" {
		t.Errorf("bridge build args %+v, want VERSION (default dev)", b)
	}
	for _, name := range []string{"postgres", "authority", "engine", "bridge"} {
		if svc(name).HealthCheck == nil {
			t.Errorf("%s: no healthcheck, but others wait for it to be healthy", name)
		}
	}

	// Every variable set on the bridge is one `bridge run` reads.
	known := bridgeRunEnv(t)
	bridgeEnv := svc("bridge").Environment
	for k := range bridgeEnv {
		if !known[k] {
			t.Errorf("bridge: environment variable %s is not read by `bridge run`", k)
		}
	}
	for _, k := range []string{"PE_ENGINE_URL", "PE_NATS_URL", "PE_CLIENT_ID", "PE_CLIENT_SECRET", "PE_AUTHORITY_URL", "PE_SCOPES"} {
		if bridgeEnv[k] == nil || *bridgeEnv[k] == "" {
			t.Errorf("bridge: %s not set", k)
		}
	}
	if c := svc("bridge").Command; !slices.Equal(c, []string{"run"}) {
		t.Errorf("bridge command %v, want [run]", c)
	}
	val := func(k string) string { return *bridgeEnv[k] }
	if val("PE_ENGINE_URL") != "http://engine:8000" || val("PE_NATS_URL") != "nats://nats:4222" ||
		val("PE_AUTHORITY_URL") != "http://authority:11560" {
		t.Errorf("bridge wiring: %s %s %s", val("PE_ENGINE_URL"), val("PE_NATS_URL"), val("PE_AUTHORITY_URL"))
	}

	// The example handlers read what is set on them.
	for name, prog := range map[string]string{"handler-go": "worker", "approver-go": "approver"} {
		env := svc(name).Environment
		if env["NATS_URL"] == nil || *env["NATS_URL"] != "nats://nats:4222" {
			t.Errorf("%s: NATS_URL %v", name, env["NATS_URL"])
		}
		src, err := os.ReadFile(filepath.Join(root, "examples/polyglot/go", prog, "main.go"))
		if err != nil {
			t.Fatal(err)
		}
		for k := range env {
			if !strings.Contains(string(src), `"`+k+`"`) {
				t.Errorf("%s: %s is not read by examples/polyglot/go/%s", name, k, prog)
			}
		}
	}
	if ep := svc("approver-go").Entrypoint; !slices.Equal(ep, []string{"/approver"}) {
		t.Errorf("approver-go entrypoint %v, want [/approver]", ep)
	}

	// The bridge's OAuth client is the one the authority knows.
	var auth struct {
		IssuerURL           string `json:"issuerUrl"`
		ExternalTaskWorkers []struct {
			ClientID, ClientSecret, Scope string
		} `json:"externalTaskWorkers"`
	}
	readJSON(t, "deploy/authority/config/config.json", &auth)
	found := false
	for _, w := range auth.ExternalTaskWorkers {
		if w.ClientID == val("PE_CLIENT_ID") && w.ClientSecret == val("PE_CLIENT_SECRET") {
			found = true
			for _, sc := range strings.Fields(val("PE_SCOPES")) {
				if !slices.Contains(strings.Fields(w.Scope), sc) {
					t.Errorf("scope %s requested by the bridge is not granted by the authority", sc)
				}
			}
		}
	}
	if !found {
		t.Errorf("authority config has no externalTaskWorker %s with the bridge's secret", val("PE_CLIENT_ID"))
	}
	if auth.IssuerURL != val("PE_AUTHORITY_URL") {
		t.Errorf("authority issuerUrl %s, bridge uses %s", auth.IssuerURL, val("PE_AUTHORITY_URL"))
	}
	var eng map[string]any
	readJSON(t, "deploy/engine/config.json", &eng)

	// Bind mounts point at files of this repository.
	for _, s := range p.Services {
		for _, v := range s.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("%s: volume source %s: %v", s.Name, v.Source, err)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(root, "examples/models/hello_world.bpmn")); err != nil {
		t.Errorf("engine seed models: %v", err)
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, path))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	stages := regexp.MustCompile(`(?m)^FROM\s+(\S+)(?:\s+AS\s+(\S+))?`).FindAllStringSubmatch(df, -1)
	if len(stages) < 2 {
		t.Fatalf("not a multi-stage build: %v", stages)
	}
	last := stages[len(stages)-1]
	if last[2] != "bridge" || !(strings.Contains(last[1], "distroless/static") || last[1] == "scratch") {
		t.Errorf("final stage %v: want the bridge on distroless/static or scratch", last)
	}
	targets := map[string]string{}
	for _, s := range stages {
		targets[s[2]] = s[1]
	}
	if img := targets["example-go"]; !strings.Contains(img, "distroless/static") && img != "scratch" {
		t.Errorf("example-go stage on %q", img)
	}
	for _, want := range []string{"CGO_ENABLED=0", `make build VERSION="${VERSION}" BIN=/out/bridge`, "cd examples/polyglot/go && go build", "./worker ./approver",
		`ENTRYPOINT ["/bridge"]`, `ENTRYPOINT ["/worker"]`, `HEALTHCHECK`, `"/bridge", "probe"`, "PE_HTTP_ADDR=0.0.0.0:"} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %s", want)
		}
	}
	// Every base image is pinned by digest (the tag kept, saying what it is).
	for _, s := range stages {
		if s[1] != "scratch" && !regexp.MustCompile(`^[^@\s]+:[^@\s]+@sha256:[0-9a-f]{64}$`).MatchString(s[1]) {
			t.Errorf("base image %s is not pinned as name:tag@sha256:digest", s[1])
		}
	}
	// The Dockerfile's build is `make build`, the one CI builds and starts.
	mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mk), `CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN) ./cmd/bridge`) {
		t.Errorf("Makefile build target is not the release build the Dockerfile relies on")
	}
	ci, err := os.ReadFile(filepath.Join(root, ".ci/run"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"make lint", "make smoke VERSION=dev", "make test"} {
		if !strings.Contains(string(ci), want) {
			t.Errorf(".ci/run lacks %s", want)
		}
	}
	for _, dir := range []string{"cmd/bridge", "examples/polyglot/go/worker", "examples/polyglot/go/approver"} {
		if m, _ := filepath.Glob(filepath.Join(root, dir, "*.go")); len(m) == 0 {
			t.Errorf("Dockerfile builds %s, which has no Go files", dir)
		}
	}
	di, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(di), "\n") {
		line = strings.TrimSpace(line)
		if line == "go.mod" || line == "go.sum" || line == "*.go" || line == "cmd" || line == "examples" {
			t.Errorf(".dockerignore excludes %s, which the build needs", line)
		}
	}
}
