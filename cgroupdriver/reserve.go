package cgroupdriver

import (
	"fmt"
	"strconv"
)

// Reservation caps the agent together with every guest below it, as the
// seed's `group virt { memory.limit_in_bytes = 7500M }` does, so that the
// host always keeps room for a login. Nil fields are not managed.
type Reservation struct {
	// MemoryHardLimit in bytes (at least one page) or [Unlimited].
	MemoryHardLimit *int64 `json:"hard_limit,omitempty"`
	// CPUShares, 2..262144, weighs the whole tree against the rest of the
	// host (cpu.weight on v2).
	CPUShares *uint64 `json:"cpu_shares,omitempty"`
}

// Reserve moves process pid (the agent passes os.Getpid()) into
// <partition>/corral/agent in every hierarchy and applies r to the corral
// root, which holds the agent and all guests. On cgroup v2 this is also what
// lets the agent enable controllers for its guests when the partition is its
// own group: a group with processes may not have controllers enabled for
// children. It returns the limit writes performed.
func (d *Driver) Reserve(r Reservation, pid int) ([]Write, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("corral: reserve: bad pid %d", pid)
	}
	res := Resources{MemoryHardLimit: r.MemoryHardLimit, CPUShares: r.CPUShares}
	if err := validate(d.l, &d.host, &res); err != nil {
		return nil, err
	}
	p := planner{l: d.l, dir: d.l.rootDir}
	p.all(&res, &d.host)

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
		if err := writeFile(d.l.rootDir(i)+"/"+agentGroup+"/cgroup.procs", strconv.Itoa(pid)); err != nil {
			return nil, fmt.Errorf("corral: reserve: move pid %d: %w", pid, err)
		}
	}
	if err := d.ensureTree(); err != nil {
		return nil, fmt.Errorf("corral: reserve: %w", err)
	}
	for i, w := range p.out {
		if err := applyWrite(w); err != nil {
			return p.out[:i], fmt.Errorf("corral: reserve: %s = %q: %w", w.Path(), w.Value, err)
		}
	}
	return p.out, nil
}
