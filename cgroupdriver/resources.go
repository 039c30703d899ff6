package cgroupdriver

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Unlimited is the value of a size or count field that removes the limit
// ("max" on cgroup v2, -1 on v1).
const Unlimited = -1

// Resources is the one resource model for a guest, in canonical units, as
// the operator tunes it with virsh-style knobs. A nil pointer, an empty
// string or a nil slice means "not managed": corral neither writes nor
// checks that knob. Every managed knob is written by [Driver.Apply] and read
// back by [Driver.Observe]. Build pointers with new(value).
//
// Values are never clamped: one the host cannot take is refused with a
// [FieldError] before anything is written.
type Resources struct {
	// CPUShares is the relative CPU weight, 2..262144 (v1 default 1024).
	// cgroup v2: cpu.weight, converted as runc and crun do (1024 -> 100).
	CPUShares *uint64 `json:"cpu_shares,omitempty"`
	// CPUPeriodUs is the CFS period in microseconds, 1000..1000000.
	CPUPeriodUs *uint64 `json:"vcpu_period,omitempty"`
	// CPUQuotaUs is the CFS quota per period in microseconds, at least 1000,
	// or [Unlimited].
	CPUQuotaUs *int64 `json:"vcpu_quota,omitempty"`
	// For a QEMU guest, whose QEMU threads [Driver.PlaceThreads] has put
	// into child groups, CPUPeriodUs and CPUQuotaUs limit each vCPU's
	// group (vcpuN) on its own, as virsh schedinfo's vcpu_* do; for
	// process and lxc guests they limit the guest's one group.

	// EmulatorPeriodUs and EmulatorQuotaUs (virsh emulator_*) limit the
	// "emulator" group of a QEMU guest: every QEMU thread that is not a
	// vCPU. Same ranges as the vCPU knobs; nothing is written for other
	// kinds, or before the threads are placed.
	EmulatorPeriodUs *uint64 `json:"emulator_period,omitempty"`
	EmulatorQuotaUs  *int64  `json:"emulator_quota,omitempty"`
	// GlobalPeriodUs and GlobalQuotaUs (virsh global_*) limit the guest's
	// own group: all of a QEMU guest's threads together. For process and
	// lxc guests they are written after the vcpu_* values, to the same
	// file, so they win when both are managed.
	GlobalPeriodUs *uint64 `json:"global_period,omitempty"`
	GlobalQuotaUs  *int64  `json:"global_quota,omitempty"`

	// CpusetCPUs pins the guest's group and CpusetMems (numatune's
	// nodeset) its memory, in cpuset list format, e.g. "0-3,6". They must
	// name CPUs and memory nodes the corral partition may use. See
	// numa.go for NUMAMode, EmulatorPin and VCPUPin.
	CpusetCPUs string `json:"cpuset_cpus,omitempty"`
	CpusetMems string `json:"numa_nodeset,omitempty"`
	// NUMAMode (numatune --mode): "" or strict and restrictive write
	// CpusetMems to cpuset.mems; preferred and interleave leave cpuset.mems
	// alone and are a memory policy the guest's process gets at launch
	// ([MemPolicyFor], [WithMemPolicy]).
	NUMAMode string `json:"numa_mode,omitempty"`
	// EmulatorPin (emulatorpin) and VCPUPin (vcpupin, by vCPU number) are
	// the cpuset.cpus of a QEMU guest's emulator and vcpuN groups, within
	// the guest's CPUs; written once [Driver.PlaceThreads] made them.
	EmulatorPin string         `json:"emulatorpin,omitempty"`
	VCPUPin     map[int]string `json:"vcpupin,omitempty"`

	// MemoryHardLimit (memtune hard_limit) in bytes, at least one page, or
	// [Unlimited]. v1 memory.limit_in_bytes, v2 memory.max.
	MemoryHardLimit *int64 `json:"hard_limit,omitempty"`
	// MemorySoftLimit (memtune soft_limit) in bytes, at least one page, or
	// [Unlimited]. v1 memory.soft_limit_in_bytes, v2 memory.high (as
	// libvirt does).
	MemorySoftLimit *int64 `json:"soft_limit,omitempty"`
	// MemorySwapHardLimit (memtune swap_hard_limit) is memory plus swap in
	// bytes, as on v1 (memory.memsw.limit_in_bytes), at least
	// MemoryHardLimit, or [Unlimited]. On v2 corral writes the difference to
	// memory.swap.max, so MemoryHardLimit must be managed too.
	MemorySwapHardLimit *int64 `json:"swap_hard_limit,omitempty"`

	// BlkioWeight (blkiotune weight) is the proportional I/O weight. The
	// range is the kernel file's: blkio.weight 10..1000, blkio.bfq.weight
	// and io.bfq.weight 1..1000, io.weight 1..10000.
	BlkioWeight *uint16 `json:"blkio_weight,omitempty"`
	// BlkioThrottle holds per-device throttles (blkiotune device_*). A
	// device must be a whole disk of this host.
	BlkioThrottle []DeviceThrottle `json:"blkio_throttle,omitempty"`
	// BlkioDevices holds blkiotune's per-device lists by device path
	// (device_weight, device_read_bytes_sec, …). The paths are resolved
	// on this host when the lists are planned; see [BlkioDevices].
	BlkioDevices *BlkioDevices `json:"blkio_devices,omitempty"`

	// Devices is the device ACL: everything not allowed is denied. v1
	// devices.deny/devices.allow, v2 a BPF cgroup-device program. See
	// [DefaultDeviceRules].
	Devices *DeviceACL `json:"devices,omitempty"`

	// NetClassID is the net_cls.classid for tc; cgroup v1 only, and only
	// where the operator mounted net_cls.
	NetClassID *uint32 `json:"net_cls_classid,omitempty"`

	// PidsMax limits the number of tasks: at least 1, or [Unlimited].
	PidsMax *int64 `json:"pids_max,omitempty"`
}

// DeviceThrottle limits one block device. Zero in a rate field means no
// limit for that rate.
type DeviceThrottle struct {
	Major     uint32 `json:"major"`
	Minor     uint32 `json:"minor"`
	ReadBps   uint64 `json:"read_bps,omitempty"`
	WriteBps  uint64 `json:"write_bps,omitempty"`
	ReadIOPS  uint64 `json:"read_iops,omitempty"`
	WriteIOPS uint64 `json:"write_iops,omitempty"`
}

// DeviceACL is a device allow list; every device not listed is denied.
type DeviceACL struct {
	// Allow is the base list. Nil means the minimal set for the guest's
	// kind on this host ([MinimalDeviceRules]), which is what a guest gets
	// unless a caller knows better.
	Allow []DeviceRule `json:"allow"`
	// Extra are the devices the operator allowed for this one guest (the
	// "devices" knob). A rule may name a node by Path; the host resolves
	// it to its type and numbers when the ACL is planned, and refuses the
	// plan when there is no such device node.
	Extra []DeviceRule `json:"extra,omitempty"`
}

// DeviceRule is one devices-cgroup rule in the kernel's notation, e.g.
// "c 1:3 rw" or "b 254:0 r". Major or Minor of [AnyDevice] is "*". A rule
// with a Path ("/dev/loop-control rw") names a device node of the host
// instead of a type and numbers.
type DeviceRule struct {
	Type   byte  // 'c' character, 'b' block or 'a' all; 0 with a Path
	Major  int64 // device major, or AnyDevice
	Minor  int64 // device minor, or AnyDevice
	Access string
	Path   string // a node under /dev, resolved on the host
}

// AnyDevice stands for "*" in a [DeviceRule] major or minor.
const AnyDevice = -1

func (r DeviceRule) String() string {
	if r.Path != "" {
		return r.Path + " " + r.Access
	}
	if r.Type == 'a' {
		return "a *:* " + r.Access
	}
	return fmt.Sprintf("%c %s:%s %s", r.Type, devNum(r.Major), devNum(r.Minor), r.Access)
}

func devNum(n int64) string {
	if n == AnyDevice {
		return "*"
	}
	return strconv.FormatInt(n, 10)
}

// MarshalText encodes the rule in kernel notation.
func (r DeviceRule) MarshalText() ([]byte, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	return []byte(r.String()), nil
}

// UnmarshalText parses kernel notation; see [ParseDeviceRule].
func (r *DeviceRule) UnmarshalText(b []byte) error {
	v, err := ParseDeviceRule(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// ParseDeviceRule parses "TYPE MAJOR:MINOR ACCESS" ("c 136:* rw", "a") or
// "PATH ACCESS" ("/dev/kvm rw"), refusing anything the kernel would.
func ParseDeviceRule(s string) (DeviceRule, error) {
	bad := func(why string) (DeviceRule, error) {
		return DeviceRule{}, fmt.Errorf("%w: device rule %q: %s; want \"c|b MAJOR:MINOR ACCESS\" like \"c 1:3 rw\" or \"/dev/PATH ACCESS\"", ErrInvalidResources, s, why)
	}
	f := strings.Fields(s)
	if len(f) == 1 && f[0] == "a" {
		return DeviceRule{Type: 'a', Major: AnyDevice, Minor: AnyDevice, Access: "rwm"}, nil
	}
	if len(f) == 2 && strings.HasPrefix(f[0], "/") {
		r := DeviceRule{Path: f[0], Access: f[1]}
		if err := r.validate(); err != nil {
			return DeviceRule{}, err
		}
		return r, nil
	}
	if len(f) != 3 || len(f[0]) != 1 {
		return bad("not three fields")
	}
	majS, minS, ok := strings.Cut(f[1], ":")
	if !ok {
		return bad("no MAJOR:MINOR")
	}
	r := DeviceRule{Type: f[0][0], Access: f[2]}
	var err error
	if r.Major, err = parseDevNum(majS); err != nil {
		return bad("major " + err.Error())
	}
	if r.Minor, err = parseDevNum(minS); err != nil {
		return bad("minor " + err.Error())
	}
	if err := r.validate(); err != nil {
		return DeviceRule{}, err
	}
	return r, nil
}

func parseDevNum(s string) (int64, error) {
	if s == "*" {
		return AnyDevice, nil
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is not * or a number below 2^32", s)
	}
	return int64(n), nil
}

func (r DeviceRule) validate() error {
	if why := r.problem(); why != "" {
		return fmt.Errorf("%w: device rule %q: %s", ErrInvalidResources, r.String(), why)
	}
	return nil
}

// problem says what is wrong with r, or "".
func (r DeviceRule) problem() string {
	if r.Path != "" {
		if r.Type != 0 || r.Major != 0 || r.Minor != 0 {
			return "a rule with a path takes no type or device numbers"
		}
		if why := devicePathProblem(r.Path); why != "" {
			return why
		}
		return accessProblem(r.Access)
	}
	switch r.Type {
	case 'a':
		if r.Major != AnyDevice || r.Minor != AnyDevice {
			return "type a takes no device numbers"
		}
	case 'b', 'c':
	default:
		return "type must be a, b or c"
	}
	if r.Major < AnyDevice || r.Major > 1<<32-1 || r.Minor < AnyDevice || r.Minor > 1<<32-1 {
		return "major and minor must be * or 0..2^32-1"
	}
	return accessProblem(r.Access)
}

func accessProblem(access string) string {
	if access == "" || len(access) > 3 {
		return "access must be a non-empty subset of rwm"
	}
	for i, c := range access {
		if (c != 'r' && c != 'w' && c != 'm') || strings.IndexRune(access[i+1:], c) >= 0 {
			return "access must be a non-empty subset of rwm"
		}
	}
	return ""
}

// devicePathProblem says what is wrong with a device node's path, or "".
// The characters the knob text uses as separators are refused.
func devicePathProblem(p string) string {
	if !strings.HasPrefix(p, "/dev/") || path.Clean(p) != p || len(p) > 255 || strings.ContainsAny(p, ",: \t\n\x00") {
		return "the path must be a clean absolute path below /dev without commas, colons or spaces"
	}
	return ""
}

// DefaultDeviceRules is libvirt's default device ACL: /dev/null, zero,
// full, random, urandom, tty, ptmx, the pseudo terminals (136:*), and
// /dev/kvm when the host has it. Append the block devices a guest's config
// lists. A fresh slice is returned on every call.
func DefaultDeviceRules(kvm bool) []DeviceRule {
	rules := []DeviceRule{
		{Type: 'c', Major: 1, Minor: 3, Access: "rw"},           // null
		{Type: 'c', Major: 1, Minor: 5, Access: "rw"},           // zero
		{Type: 'c', Major: 1, Minor: 7, Access: "rw"},           // full
		{Type: 'c', Major: 1, Minor: 8, Access: "rw"},           // random
		{Type: 'c', Major: 1, Minor: 9, Access: "rw"},           // urandom
		{Type: 'c', Major: 5, Minor: 0, Access: "rw"},           // tty
		{Type: 'c', Major: 5, Minor: 2, Access: "rw"},           // ptmx
		{Type: 'c', Major: 136, Minor: AnyDevice, Access: "rw"}, // pts
	}
	if kvm {
		rules = append(rules, DeviceRule{Type: 'c', Major: 10, Minor: 232, Access: "rw"})
	}
	return rules
}

// MinimalDeviceRules is the device set every guest of kind gets unless its
// ACL lists its own: [DefaultDeviceRules], with /dev/kvm for a qemu guest
// on a host that has it.
func MinimalDeviceRules(kind Kind, kvm bool) []DeviceRule {
	return DefaultDeviceRules(kind == KindQEMU && kvm)
}

// Rules returns the ACL's base list for a guest of kind: Allow, or the
// minimal set when Allow is nil. Extra is not included; its paths need the
// host (see [ResolveDeviceRule]).
func (a *DeviceACL) Rules(kind Kind, kvm bool) []DeviceRule {
	if a.Allow != nil {
		return slices.Clone(a.Allow)
	}
	return MinimalDeviceRules(kind, kvm)
}

// ResolveDeviceRule returns r with its Path, if any, replaced by the type
// and numbers of that device node on this host. A path that is not a
// device node is refused with a [FieldError] for "devices".
func ResolveDeviceRule(r DeviceRule) (DeviceRule, error) {
	if r.Path == "" {
		return r, nil
	}
	if why := r.problem(); why != "" {
		return DeviceRule{}, &FieldError{Field: "devices", Value: r.String(), Reason: why}
	}
	var st unix.Stat_t
	if err := unix.Stat(r.Path, &st); err != nil {
		return DeviceRule{}, &FieldError{Field: "devices", Value: r.Path,
			Reason: fmt.Sprintf("no such device node on this host (%v): create it, or take it out of the guest's devices (corral devicetune NAME --deny %s)", err, r.Path)}
	}
	out := DeviceRule{Major: int64(unix.Major(st.Rdev)), Minor: int64(unix.Minor(st.Rdev)), Access: r.Access}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFCHR:
		out.Type = 'c'
	case unix.S_IFBLK:
		out.Type = 'b'
	default:
		return DeviceRule{}, &FieldError{Field: "devices", Value: r.Path,
			Reason: "not a character or block device node: name a device, or take it out of the guest's devices"}
	}
	return out, nil
}

// cpuSet is a parsed cpuset list ("0-3,6").
type cpuSet map[int]bool

func parseCPUSet(s string) (cpuSet, error) {
	set := cpuSet{}
	s = strings.TrimSpace(s)
	if s == "" {
		return set, nil
	}
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.ParseUint(lo, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("%q is not a cpuset list like 0-3,6", s)
		}
		b := a
		if isRange {
			if b, err = strconv.ParseUint(hi, 10, 16); err != nil || b < a {
				return nil, fmt.Errorf("%q is not a cpuset list like 0-3,6", s)
			}
		}
		for i := a; i <= b; i++ {
			set[int(i)] = true
		}
	}
	return set, nil
}

// String formats the set canonically, as the kernel prints it.
func (c cpuSet) String() string {
	maxID := -1
	for i := range c {
		maxID = max(maxID, i)
	}
	var parts []string
	for i := 0; i <= maxID; i++ {
		if !c[i] {
			continue
		}
		j := i
		for c[j+1] {
			j++
		}
		if j == i {
			parts = append(parts, strconv.Itoa(i))
		} else {
			parts = append(parts, strconv.Itoa(i)+"-"+strconv.Itoa(j))
		}
		i = j
	}
	return strings.Join(parts, ",")
}

func (c cpuSet) subsetOf(o cpuSet) (missing []int) {
	for i := range c {
		if !o[i] {
			missing = append(missing, i)
		}
	}
	slices.Sort(missing)
	return missing
}
