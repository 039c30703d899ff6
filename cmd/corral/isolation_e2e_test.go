package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/nodeagent/driver/drivertest"
)

// TestGuestCreateCapabilities: `guest create --cap-add --cap-drop` reach
// the container through the log (its CapEff is the default set changed
// so), guest show prints the container's isolation, an unknown
// capability or capabilities for a process guest are refused before any
// event, and destroy removes the container's private layer with the
// guest.
func TestGuestCreateCapabilities(t *testing.T) {
	rootfs := drivertest.Rootfs(t)
	p, cg := startAgentDev(t, []string{"ct"})
	dir := p.dataDir

	for _, tc := range []struct{ args []string }{
		{[]string{"guest", "create", "bad", "--driver", "lxc", "--memory", "64MiB", "--rootfs", rootfs, "--cap-add", "CAP_FLY"}},
		{[]string{"guest", "create", "bad", "--driver", "process", "--memory", "64MiB", "--cap-drop", "chown", "--", "sleep", "1"}},
	} {
		r := p.corral(tc.args...)
		if r.code == 0 || !strings.Contains(r.stderr, "cap_") {
			t.Errorf("corral %s: exit %d, stderr %q; want a refusal naming the capability field", strings.Join(tc.args, " "), r.code, r.stderr)
		}
	}
	if out := p.ok("guest", "list"); strings.Contains(out, "bad") {
		t.Errorf("a refused guest was defined:\n%s", out)
	}

	g := cgroupdriver.Guest{Kind: cgroupdriver.KindLXC, ID: "ct"}
	destroyOnCleanup(t, p, cg, g)
	p.ok("guest", "create", "ct", "--driver", "lxc", "--memory", "64MiB", "--rootfs", rootfs,
		"--cap-add", "net_admin", "--cap-drop", "CAP_CHOWN", "--cap-drop", "kill",
		"--", "/bin/sh", "-c", "grep CapEff /proc/self/status; echo x >/layer-probe; sleep 1000")
	v := waitGuest(t, p, "ct", "ran", func(g *api.GuestView) bool { return g.Status == api.StatusRunning && g.PID > 0 })
	var mask uint64
	for _, c := range events.ContainerCapabilities([]string{"CAP_NET_ADMIN"}, []string{"CAP_CHOWN", "CAP_KILL"}) {
		mask |= 1 << c
	}
	want := fmt.Sprintf("CapEff:\t%016x", mask)
	guestDir := filepath.Join(dir, "agent", "guests", "ct")
	waitFor(t, "the container to print its capabilities", func() bool {
		b, _ := os.ReadFile(filepath.Join(guestDir, "guest.log"))
		return strings.Contains(string(b), want)
	}, func() string {
		b, _ := os.ReadFile(filepath.Join(guestDir, "guest.log"))
		return "want " + want + ", guest.log: " + string(b)
	})
	if ours, theirs := nsLink(t, os.Getpid(), "cgroup"), nsLink(t, v.PID, "cgroup"); ours == theirs {
		t.Errorf("the container shares the host's cgroup namespace %s", ours)
	}
	show := p.ok("guest", "show", "ct")
	t.Log(show)
	for _, s := range []string{"Capabilities:", "default +CAP_NET_ADMIN -CAP_CHOWN -CAP_KILL", "cap_net_admin", "User namespace:", "seccomp"} {
		if !strings.Contains(show, s) {
			t.Errorf("guest show lacks %q:\n%s", s, show)
		}
	}
	if _, err := os.Stat(filepath.Join(guestDir, "rootfs-upper", "layer-probe")); err != nil {
		t.Errorf("the container's write is not in its own layer: %v", err)
	}
	if _, err := os.Stat(filepath.Join(rootfs, "layer-probe")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the container wrote to the shared rootfs: %v", err)
	}
	p.ok("guest", "destroy", "ct")
	waitFor(t, "the guest's state directory and layer to go", func() bool {
		_, err := os.Stat(guestDir)
		return errors.Is(err, os.ErrNotExist)
	}, func() string { return guestDir + " is still there" })
}
