package nodeagent

import (
	"errors"
	"maps"
	"slices"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/events"
)

// Partitioner makes the cluster's partitions on the host: each one's group
// and limits, read back for drift, and removed once the log deleted it
// and no guest is left in it. *cgroupdriver.Driver is one; an agent whose
// Cgroups is not one holds no partitions and says so.
type Partitioner interface {
	ApplyPartition(name string, r cgroupdriver.Resources) ([]cgroupdriver.Write, error)
	ObservePartition(name string, r cgroupdriver.Resources) ([]cgroupdriver.Observation, error)
	Partitions() ([]string, error)
	RemovePartition(name string) error
}

// partState is what the agent holds of one partition on its host.
type partState struct {
	index    uint64            // the partition.set it applied
	applied  map[string]string // the limits the host holds, canonical
	err      string            // why the host refused the rest
	reported bool              // the node's usage report carried this state
}

// syncPartitions makes the host's partitions match the log's before the
// guests are looked at, so a guest starts beneath its partition's limits:
// a partition new or changed since the agent applied it is applied, with
// full its limits are read back and drift written again, and a partition
// the log no longer has is removed once empty (found on the host only
// with scan; one the agent applied, on every pass). A partition whose limits
// the host refuses is logged and reported in the node's usage, not
// retried until its limits change; it stops nothing else.
func (a *Agent) syncPartitions(d Desired, full, scan bool) {
	pt, ok := a.deps.Cgroups.(Partitioner)
	if !ok {
		if len(d.Partitions) > 0 && !a.partsUnsupported {
			a.partsUnsupported = true
			a.log.Error("the cluster has partitions and this agent's cgroup driver cannot make them", "driver", a.deps.Cgroups)
		}
		return
	}
	if a.parts == nil {
		a.parts = map[string]*partState{}
	}
	want := map[string]bool{}
	for _, p := range d.Partitions {
		want[p.Name] = true
		st := a.parts[p.Name]
		if st == nil || st.index != p.Index {
			a.applyPartition(pt, p.Name, p.Index, p.Resources)
			continue
		}
		if !full || st.err != "" {
			continue
		}
		obs, err := pt.ObservePartition(p.Name, p.Resources)
		if err != nil {
			a.log.Warn("reading back a partition's limits", "partition", p.Name, "err", err)
			continue
		}
		for _, o := range obs {
			if o.Drift {
				a.log.Warn("partition drift", "partition", p.Name, "knob", o.Knob, "file", o.File, "expected", o.Want, "found", o.Got)
				a.applyPartition(pt, p.Name, p.Index, p.Resources)
				break
			}
		}
	}
	var present []string
	if scan {
		var err error
		if present, err = pt.Partitions(); err != nil {
			a.log.Warn("listing the host's partitions", "err", err)
		}
	}
	for name := range a.parts {
		if !slices.Contains(present, name) {
			present = append(present, name)
		}
	}
	for _, name := range present {
		if want[name] {
			continue
		}
		if err := pt.RemovePartition(name); err != nil {
			if errors.Is(err, cgroupdriver.ErrPartitionInUse) {
				a.log.Debug("a deleted partition waits for its guests to go", "partition", name, "err", err)
			} else {
				a.log.Warn("removing a deleted partition", "partition", name, "err", err)
			}
			continue
		}
		a.log.Info("removed a deleted partition", "partition", name)
		delete(a.parts, name)
	}
}

func (a *Agent) applyPartition(pt Partitioner, name string, index uint64, r cgroupdriver.Resources) {
	writes, err := pt.ApplyPartition(name, r)
	st := &partState{index: index, applied: cgroupdriver.Applied(r, writes)}
	if err != nil {
		st.err = err.Error()
		a.log.Error("applying a partition's limits", "partition", name, "index", index, "err", err)
	} else {
		a.log.Info("partition applied", "partition", name, "index", index, "limits", st.applied)
	}
	a.parts[name] = st
}

// partitionReports returns the partitions whose state the node has not
// reported yet, sorted, and marks them reported.
func (a *Agent) partitionReports() []events.PartitionApplied {
	var out []events.PartitionApplied
	for _, name := range slices.Sorted(maps.Keys(a.parts)) {
		st := a.parts[name]
		if st.reported {
			continue
		}
		st.reported = true
		out = append(out, events.PartitionApplied{Name: name, Index: st.index, Applied: maps.Clone(st.applied), Error: events.TruncateError(st.err)})
	}
	return out
}
