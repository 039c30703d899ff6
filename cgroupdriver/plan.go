package cgroupdriver

import (
	"math"
	"strconv"
	"strings"
)

// Write is one value for one cgroup file: the unit [Driver.Plan] computes and
// [Driver.Apply] performs and reports. Order matters and is part of the plan.
type Write struct {
	// Knob is the [Resources] field (JSON name) the write implements, or
	// "tree" for the mini-hierarchy's own setup.
	Knob  string `json:"knob"`
	Dir   string `json:"dir"`
	File  string `json:"file"`
	Value string `json:"value"`
}

// Path is Dir/File.
func (w Write) Path() string { return w.Dir + "/" + w.File }

// DeviceProgramFile is the pseudo file of a [Write] that installs a cgroup
// v2 BPF device program in Dir; Value holds the allowed rules separated by
// "; ". cgroup v2 has no devices files.
const DeviceProgramFile = "<bpf cgroup_device>"

// SharesToWeight converts cgroup v1 cpu.shares (2..262144) to cgroup v2
// cpu.weight (1..10000) as runc and crun do: a quadratic in log2(shares)
// through (2, 1), (1024, 100) and (262144, 10000), so the defaults match.
func SharesToWeight(shares uint64) uint64 {
	if shares <= 2 {
		return 1
	}
	if shares >= 262144 {
		return 10000
	}
	l := math.Log2(float64(shares))
	exp := (l*l+125*l)/612.0 - 7.0/34.0
	return uint64(math.Ceil(math.Pow(10, exp)))
}

// plan validates r and turns it into writes for guest g. Its only I/O is a
// stat of each device node the ACL names by path (see [ResolveDeviceRule])
// and of each block device blkiotune names ([BlkioDevices]), and for a
// QEMU guest a listing of its cpu group's children ([Driver.PlaceThreads]).
func plan(l *layout, h *HostInfo, g Guest, r *Resources) ([]Write, error) {
	if err := g.Validate(); err != nil {
		return nil, err
	}
	r, err := resolveValidate(l, h, r)
	if err == nil {
		err = schedinfoErrors(l, r)
	}
	if err != nil {
		return nil, err
	}
	p := planner{l: l, dir: func(i int) string { return l.guestDir(i, g) }, out: make([]Write, 0, 16)}
	p.vcpus, p.emulator = placedGroups(l, g)
	// Until its threads are placed (and where they are not: cgroup v2,
	// an adopted guest of an older agent), a QEMU guest's vcpu_* go to its
	// own group, as for other guests.
	p.threaded = g.Kind == KindQEMU && len(p.vcpus) > 0
	if r.Devices != nil {
		rules, err := deviceRules(g.Kind, h, r.Devices)
		if err != nil {
			return nil, err
		}
		p.deviceRules = rules
	}
	p.all(r, h)
	return p.out, nil
}

// all appends the writes for every knob r manages.
func (p *planner) all(r *Resources, h *HostInfo) {
	p.cpuset(r)
	p.numa(r, h)
	p.cpu(r)
	p.memory(r, h)
	p.blkio(r, h)
	p.devices(r)
	if r.NetClassID != nil {
		p.add(cNetCls, "net_cls_classid", "net_cls.classid", strconv.FormatUint(uint64(*r.NetClassID), 10))
	}
	if r.PidsMax != nil {
		p.add(cPids, "pids_max", "pids.max", limit(*r.PidsMax, "max"))
	}
}

type planner struct {
	l   *layout
	dir func(hierarchy int) string
	out []Write
	// deviceRules is the device ACL resolved on this host.
	deviceRules []DeviceRule
	// threaded is set for a QEMU guest: its vcpu_* and emulator_* go to
	// the child groups, vcpus and emulator those that exist (see
	// [Driver.PlaceThreads]).
	threaded bool
	vcpus    []int
	emulator bool
}

func (p *planner) add(c controller, knob, file, value string) { p.addIn(c, "", knob, file, value) }

// addIn adds a write to the child group sub of the guest's group ("" for
// the group itself).
func (p *planner) addIn(c controller, sub, knob, file, value string) {
	i := p.l.route[c]
	dir := p.dir(i)
	if sub != "" {
		dir += "/" + sub
	}
	p.out = append(p.out, Write{Knob: knob, Dir: dir, File: file, Value: value})
}

func (p *planner) version(c controller) int {
	_, v := p.l.at(c)
	return v
}

// limit formats a size or count; unlimited is -1 on v1 and "max" on v2.
func limit(v int64, unlimited string) string {
	if v == Unlimited {
		return unlimited
	}
	return strconv.FormatInt(v, 10)
}

func (p *planner) cpuset(r *Resources) {
	if r.CpusetCPUs != "" {
		set, _ := parseCPUSet(r.CpusetCPUs)
		p.add(cCPUSet, "cpuset_cpus", "cpuset.cpus", set.String())
	}
}

func (p *planner) cpu(r *Resources) {
	if r.CPUShares != nil {
		if p.version(cCPU) == 1 {
			p.add(cCPU, "cpu_shares", "cpu.shares", strconv.FormatUint(*r.CPUShares, 10))
		} else {
			p.add(cCPU, "cpu_shares", "cpu.weight", strconv.FormatUint(SharesToWeight(*r.CPUShares), 10))
		}
	}
	if !p.threaded {
		p.cfs("vcpu", "", r)
		p.cfs("global", "", r)
		return
	}
	// The cap of the whole guest first: on v1 the kernel refuses a
	// child's quota above its parent's.
	p.cfs("global", "", r)
	for _, n := range p.vcpus {
		p.cfs("vcpu", VCPUGroup(n), r)
	}
	if p.emulator {
		p.cfs("emulator", EmulatorGroup, r)
	}
}

// cfs adds the CFS bandwidth writes of the schedinfo knobs prefix_period
// and prefix_quota to the child group sub.
func (p *planner) cfs(prefix, sub string, r *Resources) {
	period, quota := *r.periodField(prefix + "_period"), *r.quotaField(prefix + "_quota")
	if p.version(cCPU) == 1 {
		// The period first: the quota is checked against it.
		if period != nil {
			p.addIn(cCPU, sub, prefix+"_period", "cpu.cfs_period_us", strconv.FormatUint(*period, 10))
		}
		if quota != nil {
			p.addIn(cCPU, sub, prefix+"_quota", "cpu.cfs_quota_us", limit(*quota, "-1"))
		}
		return
	}
	if quota != nil {
		v := limit(*quota, "max")
		knob := prefix + "_quota"
		if period != nil {
			v += " " + strconv.FormatUint(*period, 10)
			knob += "," + prefix + "_period"
		}
		p.addIn(cCPU, sub, knob, "cpu.max", v)
	}
}

func (p *planner) memory(r *Resources, h *HostInfo) {
	if p.version(cMemory) == 1 {
		// The kernel refuses a write that leaves memory.limit_in_bytes
		// above memory.memsw.limit_in_bytes (EINVAL), whichever file it
		// is to. libvirt orders the two writes by the old value and runc
		// reads it; lifting memsw first needs no read and makes every
		// pair of old and new values valid. A memory limit lifted alone
		// lifts memsw too, as runc does: no finite memsw can stay above it.
		switch {
		case r.MemoryHardLimit != nil && r.MemorySwapHardLimit != nil:
			p.add(cMemory, "swap_hard_limit", "memory.memsw.limit_in_bytes", "-1")
		case r.MemoryHardLimit != nil && *r.MemoryHardLimit == Unlimited && h.SwapAccounting:
			p.add(cMemory, "hard_limit", "memory.memsw.limit_in_bytes", "-1")
		}
		if r.MemoryHardLimit != nil {
			p.add(cMemory, "hard_limit", "memory.limit_in_bytes", limit(*r.MemoryHardLimit, "-1"))
		}
		if r.MemorySwapHardLimit != nil {
			p.add(cMemory, "swap_hard_limit", "memory.memsw.limit_in_bytes", limit(*r.MemorySwapHardLimit, "-1"))
		}
		if r.MemorySoftLimit != nil {
			p.add(cMemory, "soft_limit", "memory.soft_limit_in_bytes", limit(*r.MemorySoftLimit, "-1"))
		}
		return
	}
	if r.MemoryHardLimit != nil {
		p.add(cMemory, "hard_limit", "memory.max", limit(*r.MemoryHardLimit, "max"))
	}
	if r.MemorySwapHardLimit != nil {
		swap := *r.MemorySwapHardLimit
		if swap != Unlimited {
			swap -= *r.MemoryHardLimit
		}
		p.add(cMemory, "swap_hard_limit", "memory.swap.max", limit(swap, "max"))
	}
	if r.MemorySoftLimit != nil {
		p.add(cMemory, "soft_limit", "memory.high", limit(*r.MemorySoftLimit, "max"))
	}
}

func (p *planner) blkio(r *Resources, h *HostInfo) {
	v1 := p.version(cBlkio) == 1
	if r.BlkioWeight != nil {
		w := strconv.FormatUint(uint64(*r.BlkioWeight), 10)
		if !v1 {
			w = "default " + w
		}
		p.add(cBlkio, "blkio_weight", h.BlkioWeightFile, w)
	}
	for _, t := range r.BlkioThrottle {
		dev := strconv.FormatUint(uint64(t.Major), 10) + ":" + strconv.FormatUint(uint64(t.Minor), 10)
		if v1 {
			// 0 removes a rule, so every rate is written.
			p.add(cBlkio, "blkio_throttle", "blkio.throttle.read_bps_device", dev+" "+strconv.FormatUint(t.ReadBps, 10))
			p.add(cBlkio, "blkio_throttle", "blkio.throttle.write_bps_device", dev+" "+strconv.FormatUint(t.WriteBps, 10))
			p.add(cBlkio, "blkio_throttle", "blkio.throttle.read_iops_device", dev+" "+strconv.FormatUint(t.ReadIOPS, 10))
			p.add(cBlkio, "blkio_throttle", "blkio.throttle.write_iops_device", dev+" "+strconv.FormatUint(t.WriteIOPS, 10))
			continue
		}
		rate := func(v uint64) string {
			if v == 0 {
				return "max"
			}
			return strconv.FormatUint(v, 10)
		}
		p.add(cBlkio, "blkio_throttle", "io.max", dev+" rbps="+rate(t.ReadBps)+" wbps="+rate(t.WriteBps)+
			" riops="+rate(t.ReadIOPS)+" wiops="+rate(t.WriteIOPS))
	}
	p.blkioDevices(r.BlkioDevices, h, v1)
}

// deviceRules is the ACL a guest of kind gets on host h: its base list,
// then its extra devices, those named by path resolved to their numbers.
// Every device not listed is denied. An extra rule that does not check out
// or names no device node fails the whole ACL: a partial one would deny
// the guest a device it was given.
func deviceRules(kind Kind, h *HostInfo, acl *DeviceACL) ([]DeviceRule, error) {
	rules := acl.Rules(kind, h.KVM)
	for i, x := range acl.Extra {
		if why := x.problem(); why != "" {
			return nil, fieldErr("devices", x, "extra device %d: %s", i, why)
		}
		r, err := ResolveDeviceRule(x)
		if err != nil {
			return nil, err
		}
		rules = append(rules, r)
	}
	return rules, nil
}

func (p *planner) devices(r *Resources) {
	if r.Devices == nil {
		return
	}
	if p.version(cDevices) == 1 {
		// Deny first: the kernel starts a v1 group from its parent's list.
		p.add(cDevices, "devices", "devices.deny", "a")
		for _, rule := range p.deviceRules {
			p.add(cDevices, "devices", "devices.allow", rule.String())
		}
		return
	}
	rules := make([]string, len(p.deviceRules))
	for i, rule := range p.deviceRules {
		rules[i] = rule.String()
	}
	p.add(cDevices, "devices", DeviceProgramFile, strings.Join(rules, "; "))
}

// planTree lists, in order, the steps that create the mini-hierarchy: a
// [Write] with an empty File is a mkdir of Dir. On v1 the corral root and
// kind directories get the partition's CPUs and memory nodes and
// cgroup.clone_children, so every group below inherits a usable cpuset; on
// v2 the needed controllers are enabled in cgroup.subtree_control from the
// partition down to the kind directories. The partition itself must exist
// (see Driver.ensurePartition).
func planTree(l *layout, h *HostInfo) []Write {
	enable := l.v2Enable()
	subtree := "+" + strings.Join(enable, " +")
	var ops []Write
	for i, hh := range l.hs {
		v2 := hh.Version == 2 && len(enable) > 0
		if v2 {
			ops = append(ops, Write{Knob: "tree", Dir: hh.part, File: "cgroup.subtree_control", Value: subtree})
		}
		dirs := []string{l.rootDir(i)}
		for _, k := range Kinds() {
			dirs = append(dirs, l.kindDir(i, k))
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

// cpusetInit gives a new v1 cpuset group dir in hierarchy i the partition's
// CPUs and memory nodes, and makes its children inherit them. It is empty
// for other hierarchies.
func cpusetInit(l *layout, h *HostInfo, i int, dir string) []Write {
	if l.hs[i].Version != 1 || l.route[cCPUSet] != i {
		return nil
	}
	return []Write{
		{Knob: "tree", Dir: dir, File: "cpuset.cpus", Value: h.CPUs},
		{Knob: "tree", Dir: dir, File: "cpuset.mems", Value: h.Mems},
		{Knob: "tree", Dir: dir, File: "cgroup.clone_children", Value: "1"},
	}
}
