# One target per habit. CI (.ci/run) calls `make test`, the same command the README gives.
GO        ?= go
NODE_DIRS := engine/emulator/conformance/node examples/polyglot/node bench/node
# -modfile does not work in workspace mode: the tools module is run with GOWORK=off.
STATICCHECK := bin/staticcheck
BENCHSTAT   := GOWORK=off $(GO) run -modfile=tools/go.mod golang.org/x/perf/cmd/benchstat
# The repository's Go modules, as go.work lists them: the bridge (.), events,
# handlers-sdk, handlers-sdk/integration, examples/polyglot/go. `./...` from the
# root stops at a nested go.mod, so every target names each module's packages.
MODULES   := $(patsubst $(CURDIR)/%,./%,$(patsubst $(CURDIR),.,$(shell $(GO) list -m -f '{{.Dir}}')))
PKGS      := $(addsuffix /...,$(MODULES))
FUZZTIME  ?= 20s
# The bridge's own tags are vX.Y.Z; the modules' tags (events/vX.Y.Z, handlers-sdk/vX.Y.Z) are not its version.
VERSION   ?= $(shell git describe --tags --match 'v[0-9]*' --always --dirty 2>/dev/null || echo dev)
# The nats CLI the micro-stats test drives (bridge/service); it fails, never skips, without it.
NATS_CLI_VERSION := v0.5.0
NATS_CLI  ?= $(shell $(GO) env GOPATH)/bin/nats
BIN       ?= bin/bridge

.PHONY: all build smoke test test-short node-deps nats-cli lint fuzz bench bench-micro scenarios demo dev emulator clean tag

all: lint test

# The release build: the Dockerfile runs this target, CI builds and starts it.
# Any VERSION runs (dev, a commit hash, a semver).
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN) ./cmd/bridge

# Builds the release binary and starts `bridge dev` and `bridge run` from it
# until ready, then stops them with SIGTERM (.ci/smoke).
smoke: build
	.ci/smoke $(BIN)

# Node packages come from committed lockfiles (npm ci); the conformance test and
# the Node example fail, never skip, when they are missing.
node-deps:
	@for d in $(NODE_DIRS); do \
	  if [ -f $$d/package-lock.json ] && { [ ! -d $$d/node_modules ] || [ $$d/package-lock.json -nt $$d/node_modules ]; }; then \
	    echo "npm ci --prefix $$d"; npm ci --prefix $$d --no-audit --no-fund || exit 1; touch $$d/node_modules; \
	  fi; \
	done

# Installs the nats CLI into $(NATS_CLI) unless that version is already there.
nats-cli:
	@if ! "$(NATS_CLI)" --version 2>/dev/null | grep -qx '$(NATS_CLI_VERSION)'; then \
	  echo "go install github.com/nats-io/natscli/nats@$(NATS_CLI_VERSION)"; \
	  GOWORK=off GOBIN="$(dir $(NATS_CLI))" $(GO) install github.com/nats-io/natscli/nats@$(NATS_CLI_VERSION) || exit 1; \
	fi

test: node-deps nats-cli
	$(GO) vet $(PKGS)
	PE_NATS_CLI="$(NATS_CLI)" $(GO) test -race -count=1 -timeout 15m $(PKGS)

test-short:
	$(GO) test -count=1 -short $(PKGS)

lint: $(STATICCHECK)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	@missing=$$(for f in $$(git ls-files '*go.mod' ':!:tools/go.mod'); do d=$$(dirname $$f); [ "$$d" = . ] || d=./$$d; \
	  case " $(MODULES) " in *" $$d "*) ;; *) echo $$f;; esac; done); \
	  test -z "$$missing" || { echo "go.work does not use: $$missing"; exit 1; }
	$(GO) vet $(PKGS)
	$(GO) vet -tags scenarios ./bridge/
	$(STATICCHECK) $(PKGS)
	@for m in $(MODULES); do echo "go mod tidy -diff ($$m)"; (cd $$m && GOWORK=off $(GO) mod tidy -diff) || exit 1; done

$(STATICCHECK): tools/go.mod tools/go.sum
	GOWORK=off $(GO) build -modfile=tools/go.mod -o $@ honnef.co/go/tools/cmd/staticcheck

# Runs every fuzz target of the project for FUZZTIME each.
fuzz:
	@set -e; for pkg in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test $$pkg -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME); \
	  done; \
	done

# The side-by-side benchmark of issue 6 (bridge vs official worker vs direct Go worker).
bench: node-deps
	$(GO) run ./bench $(BENCHFLAGS)

# The issue-9 scenarios at full scale (several minutes; see bridge/scenario_full_test.go).
scenarios:
	$(GO) test -race -tags scenarios -count=1 -timeout 30m -run 'TestScenario' -v ./bridge/ | grep -E 'FIGURE|^(---|ok|FAIL|PASS)'

# Go micro-benchmarks, 6 runs each, summarised with benchstat.
bench-micro:
	$(GO) test -run '^$$' -bench . -benchmem -count 6 ./events/ ./engine/... ./bridge/... | tee /tmp/pe-bench.txt
	$(BENCHSTAT) /tmp/pe-bench.txt

demo:
	$(GO) run ./cmd/bridge dev --demo

dev:
	$(GO) run ./cmd/bridge dev

emulator:
	$(GO) run ./cmd/bridge emulator --addr 127.0.0.1:8000

# Tags a release of one of the separately versioned modules, e.g.
# make tag MODULE=handlers-sdk VERSION=v0.2.0 creates handlers-sdk/v0.2.0
# (see "Modules and releases" in handlers-sdk/README.md). It does not push.
tag:
	@./tools/tag-module.sh "$(MODULE)" "$(VERSION)"

clean:
	rm -rf bin
