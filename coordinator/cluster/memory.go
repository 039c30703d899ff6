package cluster

import (
	"fmt"
	"maps"
	"math"
	"strconv"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/scheduler"
)

// A guest's memory for placement: its maximum memory (setmaxmem), or its
// balloon target (setmem) when the operator turned the scheduler's
// balloon_memory option on. Every view of a node's memory (the scheduler's
// snapshot, the placement re-check, node show's ALLOCATED, a pending
// guest's reasons) counts it the same way.

// placementMemory is the memory the scheduler counts for g.
func (s *State) placementMemory(g *Guest) int64 {
	return g.PlacementMemory(s.Scheduler.BalloonMemory)
}

// schedGuestOf is the scheduler's view of g, counting its placement
// memory rather than its definition's.
func (s *State) schedGuestOf(g *Guest) (scheduler.Guest, error) {
	sg, err := schedGuest(&g.GuestDefined)
	if err != nil {
		return sg, err
	}
	if m := s.placementMemory(g); m > 0 {
		sg.MemoryBytes = uint64(m)
	}
	return sg, nil
}

// changesPlacementMemory refreshes the scheduler's view of the nodes whose
// counted memory e changed and says whether it changed any: a tuning of
// memory or max_memory, an instance's end (its live values end with it),
// the scheduler's balloon_memory option.
func (s *State) changesPlacementMemory(e *events.Event) bool {
	switch p := e.Payload.(type) {
	case *events.GuestTuned:
		if p.Knob != "memory" && p.Knob != "max_memory" {
			return false
		}
	case *events.GuestExited:
	case *events.SchedulerConfig:
		for id := range s.Nodes {
			s.refreshNode(id)
		}
		return true
	default:
		return false
	}
	g := s.Guests[e.Guest]
	if g == nil || g.Node == "" {
		return false
	}
	s.refreshNode(g.Node)
	return true
}

// checkMemoryFits refuses a tuning that would make g, placed on a node,
// count more memory than the node has room for: a raised maximum, or with
// balloon_memory a raised balloon target. after is g as the tuning leaves
// it.
func (s *State) checkMemoryFits(g, after *Guest) error {
	before, now := s.placementMemory(g), s.placementMemory(after)
	n := s.Nodes[g.Node]
	if g.Node == "" || n == nil || now <= before {
		return nil
	}
	used, _ := s.Allocated(n.ID)
	ratio := s.SchedulerConfig().MemoryOvercommit
	capacity := n.MemoryBytes - n.ReserveMemoryBytes
	if ratio != 1 && capacity > 0 {
		capacity = int64(math.Floor(float64(capacity) * ratio))
	}
	if used-before+now <= capacity {
		return nil
	}
	counted := "its maximum memory"
	if s.Scheduler.BalloonMemory {
		counted = "its balloon target where it has one: the scheduler's balloon_memory option is on"
	}
	return fmt.Errorf("%w: guest %q would count %s (%s) on node %s, which has %s for guests and %s of it allocated to others; lower the value, or move the guest",
		api.ErrConflict, g.Name, events.FormatSize(now), counted, n.ID, events.FormatSize(capacity), events.FormatSize(used-before))
}

// tunedCopy returns g after the tunings out (guest.tuned payloads of
// Decide), folded into a copy.
func tunedCopy(g *Guest, out []events.Event) *Guest {
	c := *g
	c.Tuning, c.LiveTuning = maps.Clone(g.Tuning), maps.Clone(g.LiveTuning)
	for _, e := range out {
		if p, ok := e.Payload.(*events.GuestTuned); ok {
			foldTuning(&c, p, p.Live && running(g), p.Persistent, running(g))
		}
	}
	return &c
}

// maxMemoryNotLive refuses a live change of a guest's maximum memory, as
// virsh setmaxmem --live is refused for QEMU and LXC domains: a running
// QEMU cannot grow or shrink its RAM, and a running guest keeps the hard
// limit it started with.
func maxMemoryNotLive(g *Guest) error {
	return fmt.Errorf("%w: max_memory of guest %q cannot change live: a running guest keeps its maximum memory until it stops; use --config (the next start uses it)",
		api.ErrConflict, g.Name)
}

// memoryScopes checks the memory knobs of a tuning (set: knob -> canonical
// value, in the scopes live and persistent) and returns the scopes that
// differ from the command's: max_memory changes only the persistent
// definition. A balloon target must fit the maximum memory of each scope
// it reaches; lowering the maximum below the persistent target lowers the
// target with it, as virsh setmaxmem --config lowers currentMemory, so set
// gains that change.
func memoryScopes(g *Guest, set map[string]string, live, persistent bool) (map[string][2]bool, error) {
	scope := map[string][2]bool{}
	newMax, maxSet := set["max_memory"]
	if maxSet {
		scope["max_memory"] = [2]bool{false, true}
	}
	configMax := g.ConfigKnob("max_memory")
	if maxSet {
		configMax = newMax
	}
	target, targetSet := set["memory"]
	if !targetSet {
		if t := g.ConfigKnob("memory"); maxSet && t != "" && bytesOf(t) > bytesOf(newMax) {
			set["memory"] = newMax
			scope["memory"] = [2]bool{false, true}
			target, targetSet, live = newMax, true, false
		}
	}
	if !targetSet {
		return scope, nil
	}
	check := func(maxMem string) error { return events.CheckBalloon(bytesOf(target), bytesOf(maxMem), g.Driver) }
	if live {
		if err := check(g.Knob("max_memory")); err != nil {
			return nil, err
		}
	}
	if persistent || scope["memory"][1] {
		if err := check(configMax); err != nil {
			return nil, err
		}
	}
	return scope, nil
}

// bytesOf reads a canonical size; "" is 0.
func bytesOf(v string) int64 {
	n, _ := strconv.ParseInt(v, 10, 64)
	return n
}

// checkMaxMemorySwap refuses a maximum memory whose hard limit (when
// memtune set none, it follows the maximum) would exceed the guest's
// swap_hard_limit at its next start: v1's memory.memsw.limit_in_bytes
// counts memory plus swap and must be at least memory.limit_in_bytes.
func checkMaxMemorySwap(set map[string]string, after *Guest) error {
	if _, ok := set["max_memory"]; !ok {
		return nil
	}
	hard, swap := after.ConfigKnob("hard_limit"), after.ConfigKnob("swap_hard_limit")
	if events.CheckSwapLimit(hard, swap, "hard_limit") == nil {
		return nil
	}
	return &events.FieldError{Field: "max_memory", Value: events.FormatSize(bytesOf(set["max_memory"])),
		Want: fmt.Sprintf("a hard limit (%s with it) of at most swap_hard_limit (%s), which counts memory plus swap; raise that first (corral memtune %s --swap-hard-limit SIZE --config), or give the guest a --hard-limit",
			events.FormatSize(bytesOf(hard)), events.FormatSize(bytesOf(swap)), after.Name)}
}
