package scheduler

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

var (
	// ErrAlreadyPlaced: the guest already has an allocation; placing it
	// again would break "at most one running copy" (invariant 6).
	ErrAlreadyPlaced = errors.New("corral: guest is already placed")
	// ErrDuplicateGuest: the same guest name appears twice in one pending list.
	ErrDuplicateGuest = errors.New("corral: guest is pending twice")
	// ErrUnknownNode: a placement names a node the snapshot does not have.
	ErrUnknownNode = errors.New("corral: unknown node")
	// ErrInvalidPlacement: the placement's CPUs do not match what the guest
	// asked for.
	ErrInvalidPlacement = errors.New("corral: invalid placement")
)

// Plan is what Schedule decided: one Placement or one Failure per pending
// guest, each list in the order the guests were given. Placements account for
// each other: applied in order, every one passes CheckPlacement.
type Plan struct {
	// Now is the time passed to Schedule, for the leader to stamp events;
	// the decision itself does not depend on it.
	Now        time.Time
	Seed       uint64
	Algorithm  Algorithm
	Placements []Placement
	Failures   []Failure
	Summary    Summary
}

// Placement puts one guest on one node.
type Placement struct {
	// Guest is the guest as it was passed in (maps and slices shared).
	Guest Guest
	Node  string
	// CPUs are the guest's exclusive CPUs on Node: its CPUSet, or the ones
	// the scheduler chose for PinCPUs; empty when the guest is not pinned.
	CPUs CPUSet
	// Score is the chosen node's rank in [0,1] under the plan's algorithm
	// (higher won); Ranked is how many feasible nodes were compared.
	Score  float64
	Ranked int
}

// Allocation is the allocation the placement creates, for the coordinator's
// state and for building the next Snapshot.
func (p Placement) Allocation() Allocation {
	return Allocation{
		Guest:       p.Guest.Name,
		MemoryBytes: p.Guest.MemoryBytes,
		VCPUs:       p.Guest.VCPUs,
		CPUs:        p.CPUs,
		Labels:      p.Guest.Labels,
		SpreadBy:    p.Guest.SpreadBy,
	}
}

// Failure is a guest that stays pending, and why.
type Failure struct {
	Guest string
	// Err is set when the guest cannot be scheduled whatever the cluster
	// looks like (invalid spec, pending twice, already placed); Reasons and
	// Counts are then empty.
	Err error
	// Reasons has one entry per node, sorted by node ID, cut to
	// Config.MaxReasons entries.
	Reasons []NodeReason
	// Counts tallies the reasons of every node, most frequent first.
	Counts []ReasonCount
	// Nodes is how many nodes the snapshot had.
	Nodes int
}

// ReasonCount is how many nodes refused a guest for one reason.
type ReasonCount struct {
	Code  ReasonCode
	Nodes int
}

// String prints the failure as `corral guest show` does: a headline with the
// counts, then one line per listed node.
func (f Failure) String() string {
	var b strings.Builder
	b.WriteString(f.Headline())
	for _, r := range f.Reasons {
		b.WriteString("\n  ")
		b.WriteString(r.String())
	}
	if n := f.Nodes - len(f.Reasons); f.Err == nil && n > 0 && len(f.Reasons) > 0 {
		fmt.Fprintf(&b, "\n  (%s more)", plural(int64(n), "node"))
	}
	return b.String()
}

// Headline is the first line of String: "g1: no node fits (of 5 nodes:
// memory 3, draining 1, down 1)".
func (f Failure) Headline() string {
	if f.Err != nil {
		return f.Guest + ": " + f.Err.Error()
	}
	if f.Nodes == 0 {
		return f.Guest + ": no nodes in the cluster"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: no node fits (of %s:", f.Guest, plural(int64(f.Nodes), "node"))
	for i, c := range f.Counts {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, " %s %d", c.Code, c.Nodes)
	}
	b.WriteByte(')')
	return b.String()
}

// Summary counts what a plan did.
type Summary struct {
	// Guests is len(pending); Placed + Pending == Guests.
	Guests, Placed, Pending int
	// Invalid counts the pending guests whose Failure has Err set.
	Invalid int
}

// String reads "placed 98 of 100 guests, 2 pending (1 invalid)".
func (s Summary) String() string {
	out := fmt.Sprintf("placed %d of %d guests, %d pending", s.Placed, s.Guests, s.Pending)
	if s.Invalid > 0 {
		out += fmt.Sprintf(" (%d invalid)", s.Invalid)
	}
	return out
}
