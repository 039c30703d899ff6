package simtest_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/simtest"
)

// TestLeaderDiskWriteFailure: the leader's raft log writes fail (a full
// or failing disk). Writes through it must not be acknowledged while its
// disk fails; another server takes over, writes through any server
// succeed again, and once the disk is back the server catches up with
// nothing lost.
func TestLeaderDiskWriteFailure(t *testing.T) {
	simtest.Run(t, 21, func(t *testing.T) {
		c := simtest.New(t, twoNodes(21))
		k := simtest.NewChecker(c)
		ctx := c.Context()
		old := c.WaitLeader()
		old.Disk.SetFailing(true)

		cl := c.Client(old)
		cl.Retry = 2 * time.Second
		began := time.Now()
		res, err := cl.CreateGuest(ctx, process("web"))
		took := time.Since(began)
		t.Logf("create through %s with its disk failing: %v, %v after %v", old.ID, res, err, took)
		if err == nil {
			// Acknowledged: then it must be in the log, which the checks
			// below prove or refute.
			k.Acked("create", "web", res)
		} else {
			var ae *api.APIError
			if !errors.As(err, &ae) || ae.Code != api.CodeUnavailable {
				t.Errorf("create through %s with its disk failing: %v; want an unavailable error that says why", old.ID, err)
			}
		}
		c.Eventually("another leader", 20*time.Second, func() bool {
			l := c.Leader()
			return l != nil && l != old
		})
		res, err = c.Client().CreateGuest(ctx, process("db"))
		if err != nil {
			t.Fatalf("create with another leader: %v", err)
		}
		k.Acked("create", "db", res)
		if old.Disk.FailedWrites() == 0 {
			t.Error("no log write failed on the failing disk")
		}
		// A server whose disk fails must not disturb the others: no
		// election storm while it stays broken.
		changes, leader := 0, c.Leader()
		for range 300 {
			c.Advance(100 * time.Millisecond)
			if l := c.Leader(); l != nil && l != leader {
				changes++
				leader = l
			}
		}
		if changes > 1 {
			t.Errorf("%d leader changes in 30s while %s's disk failed, want at most one", changes, old.ID)
		}
		t.Logf("30s with %s's disk failing: %d leader changes, %d failed log writes", old.ID, changes, old.Disk.FailedWrites())
		old.Disk.SetFailing(false)
		deadline := time.Now().Add(time.Minute)
		for {
			if err := k.CheckLogs(ctx); err != nil {
				t.Fatal(err)
			}
			if k.LogsEven() || time.Now().After(deadline) {
				break
			}
			c.Advance(100 * time.Millisecond)
		}
		if err := k.CheckAcked(); err != nil {
			t.Error(err)
		}
		if err := k.CheckRead(ctx, old, "client", "db"); err != nil {
			t.Error(err)
		}
	})
}

// TestFullDiskWhileTruncating: a deposed leader holds entries the new
// leader never committed; back in touch, it must delete them and append
// the new leader's, and its disk is full: the delete succeeds (bbolt
// reuses pages it has), the append fails. Once the disk has room again
// it must catch up.
func TestFullDiskWhileTruncating(t *testing.T) {
	simtest.Run(t, 22, func(t *testing.T) {
		c := simtest.New(t, twoNodes(22))
		ctx := c.Context()
		old := c.WaitLeader()
		c.PartitionServers(old.ID)
		// Accepted by the cut-off leader into its own log, never committed.
		short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		cl := c.Client(old)
		cl.Retry = 0
		cl.CreateGuest(short, process("lost"))
		cancel()
		c.Eventually("a leader among the others", 20*time.Second, func() bool {
			l := c.Leader()
			return l != nil && l != old
		})
		for i := range 5 {
			if _, err := c.Client(c.Leader()).CreateGuest(ctx, process(fmt.Sprintf("g%d", i))); err != nil {
				t.Fatal(err)
			}
		}
		old.Disk.SetFull(true)
		c.HealAll()
		c.Advance(5 * time.Second)
		old.Disk.SetFull(false)
		caught := false
		for end := time.Now().Add(time.Minute); time.Now().Before(end) && !caught; c.Advance(100 * time.Millisecond) {
			l := c.Leader()
			caught = l != nil && l != old && old.Coordinator().AppliedIndex() >= l.Coordinator().AppliedIndex()
		}
		if !caught {
			t.Errorf("a minute after its disk had room again, %s is still behind: %s", old.ID, c.Describe())
		}
	})
}
