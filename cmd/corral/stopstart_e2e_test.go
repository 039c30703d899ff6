package main

import (
	"testing"

	"github.com/corral-dev/corral/coordinator/api"
)

// TestDevStopThenStartRuns: `guest stop` right followed by `guest start`
// leaves the guest running, whichever reaches the log first relative to
// the stop's exit (the start used to be lost when it committed before the
// node reported the exit).
func TestDevStopThenStartRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("starts corral dev as a process")
	}
	p, _ := startAgentDev(t, []string{"ss"})
	p.ok("guest", "create", "ss", "--driver", "process", "--memory", "16MiB", "--", "/bin/sleep", "1000")
	pid := waitGuest(t, p, "ss", "running", func(g *api.GuestView) bool { return g.Status == api.StatusRunning && g.PID > 0 }).PID
	for i := range 5 {
		p.ok("guest", "stop", "ss")
		p.ok("guest", "start", "ss")
		g := waitGuest(t, p, "ss", "running again after stop and start", func(g *api.GuestView) bool {
			return g.Status == api.StatusRunning && g.PID > 0 && g.PID != pid
		})
		if g.Desired != api.DesiredRunning {
			t.Fatalf("round %d: desired %s", i, g.Desired)
		}
		pid = g.PID
	}
}
