#!/usr/bin/env bash
# Prints what a handler author's program pulls in: a fresh module whose
# main.go imports only the handler SDK and nats.go, with the pe-bridge modules
# replaced by this checkout (they are not on the module proxy yet). See
# handlers-sdk/README.md, "Modules and releases".
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat >"$dir/main.go" <<'GO'
package main

import (
	"context"

	"github.com/nats-io/nats.go"
	handler "github.com/pe-bridge/pe-bridge/handlers-sdk"
)

func main() {
	nc, _ := nats.Connect(nats.DefaultURL)
	_ = handler.Serve(context.Background(), nc, "t", handler.HandlerFunc(func(context.Context, *handler.Task) (any, error) { return nil, nil }))
}
GO
cat >"$dir/go.mod" <<GOMOD
module example.com/handler

go 1.26.0

require github.com/pe-bridge/pe-bridge/handlers-sdk v0.1.0

replace (
	github.com/pe-bridge/pe-bridge/events => $repo/events
	github.com/pe-bridge/pe-bridge/handlers-sdk => $repo/handlers-sdk
)
GOMOD
cd "$dir"
export GOWORK=off
go mod tidy
echo "modules (go list -m all): $(go list -m all | wc -l)"
echo "module graph edges (go mod graph): $(go mod graph | wc -l)"
echo "go.sum lines: $(wc -l <go.sum)"
echo "nats-server in go.sum: $(grep -c nats-server go.sum || true)"
