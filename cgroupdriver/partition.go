package cgroupdriver

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// A cluster partition is a tenant or tier group with limits of its own, as
// libvirt's resource partitions are, made on every node:
//
//	<partition>/corral/partitions/<name>                 the partition's limits
//	<partition>/corral/partitions/<name>/<kind>/<guest>  its guests
//
// "partitions" sits beside the kind directories and the agent's group, and
// a partition holds only kind directories, so no partition, guest or agent
// group can take another's path. A partition's name follows the guest ID
// rule. Its limits cap all its guests together, on top of each guest's own.

// partitionsGroup is the directory under the corral root that holds the
// cluster's partitions.
const partitionsGroup = "partitions"

// ErrInvalidPartition is returned for a partition name that is not a safe
// path component, or limits a partition does not take.
var ErrInvalidPartition = errors.New("corral: invalid partition")

// ErrPartitionInUse is returned by [Driver.RemovePartition] while a guest's
// group is still inside the partition.
var ErrPartitionInUse = errors.New("corral: partition still holds guests")

// PartitionKnobs are the knobs (JSON names of [Resources]) a partition
// takes: its group's share of the CPU, its CPU cap (global_*, as virsh's
// global_* caps a whole guest), its memory limits, its task limit and its
// I/O weight. They mean, on the partition's group, what they mean on a
// guest's.
func PartitionKnobs() []string {
	return []string{"blkio_weight", "cpu_shares", "global_period", "global_quota", "hard_limit", "pids_max", "soft_limit"}
}

// ValidatePartitionName reports whether name can name a partition: the rule
// of guest IDs, [a-z0-9][a-z0-9-]{0,62}.
func ValidatePartitionName(name string) error {
	if err := ValidateGuestID(name); err != nil {
		return fmt.Errorf("%w: name %w", ErrInvalidPartition, err)
	}
	return nil
}

// partitionOnly refuses every field of r a partition does not take.
func partitionOnly(r *Resources) error {
	probe := *r
	probe.CPUShares, probe.GlobalPeriodUs, probe.GlobalQuotaUs = nil, nil, nil
	probe.MemoryHardLimit, probe.MemorySoftLimit, probe.PidsMax, probe.BlkioWeight = nil, nil, nil, nil
	var names []string
	for k := range probe.Knobs() {
		names = append(names, k)
	}
	if probe.BlkioThrottle != nil || probe.BlkioDevices != nil {
		names = append(names, "blkio device limits")
	}
	if probe.Devices != nil {
		names = append(names, "devices")
	}
	if len(names) == 0 {
		return nil
	}
	slices.Sort(names)
	return fmt.Errorf("%w: %s: a partition takes only %s", ErrInvalidPartition, strings.Join(names, ", "), strings.Join(PartitionKnobs(), ", "))
}

func (l *layout) partitionDir(i int, name string) string {
	return l.rootDir(i) + "/" + partitionsGroup + "/" + name
}

// PlanPartition validates r for partition name and returns the limit
// writes [Driver.ApplyPartition] performs, in order. It does no I/O.
func (d *Driver) PlanPartition(name string, r Resources) ([]Write, error) {
	if err := ValidatePartitionName(name); err != nil {
		return nil, err
	}
	if err := partitionOnly(&r); err != nil {
		return nil, err
	}
	if err := validate(d.l, &d.host, &r); err != nil {
		return nil, err
	}
	p := planner{l: d.l, dir: func(i int) string { return d.l.partitionDir(i, name) }}
	p.all(&r, &d.host)
	return p.out, nil
}

// PartitionDirs returns partition name's group in every hierarchy, in the
// order of the report's hierarchies.
func (d *Driver) PartitionDirs(name string) ([]string, error) {
	if err := ValidatePartitionName(name); err != nil {
		return nil, err
	}
	out := make([]string, len(d.l.hs))
	for i := range d.l.hs {
		out[i] = d.l.partitionDir(i, name)
	}
	return out, nil
}

// planPartitionTree lists the steps that make partition name's group and
// its kind directories in every hierarchy, as planTree makes the corral
// tree: cpusets inherited on v1, controllers enabled on v2.
func planPartitionTree(l *layout, h *HostInfo, name string) []Write {
	enable := l.v2Enable()
	subtree := "+" + strings.Join(enable, " +")
	var ops []Write
	for i, hh := range l.hs {
		v2 := hh.Version == 2 && len(enable) > 0
		part := l.partitionDir(i, name)
		dirs := []string{l.rootDir(i) + "/" + partitionsGroup, part}
		for _, k := range Kinds() {
			dirs = append(dirs, part+"/"+string(k))
		}
		for _, dir := range dirs {
			ops = append(ops, Write{Knob: "tree", Dir: dir})
			ops = append(ops, cpusetInit(l, h, i, dir)...)
			if v2 {
				ops = append(ops, Write{Knob: "tree", Dir: dir, File: "cgroup.subtree_control", Value: subtree})
			}
		}
	}
	return ops
}

// ensurePartitionTree makes the corral tree and partition name's groups.
// It is idempotent.
func (d *Driver) ensurePartitionTree(name string) error {
	if err := d.ensureTree(); err != nil {
		return err
	}
	for _, op := range planPartitionTree(d.l, &d.host, name) {
		if err := runOp(op); err != nil {
			return fmt.Errorf("corral: partition %s: %w", name, err)
		}
	}
	return nil
}

// ApplyPartition makes partition name's group and kind directories in
// every hierarchy (where missing) and writes r to the group. Nothing is
// written when r is invalid. It returns the writes performed: all of them
// or, when the host refuses one (a CPU cap below a guest's own on v1, a
// memory limit below what the partition's guests use), those before it.
func (d *Driver) ApplyPartition(name string, r Resources) ([]Write, error) {
	ws, err := d.PlanPartition(name, r)
	if err != nil {
		return nil, err
	}
	if err := d.ensurePartitionTree(name); err != nil {
		return nil, err
	}
	for i, w := range ws {
		if err := applyWrite(w); err != nil {
			return settled(ws, i), fmt.Errorf("corral: apply %s for partition %s: %s = %q: %w", w.Knob, name, w.Path(), w.Value, err)
		}
	}
	return ws, nil
}

// ObservePartition reads back every limit r manages on partition name's
// group and says which ones drifted. Repair is [Driver.ApplyPartition]
// with the same r.
func (d *Driver) ObservePartition(name string, r Resources) ([]Observation, error) {
	ws, err := d.PlanPartition(name, r)
	if err != nil {
		return nil, err
	}
	return observeWrites(ws, d.host.PageSize, "partition "+name, readFile)
}

// Partitions lists the partitions whose group exists in any hierarchy,
// sorted. Directories whose names are not partition names are skipped.
func (d *Driver) Partitions() ([]string, error) {
	var out []string
	for i := range d.l.hs {
		names, err := subdirs(d.l.rootDir(i) + "/" + partitionsGroup)
		if err != nil {
			if isErrno(err, unix.ENOENT) {
				continue
			}
			return nil, fmt.Errorf("corral: partitions: %w", err)
		}
		for _, n := range names {
			if ValidatePartitionName(n) == nil && !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// RemovePartition removes partition name's group and its kind directories
// in every hierarchy. It refuses, with [ErrPartitionInUse] naming the
// guests, while a guest's group is inside: it never kills a guest (the
// agent removes a guest through its own, generation-keyed path). Removing
// a partition that does not exist is not an error.
func (d *Driver) RemovePartition(name string) error {
	if err := ValidatePartitionName(name); err != nil {
		return err
	}
	var guests []string
	for i := range d.l.hs {
		for _, k := range Kinds() {
			ids, err := subdirs(d.l.partitionDir(i, name) + "/" + string(k))
			if err != nil && !isErrno(err, unix.ENOENT) {
				return fmt.Errorf("corral: remove partition %s: %w", name, err)
			}
			for _, id := range ids {
				if g := string(k) + "/" + id; !slices.Contains(guests, g) {
					guests = append(guests, g)
				}
			}
		}
	}
	if len(guests) > 0 {
		slices.Sort(guests)
		return fmt.Errorf("%w: partition %s holds %s: destroy them first", ErrPartitionInUse, name, strings.Join(guests, ", "))
	}
	for i := range d.l.hs {
		if err := removeTree(d.l.partitionDir(i, name)); err != nil {
			return fmt.Errorf("corral: remove partition %s: %w", name, err)
		}
	}
	return nil
}
