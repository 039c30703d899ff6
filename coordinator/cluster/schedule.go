package cluster

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/scheduler"
)

// This file is the seam between the state machine and the pure scheduler:
// it turns State into the scheduler's view types, and picks the work of one
// scheduling pass (pending guests, guests of lost nodes, drain moves).

// SchedulerConfig returns the placement policy in force.
func (s *State) SchedulerConfig() scheduler.Config {
	cfg := scheduler.DefaultConfig()
	if s.Scheduler.Algorithm != "" {
		cfg.Algorithm = scheduler.Algorithm(s.Scheduler.Algorithm)
		cfg.CPUOvercommit = s.Scheduler.CPUOvercommit
		cfg.MemoryOvercommit = s.Scheduler.MemoryOvercommit
	}
	return cfg
}

// BridgeLabel is set ("yes"), in the scheduler's view only, on a node
// whose agent runs a guest bridge (corral agent --bridge); a guest created
// with --network bridge is constrained to such nodes.
const BridgeLabel = "corral/bridge"

// schedGuest converts a guest's definition into what the scheduler reads.
func schedGuest(d *events.GuestDefined) (scheduler.Guest, error) {
	cons, err := scheduler.ParseConstraints(d.Constraints)
	if err != nil {
		return scheduler.Guest{}, fmt.Errorf("%w: %s", events.ErrInvalid, strings.TrimPrefix(err.Error(), "corral: "))
	}
	var cpus scheduler.CPUSet
	if d.CPUSet != "" {
		if cpus, err = scheduler.ParseCPUSet(d.CPUSet); err != nil {
			return scheduler.Guest{}, fmt.Errorf("%w: %s", events.ErrInvalid, strings.TrimPrefix(err.Error(), "corral: "))
		}
	}
	if d.Network == events.NetworkBridge {
		// A guest on the bridge goes only where an agent runs one.
		cons = append(cons, scheduler.Constraint{Key: BridgeLabel, Op: scheduler.OpEqual, Value: "yes"})
	}
	g := scheduler.Guest{
		Name: d.Name, Driver: d.Driver, MemoryBytes: uint64(d.MemoryBytes), VCPUs: d.VCPUs,
		Labels: d.Labels, Constraints: cons, SpreadBy: d.SpreadBy, CPUSet: cpus, PinCPUs: d.PinCPUs,
	}
	if err := g.Validate(); err != nil {
		return scheduler.Guest{}, fmt.Errorf("%w: %s", events.ErrInvalid, strings.TrimPrefix(err.Error(), "corral: "))
	}
	return g, nil
}

func allocation(g *Guest, balloon bool) scheduler.Allocation {
	a := scheduler.Allocation{Guest: g.Name, MemoryBytes: uint64(g.MemoryBytes), VCPUs: g.VCPUs, Labels: g.Labels, SpreadBy: g.SpreadBy}
	if m := g.PlacementMemory(balloon); m > 0 {
		a.MemoryBytes = uint64(m)
	}
	if g.CPUs != "" {
		a.CPUs, _ = scheduler.ParseCPUSet(g.CPUs)
	}
	return a
}

// schedNode converts a node and the guests on it, leaving out the guests in
// skip (those about to move).
func (s *State) schedNode(n *Node, skip map[string]bool) scheduler.Node {
	sn := scheduler.Node{
		ID: n.ID, Status: scheduler.NodeUp, MemoryBytes: uint64(n.MemoryBytes),
		ReservedCPUs: n.ReserveCPUs, ReservedMemoryBytes: uint64(n.ReserveMemoryBytes),
		Labels: maps.Clone(n.Labels), Drivers: slices.Sorted(maps.Keys(n.Drivers)),
	}
	if sn.Labels == nil {
		sn.Labels = map[string]string{}
	}
	sn.Labels[NodeLabel] = n.ID // for avoid (restart.go)
	if n.Bridge != "" {
		sn.Labels[BridgeLabel] = "yes"
	}
	if n.Status != NodeStatusUp {
		sn.Status = scheduler.NodeDown
	}
	switch n.Eligibility {
	case events.Ineligible:
		sn.Eligibility = scheduler.Ineligible
	case events.Draining:
		sn.Eligibility = scheduler.Draining
	}
	sn.CPUs = make(scheduler.CPUSet, n.CPUs)
	for i := range sn.CPUs {
		sn.CPUs[i] = i
	}
	on := s.GuestsOn(n.ID)
	if len(on) > 0 {
		// At most this many: growing by appends copies them over and over.
		sn.Allocations = make([]scheduler.Allocation, 0, len(on))
	}
	for _, name := range on {
		if g := s.Guests[name]; !skip[name] && holdsCapacity(g) {
			sn.Allocations = append(sn.Allocations, allocation(g, s.Scheduler.BalloonMemory))
		}
	}
	for _, g := range s.migratingOn(n.ID) {
		sn.Allocations = append(sn.Allocations, migrationAllocation(g, s.Scheduler.BalloonMemory))
	}
	if len(sn.Allocations) == 0 {
		sn.Allocations = nil // as before any guest held capacity here
	}
	return sn
}

// schedNodes returns the scheduler's view of every node, leaving out the
// guests in skip. The nodes share their allocation lists with the state's
// cache; the scheduler only reads them.
func (s *State) schedNodes(skip map[string]bool) []scheduler.Node {
	nodes := make([]scheduler.Node, 0, len(s.Nodes))
	for id, n := range s.Nodes {
		cached := s.sched[id]
		if cached == nil {
			nodes = append(nodes, s.schedNode(n, skip))
			continue
		}
		sn := *cached
		if len(skip) > 0 && s.holdsAny(id, skip) {
			sn.Allocations = slices.DeleteFunc(slices.Clone(sn.Allocations), func(a scheduler.Allocation) bool { return skip[a.Guest] })
		}
		nodes = append(nodes, sn)
	}
	return nodes
}

func (s *State) holdsAny(node string, guests map[string]bool) bool {
	for g := range guests {
		if x, ok := s.Guests[g]; ok && x.Node == node {
			return true
		}
	}
	return false
}

// Snapshot returns the scheduler's view of the whole cluster, leaving out
// the guests in skip.
func (s *State) Snapshot(skip map[string]bool) (*scheduler.Snapshot, error) {
	return scheduler.NewSnapshot(s.schedNodes(skip))
}

// checkPlacement re-checks a placement against the state as it is when the
// placement commits: the target node's capacity, pinned CPUs, constraints
// and anti-affinity. Two plans made from the same snapshot therefore never
// over-commit a node.
func (s *State) checkPlacement(g *Guest, p *events.GuestPlaced) error {
	if _, err := s.node(p.Node); err != nil {
		return err
	}
	sg, err := s.schedGuestOf(g)
	if err != nil {
		return err
	}
	var target scheduler.Node
	if c := s.sched[p.Node]; c != nil {
		target = *c
	} else {
		target = s.schedNode(s.Nodes[p.Node], nil)
	}
	if g.Node == p.Node {
		target.Allocations = slices.DeleteFunc(slices.Clone(target.Allocations), func(a scheduler.Allocation) bool { return a.Guest == g.Name })
	}
	snap, err := scheduler.NewSnapshot([]scheduler.Node{target})
	if err != nil {
		return fmt.Errorf("corral: node %q: %w", p.Node, err)
	}
	pl := scheduler.Placement{Guest: sg, Node: p.Node}
	if p.CPUs != "" {
		if pl.CPUs, err = scheduler.ParseCPUSet(p.CPUs); err != nil {
			return fmt.Errorf("%w: placement cpus: %v", events.ErrInvalid, err)
		}
	}
	if err := scheduler.CheckPlacement(snap, pl, s.SchedulerConfig()); err != nil {
		return fmt.Errorf("%w: %s", api.ErrConflict, strings.TrimPrefix(err.Error(), "corral: "))
	}
	return nil
}

// Work is what one pass has to place: guests in the order they
// should be tried, and the set of those that currently sit on a node.
type Work struct {
	Guests []*Guest
	Moving map[string]bool
	// Drained lists draining nodes with no guests left.
	Drained []string
	// Stalled lists the guests whose migration waits on a node that is
	// down (EndMigrations ends them).
	Stalled []string
}

// Work collects one pass's work as of now: pending guests, every guest on a
// node that is down, and on draining nodes as many guests as the drain's
// parallelism allows (all of them once its deadline passed).
func (s *State) Work(now time.Time) Work {
	w := Work{Guests: s.Pending(), Moving: map[string]bool{}}
	for _, id := range slices.Sorted(maps.Keys(s.Nodes)) {
		n := s.Nodes[id]
		if n.Status != NodeStatusDown && n.Eligibility != events.Draining {
			continue
		}
		on := s.GuestsOn(id)
		for _, g := range s.migratingOn(id) {
			if n.Status == NodeStatusDown {
				w.Stalled = append(w.Stalled, g.Name)
			}
		}
		migrating := 0
		if n.Status != NodeStatusDown {
			// Those migrating away are moving already: in flight, not
			// to be placed again.
			on = slices.DeleteFunc(on, func(name string) bool {
				if s.Guests[name].Migration != nil {
					migrating++
					return true
				}
				return false
			})
		}
		switch {
		case n.Status == NodeStatusDown:
			for _, name := range on {
				w.Guests = append(w.Guests, s.Guests[name])
				w.Moving[name] = true
			}
		case n.Eligibility == events.Draining && n.Drain != nil:
			if len(on) == 0 {
				if migrating == 0 {
					w.Drained = append(w.Drained, id)
				}
				continue
			}
			budget := len(on)
			if n.Drain.MaxParallel > 0 && (n.Drain.Deadline.IsZero() || now.Before(n.Drain.Deadline)) {
				inflight := 0
				for _, g := range s.Guests {
					if g.MovedFrom == id && g.Status == StatusPlaced && g.Desired == DesiredRunning {
						inflight++
					}
				}
				budget = max(0, n.Drain.MaxParallel-inflight-migrating)
			}
			for _, name := range on[:min(budget, len(on))] {
				w.Guests = append(w.Guests, s.Guests[name])
				w.Moving[name] = true
			}
		}
	}
	return w
}

// PlanInput is what a scheduling pass reads from the state; it is taken
// under the state lock and scheduled outside it.
type PlanInput struct {
	Nodes   []scheduler.Node
	Pending []scheduler.Guest
	Config  scheduler.Config
	Seed    uint64
}

// PlanInput collects the scheduler's input for the given guests.
func (s *State) PlanInput(guests []*Guest, moving map[string]bool) PlanInput {
	in := PlanInput{Nodes: s.schedNodes(moving), Pending: make([]scheduler.Guest, 0, len(guests)), Config: s.SchedulerConfig(), Seed: s.Index}
	for _, g := range guests {
		sg, err := s.schedGuestOf(g)
		if err != nil {
			// Validated at creation; a guest from an older build that no
			// longer validates is reported by Schedule as a failure.
			sg = scheduler.Guest{Name: g.Name, Driver: g.Driver, MemoryBytes: uint64(s.placementMemory(g)), VCPUs: g.VCPUs}
		}
		sg.Prefer = g.LastNode
		avoid(&sg, g)
		in.Pending = append(in.Pending, sg)
	}
	return in
}

// Schedule runs the scheduler; it needs no lock.
// One node the scheduler cannot read (capacities from an older build, say)
// is left out of the pass and named in skipped; it never stops placement
// on the others.
func (in PlanInput) Schedule(now time.Time) (plan scheduler.Plan, skipped []error, err error) {
	snap, err := scheduler.NewSnapshot(in.Nodes)
	if err != nil {
		good := make([]scheduler.Node, 0, len(in.Nodes))
		for _, n := range in.Nodes {
			if _, err := scheduler.NewSnapshot([]scheduler.Node{n}); err != nil {
				skipped = append(skipped, err)
				continue
			}
			good = append(good, n)
		}
		if snap, err = scheduler.NewSnapshot(good); err != nil {
			return scheduler.Plan{}, skipped, err
		}
	}
	plan, err = scheduler.Schedule(snap, in.Pending, in.Config, now, in.Seed)
	return plan, skipped, err
}

// Plan runs the scheduler over the state for the given guests, leaving out
// nodes it cannot read.
func (s *State) Plan(guests []*Guest, moving map[string]bool, now time.Time) (scheduler.Plan, error) {
	plan, _, err := s.PlanInput(guests, moving).Schedule(now)
	return plan, err
}

// PlaceNow places one new guest against the state as it is, when no other
// guest waits for a placement (so it never jumps the queue) and a node
// takes it. It is what a create commits together with the definition.
//
// It looks at a few nodes drawn at random (seeded by the state's index),
// not at all of them, as Nomad's schedulers limit their candidates: the
// cost of a create does not grow with the cluster. A guest none of them
// takes, or one that must be spread across nodes, waits for the scheduler's
// pass over the whole cluster.
func (s *State) PlaceNow(g *Guest, now time.Time) (events.GuestPlaced, bool) {
	if len(s.Nodes) == 0 || s.hasPending() || s.hasMoving() || g.SpreadBy != "" {
		return events.GuestPlaced{}, false
	}
	cfg := s.SchedulerConfig()
	if cfg.Algorithm == scheduler.Spread {
		return events.GuestPlaced{}, false
	}
	sg, err := s.schedGuestOf(g)
	if err != nil {
		return events.GuestPlaced{}, false
	}
	in := PlanInput{Nodes: s.candidates(placeNowCandidates), Pending: []scheduler.Guest{sg}, Config: cfg, Seed: s.Index}
	plan, _, err := in.Schedule(now)
	if err != nil || len(plan.Placements) != 1 {
		return events.GuestPlaced{}, false
	}
	p := plan.Placements[0]
	return events.GuestPlaced{Node: p.Node, CPUs: p.CPUs.String()}, true
}

// placeNowCandidates is how many nodes a create looks at.
const placeNowCandidates = 8

// candidates returns up to n nodes as the scheduler sees them, drawn
// without repetition by a generator seeded with the state's index, so
// every replay of the same state draws the same ones.
func (s *State) candidates(n int) []scheduler.Node {
	ids := s.nodeIDs
	out := make([]scheduler.Node, 0, min(n, len(ids)))
	if len(ids) <= n {
		for _, id := range ids {
			out = append(out, *s.sched[id])
		}
		return out
	}
	r := rand.New(rand.NewPCG(s.Index, uint64(len(ids))))
	picked := make(map[int]bool, n)
	for len(out) < n {
		i := r.IntN(len(ids))
		if picked[i] {
			continue
		}
		picked[i] = true
		out = append(out, *s.sched[ids[i]])
	}
	return out
}

// hasMoving reports whether guests wait to move off a lost or draining
// node: they too come before a new guest.
func (s *State) hasMoving() bool {
	for id := range s.unavail {
		if len(s.GuestsOn(id)) > 0 {
			return true
		}
	}
	return false
}
