package cgroupdriver

import (
	"fmt"
	"strconv"
	"strings"
)

// This file is the text form of [Resources], keyed by knob: the JSON name
// of each field, which is also the virsh-style name the operator tunes
// (cpu_shares, vcpu_quota, hard_limit, …). The coordinator turns a guest's
// tuning into Resources with SetKnob, and the agent reports what a write
// applied with [Applied], so no layer above parses cgroup files back.
//
// Canonical text: whole numbers in decimal, limits that are [Unlimited]
// as "unlimited" (the CPU quota as -1, as virsh prints it), cpusets as the
// kernel prints them. The device ACL's text ("devices") is its extra
// devices only, as the operator tunes them; block throttles have no text
// form.

// UnlimitedText is the canonical text of an [Unlimited] size or count.
const UnlimitedText = "unlimited"

// TextKnobs lists the knobs [Resources.SetKnob] and [Resources.Knobs] take.
func TextKnobs() []string {
	return []string{"blkio_weight", "cpu_shares", "cpuset_cpus", "device_read_bytes_sec", "device_read_iops_sec",
		"device_weight", "device_write_bytes_sec", "device_write_iops_sec", "devices", "emulator_period", "emulator_quota",
		"emulatorpin", "global_period", "global_quota", "hard_limit", "net_cls_classid", "numa_mode", "numa_nodeset",
		"pids_max", "soft_limit", "swap_hard_limit", "vcpu_period", "vcpu_quota", "vcpupin"}
}

// SetKnob sets the field of knob from its canonical text. It checks the
// text's form only; [Driver.Validate] checks the value against the host.
func (r *Resources) SetKnob(knob, value string) error {
	bad := func(want string) error {
		return &FieldError{Field: knob, Value: value, Reason: want}
	}
	uint := func(bits int) (uint64, error) {
		n, err := strconv.ParseUint(value, 10, bits)
		if err != nil {
			return 0, bad("must be a whole number")
		}
		return n, nil
	}
	limit := func() (int64, error) {
		if value == UnlimitedText || value == "-1" {
			return Unlimited, nil
		}
		n, err := strconv.ParseInt(value, 10, 64)
		if err != nil || n < 0 {
			return 0, bad("must be a whole number or unlimited")
		}
		return n, nil
	}
	var err error
	switch knob {
	case "cpu_shares":
		var n uint64
		if n, err = uint(64); err == nil {
			r.CPUShares = new(n)
		}
	case "vcpu_period", "emulator_period", "global_period":
		var n uint64
		if n, err = uint(64); err == nil {
			*r.periodField(knob) = new(n)
		}
	case "vcpu_quota", "emulator_quota", "global_quota":
		var n int64
		if n, err = limit(); err == nil {
			*r.quotaField(knob) = new(n)
		}
	case "cpuset_cpus":
		set, perr := parseCPUSet(value)
		if perr != nil || len(set) == 0 {
			return bad("must be a cpuset list like 0-3,6")
		}
		r.CpusetCPUs = set.String()
	case "numa_mode", "numa_nodeset", "emulatorpin", "vcpupin":
		return r.setNUMAKnob(knob, value)
	case "hard_limit", "soft_limit", "swap_hard_limit", "pids_max":
		var n int64
		if n, err = limit(); err == nil {
			switch knob {
			case "hard_limit":
				r.MemoryHardLimit = new(n)
			case "soft_limit":
				r.MemorySoftLimit = new(n)
			case "swap_hard_limit":
				r.MemorySwapHardLimit = new(n)
			default:
				r.PidsMax = new(n)
			}
		}
	case "blkio_weight":
		var n uint64
		if n, err = uint(16); err == nil {
			r.BlkioWeight = new(uint16(n))
		}
	case "device_weight", "device_read_bytes_sec", "device_write_bytes_sec", "device_read_iops_sec", "device_write_iops_sec":
		k, _ := lookupBlkioKnob(knob)
		return r.setBlkioKnob(k, value)
	case "net_cls_classid":
		var n uint64
		if n, err = uint(32); err == nil {
			r.NetClassID = new(uint32(n))
		}
	case "devices":
		extra, perr := parseDeviceList(value)
		if perr != nil {
			return bad(perr.Error())
		}
		r.Devices = &DeviceACL{Extra: extra}
	default:
		return bad("is not a knob: use one of " + strings.Join(TextKnobs(), ", "))
	}
	return err
}

// Knobs returns the canonical text of every knob r manages that has a
// text form.
func (r Resources) Knobs() map[string]string {
	out := map[string]string{}
	u := func(k string, p *uint64) {
		if p != nil {
			out[k] = strconv.FormatUint(*p, 10)
		}
	}
	l := func(k string, p *int64) {
		if p != nil {
			out[k] = limitText(*p)
		}
	}
	u("cpu_shares", r.CPUShares)
	for _, k := range []string{"vcpu", "emulator", "global"} {
		u(k+"_period", *r.periodField(k + "_period"))
		if q := *r.quotaField(k + "_quota"); q != nil {
			out[k+"_quota"] = strconv.FormatInt(*q, 10)
		}
	}
	if r.CpusetCPUs != "" {
		out["cpuset_cpus"] = r.CpusetCPUs
	}
	r.numaKnobText(out)
	l("hard_limit", r.MemoryHardLimit)
	l("soft_limit", r.MemorySoftLimit)
	l("swap_hard_limit", r.MemorySwapHardLimit)
	l("pids_max", r.PidsMax)
	if r.BlkioWeight != nil {
		out["blkio_weight"] = strconv.FormatUint(uint64(*r.BlkioWeight), 10)
	}
	if r.NetClassID != nil {
		out["net_cls_classid"] = strconv.FormatUint(uint64(*r.NetClassID), 10)
	}
	r.BlkioDevices.knobText(out)
	if r.Devices != nil {
		out["devices"] = deviceListText(r.Devices.Extra)
	}
	return out
}

// NoDevicesText is the canonical text of a device ACL with no extra
// devices: the guest gets its minimal set only.
const NoDevicesText = "none"

// deviceListText is the "devices" knob's text: the extra devices of an ACL
// in order, "/dev/PATH:ACCESS" or "c MAJOR:MINOR ACCESS", comma-separated,
// or [NoDevicesText].
func deviceListText(extra []DeviceRule) string {
	if len(extra) == 0 {
		return NoDevicesText
	}
	parts := make([]string, len(extra))
	for i, r := range extra {
		if r.Path != "" {
			parts[i] = r.Path + ":" + r.Access
		} else {
			parts[i] = r.String()
		}
	}
	return strings.Join(parts, ",")
}

func parseDeviceList(s string) ([]DeviceRule, error) {
	if s == NoDevicesText {
		return nil, nil
	}
	var out []DeviceRule
	for _, f := range strings.Split(s, ",") {
		var r DeviceRule
		if p, access, ok := strings.Cut(f, ":"); ok && strings.HasPrefix(f, "/") {
			r = DeviceRule{Path: p, Access: access}
		} else {
			var err error
			if r, err = ParseDeviceRule(f); err != nil {
				return nil, fmt.Errorf("must be none or a comma-separated list of /dev/PATH:ACCESS or c|b MAJOR:MINOR ACCESS: %q does not parse", f)
			}
		}
		if why := r.problem(); why != "" || r.Type == 'a' {
			if why == "" {
				why = "\"a\" would allow every device; name the devices"
			}
			return nil, fmt.Errorf("device %q: %s", f, why)
		}
		out = append(out, r)
	}
	return out, nil
}

func limitText(v int64) string {
	if v == Unlimited {
		return UnlimitedText
	}
	return strconv.FormatInt(v, 10)
}

// Only returns the part of r that manages the named knobs (text knobs, or
// "devices" and "blkio_throttle").
func (r Resources) Only(knobs ...string) Resources {
	var out Resources
	for _, k := range knobs {
		switch k {
		case "cpu_shares":
			out.CPUShares = r.CPUShares
		case "vcpu_period", "emulator_period", "global_period":
			*out.periodField(k) = *r.periodField(k)
		case "vcpu_quota", "emulator_quota", "global_quota":
			*out.quotaField(k) = *r.quotaField(k)
		case "cpuset_cpus":
			out.CpusetCPUs = r.CpusetCPUs
		case "numa_mode", "numa_nodeset":
			// The mode says where the nodeset goes.
			out.NUMAMode, out.CpusetMems = r.NUMAMode, r.CpusetMems
		case "emulatorpin":
			out.EmulatorPin = r.EmulatorPin
		case "vcpupin":
			out.VCPUPin = r.VCPUPin
		case "hard_limit":
			out.MemoryHardLimit = r.MemoryHardLimit
		case "soft_limit":
			out.MemorySoftLimit = r.MemorySoftLimit
		case "swap_hard_limit":
			out.MemorySwapHardLimit = r.MemorySwapHardLimit
		case "pids_max":
			out.PidsMax = r.PidsMax
		case "blkio_weight":
			out.BlkioWeight = r.BlkioWeight
		case "device_weight", "device_read_bytes_sec", "device_write_bytes_sec", "device_read_iops_sec", "device_write_iops_sec":
			if b := r.BlkioDevices.only(k); b != nil {
				if out.BlkioDevices == nil {
					out.BlkioDevices = &BlkioDevices{}
				}
				bk, _ := lookupBlkioKnob(k)
				*bk.list(out.BlkioDevices) = *bk.list(b)
			}
		case "net_cls_classid":
			out.NetClassID = r.NetClassID
		case "devices":
			out.Devices = r.Devices
		case "blkio_throttle":
			out.BlkioThrottle = r.BlkioThrottle
		}
	}
	return out
}

// Applied returns, for each text knob of r that writes performed (as
// [Driver.Apply] returns them, also after a failure part way), the
// canonical value that was written: on cgroup v2 a cpu.weight of 39 is
// reported as the cpu_shares of 500 it stands for.
func Applied(r Resources, writes []Write) map[string]string {
	all := r.Knobs()
	out := map[string]string{}
	for _, w := range writes {
		for _, k := range strings.Split(w.Knob, ",") {
			if v, ok := all[k]; ok {
				out[k] = v
			}
		}
	}
	return out
}
