package domainxml

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"libvirt.org/go/libvirtxml"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
)

// ErrDomain is the error of a domain that cannot become a corral guest at
// all (not one element of it: those are listed in Result.Unmapped).
var ErrDomain = errors.New("corral: libvirt domain cannot be imported")

// Result is what a domain maps to.
type Result struct {
	// Domain is the domain's name in libvirt.
	Domain string `json:"domain"`
	// Guest creates the guest, its persistent tuning in Guest.Tuning. It
	// is defined only (NoStart), as virsh define does.
	Guest api.CreateGuest `json:"guest"`
	// Mapped lists what became part of the guest, in document order.
	Mapped []Mapping `json:"mapped"`
	// Unmapped lists what corral has no place for, in document order.
	Unmapped []Unmapped `json:"unmapped"`
}

// Mapping is one element of the domain and what it became.
type Mapping struct {
	Element string `json:"element"`
	Value   string `json:"value"`
	// To is the create flag (--memory) or knob (knob vcpu_quota) it set.
	To string `json:"to"`
}

// Unmapped is one element of the domain that the guest does not carry.
type Unmapped struct {
	Element string `json:"element"`
	Value   string `json:"value"`
	Why     string `json:"why"`
}

// Map parses a domain's XML and maps it to a guest named name (the
// domain's own name when empty).
func Map(doc []byte, name string) (*Result, error) {
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(string(doc)); err != nil {
		return nil, fmt.Errorf("%w: the file is not a libvirt domain's XML (%v); give what virsh dumpxml DOMAIN writes", ErrDomain, err)
	}
	m := &mapper{dom: &dom, r: &Result{Domain: dom.Name}}
	g := &m.r.Guest
	switch dom.Type {
	case "kvm", "qemu":
		g.Driver = events.DriverQEMU
	case "lxc":
		g.Driver = events.DriverLXC
	default:
		return nil, fmt.Errorf("%w: domain %q is of type %q: corral runs QEMU domains (type kvm or qemu) and LXC containers (type lxc)", ErrDomain, dom.Name, dom.Type)
	}
	if name == "" {
		name = dom.Name
	}
	if err := events.ValidateID("guest name", name); err != nil {
		return nil, fmt.Errorf("%w: domain %q: %v; give the guest a name corral takes with --name", ErrDomain, dom.Name, strings.TrimPrefix(err.Error(), "corral: "))
	}
	g.Name, g.NoStart = name, true
	g.Tuning = map[string]string{}
	if err := m.memory(); err != nil {
		return nil, err
	}
	m.vcpus()
	m.cputune()
	m.memtune()
	m.blkiotune()
	m.numatune()
	m.other()
	if err := m.os(); err != nil {
		return nil, err
	}
	m.devices()
	if len(g.Tuning) == 0 {
		g.Tuning = nil
	}
	return m.r, nil
}

type mapper struct {
	dom *libvirtxml.Domain
	r   *Result
}

func (m *mapper) qemu() bool { return m.r.Guest.Driver == events.DriverQEMU }

func (m *mapper) mapped(elem, value, to string) {
	m.r.Mapped = append(m.r.Mapped, Mapping{Element: elem, Value: value, To: to})
}

func (m *mapper) unmapped(elem, value, why string) {
	m.r.Unmapped = append(m.r.Unmapped, Unmapped{Element: elem, Value: value, Why: why})
}

// knob sets a persistent knob from an element, or lists the element as
// unmapped with the knob's own refusal when corral does not take its value.
func (m *mapper) knob(elem, shown, name, value string) {
	k, err := events.LookupKnob(name)
	if err == nil {
		value, err = k.Canonical(value)
	}
	if err != nil {
		m.unmapped(elem, shown, strings.TrimPrefix(err.Error(), "corral: "))
		return
	}
	m.r.Guest.Tuning[name] = value
	m.mapped(elem, shown, "knob "+name)
}

func (m *mapper) memory() error {
	d, g := m.dom, &m.r.Guest
	if d.Memory == nil {
		return fmt.Errorf("%w: domain %q has no <memory>; libvirt requires one, so this is not what virsh dumpxml writes", ErrDomain, d.Name)
	}
	max, err := scale(uint64(d.Memory.Value), d.Memory.Unit)
	if err != nil {
		return fmt.Errorf("%w: <memory>: %v", ErrDomain, err)
	}
	g.Memory = strconv.FormatUint(max, 10)
	m.mapped("memory", memText(d.Memory.Value, d.Memory.Unit), "--memory "+events.FormatSize(int64(max)))
	if d.MaximumMemory != nil {
		m.unmapped("maxMemory", fmt.Sprintf("%s, %d slots", memText(d.MaximumMemory.Value, d.MaximumMemory.Unit), d.MaximumMemory.Slots),
			"corral has no memory hotplug: the guest's maximum memory is <memory>, and setmaxmem changes it between starts")
	}
	if c := d.CurrentMemory; c != nil {
		cur, err := scale(uint64(c.Value), c.Unit)
		switch {
		case err != nil:
			m.unmapped("currentMemory", memText(c.Value, c.Unit), err.Error())
		case cur < max:
			m.knob("currentMemory", memText(c.Value, c.Unit), "memory", strconv.FormatUint(cur, 10))
		}
	}
	if b := d.MemoryBacking; b != nil {
		m.unmapped("memoryBacking", "", "corral backs guest memory with the host's ordinary pages (no hugepages, locking, sharing or other source)")
	}
	return nil
}

func (m *mapper) vcpus() {
	d, g := m.dom, &m.r.Guest
	g.VCPUs = 1
	if d.VCPU == nil {
		return
	}
	g.VCPUs = int(d.VCPU.Value)
	m.mapped("vcpu", strconv.FormatUint(uint64(d.VCPU.Value), 10), "--vcpus")
	if c := d.VCPU.Current; c != 0 && c < d.VCPU.Value {
		m.unmapped("vcpu current", strconv.FormatUint(uint64(c), 10),
			fmt.Sprintf("corral has no vCPU hotplug: the guest starts with all %d vCPUs online", d.VCPU.Value))
	}
	if d.VCPU.Placement == "auto" {
		m.unmapped("vcpu placement", "auto", "corral does not ask numad where to place a guest; its scheduler places it, and --cpuset or vcpupin pin it")
	}
	if d.VCPU.CPUSet != "" && !m.qemu() {
		m.unmapped("vcpu cpuset", d.VCPU.CPUSet, "an lxc guest has no vCPU threads to pin; corral's --cpuset gives a guest exclusive CPUs, which libvirt's cpuset does not")
	}
}

func (m *mapper) cputune() {
	t := m.dom.CPUTune
	if t == nil {
		m.defaultPins()
		return
	}
	g := &m.r.Guest
	const ct = "cputune/"
	if t.Shares != nil {
		v := int(t.Shares.Value)
		if err := events.ValidateCPUShares(v); err != nil {
			m.unmapped(ct+"shares", strconv.Itoa(v), strings.TrimPrefix(err.Error(), "corral: "))
		} else {
			g.CPUShares = v
			m.mapped(ct+"shares", strconv.Itoa(v), "--cpu-shares")
		}
	}
	period := func(elem, knob string, p *libvirtxml.DomainCPUTunePeriod) {
		if p != nil {
			m.knob(ct+elem, strconv.FormatUint(p.Value, 10), knob, strconv.FormatUint(p.Value, 10))
		}
	}
	quota := func(elem, knob string, q *libvirtxml.DomainCPUTuneQuota) {
		if q == nil {
			return
		}
		v := q.Value
		// libvirt writes any negative quota as "no limit".
		if v < 0 {
			v = -1
		}
		m.knob(ct+elem, strconv.FormatInt(q.Value, 10), knob, strconv.FormatInt(v, 10))
	}
	period("period", "vcpu_period", t.Period)
	quota("quota", "vcpu_quota", t.Quota)
	period("global_period", "global_period", t.GlobalPeriod)
	quota("global_quota", "global_quota", t.GlobalQuota)
	if m.qemu() {
		period("emulator_period", "emulator_period", t.EmulatorPeriod)
		quota("emulator_quota", "emulator_quota", t.EmulatorQuota)
	} else {
		noEmulator := "an lxc guest has no emulator threads (libvirt's LXC driver ignores it too)"
		if t.EmulatorPeriod != nil {
			m.unmapped(ct+"emulator_period", strconv.FormatUint(t.EmulatorPeriod.Value, 10), noEmulator)
		}
		if t.EmulatorQuota != nil {
			m.unmapped(ct+"emulator_quota", strconv.FormatInt(t.EmulatorQuota.Value, 10), noEmulator)
		}
	}
	if t.IOThreadPeriod != nil || t.IOThreadQuota != nil {
		m.unmapped(ct+"iothread_period, iothread_quota", "", "corral gives a QEMU guest no I/O threads of their own; their work is in the emulator group")
	}
	m.pins(t)
	if len(t.IOThreadPin) > 0 {
		m.unmapped(ct+"iothreadpin", fmt.Sprintf("%d entries", len(t.IOThreadPin)), "corral gives a QEMU guest no I/O threads of their own")
	}
	if len(t.VCPUSched) > 0 || t.EmulatorSched != nil || len(t.IOThreadSched) > 0 {
		m.unmapped(ct+"vcpusched, emulatorsched, iothreadsched", "", "corral runs every guest thread under the normal scheduler (no real-time policy or priority)")
	}
	if len(t.CacheTune) > 0 || len(t.MemoryTune) > 0 {
		m.unmapped(ct+"cachetune, memorytune", "", "corral does not allocate CPU cache or memory bandwidth (resctrl)")
	}
}

// defaultPins pins a QEMU guest's vCPUs and emulator to <vcpu cpuset>, as
// libvirt does when cputune pins none of them.
func (m *mapper) defaultPins() { m.pins(&libvirtxml.DomainCPUTune{}) }

// pins maps vcpupin and emulatorpin. libvirt pins a vCPU without a
// <vcpupin>, and the emulator without <emulatorpin>, to <vcpu cpuset>
// when it is given; corral's pins say the same explicitly.
func (m *mapper) pins(t *libvirtxml.DomainCPUTune) {
	const ct = "cputune/"
	vcpus := m.r.Guest.VCPUs
	var cpuset string
	if m.dom.VCPU != nil {
		cpuset = m.dom.VCPU.CPUSet
	}
	if !m.qemu() {
		onlyQEMU := "only a QEMU guest has vCPU and emulator threads to pin; corral's --cpuset gives a guest exclusive CPUs instead"
		for _, p := range t.VCPUPin {
			m.unmapped(fmt.Sprintf("%svcpupin vcpu=%d", ct, p.VCPU), p.CPUSet, onlyQEMU)
		}
		if t.EmulatorPin != nil {
			m.unmapped(ct+"emulatorpin", t.EmulatorPin.CPUSet, onlyQEMU)
		}
		return
	}
	pins := map[int]string{}
	var shown []string
	for _, p := range t.VCPUPin {
		if int(p.VCPU) >= vcpus {
			m.unmapped(fmt.Sprintf("%svcpupin vcpu=%d", ct, p.VCPU), p.CPUSet, fmt.Sprintf("the domain has %d vCPUs (0 to %d)", vcpus, vcpus-1))
			continue
		}
		pins[int(p.VCPU)] = p.CPUSet
		shown = append(shown, fmt.Sprintf("%d:%s", p.VCPU, p.CPUSet))
	}
	elem := ct + "vcpupin"
	if cpuset != "" && len(pins) < vcpus {
		for i := range vcpus {
			if _, ok := pins[i]; !ok {
				pins[i] = cpuset
			}
		}
		elem, shown = "vcpu cpuset, "+elem, append(shown, "others:"+cpuset)
	}
	if len(pins) > 0 {
		m.knob(elem, strings.Join(shown, " "), "vcpupin", events.FormatVCPUPins(pins))
	}
	switch {
	case t.EmulatorPin != nil:
		m.knob(ct+"emulatorpin", t.EmulatorPin.CPUSet, "emulatorpin", t.EmulatorPin.CPUSet)
	case cpuset != "":
		m.knob("vcpu cpuset", cpuset, "emulatorpin", cpuset)
	}
}

func (m *mapper) memtune() {
	t := m.dom.MemoryTune
	if t == nil {
		return
	}
	limit := func(elem, knob string, l *libvirtxml.DomainMemoryTuneLimit) {
		if l == nil {
			return
		}
		shown := memText(l.Value, l.Unit)
		b, err := scale(l.Value, l.Unit)
		if err != nil {
			m.unmapped("memtune/"+elem, shown, err.Error())
			return
		}
		v := strconv.FormatUint(b, 10)
		if b >= unlimitedKiB*1024 {
			v = events.Unlimited
		}
		m.knob("memtune/"+elem, shown, knob, v)
	}
	limit("hard_limit", "hard_limit", t.HardLimit)
	limit("soft_limit", "soft_limit", t.SoftLimit)
	limit("swap_hard_limit", "swap_hard_limit", t.SwapHardLimit)
	if t.MinGuarantee != nil {
		m.unmapped("memtune/min_guarantee", memText(t.MinGuarantee.Value, t.MinGuarantee.Unit), "only VMware and Xen take a guaranteed minimum; Linux cgroups have none corral sets")
	}
}

// unlimitedKiB is libvirt's VIR_DOMAIN_MEMORY_PARAM_UNLIMITED: a memtune
// limit this large (in KiB) is no limit.
const unlimitedKiB = 9007199254740991

func (m *mapper) blkiotune() {
	t := m.dom.BlockIOTune
	if t == nil {
		return
	}
	const bt = "blkiotune/"
	if t.Weight != 0 {
		w := strconv.FormatUint(uint64(t.Weight), 10)
		m.knob(bt+"weight", w, "blkio_weight", w)
	}
	lists := map[string][]string{}
	var order []string
	add := func(knob, path string, v uint) {
		if v == 0 {
			return
		}
		if _, ok := lists[knob]; !ok {
			order = append(order, knob)
		}
		lists[knob] = append(lists[knob], path, strconv.FormatUint(uint64(v), 10))
	}
	for _, dev := range t.Device {
		add("device_weight", dev.Path, dev.Weight)
		add("device_read_bytes_sec", dev.Path, dev.ReadBytesSec)
		add("device_write_bytes_sec", dev.Path, dev.WriteBytesSec)
		add("device_read_iops_sec", dev.Path, dev.ReadIopsSec)
		add("device_write_iops_sec", dev.Path, dev.WriteIopsSec)
	}
	elems := map[string]string{
		"device_weight": "weight", "device_read_bytes_sec": "read_bytes_sec", "device_write_bytes_sec": "write_bytes_sec",
		"device_read_iops_sec": "read_iops_sec", "device_write_iops_sec": "write_iops_sec",
	}
	for _, knob := range order {
		v := strings.Join(lists[knob], ",")
		m.knob(bt+"device/"+elems[knob], v, knob, v)
	}
}

func (m *mapper) numatune() {
	t := m.dom.NUMATune
	if t == nil {
		return
	}
	if mem := t.Memory; mem != nil {
		if mem.Mode != "" {
			m.knob("numatune/memory mode", mem.Mode, "numa_mode", mem.Mode)
		}
		if mem.Nodeset != "" {
			m.knob("numatune/memory nodeset", mem.Nodeset, "numa_nodeset", mem.Nodeset)
		}
		if mem.Placement == "auto" {
			m.unmapped("numatune/memory placement", "auto", "corral does not ask numad for a nodeset; give numa_nodeset")
		}
	}
	for _, n := range t.MemNodes {
		m.unmapped(fmt.Sprintf("numatune/memnode cellid=%d", n.CellID), n.Mode+" "+n.Nodeset, "corral gives a guest no NUMA cells of its own, so there is no cell to bind")
	}
}

// other lists the domain-wide settings corral has no place for.
func (m *mapper) other() {
	d := m.dom
	if d.IOThreads > 0 {
		m.unmapped("iothreads", strconv.FormatUint(uint64(d.IOThreads), 10), "corral gives a QEMU guest no I/O threads of their own")
	}
	if d.Resource != nil && d.Resource.Partition != "" && d.Resource.Partition != "/machine" {
		m.unmapped("resource/partition", d.Resource.Partition, "corral keeps every guest's groups under its agent's own root; a cluster partition (guest create --partition) is corral's grouping")
	}
	if d.IDMap != nil {
		m.unmapped("idmap", "", "corral maps no user or group ids into a container")
	}
	if d.CPU != nil && (d.CPU.Mode != "" || d.CPU.Model != nil) {
		m.unmapped("cpu", strings.TrimSpace(d.CPU.Mode+" "+cpuModel(d.CPU)), "corral chooses QEMU's CPU model itself (no -cpu of libvirt's)")
	}
}

func cpuModel(c *libvirtxml.DomainCPU) string {
	if c.Model == nil {
		return ""
	}
	return c.Model.Value
}

func (m *mapper) os() error {
	d, g := m.dom, &m.r.Guest
	o := d.OS
	if o == nil {
		return fmt.Errorf("%w: domain %q has no <os>; libvirt requires one, so this is not what virsh dumpxml writes", ErrDomain, d.Name)
	}
	osType := ""
	if o.Type != nil {
		osType = o.Type.Type
	}
	if !m.qemu() {
		if osType != "exe" {
			return fmt.Errorf("%w: LXC domain %q has os type %q: corral runs containers that execute an init (os type exe)", ErrDomain, d.Name, osType)
		}
		if o.Init != "" {
			g.Command = append([]string{o.Init}, o.InitArgs...)
			m.mapped("os/init, os/initarg", strings.Join(g.Command, " "), "command")
		}
		if len(o.InitEnv) > 0 {
			m.unmapped("os/initenv", fmt.Sprintf("%d variables", len(o.InitEnv)), "corral sets no environment of its own for a guest's command")
		}
		if o.InitDir != "" {
			m.unmapped("os/initdir", o.InitDir, "corral starts a container's command in its root directory")
		}
		if o.InitUser != "" || o.InitGroup != "" {
			m.unmapped("os/inituser, os/initgroup", strings.Trim(o.InitUser+":"+o.InitGroup, ":"), "corral runs a container's command as its root user")
		}
		return nil
	}
	if osType != "" && osType != "hvm" {
		return fmt.Errorf("%w: QEMU domain %q has os type %q: corral runs full virtual machines (os type hvm)", ErrDomain, d.Name, osType)
	}
	if o.Kernel != "" {
		g.Kernel = o.Kernel
		m.mapped("os/kernel", o.Kernel, "--kernel")
	}
	if o.Initrd != "" {
		g.Initrd = o.Initrd
		m.mapped("os/initrd", o.Initrd, "--initrd")
	}
	if o.Cmdline != "" {
		m.unmapped("os/cmdline", o.Cmdline, "corral boots a kernel with its own command line (console=ttyS0 panic=-1)")
	}
	if o.Loader != nil || o.Firmware != "" {
		m.unmapped("os/loader", strings.TrimSpace(o.Firmware+" "+loaderPath(o.Loader)), "corral boots QEMU's default BIOS; UEFI firmware is not supported")
	}
	return nil
}

func loaderPath(l *libvirtxml.DomainLoader) string {
	if l == nil {
		return ""
	}
	return l.Path
}

// diskBus is the bus corral attaches every disk on.
const diskBus = "virtio"

func (m *mapper) devices() {
	d, g := m.dom, &m.r.Guest
	dev := d.Devices
	if dev == nil {
		dev = &libvirtxml.DomainDeviceList{}
	}
	for _, disk := range dev.Disks {
		m.disk(&disk)
	}
	root := false
	for _, fs := range dev.Filesystems {
		src, target := "", ""
		if fs.Source != nil && fs.Source.Mount != nil {
			src = fs.Source.Mount.Dir
		}
		if fs.Target != nil {
			target = fs.Target.Dir
		}
		switch {
		case !m.qemu() && src != "" && target == "/" && !root:
			g.Rootfs, root = src, true
			m.mapped("devices/filesystem target=/", src, "--rootfs")
			if fs.ReadOnly != nil {
				m.unmapped("devices/filesystem target=/ readonly", src, "corral mounts a container's root file system read-write")
			}
		case m.qemu():
			m.unmapped("devices/filesystem target="+target, src, "corral shares no host directory with a VM (no virtiofs or 9p)")
		default:
			m.unmapped("devices/filesystem target="+target, filesystemSource(&fs), "corral mounts only a container's root file system, a host directory (type mount) at /")
		}
	}
	for _, h := range dev.Hostdevs {
		m.hostdev(&h)
	}
	for _, i := range dev.Interfaces {
		m.unmapped("devices/interface", interfaceText(&i), "corral attaches no network interface of libvirt's (no network, bridge or tap exists for it); domiftune shapes a guest's traffic on its node")
	}
	other := func(elem string, n int, why string) {
		if n > 0 {
			m.unmapped("devices/"+elem, fmt.Sprintf("%d", n), why)
		}
	}
	noDisplay := "corral runs QEMU without a display; use corral guest console for the serial console"
	if m.qemu() {
		other("graphics", len(dev.Graphics), noDisplay)
		other("video", len(dev.Videos), noDisplay)
		other("sound", len(dev.Sounds), "corral gives a VM no sound device")
		other("channel", len(dev.Channels), "corral gives a VM no virtio-serial channel (no QEMU guest agent)")
		other("rng", len(dev.RNGs), "corral gives a VM no virtio-rng device")
		other("watchdog", len(dev.Watchdogs), "corral gives a VM no watchdog; its restart policy (guest create --restart) restarts a guest that ends")
		other("tpm", len(dev.TPMs), "corral gives a VM no TPM")
		other("redirdev", len(dev.RedirDevs), "corral redirects no USB device")
		other("smartcard", len(dev.Smartcards), "corral gives a VM no smartcard")
		other("shmem", len(dev.Shmems), "corral shares no memory between guests")
		other("memory", len(dev.Memorydevs), "corral has no memory hotplug")
		other("parallel", len(dev.Parallels), "corral gives a VM one serial port and no parallel port")
		if b := dev.MemBalloon; b != nil && b.Model == "none" {
			m.unmapped("devices/memballoon", "none", "corral gives every QEMU guest a virtio balloon, which setmem drives")
		}
	} else {
		other("channel", len(dev.Channels), "corral gives a container no channels")
	}
}

func (m *mapper) disk(disk *libvirtxml.DomainDisk) {
	g := &m.r.Guest
	kind := disk.Device
	if kind == "" {
		kind = "disk"
	}
	target := ""
	if disk.Target != nil {
		target = disk.Target.Dev
	}
	elem := "devices/disk target=" + target
	file := ""
	if disk.Source != nil && disk.Source.File != nil {
		file = disk.Source.File.File
	}
	shown := file
	if shown == "" {
		shown = diskSource(disk)
	}
	switch {
	case !m.qemu():
		m.unmapped(elem, shown, "an lxc guest has no disks; its root file system is a directory (<filesystem>)")
		return
	case kind != "disk":
		m.unmapped(elem, shown, fmt.Sprintf("corral attaches image files as virtio-blk disks; a %s is not supported", kind))
		return
	case file == "":
		m.unmapped(elem, shown, "corral attaches image files on the node as disks (type file); a block device, network or volume source is not supported")
		return
	}
	spec := file
	var format, cache string
	if drv := disk.Driver; drv != nil {
		format, cache = drv.Type, drv.Cache
		if cache == "default" {
			cache = ""
		}
	}
	if format != "" {
		spec += ",format=" + format
	}
	if cache != "" {
		spec += ",cache=" + cache
	}
	if _, err := events.ParseDisk(spec); err != nil {
		m.unmapped(elem, shown, strings.TrimPrefix(err.Error(), "corral: "))
		return
	}
	g.Disks = append(g.Disks, spec)
	m.mapped(elem, shown, "--disk "+spec)
	name := "/dev/vd" + string(rune('a'+len(g.Disks)-1))
	if disk.Target != nil && disk.Target.Bus != "" && disk.Target.Bus != diskBus {
		m.unmapped(elem+" bus="+disk.Target.Bus, shown, "corral attaches every disk on virtio-blk: the guest sees it as "+name)
	} else if target != "" && "/dev/"+target != name {
		m.unmapped(elem, shown, "corral names disks in the order given: the guest sees it as "+name)
	}
	if disk.ReadOnly != nil || disk.Shareable != nil {
		m.unmapped(elem+" readonly/shareable", shown, "corral gives each guest a writable overlay of its own over the image")
	}
	if disk.IOTune != nil {
		m.unmapped(elem+" iotune", shown, "corral does not set QEMU's per-drive throttling (blkdeviotune); blkiotune throttles the host device holding the image")
	}
}

func (m *mapper) hostdev(h *libvirtxml.DomainHostdev) {
	g := &m.r.Guest
	var path, kind string
	switch {
	case h.CapsStorage != nil && h.CapsStorage.Source != nil:
		path, kind = h.CapsStorage.Source.Block, "storage"
	case h.CapsMisc != nil && h.CapsMisc.Source != nil:
		path, kind = h.CapsMisc.Source.Char, "misc"
	}
	if path != "" && !m.qemu() {
		spec := path + ":rwm"
		if _, err := events.CanonicalAllowedDevices([]string{spec}); err != nil {
			m.unmapped("devices/hostdev type="+kind, path, strings.TrimPrefix(err.Error(), "corral: "))
			return
		}
		g.Devices = append(g.Devices, spec)
		m.mapped("devices/hostdev type="+kind, path, "--device "+spec)
		return
	}
	what := hostdevText(h)
	if m.qemu() {
		m.unmapped("devices/hostdev", what, "corral passes no host device through to a VM (no VFIO or USB passthrough)")
		return
	}
	m.unmapped("devices/hostdev", what, "corral gives a container a host device by its /dev path only (hostdev mode=capabilities, type storage or misc)")
}

func hostdevText(h *libvirtxml.DomainHostdev) string {
	switch {
	case h.SubsysUSB != nil:
		s := "usb"
		if src := h.SubsysUSB.Source; src != nil {
			if src.Vendor != nil && src.Product != nil {
				s += " " + src.Vendor.ID + ":" + src.Product.ID
			}
			if a := src.Address; a != nil && a.Bus != nil && a.Device != nil {
				s += fmt.Sprintf(" bus %d device %d", *a.Bus, *a.Device)
			}
		}
		return s
	case h.SubsysPCI != nil:
		s := "pci"
		if src := h.SubsysPCI.Source; src != nil && src.Address != nil {
			a := src.Address
			s += " " + pciAddr(a.Domain, a.Bus, a.Slot, a.Function)
		}
		return s
	case h.SubsysSCSI != nil:
		return "scsi"
	case h.SubsysSCSIHost != nil:
		return "scsi_host"
	case h.SubsysMDev != nil:
		return "mdev"
	case h.CapsNet != nil:
		s := "net"
		if h.CapsNet.Source != nil {
			s += " " + h.CapsNet.Source.Interface
		}
		return s
	case h.CapsStorage != nil:
		return "storage"
	case h.CapsMisc != nil:
		return "misc"
	}
	return ""
}

func pciAddr(dom, bus, slot, fn *uint) string {
	v := func(p *uint) uint {
		if p == nil {
			return 0
		}
		return *p
	}
	return fmt.Sprintf("%04x:%02x:%02x.%x", v(dom), v(bus), v(slot), v(fn))
}

func interfaceText(i *libvirtxml.DomainInterface) string {
	var parts []string
	if s := i.Source; s != nil {
		switch {
		case s.Network != nil:
			parts = append(parts, "network "+s.Network.Network)
		case s.Bridge != nil:
			parts = append(parts, "bridge "+s.Bridge.Bridge)
		case s.Direct != nil:
			parts = append(parts, "direct "+s.Direct.Dev)
		case s.User != nil:
			parts = append(parts, "user")
		case s.Ethernet != nil:
			parts = append(parts, "ethernet")
		}
	}
	if i.MAC != nil {
		parts = append(parts, "mac "+i.MAC.Address)
	}
	return strings.Join(parts, ", ")
}

func diskSource(d *libvirtxml.DomainDisk) string {
	s := d.Source
	switch {
	case s == nil:
		return "(no source)"
	case s.Block != nil:
		return s.Block.Dev
	case s.Network != nil:
		return s.Network.Protocol + " " + s.Network.Name
	case s.Volume != nil:
		return s.Volume.Pool + "/" + s.Volume.Volume
	case s.Dir != nil:
		return s.Dir.Dir
	}
	return "(source of another kind)"
}

func filesystemSource(fs *libvirtxml.DomainFilesystem) string {
	s := fs.Source
	switch {
	case s == nil:
		return ""
	case s.Mount != nil:
		return s.Mount.Dir
	case s.Block != nil:
		return s.Block.Dev
	case s.File != nil:
		return s.File.File
	case s.Template != nil:
		return "template " + s.Template.Name
	case s.RAM != nil:
		return fmt.Sprintf("ram %d %s", s.RAM.Usage, s.RAM.Units)
	case s.Bind != nil:
		return s.Bind.Dir
	}
	return ""
}

// KnobNames lists the knobs a result sets, sorted.
func (r *Result) KnobNames() []string { return slices.Sorted(maps.Keys(r.Guest.Tuning)) }
