package cgroupdriver

import (
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
)

// ErrReserveTooLarge is returned by [ReservationFor] when the reserve leaves
// nothing of the host to the agent and its guests.
var ErrReserveTooLarge = errors.New("corral: reserve not below the host's capacity")

// Reservation caps the agent together with every guest below it, as the
// seed's `group virt { memory.limit_in_bytes = 7500M }` does, so that the
// host always keeps room for a login. Nil fields are not managed;
// [Unlimited] lifts a limit an earlier reservation set.
type Reservation struct {
	// MemoryHardLimit in bytes (at least one page) or [Unlimited]: v1
	// memory.limit_in_bytes, v2 memory.max of the corral root.
	MemoryHardLimit *int64 `json:"hard_limit,omitempty"`
	// CPUShares, 2..262144, weighs the whole tree against the rest of the
	// host (cpu.weight on v2).
	CPUShares *uint64 `json:"cpu_shares,omitempty"`
	// CPUQuotaUs of CPU time per CPUPeriodUs caps the whole tree: v1
	// cpu.cfs_quota_us and cpu.cfs_period_us, v2 cpu.max. A quota of n
	// periods is n CPUs' worth. CPUPeriodUs needs CPUQuotaUs; a quota
	// alone keeps the group's period.
	CPUQuotaUs  *int64  `json:"cpu_quota,omitempty"`
	CPUPeriodUs *uint64 `json:"cpu_period,omitempty"`
}

// ReservePeriodUs is the CFS period of the CPU cap [ReservationFor] sets,
// the kernel's default.
const ReservePeriodUs = 100000

// ReservationFor is the reservation that keeps reserveCPUs whole CPUs and
// reserveMemory bytes of a host with cpus CPUs and memory bytes for the
// host itself: the agent and its guests together may use the rest, as a
// memory hard limit and a CPU quota of (cpus - reserveCPUs) periods. A
// zero reserve lifts the limit ([Unlimited]), so that an agent restarted
// without the reserve takes the earlier cap away. It does no I/O and fails
// with [ErrReserveTooLarge] when a reserve is not below the capacity.
func ReservationFor(cpus int, memory int64, reserveCPUs int, reserveMemory int64) (Reservation, error) {
	if reserveCPUs < 0 || reserveMemory < 0 {
		return Reservation{}, fmt.Errorf("corral: reserve of %d CPUs and %d bytes: must not be negative", reserveCPUs, reserveMemory)
	}
	var errs []error
	r := Reservation{MemoryHardLimit: new(int64(Unlimited)), CPUQuotaUs: new(int64(Unlimited))}
	if reserveMemory > 0 {
		if memory-reserveMemory < 1<<20 {
			errs = append(errs, fmt.Errorf("%w: %d bytes of memory reserved, the host has %d: leave the agent and its guests at least 1 MiB, or lower the reserve", ErrReserveTooLarge, reserveMemory, memory))
		}
		r.MemoryHardLimit = new(memory - reserveMemory)
	}
	if reserveCPUs > 0 {
		if cpus-reserveCPUs < 1 {
			errs = append(errs, fmt.Errorf("%w: %d CPUs reserved, the host has %d: leave the agent and its guests at least one, or lower the reserve", ErrReserveTooLarge, reserveCPUs, cpus))
		}
		r.CPUQuotaUs, r.CPUPeriodUs = new(int64(cpus-reserveCPUs)*ReservePeriodUs), new(uint64(ReservePeriodUs))
	}
	if err := errors.Join(errs...); err != nil {
		return Reservation{}, err
	}
	return r, nil
}

// Reserve moves process pid (the agent passes os.Getpid()) into
// <partition>/corral/agent in every hierarchy and applies r to the corral
// root, which holds the agent and all guests. On cgroup v2 this is also what
// lets the agent enable controllers for its guests when the partition is its
// own group: a group with processes may not have controllers enabled for
// children. It returns the limit writes performed.
//
// A memory limit is rounded down to whole pages, as the kernel keeps it.
// A field of r that lifts a limit ([Unlimited]) on a host without its
// controller is dropped: there is nothing to lift. Any other value the host
// cannot take is refused with a [FieldError] before anything is written.
// Processes the moved one starts later (the agent's fencer) inherit its
// groups, which the fencer's freezing of the kind directories leaves alone.
func (d *Driver) Reserve(r Reservation, pid int) ([]Write, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("corral: reserve: bad pid %d", pid)
	}
	res := Resources{MemoryHardLimit: r.MemoryHardLimit, CPUShares: r.CPUShares, CPUQuotaUs: r.CPUQuotaUs, CPUPeriodUs: r.CPUPeriodUs}
	if r.CPUQuotaUs != nil && *r.CPUQuotaUs == Unlimited && r.CPUPeriodUs == nil && !d.has(cCPU) {
		res.CPUQuotaUs = nil
	}
	if r.MemoryHardLimit != nil && *r.MemoryHardLimit == Unlimited && !d.has(cMemory) {
		res.MemoryHardLimit = nil
	}
	if v := r.MemoryHardLimit; v != nil && *v != Unlimited && d.host.PageSize > 0 && *v > d.host.PageSize {
		// The kernel rounds a limit down to whole pages; write what it
		// keeps, so that the value written is the value read back.
		res.MemoryHardLimit = new(*v / d.host.PageSize * d.host.PageSize)
	}
	if r.CPUPeriodUs != nil && r.CPUQuotaUs == nil {
		return nil, fmt.Errorf("corral: reserve: %w", fieldErr("cpu_period", *r.CPUPeriodUs, "needs a CPU quota too"))
	}
	if err := validate(d.l, &d.host, &res); err != nil {
		return nil, err
	}
	p := planner{l: d.l, dir: d.l.rootDir}
	p.all(&res, &d.host)
	for i := range p.out {
		p.out[i].Knob = reserveKnobs.Replace(p.out[i].Knob)
	}

	// Move the process first: on v2, controllers can only be enabled below
	// groups that hold no processes.
	for i := range d.l.hs {
		if err := d.ensurePartition(i); err != nil {
			return nil, fmt.Errorf("corral: reserve: %w", err)
		}
		root, agent := d.l.rootDir(i), d.l.rootDir(i)+"/"+agentGroup
		ops := append([]Write{{Dir: root}}, cpusetInit(d.l, &d.host, i, root)...)
		ops = append(ops, Write{Dir: agent})
		for _, op := range ops {
			if err := runOp(op); err != nil {
				return nil, fmt.Errorf("corral: reserve: %w", err)
			}
		}
	}
	for i := range d.l.hs {
		dir := d.l.rootDir(i) + "/" + agentGroup
		if err := writeFile(dir+"/cgroup.procs", strconv.Itoa(pid)); err != nil {
			if errors.Is(err, fs.ErrPermission) {
				return nil, fmt.Errorf("corral: reserve: move pid %d into %s: %w (it takes root and, on cgroup v2, write access to the cgroup.procs of the group above both the old and the new one)", pid, dir, err)
			}
			return nil, fmt.Errorf("corral: reserve: move pid %d into %s: %w", pid, dir, err)
		}
	}
	if err := d.ensureTree(); err != nil {
		return nil, fmt.Errorf("corral: reserve: %w", err)
	}
	for i, w := range p.out {
		if err := applyWrite(w); err != nil {
			return p.out[:i], fmt.Errorf("corral: reserve: %s = %q: %w (a limit below what the agent and its guests use now, or below a guest's own CPU quota on cgroup v1, is refused: lower the reserve or the guests' limits)", w.Path(), w.Value, err)
		}
	}
	return p.out, nil
}

// reserveKnobs names a reservation's writes by its fields, not the
// guests' knobs the planner knows them as.
var reserveKnobs = strings.NewReplacer("vcpu_quota", "cpu_quota", "vcpu_period", "cpu_period")

// AgentDirs returns the agent's own group, <partition>/corral/agent, in
// every hierarchy, in the order of the report's hierarchies.
func (d *Driver) AgentDirs() []string {
	out := make([]string, len(d.l.hs))
	for i := range d.l.hs {
		out[i] = d.l.rootDir(i) + "/" + agentGroup
	}
	return out
}

// has reports whether the host carries controller c.
func (d *Driver) has(c controller) bool {
	i, _ := d.l.at(c)
	return i >= 0
}
