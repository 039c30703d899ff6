package driver_test

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/nodeagent/driver"
	"github.com/corral-dev/corral/nodeagent/driver/drivertest"
)

// TestLXCContainer starts a busybox container and checks, from inside,
// what libvirt's LXC driver would give it: PID 1, its host name, /proc,
// a /dev with only the allowed devices, only lo in its network namespace,
// none of the host's mounts, its own groups as the root of its cgroup
// namespace; and that the host's mount table is untouched.
func TestLXCContainer(t *testing.T) {
	rootfs := drivertest.Rootfs(t)
	cfg := drivertest.Config(t)
	hostMounts := readFile(t, "/proc/self/mountinfo")
	d := driver.NewLXC(cfg)
	s := spec(t, cgroupdriver.KindLXC, "ct")
	s.Rootfs = rootfs
	s.MemoryBytes = 64 << 20
	s.Command = []string{"/bin/sh", "-c", strings.Join([]string{
		`echo "pid=$$ host=$(hostname) container=$container"`,
		`echo "dev=$(ls /dev | tr '\n' ' ')"`,
		`echo "net=$(ls /sys/class/net | tr '\n' ' ') lo=$(cat /sys/class/net/lo/operstate)"`,
		`echo "procs=$(ls /proc | grep -c '^[0-9]')"`,
		`echo "mounts=$(cut -d' ' -f2 /proc/self/mounts | tr '\n' ' ')"`,
		`cat /proc/self/cgroup`,
		`echo x >/dev/null && head -c 4 /dev/urandom | wc -c`,
		`exit 5`,
	}, "; ")}
	t0 := time.Now()
	inst := start(t, d, s)
	t.Logf("started in %v", time.Since(t0))
	st := wait(t, inst)
	t.Logf("ended after %v", time.Since(t0))
	log := readFile(t, inst.LogPath())
	if st.Code != 5 {
		t.Fatalf("status %v, want code 5\n%s", st, log)
	}
	for _, want := range []string{
		"pid=1 host=" + s.Guest.ID + " container=corral",
		"dev=fd full null ptmx pts random shm stderr stdin stdout tty urandom zero ",
		"net=lo  lo=unknown",
		":memory:/\n",
		"\n4\n",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("container output lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "/corral/") {
		t.Errorf("the container sees host cgroup paths:\n%s", log)
	}
	for _, line := range strings.Split(log, "\n") {
		// The shell, its subshell, ls and grep: a host has hundreds.
		if n, ok := strings.CutPrefix(line, "procs="); ok && len(n) > 1 {
			t.Errorf("the container sees %s processes", n)
		}
		if m, ok := strings.CutPrefix(line, "mounts="); ok {
			for _, mp := range strings.Fields(m) {
				if mp != "/" && !strings.HasPrefix(mp, "/proc") && !strings.HasPrefix(mp, "/sys") && !strings.HasPrefix(mp, "/dev") {
					t.Errorf("the container sees mount point %s: %s", mp, m)
				}
			}
		}
	}
	if got := readFile(t, "/proc/self/mountinfo"); got != hostMounts {
		t.Errorf("the host's mount table changed:\nbefore:\n%s\nafter:\n%s", hostMounts, got)
	}
}

// TestLXCStop: an init that handles SIGTERM ends gracefully; one that
// does not (PID 1 ignores signals it has no handler for) is killed after
// the timeout, and every process of the container goes with it.
func TestLXCStop(t *testing.T) {
	rootfs := drivertest.Rootfs(t)
	cfg := drivertest.Config(t)
	d := driver.NewLXC(cfg)

	graceful := spec(t, cgroupdriver.KindLXC, "ct-term")
	graceful.Rootfs = rootfs
	graceful.Command = []string{"/bin/sh", "-c", `trap "exit 7" TERM; sleep 1000 & sleep 1000 & echo ready; wait`}
	g := start(t, d, graceful)

	stubborn := spec(t, cgroupdriver.KindLXC, "ct-kill")
	stubborn.Rootfs = rootfs
	stubborn.Command = []string{"/bin/sleep", "1000"}
	k := start(t, d, stubborn)

	waitLog(t, g, "ready", 10*time.Second)
	checkInGroups(t, g, g.PID())
	st, err := g.Stop(testCtx(t), 10*time.Second)
	if err != nil || st.Code != 7 {
		t.Errorf("graceful stop: %v, %v; want code 7", st, err)
	}
	// The kernel kills the rest of the pid namespace when its init ends;
	// they leave the group once it has finished them.
	waitFor(t, "the container's group to empty", 10*time.Second, func() bool {
		pids, err := cfg.Cgroups.Pids(graceful.Guest)
		return err == nil && len(pids) == 0
	})

	st, err = k.Stop(testCtx(t), 100*time.Millisecond)
	if err != nil || st.Signal != syscall.SIGKILL {
		t.Errorf("stop of an init without a SIGTERM handler: %v, %v; want SIGKILL", st, err)
	}
}

// TestLXCSuspendResume freezes and thaws a container.
func TestLXCSuspendResume(t *testing.T) {
	rootfs := drivertest.Rootfs(t)
	cfg := drivertest.Config(t)
	d := driver.NewLXC(cfg)
	s := spec(t, cgroupdriver.KindLXC, "ct-freeze")
	s.Rootfs = rootfs
	s.Command = []string{"/bin/sleep", "1000"}
	inst := start(t, d, s)
	if err := inst.Suspend(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got := freezerState(t, inst); got != "FROZEN" {
		t.Errorf("after Suspend the freezer is %s", got)
	}
	if err := inst.Resume(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got := freezerState(t, inst); got != "THAWED" {
		t.Errorf("after Resume the freezer is %s", got)
	}
	if err := inst.Kill(); err != nil {
		t.Fatal(err)
	}
	if st := wait(t, inst); st.Signal != syscall.SIGKILL {
		t.Errorf("after Kill: %v", st)
	}
	if err := inst.Destroy(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	checkGone(t, cfg, s, inst.PID())
}

// TestLXCDeviceACL: a container whose ACL allows only null and zero gets
// only those nodes, no pseudo terminals.
func TestLXCDeviceACL(t *testing.T) {
	rootfs := drivertest.Rootfs(t)
	cfg := drivertest.Config(t)
	d := driver.NewLXC(cfg)
	s := spec(t, cgroupdriver.KindLXC, "ct-acl")
	s.Rootfs = rootfs
	s.Resources.Devices = &cgroupdriver.DeviceACL{Allow: []cgroupdriver.DeviceRule{
		{Type: 'c', Major: 1, Minor: 3, Access: "rw"}, {Type: 'c', Major: 1, Minor: 5, Access: "rw"},
	}}
	s.Command = []string{"/bin/sh", "-c", `echo "dev=$(ls /dev | tr '\n' ' ')"`}
	inst := start(t, d, s)
	if st := wait(t, inst); st.Code != 0 {
		t.Fatalf("status %v\n%s", st, readFile(t, inst.LogPath()))
	}
	if log := readFile(t, inst.LogPath()); !strings.Contains(log, "dev=fd null shm stderr stdin stdout zero \n") {
		t.Errorf("container /dev: %s", log)
	}
}
