package scheduler

import (
	"fmt"
	"slices"
)

// CheckPlacement re-checks one placement against the cluster as it is now.
// The coordinator FSM calls it before committing a placement event (DESIGN,
// invariant 3: optimistic concurrency), with snap built from its current
// state, so a plan made from an older snapshot can never over-commit a node,
// overlap pinned CPUs, break a constraint or anti-affinity, or place a guest
// that is already allocated.
//
// It returns nil when the placement fits, a *FitError wrapping ErrNoFit with
// the node's reason when it does not, and an error wrapping ErrUnknownNode,
// ErrAlreadyPlaced, ErrInvalidPlacement, ErrInvalidGuest or ErrInvalidConfig
// otherwise. It is pure, reads only p.Node's allocations (cost proportional to
// the guests on that node), and agrees exactly with Schedule: every placement
// of a plan passes when the plan's placements before it have been added.
func CheckPlacement(snap *Snapshot, p Placement, cfg Config) error {
	if snap == nil {
		return fmt.Errorf("%w: CheckPlacement was given a nil snapshot", ErrInvalidSnapshot)
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	g := &p.Guest
	if err := snap.ValidateGuest(g); err != nil {
		return err
	}
	idx, ok := snap.byID[p.Node]
	if !ok {
		return fmt.Errorf("%w: guest %q was placed on node %q, which the cluster does not have", ErrUnknownNode, g.Name, p.Node)
	}
	if on, ok := snap.NodeOf(g.Name); ok {
		return fmt.Errorf("%w: guest %q is already allocated on node %q", ErrAlreadyPlaced, g.Name, on)
	}
	if err := checkPlacementCPUs(g, p.CPUs); err != nil {
		return err
	}
	w := newWorking(snap.nodes[idx:idx+1], []Guest{*g}, cfg, 0)
	var d demand
	w.demandOf(g, &d)
	d.cpuset = p.CPUs // for PinCPUs, the CPUs the plan chose must be free
	if r := w.explain(0, &d, true); r.Code != ReasonNone {
		return &FitError{Guest: g.Name, Reason: r}
	}
	return nil
}

func checkPlacementCPUs(g *Guest, cpus CPUSet) error {
	if err := cpus.check(); err != nil {
		return wrapCause(ErrInvalidPlacement, err, fmt.Sprintf("guest %q: CPUs", g.Name))
	}
	switch want := g.pinCount(); {
	case want == 0 && len(cpus) > 0:
		return fmt.Errorf("%w: guest %q is not pinned but the placement names CPUs %s", ErrInvalidPlacement, g.Name, cpus)
	case len(g.CPUSet) > 0 && !slices.Equal(cpus, g.CPUSet):
		return fmt.Errorf("%w: guest %q asked for cpuset %s but the placement names %q", ErrInvalidPlacement, g.Name, g.CPUSet, cpus.String())
	case len(cpus) != want:
		return fmt.Errorf("%w: guest %q asked for %d pinned CPUs but the placement names %d (%s)", ErrInvalidPlacement, g.Name, want, len(cpus), cpus)
	}
	return nil
}
