package cgroupdriver

import (
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Config configures a [Driver]. Start from [DefaultConfig].
type Config struct {
	// Partition is the cgroup path, the same in every hierarchy, under which
	// corral keeps its tree: <Partition>/corral/<kind>/<guest>. Empty means
	// the agent's own group in each hierarchy, as /proc/self/cgroup lists
	// it. Missing levels are created.
	Partition string
	// Report is the cgroup layout to drive; nil means [DetectHost].
	Report *Report
	// Host replaces probing the host ([HostInfo]); nil means probe.
	Host *HostInfo
	// RemoveTimeout bounds how long [Driver.Remove] retries a busy group
	// when its context has no deadline.
	RemoveTimeout time.Duration
	// FreezeTimeout bounds how long [Driver.Freeze] and [Driver.Thaw] wait
	// for the kernel when their context has no deadline.
	FreezeTimeout time.Duration
}

// DefaultConfig returns the configuration the agent uses unless told
// otherwise.
func DefaultConfig() Config {
	return Config{RemoveTimeout: 5 * time.Second, FreezeTimeout: 10 * time.Second}
}

// Validate reports a configuration that [New] would refuse.
func (c Config) Validate() error {
	if err := validatePartition(c.Partition); err != nil {
		return err
	}
	if c.RemoveTimeout <= 0 || c.FreezeTimeout <= 0 {
		return fmt.Errorf("corral: cgroup RemoveTimeout (%v) and FreezeTimeout (%v) must be positive", c.RemoveTimeout, c.FreezeTimeout)
	}
	return nil
}

// Driver manages the groups of guests on one host. It holds no mutable
// state after [New]: its methods may be called from any goroutine, and
// concurrently for different guests. Calls for the same guest must not
// overlap (the agent serialises work per guest).
type Driver struct {
	cfg  Config
	rep  Report
	host HostInfo
	l    *layout
	// files keeps Stats' counter files open (counterfiles.go).
	files *counterFiles
	// spares are the spares' groups this Driver holds (spare.go).
	spares spareSet
}

// New detects (or takes) the layout, resolves the partition in every
// hierarchy and probes the host. It touches nothing on disk.
func New(cfg Config) (*Driver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var rep Report
	if cfg.Report != nil {
		rep = cfg.Report.clone()
	} else {
		var err error
		if rep, err = DetectHost(); err != nil {
			return nil, err
		}
	}
	l, err := newLayout(rep, cfg.Partition)
	if err != nil {
		return nil, err
	}
	var host HostInfo
	if cfg.Host != nil {
		host = *cfg.Host
		host.V2Controllers = slices.Clone(host.V2Controllers)
		host.BlockDevices = slices.Clone(host.BlockDevices)
		l.resolve(host.V2Controllers)
	} else if host, err = probeHost(l); err != nil {
		return nil, err
	}
	return &Driver{cfg: cfg, rep: rep, host: host, l: l, files: newCounterFiles()}, nil
}

// Report returns the layout the driver works on.
func (d *Driver) Report() Report { return d.rep.clone() }

// Host returns what the driver knows about the host.
func (d *Driver) Host() HostInfo {
	h := d.host
	h.V2Controllers = slices.Clone(h.V2Controllers)
	h.BlockDevices = slices.Clone(h.BlockDevices)
	return h
}

// Paths returns the guest's directory in every hierarchy, in report order.
func (d *Driver) Paths(g Guest) ([]string, error) {
	if err := g.Validate(); err != nil {
		return nil, err
	}
	out := make([]string, len(d.l.hs))
	for i := range d.l.hs {
		out[i] = d.l.guestDir(i, g)
	}
	return out, nil
}

// RootDirs returns the corral root (<partition>/corral) in every hierarchy.
func (d *Driver) RootDirs() []string {
	out := make([]string, len(d.l.hs))
	for i := range d.l.hs {
		out[i] = d.l.rootDir(i)
	}
	return out
}

// DefaultDevices returns libvirt's default ACL for this host (with /dev/kvm
// when present) plus extra, typically the guest's configured block devices.
func (d *Driver) DefaultDevices(extra ...DeviceRule) *DeviceACL {
	return &DeviceACL{Allow: append(DefaultDeviceRules(d.host.KVM), extra...)}
}

// Validate reports every field of r that this host cannot take, each as a
// [*FieldError], joined. It writes nothing; it only looks up the device
// paths r names (stat), to resolve them to major:minor.
func (d *Driver) Validate(r Resources) error { return validate(d.l, &d.host, &r) }

// Plan validates r and returns the writes [Driver.Apply] would perform for
// g, in order. It writes nothing; it only looks up the device paths r
// names, as Validate does.
func (d *Driver) Plan(g Guest, r Resources) ([]Write, error) { return plan(d.l, &d.host, g, &r) }

// PlanTree returns the steps [Driver.Create] takes the first time, to set
// up the corral tree below an existing partition: a [Write] with an empty
// File is a mkdir of Dir. It does no I/O.
func (d *Driver) PlanTree() []Write { return planTree(d.l, &d.host) }

// Create makes the guest's group in every hierarchy, creating the corral
// tree on first use. Creating an existing group is not an error.
func (d *Driver) Create(g Guest) error {
	if err := g.Validate(); err != nil {
		return err
	}
	treeReady := false
	for i := range d.l.hs {
		dir := d.l.guestDir(i, g)
		err := mkdir(dir)
		if err != nil && isErrno(err, unix.ENOENT) && !treeReady {
			ensure := d.ensureTree
			if g.Partition != "" {
				ensure = func() error { return d.ensurePartitionTree(g.Partition) }
			}
			if err = ensure(); err == nil {
				treeReady = true
				err = mkdir(dir)
			}
		}
		if err != nil {
			return fmt.Errorf("corral: create %s: %w", g, err)
		}
	}
	return nil
}

// Apply validates r, then writes it for g, whose groups must exist. Nothing
// is written when r is invalid. It returns the writes performed: all of
// them or, when one fails, those before it that completed their knob: a
// write whose file or knob the plan was to write again (a v1 memsw limit
// lifted to make room for the memory limit) is left out, so that
// [Applied] never reports a value the host does not hold.
func (d *Driver) Apply(g Guest, r Resources) ([]Write, error) {
	ws, err := d.Plan(g, r)
	if err != nil {
		return nil, err
	}
	ws = keepDevicesOpen(ws)
	// A v1 CFS quota the kernel refuses with EINVAL may only be out of
	// order: a QEMU guest's global quota lowered below its vCPUs' (the
	// plan writes the guest's group first, which raising needs) is taken
	// once the children are lowered. Such writes are tried again after
	// the rest.
	var deferred []int
	for i, w := range ws {
		if err := applyWrite(w); err != nil {
			if w.File == "cpu.cfs_quota_us" && isErrno(err, unix.EINVAL) {
				deferred = append(deferred, i)
				continue
			}
			return settledExcept(ws, i, deferred), fmt.Errorf("corral: apply %s for %s: %s = %q: %w", w.Knob, g, w.Path(), w.Value, err)
		}
	}
	for n, i := range deferred {
		w := ws[i]
		if err := applyWrite(w); err != nil {
			return settledExcept(ws, len(ws), deferred[n:]), fmt.Errorf("corral: apply %s for %s: %s = %q: %w", w.Knob, g, w.Path(), w.Value, err)
		}
	}
	return ws, nil
}

// settledExcept is [settled] without the writes at the indexes in failed,
// which the host does not hold either.
func settledExcept(ws []Write, upTo int, failed []int) []Write {
	out := settled(ws, upTo)
	if len(failed) == 0 {
		return out
	}
	return slices.DeleteFunc(out, func(w Write) bool {
		return slices.ContainsFunc(failed, func(i int) bool { return ws[i].Path() == w.Path() })
	})
}

// settled returns the writes before ws[failed] whose file and knob no
// write from ws[failed] on was to write again.
func settled(ws []Write, failed int) []Write {
	out := make([]Write, 0, failed)
	for _, w := range ws[:failed] {
		if !slices.ContainsFunc(ws[failed:], func(l Write) bool { return l.Path() == w.Path() || l.Knob == w.Knob }) {
			out = append(out, w)
		}
	}
	return out
}

func applyWrite(w Write) error {
	switch w.File {
	case DeviceProgramFile:
		return attachDeviceProgram(w.Dir, w.Value)
	case MemPolicyFile:
		return nil // set at launch, by WithMemPolicy
	}
	return writeFile(w.Path(), w.Value)
}

// ensureTree creates the partition (where missing) and the corral tree in
// every hierarchy. It is idempotent.
func (d *Driver) ensureTree() error {
	for i := range d.l.hs {
		if err := d.ensurePartition(i); err != nil {
			return err
		}
	}
	for _, op := range planTree(d.l, &d.host) {
		if err := runOp(op); err != nil {
			if op.File == "cgroup.subtree_control" && isErrno(err, unix.EBUSY) {
				return fmt.Errorf("corral: enable controllers in %s: it holds processes, which cgroup v2 forbids below the root; call Reserve to move the agent into %s/agent, or configure a partition: %w", op.Dir, path.Join(op.Dir, "corral"), err)
			}
			return err
		}
	}
	return nil
}

// runOp performs one step of planTree: a mkdir when File is empty.
func runOp(op Write) error {
	if op.File == "" {
		return mkdir(op.Dir)
	}
	return writeFile(op.Path(), op.Value)
}

// ensurePartition creates the missing levels of the partition in hierarchy
// i, making each usable: on v1 cpuset a copy of its parent's CPUs and
// memory nodes, on v2 the needed controllers enabled on the way down.
func (d *Driver) ensurePartition(i int) error {
	h := d.l.hs[i]
	top := existingAncestor(h.part, h.MountPoint)
	if top == h.part {
		return nil
	}
	var missing []string
	for dir := h.part; dir != top; dir = path.Dir(dir) {
		missing = append(missing, dir)
	}
	slices.Reverse(missing)
	cpuset := h.Version == 1 && d.l.route[cCPUSet] == i
	enable := d.l.v2Enable()
	for _, dir := range missing {
		parent := path.Dir(dir)
		if h.Version == 2 && len(enable) > 0 {
			v := "+" + strings.Join(enable, " +")
			if err := writeFile(parent+"/cgroup.subtree_control", v); err != nil {
				return err
			}
		}
		if err := mkdir(dir); err != nil {
			return err
		}
		if cpuset {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if v, _ := readFile(dir + "/" + f); v != "" {
					continue
				}
				v, err := readFile(parent + "/" + f)
				if err != nil {
					return err
				}
				if err := writeFile(dir+"/"+f, v); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// Pids lists the processes in the guest's group, read from the first
// hierarchy (every process of a guest is in its group everywhere).
func (d *Driver) Pids(g Guest) ([]int, error) {
	if err := g.Validate(); err != nil {
		return nil, err
	}
	// A QEMU guest's threads live in its vcpuN and emulator groups.
	pids, err := guestProcs(d.l.guestDir(0, g))
	if err != nil {
		return nil, fmt.Errorf("corral: pids of %s: %w", g, err)
	}
	return pids, nil
}

// keepDevicesOpen rewrites a v1 device ACL change of a group that is
// already restricted so that it never denies everything: the plan's
// "deny a, then allow each rule" would leave a running guest unable to
// open even /dev/null for a moment. Instead the rules the group holds
// that the new list lacks are denied and the new list allowed. A group
// still open to every device (a new one inherits its parent's list) gets
// the plan as it is.
func keepDevicesOpen(ws []Write) []Write {
	i := slices.IndexFunc(ws, func(w Write) bool { return w.File == "devices.deny" && w.Value == "a" })
	if i < 0 {
		return ws
	}
	dir := ws[i].Dir
	held, err := readFile(dir + "/devices.list")
	if err != nil || held == "" || held == "a *:* rwm" {
		return ws
	}
	var allow []Write
	for _, w := range ws[i+1:] {
		if w.File == "devices.allow" && w.Dir == dir {
			allow = append(allow, w)
		}
	}
	var deny []Write
	for _, rule := range strings.Split(held, "\n") {
		if !slices.ContainsFunc(allow, func(w Write) bool { return w.Value == rule }) {
			deny = append(deny, Write{Knob: ws[i].Knob, Dir: dir, File: "devices.deny", Value: rule})
		}
	}
	out := make([]Write, 0, len(ws)+len(deny))
	out = append(out, ws[:i]...)
	out = append(out, deny...)
	for _, w := range ws[i+1:] {
		if !(w.File == "devices.allow" && w.Dir == dir) {
			out = append(out, w)
		}
	}
	return append(out, allow...)
}
