package driver_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/nodeagent/driver"
	"github.com/corral-dev/corral/nodeagent/driver/drivertest"
)

// TestLXCSpareInit: once a container has started, Prepare has a spare
// init wait for the next; the next container is that process, in its own groups from
// its first instruction of the guest's, with the same setup, output and
// errors as an init started for it. A spare let go of exits.
func TestLXCSpareInit(t *testing.T) {
	rootfs := drivertest.Rootfs(t)
	cfg := drivertest.Config(t)
	d := driver.NewLXC(cfg)
	t.Cleanup(d.Unprepare)
	waitSpare := func() int {
		t.Helper()
		d.Prepare() // as the agent does after each pass
		var pid int
		waitFor(t, "a spare init", 10*time.Second, func() bool { pid = driver.SparePID(d); return pid != 0 })
		return pid
	}
	ct := func(prefix string, argv ...string) driver.Spec {
		s := spec(t, cgroupdriver.KindLXC, prefix)
		s.Rootfs, s.MemoryBytes, s.Command = rootfs, 64<<20, argv
		return s
	}
	d.Prepare()
	if pid := driver.SparePID(d); pid != 0 {
		t.Fatalf("a spare (pid %d) before any container was started", pid)
	}
	start(t, d, ct("first", "/bin/sleep", "1000"))
	if pid := driver.SparePID(d); pid != 0 {
		t.Fatalf("a spare (pid %d) before Prepare", pid)
	}

	pid := waitSpare()
	s := ct("spare", "/bin/sh", "-c", `echo "lo=$(cat /sys/class/net/lo/operstate) pid=$$ host=$(hostname) cg=$(grep memory /proc/self/cgroup)"; exec sleep 1000`)
	inst := start(t, d, s)
	if inst.PID() != pid {
		t.Errorf("the container is pid %d, want the spare's %d", inst.PID(), pid)
	}
	checkInGroups(t, inst, inst.PID())
	waitLog(t, inst, "lo=unknown pid=1 host="+s.Guest.ID+" cg=", 10*time.Second) // lo is up: "unknown", not "down"
	if log := readFile(t, inst.LogPath()); !strings.Contains(log, ":memory:/\n") {
		t.Errorf("want the container's cgroup namespace rooted at its groups:\n%s", log)
	}

	// A command that is not there is the spec's fault, as without a spare.
	waitSpare()
	_, err := d.Start(testCtx(t), ct("missing", "/no/such/command"))
	if !errors.Is(err, driver.ErrInvalidSpec) {
		t.Errorf("start of a missing command in a spare: %v, want ErrInvalidSpec", err)
	}

	pid = waitSpare()
	d.Unprepare()
	waitFor(t, "the spare let go of to exit", 10*time.Second, func() bool {
		st := procState(pid)
		return st == "" || st == "Z"
	})
}
