package cluster

import (
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
)

// checkNUMA checks a numatune, emulatorpin or vcpupin value against the
// guest and, once it is placed, against what its node reported, as virsh
// checks them against the domain and its host: a live change of the mode
// is refused (the memory policy of a process is set at launch), as is a
// live nodeset of a guest whose mode is not strict or restrictive; pins
// are for QEMU guests on nodes with per-vCPU groups, and name CPUs of the
// guest's own cpuset. knob returns the value in force in the scope the
// change reaches; set holds the command's other values.
func checkNUMA(s *State, g *Guest, name, v string, live bool, set map[string]string) error {
	mode := func(knob func(string) string) string {
		if m, ok := set["numa_mode"]; ok {
			return m
		}
		return knob("numa_mode")
	}
	var n *Node
	if g.Node != "" {
		n = s.Nodes[g.Node]
	}
	switch name {
	case "numa_mode":
		if live && v != g.Knob("numa_mode") {
			return fmt.Errorf("%w: guest %q runs in numa mode %s: a running guest's mode cannot change (its memory policy was set when it started); use --config, and it takes effect at the next start",
				api.ErrConflict, g.Name, g.Knob("numa_mode"))
		}
	case "numa_nodeset":
		if live && !events.NUMABinds(mode(g.Knob)) {
			return fmt.Errorf("%w: guest %q runs in numa mode %s: only a strict or restrictive nodeset (cpuset.mems) can change while it runs; use --config",
				api.ErrConflict, g.Name, mode(g.Knob))
		}
		if n != nil {
			return within("numa_nodeset", v, nodeNUMANodes(n), "memory nodes", "node "+n.ID)
		}
	case "emulatorpin", "vcpupin":
		if g.Driver != events.DriverQEMU {
			return &events.FieldError{Field: name, Value: v,
				Want: fmt.Sprintf("only QEMU guests have an emulator and vCPU threads to pin; %s is a %s guest: pin the whole guest with guest create --cpuset", g.Name, g.Driver)}
		}
		if n != nil && !n.VCPUGroups {
			return &events.FieldError{Field: name, Value: v,
				Want: fmt.Sprintf("node %s keeps a QEMU guest in one group (per-vCPU and emulator groups are made where the agent finds the cpu controller, on cgroup v1 or v2; this node has none, or its agent is older): pin the whole guest with guest create --cpuset", n.ID)}
		}
		lists := map[string]string{name: v}
		if name == "vcpupin" {
			pins, err := events.ParseVCPUPins(v)
			if err != nil {
				return err
			}
			lists = map[string]string{}
			for _, cpu := range slices.Sorted(maps.Keys(pins)) {
				if cpu >= g.VCPUs {
					return &events.FieldError{Field: name, Value: v,
						Want: fmt.Sprintf("guest %s has %d vCPUs (0 to %d); vCPU %d is not one of them", g.Name, g.VCPUs, g.VCPUs-1, cpu)}
				}
				lists[name+" of vCPU "+strconv.Itoa(cpu)] = pins[cpu]
			}
		}
		for _, what := range slices.Sorted(maps.Keys(lists)) {
			if g.CPUs != "" {
				if err := within(what, lists[what], g.CPUs, "CPUs", "guest "+g.Name+"'s own cpuset"); err != nil {
					return err
				}
			}
			if n != nil {
				if err := within(what, lists[what], nodeCPUs(n), "CPUs", "node "+n.ID); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// within refuses a list that names ids outside have.
func within(field, list, have, what, of string) error {
	want, err := events.ParseIDList(field, list)
	if err != nil {
		return err
	}
	got, _ := events.ParseIDList(field, have)
	var missing []int
	for _, id := range want {
		if !slices.Contains(got, id) {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return &events.FieldError{Field: field, Value: list,
			Want: fmt.Sprintf("names %s %s, which %s does not have (it has %s)", what, events.FormatIDList(missing), of, have)}
	}
	return nil
}

// nodeNUMANodes is the memory nodes a node's guests may use: as its agent
// reported them, else node 0, which every Linux host has.
func nodeNUMANodes(n *Node) string {
	if n.NUMANodes != "" {
		return n.NUMANodes
	}
	return "0"
}

// nodeCPUs is the CPUs a node's guests may use: as its agent reported
// them, else the scheduler's 0 to CPUs-1.
func nodeCPUs(n *Node) string {
	if n.CPUSet != "" {
		return n.CPUSet
	}
	if n.CPUs <= 0 {
		return "0"
	}
	return "0-" + strconv.Itoa(n.CPUs-1)
}
