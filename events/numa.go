package events

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// This file is the text of virsh's numatune, emulatorpin and vcpupin knobs:
// numa_mode and numa_nodeset (the memory nodes, written to cpuset.mems in
// strict and restrictive mode, a memory policy the guest's process gets at
// launch in preferred and interleave mode), emulatorpin (the CPUs of a QEMU
// guest's emulator threads) and vcpupin (the CPUs of each vCPU thread).

// NUMA modes, as virsh numatune names them.
const (
	NUMAStrict      = "strict"
	NUMAPreferred   = "preferred"
	NUMAInterleave  = "interleave"
	NUMARestrictive = "restrictive"
)

// NUMAModes lists the modes numa_mode takes.
func NUMAModes() []string {
	return []string{NUMAStrict, NUMAPreferred, NUMAInterleave, NUMARestrictive}
}

// NUMABinds reports whether a mode confines the guest's memory with the
// cpuset controller (cpuset.mems), which a running guest can change;
// the other modes are a memory policy set when the guest is launched.
func NUMABinds(mode string) bool {
	return mode == "" || mode == NUMAStrict || mode == NUMARestrictive
}

func numaMode(s string) (string, error) {
	if slices.Contains(NUMAModes(), s) {
		return s, nil
	}
	return "", fieldErr("numa_mode", s, "use "+strings.Join(NUMAModes(), ", "))
}

// ParseIDList parses a cpuset-style list of CPUs or memory nodes
// ("0-3,6") and returns the numbers, sorted, without duplicates.
func ParseIDList(field, s string) ([]int, error) {
	bad := fieldErr(field, s, "use a list such as 0-3,6 (numbers and ranges, comma-separated)")
	if strings.TrimSpace(s) == "" {
		return nil, bad
	}
	var out []int
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.ParseUint(lo, 10, 16)
		if err != nil {
			return nil, bad
		}
		b := a
		if isRange {
			if b, err = strconv.ParseUint(hi, 10, 16); err != nil || b < a {
				return nil, bad
			}
		}
		for i := a; i <= b; i++ {
			out = append(out, int(i))
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// FormatIDList is the canonical text of a list of CPUs or memory nodes, as
// the kernel prints a cpuset: "0-3,6".
func FormatIDList(ids []int) string {
	ids = slices.Compact(slices.Sorted(slices.Values(ids)))
	var parts []string
	for i := 0; i < len(ids); i++ {
		j := i
		for j+1 < len(ids) && ids[j+1] == ids[j]+1 {
			j++
		}
		if j == i {
			parts = append(parts, strconv.Itoa(ids[i]))
		} else {
			parts = append(parts, strconv.Itoa(ids[i])+"-"+strconv.Itoa(ids[j]))
		}
		i = j
	}
	return strings.Join(parts, ",")
}

func idList(field string) func(string) (string, error) {
	return func(s string) (string, error) {
		ids, err := ParseIDList(field, s)
		if err != nil {
			return "", err
		}
		return FormatIDList(ids), nil
	}
}

// ParseVCPUPins parses the vcpupin knob's text, "VCPU:CPULIST" entries
// separated by ";" ("0:1;1:0-1"), into each vCPU's CPU list (canonical).
func ParseVCPUPins(s string) (map[int]string, error) {
	bad := func(why string) error {
		return fieldErr("vcpupin", s, why+`: use VCPU:CPULIST entries separated by ";", such as 0:1;1:0-1`)
	}
	if strings.TrimSpace(s) == "" {
		return nil, bad("empty")
	}
	out := map[int]string{}
	for _, e := range strings.Split(s, ";") {
		n, list, ok := strings.Cut(strings.TrimSpace(e), ":")
		if !ok {
			return nil, bad(fmt.Sprintf("%q has no colon", e))
		}
		v, err := strconv.ParseUint(n, 10, 16)
		if err != nil {
			return nil, bad(fmt.Sprintf("%q is not a vCPU number", n))
		}
		if _, dup := out[int(v)]; dup {
			return nil, bad(fmt.Sprintf("vCPU %d is listed twice", v))
		}
		ids, err := ParseIDList("vcpupin", list)
		if err != nil {
			return nil, bad(fmt.Sprintf("vCPU %d: %q is not a CPU list", v, list))
		}
		out[int(v)] = FormatIDList(ids)
	}
	return out, nil
}

// FormatVCPUPins is the canonical text of the vcpupin knob: by vCPU.
func FormatVCPUPins(pins map[int]string) string {
	var parts []string
	for _, n := range slices.Sorted(maps.Keys(pins)) {
		parts = append(parts, strconv.Itoa(n)+":"+pins[n])
	}
	return strings.Join(parts, ";")
}

func vcpuPins(s string) (string, error) {
	pins, err := ParseVCPUPins(s)
	if err != nil {
		return "", err
	}
	return FormatVCPUPins(pins), nil
}
