//go:build tools

// Package tools pins the developer tools (`make lint`, `make bench`) apart
// from the product's dependencies.
package tools

import (
	_ "golang.org/x/perf/cmd/benchstat"
	_ "honnef.co/go/tools/cmd/staticcheck"
)
