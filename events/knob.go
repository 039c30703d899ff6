package events

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Knob is a tunable of a guest, named as virsh names it.
type Knob struct {
	Name string
	// Default is the canonical value a guest starts with.
	Default string
	// Help says what values are allowed.
	Help  string
	parse func(string) (string, error)
}

// Unlimited is the canonical value of a limit that is not set.
const Unlimited = "unlimited"

var knobs = map[string]Knob{
	"cpu_shares": {Name: "cpu_shares", Default: "1024", Help: "2 to 262144 (relative CPU weight)",
		parse: intRange("cpu_shares", MinCPUShares, MaxCPUShares)},
	"vcpu_period": {Name: "vcpu_period", Default: "100000", Help: "1000 to 1000000 microseconds",
		parse: intRange("vcpu_period", 1000, 1000000)},
	"vcpu_quota": {Name: "vcpu_quota", Default: "-1", Help: "-1 (unlimited) or 1000 to 17592186044415 microseconds",
		parse: quota},
	// QEMU guests: vcpu_* is written to each vCPU's group, emulator_* to
	// the group of QEMU's other threads, global_* to the guest's own
	// group; process and lxc guests have one group, which vcpu_* and
	// global_* both limit.
	"emulator_period": {Name: "emulator_period", Default: "100000", Help: "1000 to 1000000 microseconds",
		parse: intRange("emulator_period", 1000, 1000000)},
	"emulator_quota": {Name: "emulator_quota", Default: "-1", Help: "-1 (unlimited) or 1000 to 17592186044415 microseconds",
		parse: quotaKnob("emulator_quota")},
	"global_period": {Name: "global_period", Default: "100000", Help: "1000 to 1000000 microseconds",
		parse: intRange("global_period", 1000, 1000000)},
	"global_quota": {Name: "global_quota", Default: "-1", Help: "-1 (unlimited) or 1000 to 17592186044415 microseconds",
		parse: quotaKnob("global_quota")},
	"hard_limit":      {Name: "hard_limit", Default: Unlimited, Help: "a size such as 512MiB, or unlimited", parse: sizeOrUnlimited("hard_limit")},
	"soft_limit":      {Name: "soft_limit", Default: Unlimited, Help: "a size such as 256MiB, or unlimited", parse: sizeOrUnlimited("soft_limit")},
	"swap_hard_limit": {Name: "swap_hard_limit", Default: Unlimited, Help: "a size such as 1GiB, or unlimited", parse: sizeOrUnlimited("swap_hard_limit")},
	// memory is virsh setmem's current memory: the balloon target, at
	// most the guest's memory; "" (its default) leaves it all.
	"memory": {Name: "memory", Help: "the current (balloon) memory, a size such as 64MiB, at most the guest's memory", parse: sizeOnly("memory")},
	// numatune, emulatorpin and vcpupin (see numa.go). An empty nodeset
	// or pin leaves the guest all the memory nodes or CPUs it may use.
	"numa_mode": {Name: "numa_mode", Default: NUMAStrict, Help: "strict, preferred, interleave or restrictive", parse: numaMode},
	"numa_nodeset": {Name: "numa_nodeset", Help: "memory nodes of the guest's node, such as 0 or 0-1",
		parse: idList("numa_nodeset")},
	"emulatorpin": {Name: "emulatorpin", Help: "CPUs of a QEMU guest's emulator threads, such as 0-1, within the guest's CPUs",
		parse: idList("emulatorpin")},
	"vcpupin": {Name: "vcpupin", Help: "VCPU:CPULIST entries separated by ; (0:1;1:0-1), within the guest's CPUs",
		parse: vcpuPins},
	// max_memory is virsh setmaxmem's maximum memory: a qemu guest's RAM
	// (-m), a process or lxc guest's memory; its default is the
	// definition's. It changes only what the next start uses.
	"max_memory": {Name: "max_memory", Help: "the maximum memory, a size such as 1GiB (" + FormatSize(MinMemoryBytes) + " to " + FormatSize(MaxMemoryBytes) + ")",
		parse: maxMemoryKnob},
	// balloon_enforce: whether the agent presses a guest that missed its
	// balloon target down to it by reclaim (corral setmem --enforce).
	"balloon_enforce": {Name: "balloon_enforce", Default: "off", Help: "on or off (press a noncompliant guest down to its balloon target by reclaim)",
		parse: onOff("balloon_enforce")},
	// devicetune: the devices a guest may use beyond its minimal set.
	"devices": {Name: "devices", Default: NoDevices, Help: "none, or a comma-separated list of /dev/PATH[:rwm] or c|b MAJOR:MINOR [rwm]",
		parse: allowedDevicesKnob},
	// blkiotune. The weight's default is BFQ's and io.weight's; an
	// unset device list is empty.
	"blkio_weight": {Name: "blkio_weight", Default: "100", Help: "100 to 1000 (relative I/O weight; the node's kernel file may allow less)",
		parse: intRange("blkio_weight", MinBlkioWeight, MaxBlkioWeight)},
	"device_weight": {Name: "device_weight", Help: "PATH,WEIGHT[,PATH,WEIGHT] with weights 100 to 1000, 0 removes a device",
		parse: deviceList("device_weight")},
	"device_read_bytes_sec": {Name: "device_read_bytes_sec", Help: "PATH,BYTES[,PATH,BYTES] per second (1M, 512KiB or bytes), 0 removes a limit",
		parse: deviceList("device_read_bytes_sec")},
	"device_write_bytes_sec": {Name: "device_write_bytes_sec", Help: "PATH,BYTES[,PATH,BYTES] per second (1M, 512KiB or bytes), 0 removes a limit",
		parse: deviceList("device_write_bytes_sec")},
	"device_read_iops_sec": {Name: "device_read_iops_sec", Help: "PATH,IOPS[,PATH,IOPS], 0 removes a limit",
		parse: deviceList("device_read_iops_sec")},
	"device_write_iops_sec": {Name: "device_write_iops_sec", Help: "PATH,IOPS[,PATH,IOPS], 0 removes a limit",
		parse: deviceList("device_write_iops_sec")},
	// domiftune (bandwidth.go).
	"inbound_average":  bandwidthKnob("inbound_average", "KiB/s, 0 for none"),
	"inbound_peak":     bandwidthKnob("inbound_peak", "KiB/s, 0 for none"),
	"inbound_burst":    bandwidthKnob("inbound_burst", "KiB, 0 for none"),
	"outbound_average": bandwidthKnob("outbound_average", "KiB/s, 0 for none"),
	"outbound_peak":    bandwidthKnob("outbound_peak", "KiB/s, 0 for none"),
	"outbound_burst":   bandwidthKnob("outbound_burst", "KiB, 0 for none"),
}

// placementKnobs are settings a guest's host applies and reports that come
// from its placement, not from tuning: its exclusive CPUs.
var placementKnobs = map[string]string{
	"cpuset_cpus": "the CPUs a guest is pinned to are chosen at placement: create it with --cpuset or --pin-cpus",
}

// LookupAppliedKnob returns the knob a host may report as applied: a
// tunable knob, or one placement sets (cpuset_cpus).
func LookupAppliedKnob(name string) error {
	if _, ok := placementKnobs[name]; ok {
		return nil
	}
	_, err := LookupKnob(name)
	return err
}

// LookupKnob returns the tunable knob with the given name.
func LookupKnob(name string) (Knob, error) {
	k, ok := knobs[name]
	if why, placed := placementKnobs[name]; placed {
		return Knob{}, fieldErr("knob", name, "not tunable: "+why)
	}
	if !ok {
		return Knob{}, fieldErr("knob", name, "use one of "+strings.Join(KnobNames(), ", "))
	}
	return k, nil
}

// KnobNames lists every knob, sorted.
func KnobNames() []string {
	out := make([]string, 0, len(knobs))
	for n := range knobs {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Canonical parses a value for k and returns its canonical form: decimal
// integers for CPU knobs, bytes or "unlimited" for memory knobs.
func (k Knob) Canonical(value string) (string, error) { return k.parse(strings.TrimSpace(value)) }

// sizeOnly parses a size with units into bytes.
func sizeOnly(field string) func(string) (string, error) {
	return func(s string) (string, error) {
		n, err := ParseSize(field, s)
		if err != nil {
			return "", err
		}
		return strconv.FormatInt(n, 10), nil
	}
}

func intRange(field string, lo, hi int64) func(string) (string, error) {
	return func(s string) (string, error) {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < lo || n > hi {
			return "", fieldErr(field, s, fmt.Sprintf("use a whole number from %d to %d", lo, hi))
		}
		return strconv.FormatInt(n, 10), nil
	}
}

func quota(s string) (string, error) { return quotaKnob("vcpu_quota")(s) }

// quotaKnob parses a CFS quota: -1 or 1000us up to the kernel's maximum.
func quotaKnob(field string) func(string) (string, error) {
	return func(s string) (string, error) {
		n, err := strconv.ParseInt(s, 10, 64)
		if err == nil && n == -1 {
			return "-1", nil
		}
		return intRange(field, 1000, 17592186044415)(s)
	}
}

func sizeOrUnlimited(field string) func(string) (string, error) {
	return func(s string) (string, error) {
		if s == Unlimited || s == "-1" {
			return Unlimited, nil
		}
		n, err := ParseSize(field, s)
		if err != nil {
			return "", err
		}
		return strconv.FormatInt(n, 10), nil
	}
}

// Validate checks a tuning event: the knob exists and both values are
// canonical for it.
func (t *GuestTuned) Validate() error {
	k, err := LookupKnob(t.Knob)
	if err != nil {
		return err
	}
	c, err := k.Canonical(t.New)
	if err != nil {
		return err
	}
	if c != t.New {
		return fieldErr(t.Knob, t.New, "not in canonical form "+c)
	}
	if !t.Live && !t.Persistent {
		return fieldErr("mode", "", "a tuning must be live, persistent or both")
	}
	return nil
}
