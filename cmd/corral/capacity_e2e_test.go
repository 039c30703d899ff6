package main

import (
	"encoding/json"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/corral-dev/corral/coordinator/api"
)

// TestDevStoppedGuestReleasesCapacity: on a real agent, a guest that is
// stopped keeps its node but gives up its vCPUs, so a guest waiting for
// them is placed and runs; starting the first again while its vCPUs are
// taken places it anew (it says it prefers its last node), and once they
// are free again it goes back there and runs. A --no-start guest holds
// nothing, and --reserve keeps a stopped guest's share.
func TestDevStoppedGuestReleasesCapacity(t *testing.T) {
	if testing.Short() {
		t.Skip("starts corral dev as a process")
	}
	p, _ := startAgentDev(t, []string{"big", "next", "idle", "kept"})
	// The whole node's shared vCPUs under the default overcommit.
	var n api.NodeDetail
	if err := json.Unmarshal([]byte(p.ok("node", "show", "test-node", "-o", "json")), &n); err != nil {
		t.Fatal(err)
	}
	if n.CPUOvercommit != 4 || n.CapacityVCPUs != (runtime.NumCPU()-n.ReserveCPUs)*4 {
		t.Fatalf("node capacity %d vCPUs at overcommit %v; want %d CPUs × 4", n.CapacityVCPUs, n.CPUOvercommit, runtime.NumCPU()-n.ReserveCPUs)
	}
	if out := p.ok("node", "show", "test-node"); !strings.Contains(out, "shared vCPUs per CPU") {
		t.Errorf("node show does not say how vCPUs are counted:\n%s", out)
	}
	all := strconv.Itoa(n.CapacityVCPUs)
	p.ok("guest", "create", "big", "--driver", "process", "--memory", "16MiB", "--vcpus", all, "--", "/bin/sleep", "1000")
	waitGuest(t, p, "big", "running", func(g *api.GuestView) bool { return g.Status == api.StatusRunning })
	p.ok("guest", "create", "idle", "--driver", "process", "--memory", "16MiB", "--no-start", "--", "/bin/sleep", "1000")
	p.ok("guest", "create", "next", "--driver", "process", "--memory", "16MiB", "--", "/bin/sleep", "1000")
	waitGuest(t, p, "next", "pending for want of a vCPU", func(g *api.GuestView) bool {
		return g.Status == api.StatusPending && strings.Contains(strings.Join(g.Unplaced, "\n"), "vCPU")
	})
	if g := guestView(t, p, "idle"); g.Node != "" || g.HoldsCapacity {
		t.Errorf("a --no-start guest was placed on %q (holds capacity: %v)", g.Node, g.HoldsCapacity)
	}

	p.ok("guest", "stop", "big")
	waitGuest(t, p, "next", "placed and running once big stopped", func(g *api.GuestView) bool { return g.Status == api.StatusRunning })
	if g := guestView(t, p, "big"); g.Node != "test-node" || g.HoldsCapacity {
		t.Errorf("stopped big: node %q, holds capacity %v; want its node kept and its capacity released", g.Node, g.HoldsCapacity)
	}
	if out := p.ok("guest", "show", "big"); !strings.Contains(out, "released") {
		t.Errorf("guest show of a stopped guest does not say its capacity is released:\n%s", out)
	}

	p.ok("guest", "start", "big")
	big := waitGuest(t, p, "big", "pending again, preferring its node", func(g *api.GuestView) bool {
		return g.Status == api.StatusPending && g.LastNode == "test-node"
	})
	if big.Node != "" {
		t.Errorf("big is still on %q", big.Node)
	}
	if out := p.ok("guest", "show", "big"); !strings.Contains(out, "last ran on test-node") {
		t.Errorf("guest show of a re-placed guest does not name its last node:\n%s", out)
	}
	p.ok("guest", "destroy", "next")
	waitGuest(t, p, "big", "back on its node and running", func(g *api.GuestView) bool {
		return g.Status == api.StatusRunning && g.Node == "test-node"
	})

	// A reservation is kept while stopped: with big running on every
	// vCPU, a reserved guest waits; once big stops and kept is placed,
	// big cannot start beside it.
	p.ok("guest", "create", "kept", "--driver", "process", "--memory", "16MiB", "--vcpus", "1", "--reserve", "--no-start", "--", "/bin/sleep", "1000")
	p.ok("guest", "stop", "big")
	waitGuest(t, p, "kept", "placed, holding its reservation", func(g *api.GuestView) bool {
		return g.Node == "test-node" && g.HoldsCapacity && g.Desired == api.DesiredStopped
	})
	p.ok("guest", "start", "big")
	waitGuest(t, p, "big", "pending behind the reservation", func(g *api.GuestView) bool {
		return g.Status == api.StatusPending && strings.Contains(strings.Join(g.Unplaced, "\n"), "vCPU")
	})
}
