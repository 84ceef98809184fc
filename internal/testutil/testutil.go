// Package testutil holds test helpers shared by the packages of this module.
// It is imported only from _test.go files and imports nothing of the module.
package testutil

import (
	"bytes"
	"context"
	"fmt"
	"sync"
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

// Until is Eventually for a condition without a reason: it fails the test
// with "waiting for <what>" when cond does not hold within timeout.
func Until(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	Eventually(t, timeout, func() error {
		if cond() {
			return nil
		}
		return fmt.Errorf("waiting for %s", what)
	})
}

// Buffer is a bytes.Buffer safe for concurrent writers (a log sink of
// several goroutines) and readers. It is the module's one such buffer.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
