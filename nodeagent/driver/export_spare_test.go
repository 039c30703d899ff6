package driver

// SparePID is the pid of d's waiting spare init, 0 when none waits.
func SparePID(d *LXC) int {
	d.spares.mu.Lock()
	defer d.spares.mu.Unlock()
	if d.spares.next == nil {
		return 0
	}
	return d.spares.next.cmd.Process.Pid
}

// SpareInit reports whether d is an lxc driver that keeps spare inits.
func SpareInit(d Driver) bool {
	l, ok := d.(*LXC)
	return ok && l.cfg.SpareInit
}
