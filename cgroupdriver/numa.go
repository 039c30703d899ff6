package cgroupdriver

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// This file is numatune, emulatorpin and vcpupin, as virsh has them. In
// strict and restrictive mode the nodeset is the guest's cpuset.mems (and
// that of a QEMU guest's vcpuN and emulator groups); in preferred and
// interleave mode it is a memory policy (set_mempolicy) that the guest's
// process gets before it executes anything, and which its threads and
// children inherit: see mempolicy.go. emulatorpin and vcpupin are the
// cpuset.cpus of a QEMU guest's emulator and vcpuN groups (threads.go).

// NUMA modes, as virsh numatune names them.
const (
	NUMAStrict      = "strict"
	NUMAPreferred   = "preferred"
	NUMAInterleave  = "interleave"
	NUMARestrictive = "restrictive"
)

// MemPolicyFile is the pseudo file of a [Write] that records a memory
// policy set at launch: [Driver.Apply] writes nothing for it, and
// [Driver.Observe] reports no drift (the policy belongs to the process).
// Its Value is "MODE NODES".
const MemPolicyFile = "<set_mempolicy at launch>"

// numaBinds reports whether mode confines memory with cpuset.mems.
func numaBinds(mode string) bool {
	return mode == "" || mode == NUMAStrict || mode == NUMARestrictive
}

func (r *Resources) setNUMAKnob(knob, value string) error {
	bad := func(want string) error { return &FieldError{Field: knob, Value: value, Reason: want} }
	switch knob {
	case "numa_mode":
		if !slices.Contains([]string{NUMAStrict, NUMAPreferred, NUMAInterleave, NUMARestrictive}, value) {
			return bad("must be strict, preferred, interleave or restrictive")
		}
		r.NUMAMode = value
	case "numa_nodeset", "emulatorpin":
		set, err := parseCPUSet(value)
		if err != nil || len(set) == 0 {
			return bad("must be a cpuset list like 0-3,6")
		}
		if knob == "numa_nodeset" {
			r.CpusetMems = set.String()
		} else {
			r.EmulatorPin = set.String()
		}
	case "vcpupin":
		pins, err := parseVCPUPins(value)
		if err != nil {
			return bad(err.Error())
		}
		r.VCPUPin = pins
	}
	return nil
}

// parseVCPUPins parses "VCPU:CPULIST" entries separated by ";".
func parseVCPUPins(s string) (map[int]string, error) {
	out := map[int]string{}
	for _, e := range strings.Split(s, ";") {
		n, list, ok := strings.Cut(e, ":")
		v, err := strconv.ParseUint(n, 10, 16)
		if !ok || err != nil {
			return nil, fmt.Errorf("must be VCPU:CPULIST entries separated by \";\" (0:1;1:0-1); %q is not one", e)
		}
		set, err := parseCPUSet(list)
		if err != nil || len(set) == 0 {
			return nil, fmt.Errorf("vCPU %d: %q is not a cpuset list like 0-3,6", v, list)
		}
		if _, dup := out[int(v)]; dup {
			return nil, fmt.Errorf("vCPU %d is listed twice", v)
		}
		out[int(v)] = set.String()
	}
	return out, nil
}

func vcpuPinText(pins map[int]string) string {
	parts := make([]string, 0, len(pins))
	for _, n := range slices.Sorted(maps.Keys(pins)) {
		set, _ := parseCPUSet(pins[n])
		parts = append(parts, strconv.Itoa(n)+":"+set.String())
	}
	return strings.Join(parts, ";")
}

func (r Resources) numaKnobText(out map[string]string) {
	if r.CpusetMems != "" {
		out["numa_nodeset"] = r.CpusetMems
	}
	if r.NUMAMode != "" {
		out["numa_mode"] = r.NUMAMode
	}
	if r.EmulatorPin != "" {
		out["emulatorpin"] = r.EmulatorPin
	}
	if len(r.VCPUPin) > 0 {
		out["vcpupin"] = vcpuPinText(r.VCPUPin)
	}
}

// numaErrors checks the mode and the pins: they need the cpuset
// controller and per-thread groups (see [ErrThreadsUnsupported]), and
// name CPUs of the partition and of the guest's own cpuset.
func numaErrors(l *layout, h *HostInfo, r *Resources, checkSet func(field, value, allowed, what string), add func(*FieldError)) {
	if r.NUMAMode != "" && !numaBinds(r.NUMAMode) && r.NUMAMode != NUMAPreferred && r.NUMAMode != NUMAInterleave {
		add(fieldErr("numa_mode", r.NUMAMode, "must be strict, preferred, interleave or restrictive"))
	}
	pins := map[string]string{}
	if r.EmulatorPin != "" {
		pins["emulatorpin"] = r.EmulatorPin
	}
	for _, n := range slices.Sorted(maps.Keys(r.VCPUPin)) {
		pins[fmt.Sprintf("vcpupin[%d]", n)] = r.VCPUPin[n]
	}
	if len(pins) == 0 {
		return
	}
	if !l.threadGroups() {
		for _, f := range slices.Sorted(maps.Keys(pins)) {
			e := fieldErr(f, pins[f], "this host keeps a QEMU guest in one group (per-vCPU and emulator groups are made where the cpu controller is, on cgroup v1 or v2, and on any cgroup v2): pin the whole guest with its cpuset instead")
			e.cause = ErrThreadsUnsupported
			add(e)
		}
		return
	}
	own, _ := parseCPUSet(r.CpusetCPUs)
	for _, f := range slices.Sorted(maps.Keys(pins)) {
		checkSet(f, pins[f], h.CPUs, "CPU")
		if set, err := parseCPUSet(pins[f]); err == nil && len(own) > 0 {
			if missing := set.subsetOf(own); len(missing) > 0 {
				add(fieldErr(f, pins[f], "CPUs %v are outside the guest's own cpuset %q: pin its threads within it", missing, r.CpusetCPUs))
			}
		}
	}
}

// numa adds the writes of numatune and of the thread pins. In a binding
// mode the nodeset goes to cpuset.mems: for a QEMU guest with per-thread
// groups, the guest's group is first opened to all the partition's nodes
// so that its children can take any subset, then the children, then the
// guest's group itself (cgroup v1 refuses a parent narrower than a
// child, and a child wider than its parent).
func (p *planner) numa(r *Resources, h *HostInfo) {
	if r.NUMAMode != "" || r.CpusetMems != "" {
		knob := "numa_mode"
		if !numaBinds(r.NUMAMode) {
			knob += ",numa_nodeset"
		}
		if r.NUMAMode != "" && len(p.l.hs) > 0 {
			p.out = append(p.out, Write{Knob: knob, Dir: p.dir(0), File: MemPolicyFile, Value: strings.TrimSpace(r.NUMAMode + " " + r.CpusetMems)})
		}
	}
	children := p.threadChildren()
	if r.CpusetMems != "" && numaBinds(r.NUMAMode) {
		set, _ := parseCPUSet(r.CpusetMems)
		// On v2 the children's empty cpuset.mems follows the guest's.
		if len(children) > 0 && h.Mems != "" && p.version(cCPUSet) == 1 {
			p.add(cCPUSet, "numa_nodeset", "cpuset.mems", h.Mems)
			for _, c := range children {
				p.addIn(cCPUSet, c, "numa_nodeset", "cpuset.mems", set.String())
			}
		}
		p.add(cCPUSet, "numa_nodeset", "cpuset.mems", set.String())
	}
	if len(children) == 0 {
		return
	}
	if r.EmulatorPin != "" && p.emulator {
		p.addIn(cCPUSet, EmulatorGroup, "emulatorpin", "cpuset.cpus", r.EmulatorPin)
	}
	for _, n := range p.vcpus {
		if cpus, ok := r.VCPUPin[n]; ok {
			set, _ := parseCPUSet(cpus)
			p.addIn(cCPUSet, VCPUGroup(n), "vcpupin", "cpuset.cpus", set.String())
		}
	}
}

// threadChildren lists a QEMU guest's per-thread groups in the cpuset
// hierarchy (on v2 threaded groups, which take a cpuset.cpus of their own).
func (p *planner) threadChildren() []string {
	if !p.threaded || p.version(cCPUSet) == 0 {
		return nil
	}
	var out []string
	for _, n := range p.vcpus {
		out = append(out, VCPUGroup(n))
	}
	if p.emulator {
		out = append(out, EmulatorGroup)
	}
	return out
}
