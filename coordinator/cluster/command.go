package cluster

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/scheduler"
)

// Command is a user's or agent's intent. Decide validates it against the
// current state and returns the events to propose; it never changes state
// and does no I/O. A command that would be wrong is refused here with an
// error that names the problem, so nothing is appended.
type Command interface {
	Decide(s *State, now time.Time, actor string) ([]events.Event, error)
}

// CreateGuest defines a guest and, unless NoStart, asks for it to run.
type CreateGuest struct{ api.CreateGuest }

// Definition turns the command into a validated guest definition.
func (c *CreateGuest) Definition() (*events.GuestDefined, error) {
	mem, err := events.ParseSize("memory", c.Memory)
	if err != nil {
		return nil, err
	}
	shares := c.CPUShares
	if shares == 0 {
		shares = events.DefaultCPUShares
	}
	vcpus := c.VCPUs
	if vcpus == 0 {
		vcpus = 1
	}
	cpuset := c.CPUSet
	if cpuset != "" {
		set, err := scheduler.ParseCPUSet(cpuset)
		if err != nil {
			return nil, fmt.Errorf("%w: cpuset: %s", events.ErrInvalid, strings.TrimPrefix(err.Error(), "corral: "))
		}
		cpuset = set.String()
	}
	devices, err := events.CanonicalAllowedDevices(c.Devices)
	if err != nil {
		return nil, err
	}
	if len(devices) == 0 {
		devices = nil
	}
	capAdd, capDrop, err := canonicalCapabilities(c.CapAdd, c.CapDrop)
	if err != nil {
		return nil, err
	}
	var disks []events.GuestDisk
	for _, spec := range c.Disks {
		d, err := events.ParseDisk(spec)
		if err != nil {
			return nil, err
		}
		disks = append(disks, d)
	}
	idmap, err := idMapOf(c.UserNS, c.IDMap)
	if err != nil {
		return nil, err
	}
	d := &events.GuestDefined{
		Name: c.Name, Driver: c.Driver, MemoryBytes: mem, VCPUs: vcpus, CPUShares: shares,
		Command: slices.Clone(c.Command), Rootfs: c.Rootfs, Kernel: c.Kernel, Initrd: c.Initrd,
		Labels: maps.Clone(c.Labels), Constraints: slices.Clone(c.Constraints), SpreadBy: c.SpreadBy,
		CPUSet: cpuset, PinCPUs: c.PinCPUs, Devices: devices, Partition: c.Partition, Reserve: c.Reserve,
		CapAdd: capAdd, CapDrop: capDrop, Disks: disks, IDMap: idmap, Network: c.Network,
	}
	if d.Network == events.NetworkNone {
		d.Network = ""
	}
	if d.Restart, err = restartPolicy(c.Restart); err != nil {
		return nil, err
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	// The scheduler's own rules: constraints parse, the cpuset is
	// canonical and fits the vCPUs.
	if _, err := schedGuest(d); err != nil {
		return nil, err
	}
	return d, nil
}

func (c *CreateGuest) Decide(s *State, now time.Time, actor string) ([]events.Event, error) {
	d, err := c.Definition()
	if err != nil {
		return nil, err
	}
	if _, ok := s.Guests[d.Name]; ok {
		return nil, api.GuestExists(d.Name)
	}
	if err := s.checkPartitionExists(d.Partition); err != nil {
		return nil, err
	}
	out := []events.Event{subject(events.New(now, actor, d), d.Name, "")}
	placed := &Guest{GuestDefined: *d}
	if len(c.Tuning) > 0 {
		tuned, g, err := tuneAtCreation(s, d, c.Tuning, now, actor)
		if err != nil {
			return nil, err
		}
		out, placed = append(out, tuned...), g
	}
	if !c.NoStart {
		out = append(out, subject(events.New(now, actor, &events.GuestStartRequested{}), d.Name, ""))
	}
	// A guest that can be placed at once is placed in the same proposal,
	// unless others wait before it: they keep their turn. One that is not
	// to start and keeps no reservation waits unplaced.
	if c.NoStart && !d.Reserve {
		return out, nil
	}
	if p, ok := s.PlaceNow(placed, now); ok {
		e := subject(events.New(now, PlacementActor, &p), d.Name, p.Node)
		e.Reason = "placed at creation"
		out = append(out, e)
	}
	return out, nil
}

// PlacementActor is the actor of placements the scheduler makes.
const PlacementActor = "scheduler"

// GuestAction is start, stop, suspend, resume or destroy of one guest.
type GuestAction struct{ api.GuestAction }

func (c *GuestAction) Decide(s *State, now time.Time, actor string) ([]events.Event, error) {
	if err := events.ValidateID("guest name", c.Name); err != nil {
		return nil, err
	}
	if _, err := s.guest(c.Name); err != nil {
		return nil, err
	}
	var p events.Payload
	switch c.Action {
	case "start":
		p = &events.GuestStartRequested{}
	case "stop":
		p = &events.GuestStopRequested{}
	case "destroy":
		p = &events.GuestUndefined{}
	case "suspend":
		p = &events.GuestSuspendRequested{}
	case "resume":
		p = &events.GuestResumeRequested{}
	default:
		return nil, &events.FieldError{Field: "action", Value: c.Action, Want: "use start, stop, suspend, resume or destroy"}
	}
	e := subject(events.New(now, actor, p), c.Name, "")
	e.Reason = c.Reason
	return []events.Event{e}, nil
}

// TuneGuest changes knobs of a guest, one guest.tuned event per knob whose
// value changes in the scope it names, as virsh's --live, --config and
// --current do (see [api.TuneGuest]). An event's Old is the knob's value
// in that scope: the running instance's when Live (the persistent one
// when only that differs), else the persistent one.
type TuneGuest struct{ api.TuneGuest }

func (c *TuneGuest) Decide(s *State, now time.Time, actor string) ([]events.Event, error) {
	if err := events.ValidateID("guest name", c.Name); err != nil {
		return nil, err
	}
	g, err := s.guest(c.Name)
	if err != nil {
		return nil, err
	}
	if len(c.Set) == 0 {
		return nil, &events.FieldError{Field: "set", Value: "", Want: "name at least one knob=value (knobs: " + strings.Join(events.KnobNames(), ", ") + ")"}
	}
	live, persistent := c.Live, c.Persistent
	if !live && !persistent {
		live, persistent = running(g), true
	}
	if live && !running(g) {
		return nil, notRunning(g)
	}
	if _, ok := c.Set["max_memory"]; ok && c.Live {
		return nil, maxMemoryNotLive(g)
	}
	set := make(map[string]string, len(c.Set))
	for _, name := range slices.Sorted(maps.Keys(c.Set)) {
		k, err := events.LookupKnob(name)
		if err != nil {
			return nil, err
		}
		v, err := k.Canonical(c.Set[name])
		if err != nil {
			return nil, err
		}
		set[name] = v
	}
	if err := s.checkShaping(g, set); err != nil {
		return nil, err
	}
	for _, name := range slices.Sorted(maps.Keys(set)) {
		if err := checkNUMA(s, g, name, set[name], live, set); err != nil {
			return nil, err
		}
	}
	scope, err := memoryScopes(g, set, live, persistent)
	if err != nil {
		return nil, err
	}
	// Each scope the change reaches must keep its limits in order.
	if live {
		if err := checkMemoryLimits(g.Knob, set); err != nil {
			return nil, err
		}
	}
	if persistent {
		if err := checkMemoryLimits(g.ConfigKnob, set); err != nil {
			return nil, err
		}
	}
	var out []events.Event
	for _, name := range slices.Sorted(maps.Keys(set)) {
		v := set[name]
		live, persistent := live, persistent
		if sc, ok := scope[name]; ok {
			live, persistent = sc[0], sc[1]
		}
		if (!live || g.Knob(name) == v) && (!persistent || g.ConfigKnob(name) == v) {
			continue
		}
		// The running instance's value is the one a change reaching it
		// replaces, unless only the persistent one differs.
		old := g.ConfigKnob(name)
		if live && g.Knob(name) != v {
			old = g.Knob(name)
		}
		e := subject(events.New(now, actor, &events.GuestTuned{Knob: name, Old: old, New: v, Live: live, Persistent: persistent}), c.Name, "")
		e.Reason = c.Reason
		out = append(out, e)
	}
	after := tunedCopy(g, out)
	if err := s.checkMemoryFits(g, after); err != nil {
		return nil, err
	}
	if err := checkMaxMemorySwap(set, after); err != nil {
		return nil, err
	}
	return out, nil
}

// running reports whether g has an instance a live change reaches.
func running(g *Guest) bool { return g.Status == StatusRunning }

// notRunning refuses a live-only change to a guest with no running
// instance, as virsh refuses --live for a domain that is not running.
func notRunning(g *Guest) error {
	return fmt.Errorf("%w: guest %q is not running (it is %s): --live changes only a running guest; use --config to change what its next start uses",
		api.ErrConflict, g.Name, g.Status)
}

// checkMemoryLimits checks the memory limits a guest would have after set
// in one scope, whose values knob returns, as libvirt does before it
// writes any: when a command names hard_limit or swap_hard_limit, the
// swap limit must be at least the hard limit. A guest whose limits were
// already at odds (an older build let that through) can still be tuned
// in every other way.
func checkMemoryLimits(knob func(string) string, set map[string]string) error {
	_, hardSet := set["hard_limit"]
	_, swapSet := set["swap_hard_limit"]
	if !hardSet && !swapSet {
		return nil
	}
	value := func(name string) string {
		if v, ok := set[name]; ok {
			return v
		}
		return knob(name)
	}
	blame := "hard_limit"
	if swapSet && (!hardSet || set["hard_limit"] != events.Unlimited) {
		blame = "swap_hard_limit"
	}
	return events.CheckSwapLimit(value("hard_limit"), value("swap_hard_limit"), blame)
}

// RegisterNode records a host joining or re-joining. Secret, when set, is
// the agent's node secret: the log keeps its hash, and only an agent with
// the same secret may register the node again while it is up.
type RegisterNode struct {
	events.NodeRegistered
	Secret string `json:"-"`
}

func (c *RegisterNode) Decide(s *State, now time.Time, actor string) ([]events.Event, error) {
	p := c.NodeRegistered
	if err := p.ValidateRegistration(); err != nil {
		return nil, err
	}
	p.SecretHash = ""
	if c.Secret != "" {
		p.SecretHash = SecretHash(c.Secret)
	}
	if n, ok := s.Nodes[p.ID]; ok && n.SecretHash != "" && n.Status == NodeStatusUp && n.SecretHash != p.SecretHash {
		return nil, fmt.Errorf("%w: node %q is up and belongs to another agent; stop that agent, or wait until the node is declared down", api.ErrPermission, p.ID)
	}
	return []events.Event{subject(events.New(now, actor, &p), "", p.ID)}, nil
}

// SetNodeStatus declares a node up or down.
type SetNodeStatus struct{ api.SetNodeStatus }

func (c *SetNodeStatus) Decide(s *State, now time.Time, actor string) ([]events.Event, error) {
	n, err := s.node(c.ID)
	if err != nil {
		return nil, err
	}
	var p events.Payload
	switch c.Status {
	case NodeStatusUp:
		p = &events.NodeUp{}
	case NodeStatusDown:
		p = &events.NodeDown{}
	default:
		return nil, &events.FieldError{Field: "status", Value: c.Status, Want: "use up or down"}
	}
	if n.Status == c.Status {
		return nil, nil
	}
	e := subject(events.New(now, actor, p), "", c.ID)
	e.Reason = c.Reason
	return []events.Event{e}, nil
}

// PlaceGuests proposes placements, as the scheduler on the leader does.
type PlaceGuests struct {
	Placements []Placement `json:"placements"`
}

// Placement puts one guest on one node, with the exclusive CPUs it got.
type Placement struct {
	Guest string `json:"guest"`
	Node  string `json:"node"`
	CPUs  string `json:"cpus,omitempty"`
}

func (c *PlaceGuests) Decide(s *State, now time.Time, actor string) ([]events.Event, error) {
	out := make([]events.Event, 0, len(c.Placements))
	for _, p := range c.Placements {
		if e, ok := s.drainMigration(p, now, actor); ok {
			out = append(out, e) // a drain moves a running QEMU guest live
			continue
		}
		e := subject(events.New(now, actor, &events.GuestPlaced{Node: p.Node, CPUs: p.CPUs}), p.Guest, p.Node)
		if g := s.Guests[p.Guest]; g != nil {
			e.Reason = g.Restarts.Rescheduled
		}
		out = append(out, e)
	}
	return out, nil
}

// SetEligibility makes a node eligible or ineligible for new guests, or
// drains it.
type SetEligibility struct{ api.SetEligibility }

func (c *SetEligibility) Decide(s *State, now time.Time, actor string) ([]events.Event, error) {
	if err := events.ValidateID("node id", c.ID); err != nil {
		return nil, err
	}
	n, err := s.node(c.ID)
	if err != nil {
		return nil, err
	}
	p := &events.NodeEligibility{Eligibility: c.Eligibility, Deadline: c.Deadline.UTC(), MaxParallel: c.MaxParallel}
	if c.Deadline.IsZero() {
		p.Deadline = time.Time{}
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if n.Eligibility == p.Eligibility && p.Eligibility != events.Draining {
		return nil, nil
	}
	e := subject(events.New(now, actor, p), "", c.ID)
	e.Reason = c.Reason
	return []events.Event{e}, nil
}

// SetSchedulerConfig changes the cluster's placement policy.
type SetSchedulerConfig struct {
	events.SchedulerConfig
}

func (c *SetSchedulerConfig) Decide(s *State, now time.Time, actor string) ([]events.Event, error) {
	p := c.SchedulerConfig
	if p.CPUOvercommit == 0 {
		p.CPUOvercommit = scheduler.DefaultCPUOvercommit
	}
	if p.MemoryOvercommit == 0 {
		p.MemoryOvercommit = 1
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if s.Scheduler == p {
		return nil, nil
	}
	return []events.Event{events.New(now, actor, &p)}, nil
}

// RegisterServer records a coordinator server's addresses.
type RegisterServer struct {
	events.ServerRegistered
}

func (c *RegisterServer) Decide(s *State, now time.Time, actor string) ([]events.Event, error) {
	if cur, ok := s.Servers[c.ID]; ok && *cur == c.ServerRegistered {
		return nil, nil
	}
	p := c.ServerRegistered
	return []events.Event{events.New(now, actor, &p)}, nil
}

func subject(e events.Event, guest, node string) events.Event {
	e.Guest, e.Node = guest, node
	return e
}
