package driver

// CheckLogsNow runs one check of the set's logs, as its loop does every
// LogCheckInterval, and returns how many logs it watches, whether its loop
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
	caps.check()
	caps.mu.Lock()
	defer caps.mu.Unlock()
	return len(caps.logs), caps.stop != nil, shared
}
