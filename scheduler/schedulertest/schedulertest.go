// Package schedulertest builds scheduler fixtures for tests: nodes and guests
// with readable defaults, real snapshots, and Commit, which applies a plan the
// way the coordinator FSM does (CheckPlacement before each placement). It is
// test support: only _test.go files may import it.
package schedulertest

import "github.com/corral-dev/corral/scheduler"

// TB is the part of testing.TB the helpers use; *testing.T, *testing.B and
// rapid's *rapid.T all satisfy it.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Byte sizes for fixtures.
const (
	MiB uint64 = 1 << 20
	GiB uint64 = 1 << 30
)

// NodeBuilder builds a scheduler.Node. Node sets the defaults: up, eligible,
// driver "process", CPUs 0-7, 16 GiB, no reserve, no labels.
type NodeBuilder struct{ n scheduler.Node }

// Node starts a node with the defaults.
func Node(id string) *NodeBuilder {
	return &NodeBuilder{n: scheduler.Node{
		ID:          id,
		Status:      scheduler.NodeUp,
		Drivers:     []string{"process"},
		CPUs:        seq(8),
		MemoryBytes: 16 * GiB,
	}}
}

// CPUs gives the node CPUs 0..n-1.
func (b *NodeBuilder) CPUs(n int) *NodeBuilder { b.n.CPUs = seq(n); return b }

// CPUSet gives the node exactly these CPU ids; it panics if s does not parse.
func (b *NodeBuilder) CPUSet(s string) *NodeBuilder { b.n.CPUs = MustCPUSet(s); return b }

// Memory sets the node's total memory.
func (b *NodeBuilder) Memory(bytes uint64) *NodeBuilder { b.n.MemoryBytes = bytes; return b }

// Reserve sets the host reserve.
func (b *NodeBuilder) Reserve(cpus int, mem uint64) *NodeBuilder {
	b.n.ReservedCPUs, b.n.ReservedMemoryBytes = cpus, mem
	return b
}

// Drivers replaces the node's drivers.
func (b *NodeBuilder) Drivers(ds ...string) *NodeBuilder { b.n.Drivers = ds; return b }

// Label sets one node label.
func (b *NodeBuilder) Label(k, v string) *NodeBuilder {
	if b.n.Labels == nil {
		b.n.Labels = map[string]string{}
	}
	b.n.Labels[k] = v
	return b
}

// Status sets the node status.
func (b *NodeBuilder) Status(s scheduler.NodeStatus) *NodeBuilder { b.n.Status = s; return b }

// Down marks the node down.
func (b *NodeBuilder) Down() *NodeBuilder { return b.Status(scheduler.NodeDown) }

// Eligibility sets the node's eligibility.
func (b *NodeBuilder) Eligibility(e scheduler.Eligibility) *NodeBuilder {
	b.n.Eligibility = e
	return b
}

// Draining marks the node draining.
func (b *NodeBuilder) Draining() *NodeBuilder { return b.Eligibility(scheduler.Draining) }

// Alloc adds a guest already placed on the node.
func (b *NodeBuilder) Alloc(a scheduler.Allocation) *NodeBuilder {
	b.n.Allocations = append(b.n.Allocations, a)
	return b
}

// Build returns the node.
func (b *NodeBuilder) Build() scheduler.Node { return b.n }

// GuestBuilder builds a scheduler.Guest. Guest sets the defaults: driver
// "process", 512 MiB, 1 vCPU, nothing else.
type GuestBuilder struct{ g scheduler.Guest }

// Guest starts a guest with the defaults.
func Guest(name string) *GuestBuilder {
	return &GuestBuilder{g: scheduler.Guest{Name: name, Driver: "process", MemoryBytes: 512 * MiB, VCPUs: 1}}
}

// Driver sets the guest's driver.
func (b *GuestBuilder) Driver(d string) *GuestBuilder { b.g.Driver = d; return b }

// Memory sets the guest's memory.
func (b *GuestBuilder) Memory(bytes uint64) *GuestBuilder { b.g.MemoryBytes = bytes; return b }

// VCPUs sets the guest's vCPU count.
func (b *GuestBuilder) VCPUs(n int) *GuestBuilder { b.g.VCPUs = n; return b }

// Label sets one guest label.
func (b *GuestBuilder) Label(k, v string) *GuestBuilder {
	if b.g.Labels == nil {
		b.g.Labels = map[string]string{}
	}
	b.g.Labels[k] = v
	return b
}

// Constraint adds a constraint; it panics if s does not parse.
func (b *GuestBuilder) Constraint(s string) *GuestBuilder {
	c, err := scheduler.ParseConstraint(s)
	if err != nil {
		panic(err)
	}
	b.g.Constraints = append(b.g.Constraints, c)
	return b
}

// SpreadBy sets the anti-affinity label key.
func (b *GuestBuilder) SpreadBy(k string) *GuestBuilder { b.g.SpreadBy = k; return b }

// CPUSet pins the guest to an explicit cpuset; it panics if s does not parse.
func (b *GuestBuilder) CPUSet(s string) *GuestBuilder { b.g.CPUSet = MustCPUSet(s); return b }

// Pin asks the scheduler for n exclusive CPUs.
func (b *GuestBuilder) Pin(n int) *GuestBuilder { b.g.PinCPUs = n; return b }

// Build returns the guest.
func (b *GuestBuilder) Build() scheduler.Guest { return b.g }

// MustCPUSet parses s or panics; for fixtures only.
func MustCPUSet(s string) scheduler.CPUSet {
	set, err := scheduler.ParseCPUSet(s)
	if err != nil {
		panic(err)
	}
	return set
}

// Snapshot builds a snapshot from nodes, failing tb if they are invalid.
func Snapshot(tb TB, nodes ...scheduler.Node) *scheduler.Snapshot {
	tb.Helper()
	snap, err := scheduler.NewSnapshot(nodes)
	if err != nil {
		tb.Fatalf("schedulertest.Snapshot: %v", err)
	}
	return snap
}

// Commit applies the plan's placements to a copy of snap in order, as the
// coordinator FSM does, and returns the resulting snapshot. Every placement
// must pass CheckPlacement against the state that includes the ones before
// it; tb fails otherwise. snap is not modified.
func Commit(tb TB, snap *scheduler.Snapshot, cfg scheduler.Config, placements []scheduler.Placement) *scheduler.Snapshot {
	tb.Helper()
	for _, p := range placements {
		if err := scheduler.CheckPlacement(snap, p, cfg); err != nil {
			tb.Fatalf("schedulertest.Commit: %v", err)
		}
		snap = With(tb, snap, p.Node, p.Allocation())
	}
	return snap
}

// With returns a copy of snap with a added to node; snap is not modified.
func With(tb TB, snap *scheduler.Snapshot, node string, a scheduler.Allocation) *scheduler.Snapshot {
	tb.Helper()
	old := snap.Nodes()
	nodes := make([]scheduler.Node, len(old))
	copy(nodes, old)
	found := false
	for i := range nodes {
		if nodes[i].ID == node {
			allocs := make([]scheduler.Allocation, len(nodes[i].Allocations), len(nodes[i].Allocations)+1)
			copy(allocs, nodes[i].Allocations)
			nodes[i].Allocations = append(allocs, a)
			found = true
		}
	}
	if !found {
		tb.Fatalf("schedulertest.With: no node %q", node)
	}
	return Snapshot(tb, nodes...)
}

func seq(n int) scheduler.CPUSet {
	s := make(scheduler.CPUSet, n)
	for i := range s {
		s[i] = i
	}
	return s
}
