package simtest_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/nodeagent/driver"
	"github.com/corral-dev/corral/simtest"
)

// The checkers have teeth: each test below breaks one invariant on
// purpose and expects its checker to say so.

// TestCheckerSeesTwoCopies: without the fencing lease, the guest of an
// agent killed (-9) keeps running while the coordinator starts it
// elsewhere; the host watch sees both copies at once.
func TestCheckerSeesTwoCopies(t *testing.T) {
	simtest.Run(t, 11, func(t *testing.T) {
		cfg := twoNodes(11)
		cfg.NoLease = true
		c := simtest.New(t, cfg)
		k := simtest.NewChecker(c)
		cl := c.Client()
		if _, err := cl.CreateGuest(c.Context(), process("web")); err != nil {
			t.Fatal(err)
		}
		g := waitGuest(c, cl, "web", "running", func(g *api.GuestView) bool { return g.Status == api.StatusRunning })
		a := c.Agent(g.Node)
		a.Stop()
		waitGuest(c, cl, "web", "running elsewhere", func(v *api.GuestView) bool {
			return v.Node != g.Node && v.Status == api.StatusRunning
		})
		d := k.Duplicates()
		if len(d) == 0 || !strings.Contains(d[0], "guest web runs unfrozen on [n1 n2]") {
			t.Fatalf("duplicates = %q, want web on n1 and n2 at once", d)
		}
		// The returning agent stops its copy: the hosts converge.
		if err := a.Start(); err != nil {
			t.Fatal(err)
		}
		if err := k.CheckConverged(c.Context(), time.Minute); err != nil {
			t.Error(err)
		}
	})
}

// TestCheckerFencedIsOneCopy: the same cut with fencing on: the lease
// freezes the cut-off copy before the node is declared down, so there is
// never a second active copy, and after the heal the hosts converge.
func TestCheckerFencedIsOneCopy(t *testing.T) {
	simtest.Run(t, 12, func(t *testing.T) {
		c := simtest.New(t, twoNodes(12))
		k := simtest.NewChecker(c)
		cl := c.Client()
		if _, err := cl.CreateGuest(c.Context(), process("web")); err != nil {
			t.Fatal(err)
		}
		g := waitGuest(c, cl, "web", "running", func(g *api.GuestView) bool { return g.Status == api.StatusRunning })
		a := c.Agent(g.Node)
		a.Stop() // as kill -9: only the lease can fence now
		waitGuest(c, cl, "web", "running elsewhere", func(v *api.GuestView) bool {
			return v.Node != g.Node && v.Status == api.StatusRunning
		})
		if !a.Host.Running("web") || a.Host.Active("web") {
			t.Errorf("the dead agent's copy: running %v, active %v; want running and frozen", a.Host.Running("web"), a.Host.Active("web"))
		}
		if err := a.Start(); err != nil {
			t.Fatal(err)
		}
		if err := k.CheckConverged(c.Context(), time.Minute); err != nil {
			t.Error(err)
		}
		if d := k.Duplicates(); len(d) > 0 {
			t.Errorf("two copies: %q", d)
		}
	})
}

// TestCheckerSeesStaleRead: a stale read on a server cut off the others
// misses a write acknowledged before it; the rule, applied to it, says
// so. A default read there refuses instead.
func TestCheckerSeesStaleRead(t *testing.T) {
	simtest.Run(t, 13, func(t *testing.T) {
		c := simtest.New(t, twoNodes(13))
		k := simtest.NewChecker(c)
		f := c.Follower()
		c.PartitionServers(f.ID)
		leader := c.WaitLeader()
		res, err := c.Client(leader).CreateGuest(c.Context(), process("web"))
		if err != nil {
			t.Fatal(err)
		}
		k.Acked("create", "web", res)
		ctx := c.Context()
		if err := k.CheckRead(ctx, f, "client", "web"); err != nil {
			t.Errorf("default read on the cut-off %s: %v, want a refusal", f.ID, err)
		}
		if err := k.CheckReadQuery(ctx, f, "client", "web", "stale=1"); err == nil || !strings.Contains(err.Error(), "stale read") {
			t.Errorf("stale read on the cut-off %s: %v, want a stale-read violation", f.ID, err)
		}
		if err := k.CheckRead(ctx, leader, "client", "web"); err != nil {
			t.Errorf("default read on the leader: %v", err)
		}
		if s := k.Stats(); s.StaleReads != 1 || s.ReadsRefused != 1 || s.Reads != 3 {
			t.Errorf("stats = %+v, want 3 reads, 1 refused, 1 stale", s)
		}
	})
}

// TestCheckerSeesOrphan: a guest a host runs that the log does not name
// is an orphan until an agent removes it.
func TestCheckerSeesOrphan(t *testing.T) {
	simtest.Run(t, 14, func(t *testing.T) {
		c := simtest.New(t, twoNodes(14))
		k := simtest.NewChecker(c)
		a := c.Agents()[0]
		a.Stop()
		spec := driver.Spec{Guest: cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "stray"}, Command: []string{"/bin/true"}}
		if _, err := a.Host.Start(context.Background(), spec); err != nil {
			t.Fatal(err)
		}
		v, err := k.Converged(c.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(v.Orphans) != 2 || !strings.Contains(v.Orphans[0], "stray") {
			t.Errorf("orphans = %q, want the stray guest and its group", v.Orphans)
		}
		if err := a.Start(); err != nil {
			t.Fatal(err)
		}
		if err := k.CheckConverged(c.Context(), time.Minute); err != nil {
			t.Errorf("after the agent's start: %v", err)
		}
	})
}
