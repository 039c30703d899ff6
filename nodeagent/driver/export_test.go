package driver

// CheckLogsNow checks every log of the set at once, as its loop does on an
// overflow of its inotify queue, and returns how many logs it watches, whether its loop
// runs, and whether every driver of the set shares that one check.
func (s *Set) CheckLogsNow() (watched int, looping, shared bool) {
	caps := s.drivers["process"].(*Process).caps
	shared = true
	for _, d := range s.drivers {
		switch d := d.(type) {
		case *Process:
			shared = shared && d.caps == caps
		case *LXC:
			shared = shared && d.caps == caps
		case *QEMU:
			shared = shared && d.caps == caps
		}
	}
	caps.check(true)
	caps.mu.Lock()
	defer caps.mu.Unlock()
	return len(caps.logs), caps.stop != nil, shared
}

// LogStats returns how often the set's log check looked at inst's log's
// size (an fstat) since it was added, and whether the log is watched by
// inotify rather than polled.
func (s *Set) LogStats(inst *Instance) (stats int, watched bool) {
	caps := s.drivers["process"].(*Process).caps
	caps.mu.Lock()
	defer caps.mu.Unlock()
	l := caps.logs[inst]
	if l == nil {
		return 0, false
	}
	return l.stats, l.wd >= 0
}
