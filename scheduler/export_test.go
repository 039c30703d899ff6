package scheduler

// SetPlainScan turns the scan's shortcuts off (on) or back on, and returns
// a function that restores the previous setting.
func SetPlainScan(on bool) (restore func()) {
	old := plainScan
	plainScan = on
	return func() { plainScan = old }
}
