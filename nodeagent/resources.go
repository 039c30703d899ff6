package nodeagent

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/driver"
	"github.com/corral-dev/corral/events"
)

// defaultQEMUMemory is the RAM the qemu driver gives a guest whose
// definition sets none.
const defaultQEMUMemory = 128 << 20

// knobFields maps each knob the agent manages to the cgroupdriver
// Resources field (its JSON name, as Write.Knob and Observation.Knob
// carry it) that implements it.
var knobFields = map[string]string{
	"cpu_shares":      "cpu_shares",
	"vcpu_period":     "cpu_period_us",
	"vcpu_quota":      "cpu_quota_us",
	"hard_limit":      "memory_hard_limit",
	"soft_limit":      "memory_soft_limit",
	"swap_hard_limit": "memory_swap_hard_limit",
}

// knobOfField is the inverse of knobFields.
func knobOfField(field string) string {
	for k, f := range knobFields {
		if f == field {
			return k
		}
	}
	return ""
}

// Knobs returns the effective value of every knob the agent manages for
// d, in canonical form: its tuning, else what its definition implies
// (cpu_shares from the definition when set, hard_limit from its memory,
// with QEMU's headroom for a VM). Knobs neither tuned nor implied are
// absent: the agent does not manage them.
func Knobs(d DesiredGuest) map[string]string {
	out := map[string]string{}
	if d.Definition.CPUShares > 0 {
		out["cpu_shares"] = strconv.Itoa(d.Definition.CPUShares)
	}
	mem := d.Definition.MemoryBytes
	if d.Definition.Driver == events.DriverQEMU {
		if mem <= 0 {
			mem = defaultQEMUMemory
		}
		mem = driver.QEMUMemoryLimit(mem)
	}
	if mem > 0 {
		out["hard_limit"] = strconv.FormatInt(mem, 10)
	}
	for k, v := range d.Tuning {
		if _, ok := knobFields[k]; ok {
			out[k] = v
		}
	}
	return out
}

// knobDefault is the value a knob returns to when its tuning is removed.
func knobDefault(knob string) string {
	k, err := events.LookupKnob(knob)
	if err != nil {
		return ""
	}
	return k.Default
}

// knobResources turns canonical knob values into the Resources that write
// them; knobs not listed stay unmanaged.
func knobResources(knobs map[string]string) (cgroupdriver.Resources, error) {
	var r cgroupdriver.Resources
	for k, v := range knobs {
		switch k {
		case "cpu_shares", "vcpu_period":
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return r, fmt.Errorf("%w: %s=%q is not a whole number", ErrBadDesired, k, v)
			}
			if k == "cpu_shares" {
				r.CPUShares = new(n)
			} else {
				r.CPUPeriodUs = new(n)
			}
		case "vcpu_quota":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return r, fmt.Errorf("%w: %s=%q is not a whole number", ErrBadDesired, k, v)
			}
			if n < 0 {
				n = cgroupdriver.Unlimited
			}
			r.CPUQuotaUs = new(n)
		case "hard_limit", "soft_limit", "swap_hard_limit":
			n := int64(cgroupdriver.Unlimited)
			if v != events.Unlimited {
				var err error
				if n, err = strconv.ParseInt(v, 10, 64); err != nil {
					return r, fmt.Errorf("%w: %s=%q is not a size in bytes", ErrBadDesired, k, v)
				}
			}
			switch k {
			case "hard_limit":
				r.MemoryHardLimit = new(n)
			case "soft_limit":
				r.MemorySoftLimit = new(n)
			default:
				r.MemorySwapHardLimit = new(n)
			}
		}
	}
	return r, nil
}

// writtenValues turns the writes Apply performed back into canonical knob
// values, for the knobs listed: what was actually written, not what was
// asked. A knob whose file holds a converted value (cgroup v2 cpu.weight)
// is reported with the value it stands for.
func writtenValues(knobs map[string]string, writes []cgroupdriver.Write) map[string]string {
	out := map[string]string{}
	for _, w := range writes {
		val := strings.TrimSpace(w.Value)
		switch w.File {
		case "cpu.shares", "cpu.cfs_period_us":
			setIf(out, knobs, knobOfField(w.Knob), val)
		case "cpu.cfs_quota_us":
			setIf(out, knobs, "vcpu_quota", val)
		case "cpu.max": // v2: "QUOTA PERIOD", QUOTA "max" when unlimited
			if f := strings.Fields(val); len(f) == 2 {
				q := f[0]
				if q == "max" {
					q = "-1"
				}
				setIf(out, knobs, "vcpu_quota", q)
				setIf(out, knobs, "vcpu_period", f[1])
			}
		case "memory.limit_in_bytes", "memory.soft_limit_in_bytes", "memory.memsw.limit_in_bytes",
			"memory.max", "memory.high", "memory.low":
			if val == "-1" || val == "max" {
				val = events.Unlimited
			}
			setIf(out, knobs, knobOfField(w.Knob), val)
		}
	}
	for k, v := range knobs {
		if _, ok := out[k]; !ok {
			out[k] = v // a converted file (cpu.weight, memory.swap.max): report what it stands for
		}
	}
	return out
}

func setIf(out, knobs map[string]string, knob, val string) {
	if _, ok := knobs[knob]; ok {
		out[knob] = val
	}
}
