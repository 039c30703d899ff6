package cluster

import (
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
)

// This file is the one path from the log to a host: what a node must run
// (its desired state, listed), and what each event changes of it (routes,
// watched), both as api.DesiredGuest.

// Resources returns the settings of g's groups: the one place a knob of
// the log becomes a field of the cgroup driver. cpu_shares comes from the
// definition, the hard limit from the guest's memory (for a VM with room
// for QEMU itself), the cpuset from the placement's pinned CPUs, the device
// ACL (always: the minimal set for the guest's driver, which its node
// completes, plus the definition's extra devices); every persistent tuning
// the log holds overrides them, and the running instance's live tuning
// overrides that.
func Resources(g *Guest) cgroupdriver.Resources {
	var r cgroupdriver.Resources
	if g.CPUShares > 0 {
		r.CPUShares = new(uint64(g.CPUShares))
	}
	if r.SetKnob("devices", events.AllowedDevicesText(g.Devices)) != nil {
		// A definition the log took always reads; should a newer build
		// not, the guest keeps its minimal set rather than no ACL.
		r.Devices = &cgroupdriver.DeviceACL{}
	}
	mem := g.MaxMemory() // setmaxmem: the definition's memory until tuned
	if g.Driver == events.DriverQEMU {
		mem = events.QEMUMemoryLimit(mem)
	}
	if mem > 0 {
		r.MemoryHardLimit = new(mem)
	}
	r.CpusetCPUs = g.CPUs
	for _, tuning := range []map[string]string{g.Tuning, g.LiveTuning} {
		for _, k := range slices.Sorted(maps.Keys(tuning)) {
			// Tuning values were validated and made canonical before
			// they were committed; one that a newer build no longer
			// reads is left unmanaged rather than stopping the guest.
			_ = r.SetKnob(k, tuning[k])
		}
	}
	return r
}

// DesiredGuest returns g as its node must run it.
func DesiredGuest(g *Guest) api.DesiredGuest {
	def := g.GuestDefined
	def.Command = slices.Clone(def.Command)
	def.Labels = maps.Clone(def.Labels)
	def.Constraints = slices.Clone(def.Constraints)
	def.Devices = slices.Clone(def.Devices)
	if m := g.MaxMemory(); m != def.MemoryBytes && m > 0 {
		def.MemoryBytes = m // QEMU's -m and the drivers' hard limit follow setmaxmem
	}
	desired := g.Desired
	if g.StartAfterStop {
		// A start overtook a stop whose exit has not come yet: the node
		// stops this run first. Had it been told "running", an agent that
		// got the stop and the start in one pass would keep the run and
		// the exit the start waits for would never come; the exit makes
		// the guest placed again, and that update starts it.
		desired = DesiredStopped
	}
	d := api.DesiredGuest{
		Name: g.Name, Generation: g.Generation, Desired: desired, Status: g.Status, Paused: g.Paused,
		Definition: def, Resources: Resources(g), Restart: g.Restarts.Run,
	}
	// The balloon target (setmem): 0 leaves the guest all its memory.
	d.Memory, _ = strconv.ParseInt(g.Knob("memory"), 10, 64)
	var bw api.Bandwidth
	for _, dir := range []struct {
		name string
		r    *api.Rate
	}{{"inbound", &bw.Inbound}, {"outbound", &bw.Outbound}} {
		dir.r.Average, dir.r.Peak, dir.r.Burst = events.Bandwidth(g.Knob, dir.name)
	}
	if bw.Inbound.Average > 0 || bw.Outbound.Average > 0 {
		d.Bandwidth = &bw
	}
	d.BalloonEnforce = g.Knob("balloon_enforce") == "on"
	return d
}

// desiredOn returns g as node id must run it: its own node runs the
// guest, and during a migration each end learns its part. The other end
// holds the instance of its own generation: the target's (the
// migration's) before the switch, the source's after it.
// The target of an offline migration holds a reservation only: ok is
// false, it runs nothing of g yet.
func (s *State) desiredOn(g *Guest, id string) (d api.DesiredGuest, ok bool) {
	d = DesiredGuest(g)
	m := g.Migration
	if m == nil {
		return d, true
	}
	dm := &api.DesiredMigration{ID: m.ID, Role: api.MigrationSource, Phase: m.Phase, Address: m.Address, SourceGeneration: m.FromGeneration}
	if id == m.To {
		dm.Role, dm.Address = api.MigrationTarget, ""
	}
	d.Migration = dm
	switch {
	case m.Offline && id == m.From:
		d.Desired = DesiredStopped // stopped cleanly, then started on the target
	case m.Offline:
		return api.DesiredGuest{}, false
	case id != g.Node && id == m.To:
		d.Generation, d.Status, d.Resources.CpusetCPUs = m.ID, StatusPlaced, m.CPUs
	case id != g.Node:
		d.Generation, d.Status, d.Resources.CpusetCPUs = m.FromGeneration, StatusRunning, m.CPUs
	}
	return d, true
}

// Desired returns node id's desired state: every guest placed on it.
func (s *State) Desired(id string) (*api.Desired, error) {
	n, err := s.node(id)
	if err != nil {
		return nil, err
	}
	c := *n
	d := &api.Desired{Index: s.Index, Node: &c, Guests: []api.DesiredGuest{}, Partitions: s.desiredPartitions()}
	for _, name := range s.GuestsOn(id) {
		dg, _ := s.desiredOn(s.Guests[name], id)
		d.Guests = append(d.Guests, dg)
	}
	for _, g := range s.migratingOn(id) {
		if dg, ok := s.desiredOn(g, id); ok {
			d.Guests = append(d.Guests, dg)
		}
	}
	slices.SortFunc(d.Guests, func(a, b api.DesiredGuest) int { return strings.Compare(a.Name, b.Name) })
	return d, nil
}

// NodeIndex returns the index of the last event that concerned node id.
func (s *State) NodeIndex(id string) uint64 { return s.NodeEvents[id] }

// Route is what one committed event means to one node: the update its
// agent folds into its desired state.
type Route struct {
	Node string
	// Prev is the index of the node's previous event: a gap check.
	Prev uint64
	// Guest is the event's guest as Node must now run it, when it is
	// placed there; Removed names the guest when it left Node.
	Guest   *api.DesiredGuest
	Removed string
	// Partition is a partition every node must now hold; PartitionRemoved
	// names one deleted.
	Partition        *api.DesiredPartition
	PartitionRemoved string
}

// route records that the event at idx concerns the nodes the guest was on
// before and is on after it, and the event's own node, and returns the
// routes when want is set.
func (s *State) route(idx uint64, e *events.Event, before, beforeOther string, want bool) []Route {
	after, afterOther := "", ""
	var g *Guest
	if e.Guest != "" {
		if g = s.Guests[e.Guest]; g != nil {
			after, afterOther = g.Node, s.otherNode(g)
		}
	}
	var out []Route
	seen := [5]string{}
	for i, n := range [5]string{e.Node, before, after, beforeOther, afterOther} {
		if n == "" || slices.Contains(seen[:i], n) {
			continue
		}
		seen[i] = n
		if _, ok := s.Nodes[n]; !ok {
			continue
		}
		if s.NodeEvents == nil {
			s.NodeEvents = map[string]uint64{}
		}
		prev := s.NodeEvents[n]
		s.NodeEvents[n] = idx
		if !want {
			continue
		}
		r := Route{Node: n, Prev: prev}
		switch {
		case g != nil && (after == n || afterOther == n):
			if dg, ok := s.desiredOn(g, n); ok {
				r.Guest = &dg
			}
		case e.Guest != "" && (before == n || beforeOther == n):
			r.Removed = e.Guest
		}
		out = append(out, r)
	}
	return out
}

// View returns a copy of g as the API shows it, safe to encode after the
// state lock is released: its definition's cpu_shares is the persistent
// value, so no view keeps a stale copy (Knob gives the one in force).
func View(g *Guest) *Guest {
	c := *g
	c.HoldsCapacity = holdsCapacity(g)
	c.Applied = maps.Clone(g.Applied)
	c.Tuning = maps.Clone(g.Tuning)
	c.LiveTuning = maps.Clone(g.LiveTuning)
	c.TuningFailed = cloneFailures(g.TuningFailed)
	if g.Usage != nil {
		u := *g.Usage
		c.Usage = &u
	}
	if v, ok := g.Tuning["cpu_shares"]; ok {
		if r := (cgroupdriver.Resources{}); r.SetKnob("cpu_shares", v) == nil && r.CPUShares != nil {
			c.CPUShares = int(*r.CPUShares)
		}
	}
	return &c
}

// NodeView returns n with what is allocated on it.
func (s *State) NodeView(n *Node) api.NodeView {
	mem, cpu := s.Allocated(n.ID)
	cfg := s.SchedulerConfig()
	v := api.NodeView{Node: *n, AllocatedMemoryBytes: mem, AllocatedVCPUs: cpu, Guests: len(s.GuestsOn(n.ID)),
		CapacityMemoryBytes: cfg.MemoryCapacity(n.MemoryBytes - n.ReserveMemoryBytes),
		CapacityVCPUs:       int(cfg.VCPUCapacity(int64(n.CPUs - n.ReserveCPUs))),
		CPUOvercommit:       cfg.CPUOvercommit,
	}
	// Whether the node has an agent is all a reader learns of its secret.
	v.Agent, v.SecretHash = v.SecretHash != "", ""
	return v
}

// View returns the whole state as GET /v1/state answers it.
func (s *State) View() *api.State {
	out := &api.State{Index: s.Index, Servers: map[string]*api.ServerInfo{}, Nodes: []api.NodeView{}, Guests: []*Guest{}, Scheduler: s.Scheduler}
	for id, v := range s.Servers {
		c := *v
		out.Servers[id] = &c
	}
	for _, id := range slices.Sorted(maps.Keys(s.Nodes)) {
		out.Nodes = append(out.Nodes, s.NodeView(s.Nodes[id]))
	}
	for _, name := range slices.Sorted(maps.Keys(s.Guests)) {
		out.Guests = append(out.Guests, View(s.Guests[name]))
	}
	return out
}
