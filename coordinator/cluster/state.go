package cluster

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/scheduler"
)

// The records are the API's: the state machine keeps what the API shows.
type (
	Guest      = api.Guest
	Node       = api.Node
	ServerInfo = api.ServerInfo
)

// Statuses and desired states, as the API spells them.
const (
	StatusPending  = api.StatusPending
	StatusPlaced   = api.StatusPlaced
	StatusRunning  = api.StatusRunning
	StatusExited   = api.StatusExited
	StatusFailed   = api.StatusFailed
	DesiredRunning = api.DesiredRunning
	DesiredStopped = api.DesiredStopped
	NodeStatusUp   = api.NodeStatusUp
	NodeStatusDown = api.NodeStatusDown
)

// Outcome is what a request produced, kept so that a retry with the same
// request ID gets the first call's answer.
type Outcome struct {
	Indexes []uint64      `json:"indexes,omitempty"`
	Err     *api.APIError `json:"error,omitempty"`
}

// maxRequests bounds the request-ID table. Retries older than the last
// maxRequests requests are treated as new requests.
const maxRequests = 1 << 16

// State is the cluster as of event Index. Only Apply changes it.
type State struct {
	Index    uint64                 `json:"index"`
	Servers  map[string]*ServerInfo `json:"servers"`
	Nodes    map[string]*Node       `json:"nodes"`
	Guests   map[string]*Guest      `json:"guests"`
	Requests map[string]*Outcome    `json:"requests"`
	// ReqOrder is the request IDs in the order they were recorded, oldest first.
	ReqOrder []string `json:"req_order"`
	// Scheduler is the placement policy; the zero value means the default.
	Scheduler events.SchedulerConfig `json:"scheduler"`
	// NodeEvents holds, per node, the index of the last event that
	// concerned it (its own, or one about a guest placed on it before or
	// after): the Prev of the next update its agent receives.
	NodeEvents map[string]uint64 `json:"node_events,omitempty"`
	// ACL holds the tokens, custom policies and join tokens (acl.go);
	// nil until the first ACL event.
	ACL *ACLState `json:"acl,omitempty"`
	// Partitions are the cluster's partitions (partition.go); nil until
	// the first is created.
	Partitions map[string]*Partition `json:"partitions,omitempty"`

	// pending indexes the guests with StatusPending and byNode the guests
	// placed on each node. They are derived: built by NewState and reindex,
	// kept up to date by Apply.
	pending map[string]bool
	byNode  map[string]map[string]bool
	// migrating names the guests with a migration in progress
	// (migration.go).
	migrating map[string]bool
	// sched caches each node as the scheduler sees it, rebuilt by Apply
	// for the nodes an event touches, so a scheduling pass copies it
	// instead of converting the whole cluster under the lock.
	sched map[string]*scheduler.Node
	// nodeIDs lists the nodes sorted, and unavail those down or
	// draining, for placing a new guest without a pass over every node.
	nodeIDs []string
	unavail map[string]bool
	// schedVersion counts the changes that can change a placement
	// decision (nodes, guests defined, placed or removed, the policy), so
	// the leader can skip scheduling passes that would decide nothing new.
	schedVersion uint64
}

// Pending returns the guests waiting for a placement, oldest first. It
// does not change s, so readers may call it concurrently.
func (s *State) Pending() []*Guest {
	var out []*Guest
	if s.pending == nil {
		for _, g := range s.Guests {
			if wantsPlacement(g) {
				out = append(out, g)
			}
		}
	} else {
		for name := range s.pending {
			out = append(out, s.Guests[name])
		}
	}
	slices.SortFunc(out, func(a, b *Guest) int { return cmp.Compare(a.CreateIndex, b.CreateIndex) })
	return out
}

func (s *State) hasPending() bool {
	if s.pending != nil {
		return len(s.pending) > 0
	}
	for _, g := range s.Guests {
		if wantsPlacement(g) {
			return true
		}
	}
	return false
}

// wantsPlacement reports a guest the scheduler must place: one waiting
// for a node that is asked to run or keeps a reservation. A guest defined
// with --no-start waits unplaced, holding nothing, until it is started.
func wantsPlacement(g *Guest) bool {
	return g.Status == StatusPending && (g.Desired == DesiredRunning || g.Reserve)
}

// holdsCapacity reports whether a guest counts against its node's
// capacity: while it runs or is asked to, or always when it keeps a
// reservation. A guest that was stopped or has ended keeps its node (its
// state and logs are there, and a start prefers it) but not its vCPUs
// and memory, so other guests may take them.
func holdsCapacity(g *Guest) bool {
	if g.Node == "" {
		return false
	}
	if g.Reserve || g.Status == StatusRunning {
		return true
	}
	return g.Desired == DesiredRunning && g.Status == StatusPlaced
}

// DecodeState decodes a state encoded with encoding/json (a raft snapshot
// or a checkpoint) and rebuilds its derived indexes.
func DecodeState(data []byte) (*State, error) {
	s := NewState()
	if err := json.Unmarshal(data, s); err != nil {
		return nil, err
	}
	s.reindex()
	return s, nil
}

// SchedVersion counts the changes that can change a placement decision, so
// a scheduling pass that saw the same version may be skipped.
func (s *State) SchedVersion() uint64 { return s.schedVersion }

// reindex rebuilds the derived indexes, after decoding or copying.
func (s *State) reindex() {
	s.reindexGuests()
	s.reindexNodes()
}

// reindexGuests rebuilds the indexes of guests: pending, by node, migrating,
// and the ACL's.
func (s *State) reindexGuests() {
	s.pending = map[string]bool{}
	s.byNode = map[string]map[string]bool{}
	s.migrating = map[string]bool{}
	for name, g := range s.Guests {
		if wantsPlacement(g) {
			s.pending[name] = true
		}
		if g.Migration != nil {
			s.migrating[name] = true
		}
		s.setNode(name, "", g.Node)
	}
	s.ACL.reindex()
}

// reindexNodes rebuilds the scheduler's views of the nodes: sched, unavail
// and nodeIDs. It reads byNode and migrating, so it comes after
// reindexGuests.
func (s *State) reindexNodes() {
	s.sched = map[string]*scheduler.Node{}
	s.unavail = map[string]bool{}
	s.nodeIDs = nil
	for id := range s.Nodes {
		s.refreshNode(id)
		s.nodeIDs = append(s.nodeIDs, id)
	}
	slices.Sort(s.nodeIDs)
}

// refreshNode rebuilds the scheduler's view of one node.
func (s *State) refreshNode(id string) {
	if s.sched == nil || id == "" {
		return
	}
	n, ok := s.Nodes[id]
	if !ok {
		delete(s.sched, id)
		delete(s.unavail, id)
		return
	}
	sn := s.schedNode(n, nil)
	s.sched[id] = &sn
	if n.Status == NodeStatusDown || n.Eligibility == events.Draining {
		s.unavail[id] = true
	} else {
		delete(s.unavail, id)
	}
}

// setNode moves a guest from one node's index entry to another's.
func (s *State) setNode(guest, from, to string) {
	if s.byNode == nil {
		return
	}
	if from != "" {
		delete(s.byNode[from], guest)
		if len(s.byNode[from]) == 0 {
			delete(s.byNode, from)
		}
	}
	if to != "" {
		if s.byNode[to] == nil {
			s.byNode[to] = map[string]bool{}
		}
		s.byNode[to][guest] = true
	}
}

// GuestsOn returns the names of the guests placed on a node, sorted.
func (s *State) GuestsOn(node string) []string {
	var out []string
	if s.byNode == nil {
		for name, g := range s.Guests {
			if g.Node == node {
				out = append(out, name)
			}
		}
	} else {
		for name := range s.byNode[node] {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

func (s *State) setPending(name string, on bool) {
	if s.pending == nil {
		return
	}
	if on {
		s.pending[name] = true
	} else {
		delete(s.pending, name)
	}
}

// NewState returns the empty state at index 0.
func NewState() *State {
	return &State{
		Servers:  map[string]*ServerInfo{},
		Nodes:    map[string]*Node{},
		Guests:   map[string]*Guest{},
		Requests: map[string]*Outcome{},
		pending:  map[string]bool{},
		byNode:   map[string]map[string]bool{},
		sched:    map[string]*scheduler.Node{},

		migrating: map[string]bool{},
		unavail:   map[string]bool{},
	}
}

// Apply applies one event at index s.Index+1 and returns the event as
// committed (with Index filled in). An event
// that no longer fits the state is refused with an error and leaves the
// state unchanged. Apply is deterministic: no I/O, no clock, no randomness.
func (s *State) Apply(e events.Event) (events.Event, error) {
	e, _, err := s.applyRouted(e, false)
	return e, err
}

// ApplyRouted is Apply that also returns what the event means to each
// node it concerns, for the node's agent.
func (s *State) ApplyRouted(e events.Event) (events.Event, []Route, error) {
	return s.applyRouted(e, true)
}

func (s *State) applyRouted(e events.Event, want bool) (events.Event, []Route, error) {
	idx := s.Index + 1
	e.Index = idx
	before, beforeOther := "", ""
	if g := s.Guests[e.Guest]; g != nil && e.Guest != "" {
		before, beforeOther = g.Node, s.otherNode(g)
	}
	if err := s.apply(idx, &e); err != nil {
		return events.Event{}, nil, err
	}
	routes := s.route(idx, &e, before, beforeOther, want)
	routes = append(routes, s.routePartition(idx, &e, want)...)
	if s.changesPlacementMemory(&e) {
		s.schedVersion++
	}
	switch e.Type {
	case events.TypeNodeRegistered, events.TypeNodeUp, events.TypeNodeDown, events.TypeNodeEligibility,
		events.TypeGuestDefined, events.TypeGuestPlaced, events.TypeGuestUndefined, events.TypeGuestStarted,
		events.TypeSchedulerConfig, events.TypeGuestExited, events.TypeGuestStartRequested, events.TypeGuestStopRequested,
		events.TypeGuestRestarting, events.TypeGuestRestartsExhausted,
		events.TypeGuestMigrationRequested, events.TypeGuestMigrationSwitched, events.TypeGuestMigrated, events.TypeGuestMigrationAborted:
		// started: a drain's move completed; exited, stop and start: a
		// guest released or took capacity.
		s.schedVersion++
	}
	s.Index = idx
	return e, routes, nil
}

func (s *State) apply(idx uint64, e *events.Event) error {
	switch p := e.Payload.(type) {
	case *events.NodeRegistered:
		return s.applyNodeRegistered(idx, e, p)
	case *events.NodeUp:
		return s.applyNodeStatus(idx, e, NodeStatusUp)
	case *events.NodeDown:
		return s.applyNodeStatus(idx, e, NodeStatusDown)
	case *events.NodeEligibility:
		return s.applyNodeEligibility(idx, e, p)
	case *events.NodeUsage:
		return s.applyNodeUsage(idx, e, p)
	case *events.PartitionSet:
		return s.applyPartitionSet(idx, p)
	case *events.PartitionDeleted:
		return s.applyPartitionDeleted(p)
	case *events.GuestLimitHit:
		g, err := s.current(e, p.Node, p.Generation)
		if err != nil {
			return err
		}
		u := usageOf(g)
		u.LimitHits = p.LimitHits
		return nil
	case *events.GuestTuningApplied:
		g, err := s.current(e, p.Node, p.Generation)
		if err != nil {
			return err
		}
		if err := events.LookupAppliedKnob(p.Knob); err != nil {
			return err
		}
		if g.Applied == nil {
			g.Applied = map[string]string{}
		}
		g.Applied[p.Knob] = p.Value
		delete(g.TuningFailed, p.Knob)
		if len(g.TuningFailed) == 0 {
			g.TuningFailed = nil
		}
		return nil
	case *events.GuestTuningFailed:
		return s.applyGuestTuningFailed(e, p)
	case *events.GuestBalloon, *events.GuestBalloonNoncompliant:
		return s.applyGuestBalloon(e)
	case *events.GuestDrift:
		_, err := s.current(e, p.Node, p.Generation)
		return err
	case *events.NodeCleanup:
		_, err := s.node(e.Node)
		return err
	case *events.SchedulerConfig:
		if err := p.Validate(); err != nil {
			return err
		}
		s.Scheduler = *p
		return nil
	case *events.GuestDefined:
		return s.applyGuestDefined(idx, e, p)
	case *events.GuestPlaced:
		return s.applyGuestPlaced(idx, e, p)
	case *events.GuestStartRequested:
		return s.applyDesired(idx, e, DesiredRunning)
	case *events.GuestStopRequested:
		return s.applyDesired(idx, e, DesiredStopped)
	case *events.GuestSuspendRequested, *events.GuestResumeRequested:
		g, err := s.guest(e.Guest)
		if err != nil {
			return err
		}
		g.Paused = e.Type == events.TypeGuestSuspendRequested
		g.ModifyIndex = idx
		return nil
	case *events.GuestStarted:
		return s.applyGuestStarted(idx, e, p)
	case *events.GuestExited:
		return s.applyGuestExited(idx, e, p)
	case *events.GuestRestarting:
		return s.applyGuestRestarting(idx, e, p)
	case *events.GuestRestartsExhausted:
		return s.applyGuestRestartsExhausted(idx, e, p)
	case *events.GuestUndefined:
		if _, err := s.guest(e.Guest); err != nil {
			return err
		}
		on, other := s.Guests[e.Guest].Node, s.otherNode(s.Guests[e.Guest])
		s.setNode(e.Guest, on, "")
		delete(s.Guests, e.Guest)
		s.setMigrating(e.Guest, false)
		s.refreshNode(on)
		s.refreshNode(other)
		s.setPending(e.Guest, false)
		return nil
	case *events.GuestTuned:
		return s.applyGuestTuned(idx, e, p)
	case *events.GuestMigrationRequested:
		return s.applyMigrationRequested(idx, e, p)
	case *events.GuestMigrationTargetReady:
		return s.applyMigrationTargetReady(idx, e, p)
	case *events.GuestMigrationProgress:
		return s.applyMigrationProgress(e, p)
	case *events.GuestMigrationSwitched:
		return s.applyMigrationSwitched(idx, e, p)
	case *events.GuestMigrated:
		return s.applyMigrated(idx, e, p)
	case *events.GuestMigrationAborted:
		return s.applyMigrationAborted(idx, e, p)
	case *events.ACLTokenCreated, *events.ACLTokenDeleted, *events.ACLPolicySet, *events.ACLPolicyDeleted,
		*events.NodeJoinTokenCreated, *events.NodeEnrolled:
		return s.applyACL(idx, e)
	case *events.ServerRegistered:
		if err := events.ValidateID("server id", p.ID); err != nil {
			return err
		}
		c := *p
		s.Servers[p.ID] = &c
		return nil
	}
	return fmt.Errorf("%w: no state transition for %s", events.ErrUnknownType, e.Type)
}

func (s *State) guest(name string) (*Guest, error) {
	g, ok := s.Guests[name]
	if !ok {
		return nil, api.NotFound("guest", name)
	}
	return g, nil
}

func (s *State) node(id string) (*Node, error) {
	n, ok := s.Nodes[id]
	if !ok {
		return nil, api.NotFound("node", id)
	}
	return n, nil
}

func (s *State) applyNodeRegistered(idx uint64, e *events.Event, p *events.NodeRegistered) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if e.Node != p.ID {
		return fmt.Errorf("%w: node registration for %q carries subject %q", events.ErrInvalid, p.ID, e.Node)
	}
	n, ok := s.Nodes[p.ID]
	if !ok {
		n = &Node{CreateIndex: idx, Eligibility: events.Eligible}
		s.Nodes[p.ID] = n
		if i, found := slices.BinarySearch(s.nodeIDs, p.ID); !found && s.sched != nil {
			s.nodeIDs = slices.Insert(s.nodeIDs, i, p.ID)
		}
	}
	n.NodeRegistered = *p
	n.Status = NodeStatusUp
	n.ModifyIndex = idx
	s.refreshNode(p.ID)
	return nil
}

func (s *State) applyNodeStatus(idx uint64, e *events.Event, status string) error {
	n, err := s.node(e.Node)
	if err != nil {
		return err
	}
	n.Status = status
	n.ModifyIndex = idx
	s.refreshNode(n.ID)
	return nil
}

func (s *State) applyGuestDefined(idx uint64, e *events.Event, p *events.GuestDefined) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if e.Guest != p.Name {
		return fmt.Errorf("%w: guest definition for %q carries subject %q", events.ErrInvalid, p.Name, e.Guest)
	}
	if _, ok := s.Guests[p.Name]; ok {
		return api.GuestExists(p.Name)
	}
	if err := s.checkPartitionExists(p.Partition); err != nil {
		return err
	}
	s.Guests[p.Name] = &Guest{
		GuestDefined: *p, Desired: DesiredStopped, Status: StatusPending,
		CreateIndex: idx, ModifyIndex: idx,
	}
	s.setPending(p.Name, wantsPlacement(s.Guests[p.Name]))
	return nil
}

// Allocated returns the memory and vCPUs held on node id by the guests
// that hold capacity there (see holdsCapacity).
func (s *State) Allocated(id string) (memory int64, vcpus int) {
	for _, name := range s.GuestsOn(id) {
		g := s.Guests[name]
		if !holdsCapacity(g) {
			continue
		}
		memory += s.placementMemory(g)
		vcpus += g.VCPUs
	}
	for _, g := range s.migratingOn(id) {
		memory += s.placementMemory(g)
		vcpus += g.VCPUs
	}
	return memory, vcpus
}

func (s *State) applyNodeEligibility(idx uint64, e *events.Event, p *events.NodeEligibility) error {
	if err := p.Validate(); err != nil {
		return err
	}
	n, err := s.node(e.Node)
	if err != nil {
		return err
	}
	n.Eligibility = p.Eligibility
	n.Drain = nil
	if p.Eligibility == events.Draining {
		c := *p
		n.Drain = &c
	}
	n.ModifyIndex = idx
	s.refreshNode(n.ID)
	return nil
}

// movable reports whether a guest placed on node from may be placed
// elsewhere: its node is gone or draining.
func (s *State) movable(from string) bool {
	n, ok := s.Nodes[from]
	return !ok || n.Status == NodeStatusDown || n.Eligibility == events.Draining
}

func (s *State) applyGuestPlaced(idx uint64, e *events.Event, p *events.GuestPlaced) error {
	if e.Node != p.Node {
		return fmt.Errorf("%w: placement on %q carries subject node %q", events.ErrInvalid, p.Node, e.Node)
	}
	g, err := s.guest(e.Guest)
	if err != nil {
		return err
	}
	if g.Node != "" && !s.movable(g.Node) {
		return fmt.Errorf("%w: guest %q is already placed on node %q, which is up and not draining", api.ErrConflict, g.Name, g.Node)
	}
	if err := s.checkPlacement(g, p); err != nil {
		return err
	}
	if m := g.Migration; m != nil {
		// Placed again (its node was lost): the migration ends with it.
		c := *m
		s.endMigration(idx, g, &c, api.MigrationAborted, "the guest was placed on node "+p.Node)
	}
	s.placeOn(idx, g, p.Node, p.CPUs)
	return nil
}

// placeOn places g on node at generation idx, as a new instance.
func (s *State) placeOn(idx uint64, g *Guest, node, cpus string) {
	from := g.Node
	s.setNode(g.Name, from, node)
	g.MovedFrom = from
	g.Node = node
	g.LastNode = ""
	g.CPUs = cpus
	g.Applied = nil
	g.TuningFailed = nil
	g.Balloon, g.BalloonNoncompliant = nil, nil
	g.LiveTuning = nil // a new instance starts from the persistent tuning
	g.Usage = nil
	g.Generation = idx
	g.Restarts.Run, g.Restarts.Avoid, g.Restarts.Rescheduled, g.Restarts.Stuck = 0, "", "", ""
	g.Status = StatusPlaced
	s.setPending(g.Name, false)
	g.PID = 0
	g.ModifyIndex = idx
	s.refreshNode(from)
	if from == node {
		s.refreshNode(node)
	} else {
		s.addToNode(node, g)
	}
}

// addToNode adds a guest just placed on node to the scheduler's view of it,
// with the result refreshNode would rebuild from every guest on the node:
// the allocations stay sorted by guest, as GuestsOn lists them. A placement
// then copies the node's allocations instead of looking each of its guests
// up again, which in a large state misses the cache once per guest. With a
// migration under way (whose allocations follow the guests') or anything
// unusual, it rebuilds. A guest that holds no capacity (defined stopped)
// changes nothing.
func (s *State) addToNode(id string, g *Guest) {
	c := s.sched[id]
	switch {
	case c == nil || len(s.migrating) > 0:
		s.refreshNode(id)
		return
	case !holdsCapacity(g):
		return // a rebuild would leave it out: the view is as it was
	}
	i, found := slices.BinarySearchFunc(c.Allocations, g.Name, func(a scheduler.Allocation, name string) int {
		return strings.Compare(a.Guest, name)
	})
	if found {
		s.refreshNode(id)
		return
	}
	// Snapshots share the cached allocations, so they are copied, never
	// changed in place.
	sn := *c
	sn.Allocations = make([]scheduler.Allocation, 0, len(c.Allocations)+1)
	sn.Allocations = append(sn.Allocations, c.Allocations[:i]...)
	sn.Allocations = append(sn.Allocations, allocation(g, s.Scheduler.BalloonMemory))
	sn.Allocations = append(sn.Allocations, c.Allocations[i:]...)
	s.sched[id] = &sn
}

func (s *State) applyDesired(idx uint64, e *events.Event, desired string) error {
	g, err := s.guest(e.Guest)
	if err != nil {
		return err
	}
	released := g.Node != "" && !holdsCapacity(g)
	// A start asked while the guest still runs on its way to a stop: the
	// stop's exit must not leave it ended (applyGuestExited).
	g.StartAfterStop = desired == DesiredRunning && g.Desired == DesiredStopped && g.Status == StatusRunning
	g.Desired = desired
	if desired == DesiredRunning {
		g.Restarts.Stuck = "" // started again by hand
	}
	g.ModifyIndex = idx
	if desired == DesiredRunning && released {
		// A guest that held nothing while stopped or ended takes its
		// node's capacity again, and starts there if it still fits;
		// otherwise it waits for the scheduler, which prefers that node.
		if s.checkPlacement(g, &events.GuestPlaced{Node: g.Node, CPUs: g.CPUs}) == nil {
			if g.Status == StatusExited || g.Status == StatusFailed {
				g.Status = StatusPlaced
			}
		} else {
			s.unplace(g)
		}
	}
	s.setPending(g.Name, wantsPlacement(g))
	s.refreshNode(g.Node)
	return nil
}

// unplace takes a guest off its node to be placed again; the node is
// kept as the one a placement prefers. The node's agent is told the
// guest is gone and removes what it left there.
func (s *State) unplace(g *Guest) {
	from := g.Node
	s.setNode(g.Name, from, "")
	g.LastNode, g.Node, g.CPUs = from, "", ""
	g.Status = StatusPending
	g.PID = 0
	s.refreshNode(from)
}

// current checks that a report from an agent is about the guest's current
// placement; a late report about an old generation is refused.
func (s *State) current(e *events.Event, node string, gen uint64) (*Guest, error) {
	g, err := s.guest(e.Guest)
	if err != nil {
		return nil, err
	}
	// A report must name the node and generation it is about: an empty
	// node would match every guest not placed yet.
	if node != "" && g.Node != node && g.Generation == gen {
		// Each generation is one placement on one node: this node never
		// held it, so the report is forged, not late.
		return nil, fmt.Errorf("%w: node %q reported about guest %q generation %d, which is placed on node %q: a node reports only about its own guests",
			api.ErrPermission, node, g.Name, gen, g.Node)
	}
	if node == "" || g.Node != node || g.Generation != gen {
		return nil, fmt.Errorf("%w: report for guest %q on node %q generation %d, but it is placed on %q generation %d",
			api.ErrConflict, g.Name, node, gen, g.Node, g.Generation)
	}
	return g, nil
}

func (s *State) applyGuestStarted(idx uint64, e *events.Event, p *events.GuestStarted) error {
	g, err := s.current(e, p.Node, p.Generation)
	if err != nil {
		return err
	}
	if err := currentRun(g, p.Restart); err != nil {
		return err
	}
	g.Status = StatusRunning
	g.MovedFrom = ""
	g.PID = p.PID
	g.Addresses, g.MAC, g.Interface = p.Addresses, p.MAC, p.Interface
	g.ModifyIndex = idx
	s.refreshNode(g.Node)
	return nil
}

func (s *State) applyGuestExited(idx uint64, e *events.Event, p *events.GuestExited) error {
	g, err := s.current(e, p.Node, p.Generation)
	if err != nil {
		return err
	}
	if err := currentRun(g, p.Restart); err != nil {
		return err
	}
	g.Status = StatusExited
	if p.Error != "" {
		g.Status = StatusFailed
	}
	g.PID = 0
	g.LiveTuning = nil // live changes end with the instance, as in virsh
	c := *p
	g.LastExit = &c
	g.ModifyIndex = idx
	if g.StartAfterStop && g.Desired == DesiredRunning {
		// The exit of a stop that a start overtook: run it again, as a
		// start of the ended guest would, on its node if it still fits.
		g.StartAfterStop = false
		if s.checkPlacement(g, &events.GuestPlaced{Node: g.Node, CPUs: g.CPUs}) == nil {
			g.Status = StatusPlaced
		} else {
			s.unplace(g)
			s.setPending(g.Name, wantsPlacement(g))
		}
	}
	g.StartAfterStop = false
	s.refreshNode(g.Node) // an ended guest holds no capacity
	s.endedWithMigration(idx, g)
	return nil
}

// applyGuestTuned folds a tuning into the scopes it names: Persistent
// into the guest's Tuning, what its next start uses, and Live into the
// running instance (LiveTuning holds where that differs). A Persistent
// change to a running guest leaves the instance its old value; one that
// is both, or came from a build before live overrides, makes the two
// agree. A tuning that is both for a guest no longer running changes
// only what its next start uses; a live-only one is refused.
func (s *State) applyGuestTuned(idx uint64, e *events.Event, p *events.GuestTuned) error {
	g, err := s.guest(e.Guest)
	if err != nil {
		return err
	}
	if err := p.Validate(); err != nil {
		return err
	}
	up := running(g)
	live, persistent := p.Live && up, p.Persistent
	if p.Live && !up && !persistent {
		return notRunning(g)
	}
	cur := g.ConfigKnob(p.Knob)
	if live {
		cur = g.Knob(p.Knob)
	}
	// A change to both scopes may name either value as the old one: an
	// older build recorded the persistent value there.
	if cur != p.Old && !(live && persistent && g.ConfigKnob(p.Knob) == p.Old) {
		return fmt.Errorf("%w: %s of guest %q is %s, not %s: it changed meanwhile; read it again and retry", api.ErrConflict, p.Knob, g.Name, cur, p.Old)
	}
	foldTuning(g, p, live, persistent, up)
	g.ModifyIndex = idx
	return nil
}

// foldTuning folds a checked tuning into g's scopes (see applyGuestTuned);
// Decide folds into a copy to see what a command would leave.
func foldTuning(g *Guest, p *events.GuestTuned, live, persistent, up bool) {
	switch {
	case live && persistent:
		g.Tuning = setKnob(g.Tuning, p.Knob, p.New)
		delete(g.LiveTuning, p.Knob)
	case persistent:
		if _, pinned := g.LiveTuning[p.Knob]; up && !pinned {
			g.LiveTuning = setKnob(g.LiveTuning, p.Knob, g.Knob(p.Knob))
		}
		g.Tuning = setKnob(g.Tuning, p.Knob, p.New)
	default:
		g.LiveTuning = setKnob(g.LiveTuning, p.Knob, p.New)
	}
	if v, ok := g.LiveTuning[p.Knob]; ok && v == g.ConfigKnob(p.Knob) {
		delete(g.LiveTuning, p.Knob)
	}
	if len(g.LiveTuning) == 0 {
		g.LiveTuning = nil
	}
}

// setKnob sets m[k] = v, making m when it is nil.
func setKnob(m map[string]string, k, v string) map[string]string {
	if m == nil {
		m = map[string]string{}
	}
	m[k] = v
	return m
}

// applyGuestTuningFailed records the host's refusal of a knob's value
// for the guest's current placement, replacing an earlier one for the
// knob; the knob's next guest.tuning_applied clears it.
func (s *State) applyGuestTuningFailed(e *events.Event, p *events.GuestTuningFailed) error {
	g, err := s.current(e, p.Node, p.Generation)
	if err != nil {
		return err
	}
	if err := p.Validate(); err != nil {
		return err
	}
	if g.TuningFailed == nil {
		g.TuningFailed = map[string]*events.GuestTuningFailed{}
	}
	c := *p
	g.TuningFailed[p.Knob] = &c
	return nil
}

// applyGuestBalloon records a host's balloon report for the guest's
// current placement. The reports are replaced, never changed in place, so
// a clone of the state may share them. A compliant report clears an
// earlier noncompliance.
func (s *State) applyGuestBalloon(e *events.Event) error {
	var node string
	var gen uint64
	switch p := e.Payload.(type) {
	case *events.GuestBalloon:
		node, gen = p.Node, p.Generation
	case *events.GuestBalloonNoncompliant:
		node, gen = p.Node, p.Generation
	}
	g, err := s.current(e, node, gen)
	if err != nil {
		return err
	}
	if err := e.Payload.(interface{ Validate() error }).Validate(); err != nil {
		return err
	}
	switch p := e.Payload.(type) {
	case *events.GuestBalloon:
		c := *p
		g.Balloon = &c
		if p.Compliant {
			g.BalloonNoncompliant = nil
		}
	case *events.GuestBalloonNoncompliant:
		c := *p
		g.BalloonNoncompliant = &c
	}
	return nil
}

// cloneFailures deep-copies a guest's tuning failures.
func cloneFailures(m map[string]*events.GuestTuningFailed) map[string]*events.GuestTuningFailed {
	if m == nil {
		return nil
	}
	out := make(map[string]*events.GuestTuningFailed, len(m))
	for k, v := range m {
		c := *v
		out[k] = &c
	}
	return out
}

// Record remembers the outcome of a request ID, forgetting the oldest when
// the table is full. It is part of the replicated state.
func (s *State) Record(id string, o *Outcome) {
	if id == "" {
		return
	}
	if _, ok := s.Requests[id]; ok {
		return
	}
	s.Requests[id] = o
	s.ReqOrder = append(s.ReqOrder, id)
	if len(s.ReqOrder) > maxRequests {
		old := s.ReqOrder[0]
		s.ReqOrder = s.ReqOrder[1:]
		delete(s.Requests, old)
	}
}

// Clone returns a deep copy of s.
func (s *State) Clone() *State {
	c := &State{
		Index:      s.Index,
		Servers:    make(map[string]*ServerInfo, len(s.Servers)),
		Scheduler:  s.Scheduler,
		Nodes:      make(map[string]*Node, len(s.Nodes)),
		Guests:     make(map[string]*Guest, len(s.Guests)),
		Requests:   maps.Clone(s.Requests),
		ReqOrder:   slices.Clone(s.ReqOrder),
		NodeEvents: maps.Clone(s.NodeEvents),
		ACL:        s.ACL.clone(),
	}
	if s.Partitions != nil {
		c.Partitions = make(map[string]*Partition, len(s.Partitions))
		for k, v := range s.Partitions {
			x := *v
			x.Limits = maps.Clone(v.Limits)
			x.Nodes = maps.Clone(v.Nodes) // reports are replaced, never changed in place
			c.Partitions[k] = &x
		}
	}
	for k, v := range s.Servers {
		x := *v
		c.Servers[k] = &x
	}
	for k, v := range s.Nodes {
		x := *v
		x.Drivers = maps.Clone(v.Drivers)
		x.Labels = maps.Clone(v.Labels)
		x.Controllers = slices.Clone(v.Controllers)
		if v.Drain != nil {
			d := *v.Drain
			x.Drain = &d
		}
		c.Nodes[k] = &x
	}
	for k, v := range s.Guests {
		x := *v
		x.Labels = maps.Clone(v.Labels)
		x.Command = slices.Clone(v.Command)
		x.Constraints = slices.Clone(v.Constraints)
		x.Applied = maps.Clone(v.Applied)
		x.TuningFailed = cloneFailures(v.TuningFailed)
		if v.Usage != nil {
			u := *v.Usage
			x.Usage = &u
		}
		x.Tuning = maps.Clone(v.Tuning)
		x.LiveTuning = maps.Clone(v.LiveTuning)
		// x.Migration and x.LastMigration are shared: Apply replaces
		// them, never changes them in place.
		c.Guests[k] = &x
	}
	if c.Requests == nil {
		c.Requests = map[string]*Outcome{}
	}
	c.reindex()
	c.schedVersion = s.schedVersion
	return c
}

func usageOf(g *Guest) *events.GuestUsage {
	if g.Usage == nil {
		g.Usage = &events.GuestUsage{Guest: g.Name, Generation: g.Generation}
	}
	return g.Usage
}

// applyNodeUsage records each guest's counters when they are about its
// current placement on the reporting node; stale entries are skipped, not
// refused, so one late guest does not cost the node its whole report.
func (s *State) applyNodeUsage(idx uint64, e *events.Event, p *events.NodeUsage) error {
	if _, err := s.node(e.Node); err != nil {
		return err
	}
	for _, u := range p.Guests {
		g, ok := s.Guests[u.Guest]
		if !ok || g.Node != e.Node || g.Generation != u.Generation {
			continue
		}
		c := u
		g.Usage = &c
	}
	s.applyPartitionReports(e.Node, p.Partitions)
	return nil
}
