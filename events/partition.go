package events

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Partitions are cluster-wide groups (a tenant or a tier, as libvirt's
// resource partitions are): every node makes one group per partition, with
// the partition's limits, and a guest created in a partition lives beneath
// that group on every controller. Its limits are guest knobs by name and
// canonical value, so the same words mean the same on a partition as on a
// guest.

// PartitionSet creates partition Name or replaces its limits. Limits holds
// every managed limit, knob name to canonical value (see
// [CanonicalPartitionLimits]); a knob left out is not managed.
type PartitionSet struct {
	Name   string            `json:"name"`
	Limits map[string]string `json:"limits,omitempty"`
}

// PartitionDeleted removes partition Name; no guest may be in it.
type PartitionDeleted struct {
	Name string `json:"name"`
}

func (*PartitionSet) EventType() Type     { return TypePartitionSet }
func (*PartitionDeleted) EventType() Type { return TypePartitionDeleted }

// partitionKnobs are the knobs a partition takes, with how each reads.
var partitionKnobs = map[string]func(string) (string, error){
	"cpu_shares":    knobs["cpu_shares"].parse,
	"global_period": knobs["global_period"].parse,
	"global_quota":  knobs["global_quota"].parse,
	"hard_limit":    knobs["hard_limit"].parse,
	"soft_limit":    knobs["soft_limit"].parse,
	"blkio_weight":  knobs["blkio_weight"].parse,
	"pids_max":      pidsMax,
}

// PartitionKnobNames lists the knobs a partition takes, sorted.
func PartitionKnobNames() []string { return slices.Sorted(maps.Keys(partitionKnobs)) }

// pidsMax reads a task limit: a whole number of at least 1, or unlimited.
func pidsMax(s string) (string, error) {
	if s == Unlimited || s == "-1" || s == "max" {
		return Unlimited, nil
	}
	v, err := intRange("pids_max", 1, 1<<22)(s)
	if err != nil {
		return "", fieldErr("pids_max", s, "use a number of tasks from 1 to 4194304, or unlimited")
	}
	return v, nil
}

// CanonicalPartitionLimits checks every limit of a partition and returns
// them in canonical form. A CPU period needs a quota, as on a guest's
// group the kernel reads the one against the other.
func CanonicalPartitionLimits(limits map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(limits))
	for _, k := range slices.Sorted(maps.Keys(limits)) {
		parse, ok := partitionKnobs[k]
		if !ok {
			return nil, fieldErr("limit", k, "a partition takes "+strings.Join(PartitionKnobNames(), ", "))
		}
		v, err := parse(strings.TrimSpace(limits[k]))
		if err != nil {
			return nil, err
		}
		out[k] = v
	}
	if _, ok := out["global_period"]; ok {
		if _, ok := out["global_quota"]; !ok {
			return nil, fieldErr("global_period", out["global_period"], "give global_quota too (or --cpus): a period alone caps nothing")
		}
	}
	return out, nil
}

func (p *PartitionSet) Validate() error {
	if err := ValidateID("partition name", p.Name); err != nil {
		return err
	}
	c, err := CanonicalPartitionLimits(p.Limits)
	if err != nil {
		return err
	}
	if !maps.Equal(c, p.Limits) && len(p.Limits) > 0 {
		return fieldErr("limits", fmt.Sprint(p.Limits), "canonical values, as CanonicalPartitionLimits writes them")
	}
	return nil
}

func (p *PartitionDeleted) Validate() error { return ValidateID("partition name", p.Name) }

// PartitionApplied is one node's account of one partition, in its usage
// report: the limits it holds on the host (canonical values), at which
// partition.set (Index), and the host's error when it refused some.
type PartitionApplied struct {
	Name    string            `json:"name"`
	Index   uint64            `json:"index"`
	Applied map[string]string `json:"applied,omitempty"`
	Error   string            `json:"error,omitempty"`
}
