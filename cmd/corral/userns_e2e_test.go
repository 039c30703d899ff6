package main

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/nodeagent/driver/drivertest"
)

// TestGuestCreateUserNS: `guest create --userns` reaches the container
// through the log (its PID 1 is host uid 100000, its writes in its layer
// belong to 100000), guest show prints the map, a map giving the host's
// root or one for a process guest is refused before any event, and
// destroy removes the layer the container's root owned.
func TestGuestCreateUserNS(t *testing.T) {
	rootfs := drivertest.Rootfs(t)
	p, cg := startAgentDev(t, []string{"ctu"})
	dir := p.dataDir

	for _, args := range [][]string{
		{"guest", "create", "bad", "--driver", "lxc", "--memory", "64MiB", "--rootfs", rootfs, "--idmap", "0:0:65536"},
		{"guest", "create", "bad", "--driver", "lxc", "--memory", "64MiB", "--rootfs", rootfs, "--idmap", "0:100000"},
		{"guest", "create", "bad", "--driver", "lxc", "--memory", "64MiB", "--rootfs", rootfs, "--idmap", "1:100000:10"},
		{"guest", "create", "bad", "--driver", "process", "--memory", "64MiB", "--userns", "--", "sleep", "1"},
	} {
		r := p.corral(args...)
		if r.code == 0 || !strings.Contains(r.stderr, "idmap") {
			t.Errorf("corral %s: exit %d, stderr %q; want a refusal naming the idmap field", strings.Join(args, " "), r.code, r.stderr)
		}
	}
	if out := p.ok("guest", "list"); strings.Contains(out, "bad") {
		t.Errorf("a refused guest was defined:\n%s", out)
	}

	g := cgroupdriver.Guest{Kind: cgroupdriver.KindLXC, ID: "ctu"}
	destroyOnCleanup(t, p, cg, g)
	p.ok("guest", "create", "ctu", "--driver", "lxc", "--memory", "64MiB", "--rootfs", rootfs, "--userns",
		"--", "/bin/sh", "-c", "echo x >/layer-probe; echo id=$(id -u); sleep 1000")
	v := waitGuest(t, p, "ctu", "ran", func(g *api.GuestView) bool { return g.Status == api.StatusRunning && g.PID > 0 })
	guestDir := filepath.Join(dir, "agent", "guests", "ctu")
	probe := filepath.Join(guestDir, "rootfs-upper", "layer-probe")
	waitFor(t, "the container to write its probe", func() bool {
		b, _ := os.ReadFile(filepath.Join(guestDir, "guest.log"))
		return strings.Contains(string(b), "id=0\n")
	}, func() string {
		b, _ := os.ReadFile(filepath.Join(guestDir, "guest.log"))
		return "guest.log: " + string(b)
	})
	b, err := os.ReadFile("/proc/" + strconv.Itoa(v.PID) + "/status")
	if err != nil || !strings.Contains(string(b), "Uid:\t100000\t100000\t100000\t100000\n") {
		t.Errorf("the container's PID 1 on the host is not uid 100000 (%v):\n%s", err, b)
	}
	if st, err := os.Stat(probe); err != nil {
		t.Errorf("the container's write is not in its layer: %v", err)
	} else if s := st.Sys().(*syscall.Stat_t); s.Uid != 100000 || s.Gid != 100000 {
		t.Errorf("the container's file belongs to %d:%d on the host, want 100000:100000", s.Uid, s.Gid)
	}
	if ours, theirs := nsLink(t, os.Getpid(), "user"), nsLink(t, v.PID, "user"); ours == theirs {
		t.Errorf("the container shares the host's user namespace %s", ours)
	}
	show := p.ok("guest", "show", "ctu")
	t.Log(show)
	if !strings.Contains(show, "idmap 0:100000:65536") || !strings.Contains(show, "host 100000:100000") {
		t.Errorf("guest show lacks the id map:\n%s", show)
	}
	p.ok("guest", "destroy", "ctu")
	waitFor(t, "the guest's state directory and layer to go", func() bool {
		_, err := os.Stat(guestDir)
		return errors.Is(err, os.ErrNotExist)
	}, func() string { return guestDir + " is still there" })
}
