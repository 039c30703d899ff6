package cluster

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
)

// This file is the cluster's partitions: tenant or tier groups with limits
// of their own that every node holds (partition.set, partition.deleted),
// and the guests created in them.

// Partition is a partition as the state keeps it.
type Partition = api.Partition

// SetPartition creates a partition (Create) or changes the limits of one.
type SetPartition struct{ api.SetPartition }

func (c *SetPartition) Decide(s *State, now time.Time, actor string) ([]events.Event, error) {
	if err := events.ValidateID("partition name", c.Name); err != nil {
		return nil, err
	}
	cur, exists := s.Partitions[c.Name]
	switch {
	case c.Create && exists:
		return nil, fmt.Errorf("%w: partition %q exists (created at index %d); change its limits with corral partition set %s", api.ErrConflict, c.Name, cur.CreateIndex, c.Name)
	case !c.Create && !exists:
		return nil, api.NotFound("partition", c.Name)
	}
	set, err := events.CanonicalPartitionLimits(c.Limits)
	if err != nil {
		return nil, err
	}
	limits := map[string]string{}
	if exists {
		maps.Copy(limits, cur.Limits)
	}
	maps.Copy(limits, set)
	for _, k := range c.Unset {
		if !slices.Contains(events.PartitionKnobNames(), k) {
			return nil, &events.FieldError{Field: "unset", Value: k, Want: "a partition's knob: " + strings.Join(events.PartitionKnobNames(), ", ")}
		}
		if _, ok := set[k]; ok {
			return nil, &events.FieldError{Field: "unset", Value: k, Want: "a knob the same command does not set"}
		}
		delete(limits, k)
	}
	if _, err := events.CanonicalPartitionLimits(limits); err != nil {
		return nil, err // a period left without its quota
	}
	if _, err := PartitionResources(limits); err != nil {
		return nil, err
	}
	if exists && maps.Equal(limits, cur.Limits) {
		return nil, nil
	}
	if len(limits) == 0 {
		limits = nil
	}
	e := events.New(now, actor, &events.PartitionSet{Name: c.Name, Limits: limits})
	e.Reason = c.Reason
	return []events.Event{e}, nil
}

// DeletePartition deletes a partition; it is refused while a guest is in it.
type DeletePartition struct {
	Name   string `json:"name"`
	Reason string `json:"reason,omitempty"`
}

func (c *DeletePartition) Decide(s *State, now time.Time, actor string) ([]events.Event, error) {
	if err := events.ValidateID("partition name", c.Name); err != nil {
		return nil, err
	}
	if err := s.checkPartitionUnused(c.Name); err != nil {
		return nil, err
	}
	e := events.New(now, actor, &events.PartitionDeleted{Name: c.Name})
	e.Reason = c.Reason
	return []events.Event{e}, nil
}

// checkPartitionUnused fails when partition name does not exist or a guest
// is in it, naming the guests.
func (s *State) checkPartitionUnused(name string) error {
	if _, ok := s.Partitions[name]; !ok {
		return api.NotFound("partition", name)
	}
	if in := s.PartitionGuests(name); len(in) > 0 {
		return fmt.Errorf("%w: partition %q holds guests %s; destroy them first (corral guest destroy NAME): a guest's partition is fixed at create",
			api.ErrConflict, name, strings.Join(in, ", "))
	}
	return nil
}

// PartitionGuests lists the guests created in partition name, sorted.
func (s *State) PartitionGuests(name string) []string {
	var out []string
	for n, g := range s.Guests {
		if g.Partition == name {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// checkPartitionExists fails when a guest names a partition that does not exist.
func (s *State) checkPartitionExists(name string) error {
	if name == "" {
		return nil
	}
	if _, ok := s.Partitions[name]; !ok {
		return fmt.Errorf("%w: partition %q does not exist; create it first (corral partition create %s) or leave --partition out", api.ErrNotFound, name, name)
	}
	return nil
}

func (s *State) applyPartitionSet(idx uint64, p *events.PartitionSet) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if _, err := PartitionResources(p.Limits); err != nil {
		return err
	}
	if s.Partitions == nil {
		s.Partitions = map[string]*Partition{}
	}
	cur, ok := s.Partitions[p.Name]
	if !ok {
		cur = &Partition{Name: p.Name, CreateIndex: idx}
		s.Partitions[p.Name] = cur
	}
	cur.Limits, cur.ModifyIndex = maps.Clone(p.Limits), idx
	return nil
}

func (s *State) applyPartitionDeleted(p *events.PartitionDeleted) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if err := s.checkPartitionUnused(p.Name); err != nil {
		return err
	}
	delete(s.Partitions, p.Name)
	if len(s.Partitions) == 0 {
		s.Partitions = nil
	}
	return nil
}

// applyPartitionReports records a node's account of its partitions, from
// its usage report. Reports about partitions the log no longer has, or
// about an older partition.set than one already reported, are skipped.
func (s *State) applyPartitionReports(node string, reports []events.PartitionApplied) {
	for _, r := range reports {
		p, ok := s.Partitions[r.Name]
		if !ok || r.Index > p.ModifyIndex {
			continue
		}
		if old := p.Nodes[node]; old != nil && old.Index > r.Index {
			continue
		}
		if p.Nodes == nil {
			p.Nodes = map[string]*api.PartitionNode{}
		}
		p.Nodes[node] = &api.PartitionNode{Index: r.Index, Applied: maps.Clone(r.Applied), Error: events.TruncateError(r.Error)}
	}
}

// PartitionResources returns the settings of a partition's group: the one
// place a partition's limits become a field of the cgroup driver.
func PartitionResources(limits map[string]string) (cgroupdriver.Resources, error) {
	var r cgroupdriver.Resources
	for _, k := range slices.Sorted(maps.Keys(limits)) {
		v := limits[k]
		if k == "global_quota" && v == "-1" {
			v = cgroupdriver.UnlimitedText
		}
		if err := r.SetKnob(k, v); err != nil {
			return cgroupdriver.Resources{}, fmt.Errorf("%w: partition limit %s=%s: %v", events.ErrInvalid, k, v, err)
		}
	}
	return r, nil
}

// DesiredPartition returns p as every node must hold it.
func DesiredPartition(p *Partition) api.DesiredPartition {
	r, _ := PartitionResources(p.Limits) // checked when committed
	return api.DesiredPartition{Name: p.Name, Index: p.ModifyIndex, Resources: r}
}

// desiredPartitions lists every partition as a node must hold it, sorted.
func (s *State) desiredPartitions() []api.DesiredPartition {
	var out []api.DesiredPartition
	for _, name := range slices.Sorted(maps.Keys(s.Partitions)) {
		out = append(out, DesiredPartition(s.Partitions[name]))
	}
	return out
}

// routePartition records that a partition event concerns every node, and
// returns the routes when want is set.
func (s *State) routePartition(idx uint64, e *events.Event, want bool) []Route {
	var name string
	switch p := e.Payload.(type) {
	case *events.PartitionSet:
		name = p.Name
	case *events.PartitionDeleted:
		name = p.Name
	default:
		return nil
	}
	var out []Route
	for _, n := range slices.Sorted(maps.Keys(s.Nodes)) {
		if s.NodeEvents == nil {
			s.NodeEvents = map[string]uint64{}
		}
		prev := s.NodeEvents[n]
		s.NodeEvents[n] = idx
		if !want {
			continue
		}
		r := Route{Node: n, Prev: prev}
		if p, ok := s.Partitions[name]; ok {
			dp := DesiredPartition(p)
			r.Partition = &dp
		} else {
			r.PartitionRemoved = name
		}
		out = append(out, r)
	}
	return out
}

// PartitionView returns a copy of p with its guests, safe to encode after
// the state lock is released.
func (s *State) PartitionView(p *Partition) *api.PartitionView {
	c := *p
	c.Limits = maps.Clone(p.Limits)
	c.Nodes = make(map[string]*api.PartitionNode, len(p.Nodes))
	for n, r := range p.Nodes {
		rc := *r
		rc.Applied = maps.Clone(r.Applied)
		c.Nodes[n] = &rc
	}
	guests := s.PartitionGuests(p.Name)
	if guests == nil {
		guests = []string{}
	}
	return &api.PartitionView{Partition: c, Guests: guests}
}
