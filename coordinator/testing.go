package coordinator

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/bus"
)

// TestConfig returns a configuration for a server in a test: loopback
// addresses on free ports, data under dir, fast raft timeouts.
func TestConfig(tb testing.TB, id, dir string) Config {
	tb.Helper()
	cfg := DefaultConfig(filepath.Join(dir, id))
	cfg.ID = id
	cfg.RaftAddr = "127.0.0.1:0"
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.NATS = bus.EmbeddedConfig{Port: -1}
	cfg.Insecure = true
	cfg.Raft.HeartbeatTimeout = 200 * time.Millisecond
	cfg.Raft.ElectionTimeout = 200 * time.Millisecond
	cfg.Raft.LeaderLease = 100 * time.Millisecond
	if os.Getenv("CORRAL_TEST_LOG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return cfg
}

// StartTestServer starts a server and stops it when the test ends.
func StartTestServer(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	s, err := New(cfg, Deps{})
	if err != nil {
		tb.Fatalf("start server %s: %v", cfg.ID, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx)
	}()
	tb.Cleanup(func() {
		cancel()
		<-done
		s.Close()
	})
	return s
}

// WaitFor polls cond every few milliseconds until it holds or timeout
// passes, then fails the test with what.
func WaitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
