// Package testutil holds test helpers shared by the packages of this module.
// It is imported only from _test.go files and imports nothing of the module.
package testutil

import (
	"context"
	"testing"
	"time"
)

// Eventually polls f every 10 ms until it returns nil, and fails the test
// with f's last error when timeout passes first. It is the module's one way
// to wait for a condition; never sleep for timing in tests.
func Eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("not within %s: %v", timeout, err)
		case <-tick.C:
		}
	}
}
