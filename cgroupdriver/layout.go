package cgroupdriver

import (
	"fmt"
	"path"
	"slices"
	"strings"
)

// controller is a logical resource controller. Which hierarchy carries it,
// and the names of its files, depend on the host's layout.
type controller int

const (
	cCPU controller = iota
	cCPUAcct
	cCPUSet
	cMemory
	cBlkio
	cDevices
	cFreezer
	cNetCls
	cPids
	numControllers
)

// v1Name is the controller's name on cgroup v1.
func (c controller) v1Name() string {
	return [...]string{"cpu", "cpuacct", "cpuset", "memory", "blkio", "devices", "freezer", "net_cls", "pids"}[c]
}

// v2Name is the controller to enable in cgroup.subtree_control on v2. It is
// "" for what v2 does without a controller (cpu.stat, cgroup.freeze, BPF
// device programs) and for net_cls, which v2 lacks.
func (c controller) v2Name() string {
	return [...]string{"cpu", "", "cpuset", "memory", "io", "", "", "", "pids"}[c]
}

// v2Core reports whether v2 offers the function in every non-root group.
func (c controller) v2Core() bool { return c == cCPUAcct || c == cDevices || c == cFreezer }

// hier is a detected hierarchy with the directory of the corral partition.
type hier struct {
	Hierarchy
	part string // file system directory of the partition
}

// layout maps every controller to the hierarchy that carries it. It is
// immutable once built.
type layout struct {
	hs    []hier
	v2    int                 // index of the cgroup2 hierarchy in hs, or -1
	route [numControllers]int // index in hs, or -1 when not available
}

// newLayout resolves the partition in every hierarchy of rep. partition is
// an absolute cgroup path, or "" for this process's own group in each
// hierarchy.
func newLayout(rep Report, partition string) (*layout, error) {
	if len(rep.Hierarchies) == 0 {
		return nil, ErrNoCgroups
	}
	l := &layout{v2: -1}
	for _, h := range rep.Hierarchies {
		group := partition
		if group == "" {
			group = h.Group
			if group == "" {
				return nil, fmt.Errorf("corral: no entry for %s in /proc/self/cgroup; configure a partition", h)
			}
			// A process already in an agent's own group (an agent
			// restarted from inside it) keeps that agent's partition
			// instead of nesting corral/agent/corral.
			if base, ok := strings.CutSuffix(group, "/corral/agent"); ok {
				group = base
				if group == "" {
					group = "/"
				}
			}
		}
		dir, err := h.Dir(group)
		if err != nil {
			return nil, err
		}
		if h.Version == 2 {
			if l.v2 >= 0 {
				return nil, fmt.Errorf("corral: two cgroup2 hierarchies in report (%s, %s)", l.hs[l.v2].MountPoint, h.MountPoint)
			}
			l.v2 = len(l.hs)
		}
		l.hs = append(l.hs, hier{Hierarchy: h, part: dir})
	}
	for c := range numControllers {
		l.route[c] = -1
	}
	return l, nil
}

// resolve routes each controller: its v1 hierarchy if mounted, else v2 if the
// partition's parent offers it there (v2 lists the names in
// cgroup.controllers) or v2 does it without a controller.
func (l *layout) resolve(v2Controllers []string) {
	for c := range numControllers {
		l.route[c] = -1
		for i, h := range l.hs {
			if h.Version == 1 && h.Has(c.v1Name()) {
				l.route[c] = i
				break
			}
		}
		if l.route[c] >= 0 || l.v2 < 0 {
			continue
		}
		if c.v2Core() || (c.v2Name() != "" && slices.Contains(v2Controllers, c.v2Name())) {
			l.route[c] = l.v2
		}
	}
}

// at returns the hierarchy index carrying c and its version (0 if missing).
func (l *layout) at(c controller) (int, int) {
	i := l.route[c]
	if i < 0 {
		return -1, 0
	}
	return i, l.hs[i].Version
}

// v2Enable lists the controllers corral needs enabled in
// cgroup.subtree_control on the path to each guest.
func (l *layout) v2Enable() []string {
	var out []string
	for c := range numControllers {
		if l.route[c] == l.v2 && l.v2 >= 0 && c.v2Name() != "" {
			out = append(out, c.v2Name())
		}
	}
	return out
}

func (l *layout) rootDir(i int) string { return l.hs[i].part + "/corral" }

func (l *layout) kindDir(i int, k Kind) string { return l.hs[i].part + "/corral/" + string(k) }

func (l *layout) guestDir(i int, g Guest) string {
	if g.Partition != "" {
		return l.partitionDir(i, g.Partition) + "/" + string(g.Kind) + "/" + g.ID
	}
	return l.hs[i].part + "/corral/" + string(g.Kind) + "/" + g.ID
}

// validatePartition checks a configured partition: an absolute, clean cgroup
// path whose components are safe.
func validatePartition(p string) error {
	if p == "" {
		return nil
	}
	if !strings.HasPrefix(p, "/") || path.Clean(p) != p {
		return fmt.Errorf("corral: partition %q must be an absolute, clean cgroup path like /machine", p)
	}
	for _, c := range strings.Split(strings.Trim(p, "/"), "/") {
		if c == "." || c == ".." || strings.ContainsAny(c, "\x00\n") {
			return fmt.Errorf("corral: partition %q has an unsafe component %q", p, c)
		}
	}
	return nil
}
