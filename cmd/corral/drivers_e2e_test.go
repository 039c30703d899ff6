package main

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/api"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
	"github.com/corral-dev/corral/nodeagent/driver/drivertest"
)

// TestDevAgentRunsContainersAndVMs drives corral dev with its node agent
// on this host's real cgroups through the lxc and qemu drivers: a busybox
// container runs as its own host name inside its groups, a kernel boots
// under TCG to its marker on the serial console, and destroy leaves no
// process and no group of either. The two guests run side by side so the
// VM's boot overlaps the container's checks.
func TestDevAgentRunsContainersAndVMs(t *testing.T) {
	rep := cgrouptest.RequireHost(t)
	part := cgrouptest.NewPartition(t, rep)
	ccfg := cgroupdriver.DefaultConfig()
	ccfg.Partition, ccfg.Report = part, &rep
	cg, err := cgroupdriver.New(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := startDevWith(t, dir, "--cgroup-partition", part, "--qemu-accel", "tcg")
	t.Cleanup(func() { p.stop(syscall.SIGTERM, waitTimeout) })
	// Overcommit so that both guests fit whatever the host's CPU count.
	p.ok("operator", "scheduler", "set-config", "--cpu-overcommit", "8")
	guestLog := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(dir, "agent", "guests", name, "guest.log"))
		return string(b)
	}

	t.Run("lxc", func(t *testing.T) {
		t.Parallel()
		rootfs := drivertest.Rootfs(t)
		g := cgroupdriver.Guest{Kind: cgroupdriver.KindLXC, ID: "ct"}
		destroyOnCleanup(t, p, cg, g)
		p.ok("guest", "create", "ct", "--driver", "lxc", "--memory", "64MiB", "--rootfs", rootfs,
			"--", "/bin/sh", "-c", "hostname; sleep 1000")
		v := waitGuest(t, p, "ct", "ran", func(g *api.GuestView) bool { return g.Status == api.StatusRunning && g.PID > 0 })
		dirs := requireInGroups(t, cg, g, v.PID)
		if got := groupFile(t, dirs, "memory.limit_in_bytes"); got != strconv.Itoa(64<<20) {
			t.Errorf("memory.limit_in_bytes = %s, want %d", got, 64<<20)
		}
		// The container has its own UTS namespace and its name as host name.
		if ours, theirs := nsLink(t, os.Getpid(), "uts"), nsLink(t, v.PID, "uts"); ours == theirs {
			t.Errorf("container shares the host's uts namespace %s", ours)
		}
		waitFor(t, "the container to print its host name", func() bool {
			return slices.Contains(strings.Fields(guestLog("ct")), "ct")
		}, func() string { return "guest.log: " + strconv.Quote(guestLog("ct")) })

		p.ok("guest", "destroy", "ct")
		requireGone(t, dirs, v.PID)
	})

	t.Run("qemu", func(t *testing.T) {
		t.Parallel()
		a := drivertest.VM(t)
		g := cgroupdriver.Guest{Kind: cgroupdriver.KindQEMU, ID: "vm"}
		destroyOnCleanup(t, p, cg, g)
		p.ok("guest", "create", "vm", "--driver", "qemu", "--memory", "128MiB", "--kernel", a.Kernel, "--initrd", a.Initramfs)
		v := waitGuest(t, p, "vm", "ran", func(g *api.GuestView) bool { return g.Status == api.StatusRunning && g.PID > 0 })
		dirs := requireInGroups(t, cg, g, v.PID)
		if comm, _ := os.ReadFile("/proc/" + strconv.Itoa(v.PID) + "/comm"); !strings.HasPrefix(string(comm), "qemu") {
			t.Errorf("guest pid %d is %q, not QEMU", v.PID, comm)
		}
		waitFor(t, "the VM's marker on its serial console", func() bool {
			return strings.Contains(guestLog("vm"), drivertest.Marker)
		}, func() string { return "serial log tail: " + tail(guestLog("vm"), 2000) })

		p.ok("guest", "destroy", "vm")
		requireGone(t, dirs, v.PID)
	})
}

// destroyOnCleanup destroys g whatever happens and waits for its groups to
// go, so the partition is empty before it is checked and corral dev stops.
func destroyOnCleanup(t *testing.T, p *devProcess, cg *cgroupdriver.Driver, g cgroupdriver.Guest) {
	t.Helper()
	t.Cleanup(func() {
		p.corral("guest", "destroy", g.ID)
		dirs, _ := cg.Paths(g)
		deadline := time.Now().Add(waitTimeout)
		for len(dirs) > 0 && time.Now().Before(deadline) {
			if _, err := os.Stat(dirs[0]); errors.Is(err, os.ErrNotExist) {
				return
			}
			time.Sleep(20 * time.Millisecond) // poll interval
		}
	})
}

// requireInGroups checks that pid is in every group of g and returns the
// group directories.
func requireInGroups(t *testing.T, cg *cgroupdriver.Driver, g cgroupdriver.Guest, pid int) []string {
	t.Helper()
	dirs, err := cg.Paths(g)
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) == 0 {
		t.Fatalf("%s has no groups", g)
	}
	for _, d := range dirs {
		procs := strings.Fields(groupFile(t, []string{d}, "cgroup.procs"))
		if g.Kind == cgroupdriver.KindQEMU {
			// A VM's threads are in its vcpuN and emulator groups, as
			// libvirt puts them, where the cpu controllers are.
			if b, err := os.ReadFile(d + "/emulator/cgroup.procs"); err == nil {
				procs = append(procs, strings.Fields(string(b))...)
				if v, err := os.ReadFile(d + "/vcpu0/tasks"); err != nil || len(strings.Fields(string(v))) != 1 {
					t.Errorf("%s/vcpu0/tasks = %q (%v), want the one thread of vCPU 0", d, v, err)
				}
			}
		}
		if !slices.Contains(procs, strconv.Itoa(pid)) {
			t.Errorf("pid %d is not in %s/cgroup.procs %v", pid, d, procs)
		}
	}
	return dirs
}

// requireGone waits until no group of dirs exists and pid has been reaped.
func requireGone(t *testing.T, dirs []string, pid int) {
	t.Helper()
	waitFor(t, "the guest's groups and process to go", func() bool {
		for _, d := range dirs {
			if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
				return false
			}
		}
		_, err := os.Stat("/proc/" + strconv.Itoa(pid))
		return errors.Is(err, os.ErrNotExist)
	}, func() string {
		var left []string
		for _, d := range dirs {
			if _, err := os.Stat(d); err == nil {
				left = append(left, d)
			}
		}
		comm, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		return "groups left: " + strings.Join(left, " ") + "; pid " + strconv.Itoa(pid) + " comm " + strconv.Quote(string(comm))
	})
}

// waitFor polls cond until it holds, failing with what describe says when
// waitTimeout passes first.
func waitFor(t *testing.T, what string, cond func() bool, describe func() string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; %s", what, describe())
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
}

func nsLink(t *testing.T, pid int, ns string) string {
	t.Helper()
	l, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
