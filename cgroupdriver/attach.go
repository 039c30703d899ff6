package cgroupdriver

import (
	"fmt"
	"strconv"
)

// Attach moves process pid, which must not have run anything of the
// guest's yet, into every group of g (the freezer last, as the entry shim
// does), writing cgroup.procs as this process. It is for a child that
// cannot join its groups itself: one started in a user namespace, whose
// root is refused cgroup.procs of the host's hierarchies. The caller
// holds the child back until Attach returned.
func (d *Driver) Attach(pid int, g Guest) error {
	if err := g.Validate(); err != nil {
		return err
	}
	if pid <= 1 {
		return fmt.Errorf("corral: attach to %s: refusing pid %d", g, pid)
	}
	if err := d.checkThawed(g); err != nil {
		return err
	}
	var procs []string
	for _, i := range d.joinOrder() {
		procs = append(procs, d.l.guestDir(i, g)+"/cgroup.procs")
	}
	for _, p := range procs {
		if err := writeFile(p, strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("corral: attach pid %d to %s: %w", pid, p, err)
		}
	}
	return nil
}

// joinOrder lists the hierarchies in the order a process joins them: the
// freezer last, so that a process frozen on the way is in every other
// group already.
func (d *Driver) joinOrder() []int {
	freezer := d.l.route[cFreezer]
	out := make([]int, 0, len(d.l.hs))
	for i := range d.l.hs {
		if i != freezer {
			out = append(out, i)
		}
	}
	if freezer >= 0 {
		out = append(out, freezer)
	}
	return out
}
