package simtest_test

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator"
	"github.com/corral-dev/corral/simtest"
)

// TestReadsAfterRestart: every server stops and starts again on its disk
// (a whole-cluster restart); from the first moment each answers, no
// consistent read on it shows a state older than the last acknowledged
// write: it refuses (catching up, no leader) until it can answer with the
// truth.
func TestReadsAfterRestart(t *testing.T) {
	simtest.Run(t, 31, func(t *testing.T) {
		c := simtest.New(t, twoNodes(31))
		k := simtest.NewChecker(c)
		ctx := c.Context()
		var names []string
		for i := range 5 {
			name := fmt.Sprintf("g%d", i)
			res, err := c.Client().CreateGuest(ctx, process(name))
			if err != nil {
				t.Fatal(err)
			}
			k.Acked("create", name, res)
			names = append(names, name)
		}
		for _, s := range c.Servers() {
			s.Stop()
		}
		for _, s := range c.Servers() {
			if err := s.Start(); err != nil {
				t.Fatal(err)
			}
		}
		// Read every 10ms on every server from the instant they are
		// back, until each has answered every guest truthfully.
		answered := map[string]bool{}
		deadline := time.Now().Add(30 * time.Second)
		for len(answered) < len(c.Servers()) && time.Now().Before(deadline) {
			for _, s := range c.Servers() {
				before := k.Stats()
				for _, name := range names {
					if err := k.CheckRead(ctx, s, "client", name); err != nil {
						t.Fatal(err)
					}
				}
				if after := k.Stats(); after.ReadsRefused == before.ReadsRefused {
					answered[s.ID] = true
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		st := k.Stats()
		t.Logf("after the restart: %d reads, %d refused, %d stale; answered: %v", st.Reads, st.ReadsRefused, st.StaleReads, slices.Sorted(maps.Keys(answered)))
		if len(answered) < len(c.Servers()) {
			t.Errorf("only %v answered within 30s of the restart", answered)
		}
		if st.ReadsRefused == 0 {
			t.Error("no read was refused right after the restart: the loop did not start early enough to test anything")
		}
	})
}

// TestCompactedFollowerCatchesUp: a follower is down while the others
// commit far more than raft keeps after a snapshot; back, it catches up
// from a snapshot, and its event store must still hold every event, the
// same as the others', with nothing lost.
func TestCompactedFollowerCatchesUp(t *testing.T) {
	simtest.Run(t, 32, func(t *testing.T) {
		cfg := twoNodes(32)
		cfg.Server = func(c *coordinator.Config) {
			c.Raft.SnapshotThreshold = 32
			c.Raft.TrailingLogs = 8
		}
		c := simtest.New(t, cfg)
		k := simtest.NewChecker(c)
		ctx := c.Context()
		f := c.Follower()
		f.Stop()
		for i := range 40 {
			name := fmt.Sprintf("g%d", i)
			res, err := c.Client().CreateGuest(ctx, process(name))
			if err != nil {
				t.Fatal(err)
			}
			k.Acked("create", name, res)
		}
		for _, a := range c.Agents() {
			a.Stop()
		}
		// raft looks for a snapshot to take every 120s or so.
		c.Advance(300 * time.Second)
		if err := f.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(time.Minute)
		for {
			if err := k.CheckLogs(ctx); err != nil {
				// Right after the snapshot install the follower's store
				// starts after it; the older events are copied from a
				// peer in the background.
				if !strings.Contains(err.Error(), "no longer retained") || time.Now().After(deadline) {
					t.Fatal(err)
				}
				c.Advance(100 * time.Millisecond)
				continue
			}
			if k.LogsEven() || time.Now().After(deadline) {
				break
			}
			c.Advance(100 * time.Millisecond)
		}
		if err := k.CheckAcked(); err != nil {
			t.Error(err)
		}
		if err := k.CheckRead(ctx, f, "client", "g39"); err != nil {
			t.Error(err)
		}
		t.Logf("log at %d", k.Stats().LogIndex)
	})
}
