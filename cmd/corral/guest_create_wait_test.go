package main

import (
	"strings"
	"testing"

	"github.com/corral-dev/corral/nodeagent/driver/drivertest"
)

// TestDevGuestCreateWait: `guest create --wait` returns once the guest has
// started, naming its node, and fails saying why when it cannot start.
func TestDevGuestCreateWait(t *testing.T) {
	rootfs := drivertest.Rootfs(t)
	p, _ := startAgentDev(t, []string{"w-ct", "w-bad"})
	out := p.ok("guest", "create", "w-ct", "--driver", "lxc", "--memory", "32MiB", "--rootfs", rootfs, "--wait", "--", "/bin/sleep", "1000")
	if !strings.Contains(out, "guest w-ct started on ") {
		t.Errorf("create --wait printed:\n%s", out)
	}
	// It returned after the start: the guest runs now, no waiting needed.
	if show := p.ok("guest", "show", "w-ct"); !strings.Contains(show, "running") {
		t.Errorf("after create --wait the guest is not running:\n%s", show)
	}
	r := p.corral("guest", "create", "w-bad", "--driver", "process", "--memory", "32MiB", "--wait", "--", "/no/such/command")
	if r.code == 0 || !strings.Contains(r.stderr, "guest w-bad did not start") || !strings.Contains(r.stderr, "no/such") {
		t.Errorf("create --wait of a missing command: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
}
