package scheduler_test

// An independent, deliberately naive model of the scheduler's rules. The
// golden and property tests judge Schedule and CheckPlacement against it, so
// it must not share their code: it rereads DESIGN's rules straight from the
// snapshot's nodes and allocations.

import (
	"fmt"
	"math"
	"slices"

	"github.com/corral-dev/corral/scheduler"
)

// use is a node's capacity and what its allocations hold.
type use struct {
	memUsed, memCap   int64
	shared, sharedCap int64
	pinned            scheduler.CPUSet // every pinned CPU on the node
	pinnedAlloc       int64            // pinned CPUs outside the host reserve
	alloc             int64            // CPUs minus reserve
}

func floorRatio(x int64, r float64) int64 {
	if x <= 0 {
		return 0
	}
	return int64(math.Floor(float64(x) * r))
}

func useOf(n *scheduler.Node, cfg scheduler.Config) use {
	u := use{
		memCap: floorRatio(int64(n.MemoryBytes-n.ReservedMemoryBytes), cfg.MemoryOvercommit),
		alloc:  int64(len(n.CPUs) - n.ReservedCPUs),
	}
	for _, a := range n.Allocations {
		u.memUsed += int64(a.MemoryBytes)
		if len(a.CPUs) == 0 {
			u.shared += int64(a.VCPUs)
		}
		u.pinned = append(u.pinned, a.CPUs...)
	}
	slices.Sort(u.pinned)
	reserved := n.CPUs[:n.ReservedCPUs]
	for _, c := range u.pinned {
		if !slices.Contains(reserved, c) {
			u.pinnedAlloc++
		}
	}
	u.sharedCap = floorRatio(u.alloc-u.pinnedAlloc, cfg.CPUOvercommit)
	return u
}

// overCommitted describes how n breaks its capacity, or returns "".
func overCommitted(n *scheduler.Node, cfg scheduler.Config) string {
	u := useOf(n, cfg)
	switch {
	case u.memUsed > u.memCap:
		return fmt.Sprintf("node %s: memory %d > capacity %d", n.ID, u.memUsed, u.memCap)
	case u.shared > u.sharedCap:
		return fmt.Sprintf("node %s: shared vCPUs %d > capacity %d", n.ID, u.shared, u.sharedCap)
	}
	for i := 1; i < len(u.pinned); i++ {
		if u.pinned[i] == u.pinned[i-1] {
			return fmt.Sprintf("node %s: cpu %d pinned twice", n.ID, u.pinned[i])
		}
	}
	return ""
}

// modelFits reports whether guest g could be added to node n as it is.
func modelFits(n *scheduler.Node, g *scheduler.Guest, cfg scheduler.Config) bool {
	if n.Status != scheduler.NodeUp || n.Eligibility != scheduler.Eligible {
		return false
	}
	if !slices.Contains(n.Drivers, g.Driver) {
		return false
	}
	for _, c := range g.Constraints {
		v, ok := n.Labels[c.Key]
		if (c.Op == scheduler.OpEqual) != (ok && v == c.Value) {
			return false
		}
	}
	for _, a := range n.Allocations {
		if k := g.SpreadBy; k != "" {
			if v, ok := a.Labels[k]; ok && v == g.Labels[k] {
				return false
			}
		}
		if k := a.SpreadBy; k != "" {
			if v, ok := g.Labels[k]; ok && v == a.Labels[k] {
				return false
			}
		}
	}
	u := useOf(n, cfg)
	if u.memUsed+int64(g.MemoryBytes) > u.memCap {
		return false
	}
	pin := int64(len(g.CPUSet) + g.PinCPUs)
	if pin == 0 {
		return u.shared+int64(g.VCPUs) <= u.sharedCap
	}
	free := 0
	for i, c := range n.CPUs {
		if i >= n.ReservedCPUs && !slices.Contains(u.pinned, c) {
			free++
		}
	}
	for _, c := range g.CPUSet {
		i := slices.Index(n.CPUs, c)
		if i < n.ReservedCPUs || slices.Contains(u.pinned, c) {
			return false
		}
	}
	return int64(free) >= pin && u.shared <= floorRatio(u.alloc-u.pinnedAlloc-pin, cfg.CPUOvercommit)
}
