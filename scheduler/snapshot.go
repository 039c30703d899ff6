package scheduler

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrInvalidSnapshot is wrapped by every error NewSnapshot returns.
var ErrInvalidSnapshot = errors.New("corral: invalid scheduler snapshot")

// NodeStatus is the coordinator's view of whether a node's agent is alive.
type NodeStatus uint8

const (
	// NodeStatusUnknown is the zero value: never schedulable, so a
	// conversion that forgets the status places nothing there.
	NodeStatusUnknown NodeStatus = iota
	// NodeUp: the agent is reporting.
	NodeUp
	// NodeDown: the coordinator declared the node down (after the agent's
	// fence timeout surely passed, invariant 6); its guests may go elsewhere.
	NodeDown
)

// String returns "unknown", "up" or "down".
func (s NodeStatus) String() string {
	switch s {
	case NodeUp:
		return "up"
	case NodeDown:
		return "down"
	}
	return "unknown"
}

// Eligibility is whether the operator lets new guests land on a node.
type Eligibility uint8

const (
	// Eligible is the zero value: the node takes new guests.
	Eligible Eligibility = iota
	// Ineligible: `corral node eligibility ID --disable`.
	Ineligible
	// Draining: `corral node drain ID`; implies ineligible.
	Draining
)

// String returns "eligible", "ineligible" or "draining".
func (e Eligibility) String() string {
	switch e {
	case Eligible:
		return "eligible"
	case Ineligible:
		return "ineligible"
	case Draining:
		return "draining"
	}
	return fmt.Sprintf("Eligibility(%d)", uint8(e))
}

// Node is the scheduler's view of one host and the guests placed on it.
type Node struct {
	ID          string
	Status      NodeStatus
	Eligibility Eligibility
	// Drivers are the guest drivers the agent reported working.
	Drivers []string
	// CPUs are the host's online CPU ids; len(CPUs) is its CPU count.
	CPUs CPUSet
	// MemoryBytes is the host's total memory.
	MemoryBytes uint64
	// ReservedCPUs is how many CPUs the host keeps for itself: the
	// lowest-numbered ReservedCPUs ids of CPUs, which are never pinned and
	// do not count towards capacity.
	ReservedCPUs int
	// ReservedMemoryBytes is memory the host keeps for itself.
	ReservedMemoryBytes uint64
	// Labels are matched by guest constraints, such as rack=a.
	Labels map[string]string
	// Allocations are the guests the log currently assigns to the node.
	Allocations []Allocation
}

// Allocation is a guest the log has placed on a node: the resources it holds
// and the labels anti-affinity needs.
type Allocation struct {
	Guest       string
	MemoryBytes uint64
	VCPUs       int
	// CPUs are the guest's exclusive CPUs; empty when it is not pinned.
	// A pinned guest's VCPUs are not counted against shared capacity.
	CPUs     CPUSet
	Labels   map[string]string
	SpreadBy string
}

// Snapshot is a read-only view of the cluster at one log index. Build it with
// NewSnapshot; after that nothing in it may change, so any number of
// goroutines may read it at once.
type Snapshot struct {
	nodes  []Node
	byID   map[string]int
	guests map[string]int // guest name -> index of the node it is on
	cpus   []uint64       // union of every node's CPU ids, as a bitset as long as the largest needs
}

// NewSnapshot validates the nodes and indexes them. It takes ownership of
// nodes (and everything they reference) and sorts the slice by ID, so that a
// plan depends on the cluster's content and never on the order the caller
// happened to list nodes in. The error wraps ErrInvalidSnapshot and names the
// node and field: duplicate or empty IDs, a non-canonical CPUSet, a reserve
// larger than the node, a guest on two nodes, or pinned CPUs that the node
// does not have or that two guests share. A node whose allocations exceed its
// capacity is accepted (the ratio may have been lowered since): it just has
// no room.
func NewSnapshot(nodes []Node) (*Snapshot, error) {
	slices.SortFunc(nodes, func(a, b Node) int { return strings.Compare(a.ID, b.ID) })
	s := &Snapshot{
		nodes:  nodes,
		byID:   make(map[string]int, len(nodes)),
		guests: make(map[string]int),
	}
	for i := range nodes {
		n := &nodes[i]
		if n.ID == "" {
			return nil, fmt.Errorf("%w: node %d has an empty ID", ErrInvalidSnapshot, i)
		}
		if i > 0 && nodes[i-1].ID == n.ID {
			return nil, fmt.Errorf("%w: node %q appears twice", ErrInvalidSnapshot, n.ID)
		}
		s.byID[n.ID] = i
		if err := s.addNode(i, n); err != nil {
			return nil, fmt.Errorf("%w: node %q: %w", ErrInvalidSnapshot, n.ID, err)
		}
	}
	return s, nil
}

func (s *Snapshot) addNode(i int, n *Node) error {
	if err := n.CPUs.check(); err != nil {
		return fmt.Errorf("CPUs: %v", err)
	}
	if n.ReservedCPUs < 0 || n.ReservedCPUs > len(n.CPUs) {
		return fmt.Errorf("ReservedCPUs %d is outside 0-%d (the node's CPU count)", n.ReservedCPUs, len(n.CPUs))
	}
	if n.MemoryBytes > maxBytes {
		return fmt.Errorf("MemoryBytes %d is beyond the supported %d", n.MemoryBytes, uint64(maxBytes))
	}
	if n.ReservedMemoryBytes > n.MemoryBytes {
		return fmt.Errorf("ReservedMemoryBytes %d is more than MemoryBytes %d", n.ReservedMemoryBytes, n.MemoryBytes)
	}
	for _, c := range n.CPUs {
		if c/64 >= len(s.cpus) {
			s.cpus = append(s.cpus, make([]uint64, c/64+1-len(s.cpus))...)
		}
		s.cpus[c/64] |= 1 << (c % 64)
	}
	var pinnedBy map[int]string
	for _, a := range n.Allocations {
		if a.Guest == "" {
			return errors.New("an allocation has an empty guest name")
		}
		if on, dup := s.guests[a.Guest]; dup {
			return fmt.Errorf("guest %q is also allocated on node %q; a guest runs on at most one node", a.Guest, s.nodes[on].ID)
		}
		s.guests[a.Guest] = i
		if a.MemoryBytes > maxBytes || a.VCPUs < 0 || a.VCPUs > maxVCPUs {
			return fmt.Errorf("guest %q: MemoryBytes %d or VCPUs %d out of range", a.Guest, a.MemoryBytes, a.VCPUs)
		}
		if err := a.CPUs.check(); err != nil {
			return fmt.Errorf("guest %q: CPUs: %v", a.Guest, err)
		}
		for _, c := range a.CPUs {
			if !n.CPUs.Contains(c) {
				return fmt.Errorf("guest %q is pinned to cpu %d, which the node does not have (%s)", a.Guest, c, n.CPUs)
			}
			if pinnedBy == nil {
				pinnedBy = make(map[int]string)
			}
			if other, taken := pinnedBy[c]; taken {
				return fmt.Errorf("cpu %d is pinned by both %q and %q", c, other, a.Guest)
			}
			pinnedBy[c] = a.Guest
		}
	}
	return nil
}

// Nodes returns the nodes sorted by ID. The slice is the snapshot's own:
// callers must not modify it.
func (s *Snapshot) Nodes() []Node { return s.nodes }

// Node returns the node with this ID. The pointer is into the snapshot:
// callers must not modify what it points to.
func (s *Snapshot) Node(id string) (*Node, bool) {
	i, ok := s.byID[id]
	if !ok {
		return nil, false
	}
	return &s.nodes[i], true
}

// NodeOf returns the ID of the node the guest is allocated on, if any.
func (s *Snapshot) NodeOf(guest string) (string, bool) {
	i, ok := s.guests[guest]
	if !ok {
		return "", false
	}
	return s.nodes[i].ID, true
}

// ValidateGuest is Guest.Validate plus the checks that need the cluster: a
// CPUSet must name only CPU ids that some node has. The API calls it before
// accepting `corral guest create`; the error wraps ErrInvalidGuest.
func (s *Snapshot) ValidateGuest(g *Guest) error {
	if err := g.Validate(); err != nil {
		return err
	}
	for _, c := range g.CPUSet {
		if c/64 >= len(s.cpus) || s.cpus[c/64]&(1<<(c%64)) == 0 {
			return fmt.Errorf("%w: guest %q: CPUSet %s names cpu %d, which no node has; choose CPUs that exist (see corral node show)",
				ErrInvalidGuest, g.Name, g.CPUSet, c)
		}
	}
	return nil
}
