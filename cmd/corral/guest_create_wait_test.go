package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
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

// TestDevStopEndsSpareInit: the lxc driver keeps a spare container init
// once a container has started; when corral dev stops, its agent ends the
// spare, reaps it and removes its groups, so none outlives it as an orphan
// (a zombie the host's init is slow to reap holds its groups busy).
func TestDevStopEndsSpareInit(t *testing.T) {
	rootfs := drivertest.Rootfs(t)
	rep := cgrouptest.RequireHost(t)
	part := cgrouptest.NewPartition(t, rep)
	p := startDevWith(t, t.TempDir(), "--cgroup-partition", part)
	p.ok("guest", "create", "sp-ct", "--driver", "lxc", "--memory", "32MiB", "--rootfs", rootfs, "--wait", "--", "/bin/sleep", "1000")
	spares := func() (dirs []string, pids []int) {
		for _, h := range rep.Hierarchies {
			dir, err := h.Dir(part)
			if err != nil {
				continue
			}
			found, _ := filepath.Glob(filepath.Join(dir, "corral", "lxc", "_spare-*"))
			for _, d := range found {
				dirs = append(dirs, d)
				b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
				for _, f := range strings.Fields(string(b)) {
					if pid, err := strconv.Atoi(f); err == nil && !slices.Contains(pids, pid) {
						pids = append(pids, pid)
					}
				}
			}
		}
		return dirs, pids
	}
	var pids []int
	waitFor(t, "a spare init in its groups", func() bool {
		_, pids = spares()
		return len(pids) > 0
	}, func() string { d, _ := spares(); return fmt.Sprintf("spare groups %v", d) })
	p.ok("guest", "destroy", "sp-ct")
	if err := p.stop(syscall.SIGTERM, waitTimeout); err != nil {
		t.Fatalf("corral dev exited with %v after SIGTERM", err)
	}
	if dirs, _ := spares(); len(dirs) > 0 {
		t.Errorf("after corral dev stopped, the spare's groups are still there: %v", dirs)
	}
	for _, pid := range pids {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			t.Errorf("after corral dev stopped, the spare (pid %d) is still there: %s", pid, b)
		}
	}
}
