package driver_test

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/nodeagent/driver"
	"github.com/corral-dev/corral/nodeagent/driver/drivertest"
)

// TestProcessRunsInItsGroups: the command's first action, reading
// /proc/self/cgroup, already sees the guest's group in every hierarchy;
// its output lands in the log; its environment is its own; its exit code
// comes back.
func TestProcessRunsInItsGroups(t *testing.T) {
	cfg := drivertest.Config(t)
	d := driver.NewProcess(cfg)
	s := spec(t, cgroupdriver.KindProcess, "proc")
	s.Command = []string{"sh", "-c", `cat /proc/self/cgroup; echo "guest=$CORRAL_GUEST home=$HOME agent=[$` + helperEnv + `]"; echo to-stderr >&2; exit 3`}
	s.Env = []string{"EXTRA=1"}
	s.MemoryBytes = 64 << 20
	s.Resources.CPUShares = new(uint64(300))
	inst := start(t, d, s)
	st := wait(t, inst)
	if st.Code != 3 || st.Signal != 0 || st.OOMKilled || st.Err != nil {
		t.Errorf("status = %+v, want code 3", st)
	}
	log := readFile(t, inst.LogPath())
	for _, dir := range inst.Cgroups() {
		// <mount><partition>/corral/process/<id>: the path after the
		// mount point is what /proc/self/cgroup lists.
		if i := strings.Index(dir, "/corral/process/"); i < 0 || !strings.Contains(log, dir[strings.LastIndex(dir[:i], "/"):]) {
			t.Errorf("the guest did not start in %s:\n%s", dir, log)
		}
	}
	for _, want := range []string{"guest=" + s.Guest.ID + " home=/ agent=[]", "to-stderr"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if got := groupFile(t, inst, "memory.limit_in_bytes"); got != strconv.Itoa(64<<20) && groupFile(t, inst, "memory.max") != strconv.Itoa(64<<20) {
		t.Errorf("memory limit = %s, want %d", got, 64<<20)
	}
	if err := inst.Destroy(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	checkGone(t, cfg, s, inst.PID())
	if _, err := os.Stat(inst.LogPath()); err != nil {
		t.Errorf("Destroy removed the log: %v", err)
	}
}

// TestProcessStopKillsTheTree: a graceful stop sends SIGTERM to the whole
// process group; a child that escaped into its own session is killed when
// the main process ends; nothing is left in the groups.
func TestProcessStopKillsTheTree(t *testing.T) {
	cfg := drivertest.Config(t)
	d := driver.NewProcess(cfg)
	s := spec(t, cgroupdriver.KindProcess, "tree")
	s.Command = []string{"sh", "-c", "sleep 1000 & setsid sleep 1000 & echo started; wait"}
	inst := start(t, d, s)
	waitLog(t, inst, "started", 10*time.Second)
	waitFor(t, "three processes in the group", 10*time.Second, func() bool {
		pids, _ := cfg.Cgroups.Pids(s.Guest)
		return len(pids) == 3
	})
	checkInGroups(t, inst, inst.PID())
	st, err := inst.Stop(testCtx(t), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if st.Signal != syscall.SIGTERM {
		t.Errorf("status = %v, want killed by SIGTERM", st)
	}
	// The escaped child was sent SIGKILL when the main process ended; it
	// leaves the group once the kernel has finished it.
	waitFor(t, "the group to empty after the guest ended", 10*time.Second, func() bool {
		pids, err := cfg.Cgroups.Pids(s.Guest)
		return err == nil && len(pids) == 0
	})
}

// TestProcessStopTimeout: a command that ignores SIGTERM is killed after
// the timeout.
func TestProcessStopTimeout(t *testing.T) {
	cfg := drivertest.Config(t)
	d := driver.NewProcess(cfg)
	s := spec(t, cgroupdriver.KindProcess, "stubborn")
	s.Command = []string{self(t)}
	s.Env = []string{helperEnv + "=ignore-term"}
	inst := start(t, d, s)
	waitLog(t, inst, "ready", 10*time.Second)
	t0 := time.Now()
	st, err := inst.Stop(testCtx(t), 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if st.Signal != syscall.SIGKILL || time.Since(t0) < 200*time.Millisecond {
		t.Errorf("status = %v after %v, want SIGKILL after the 200ms timeout", st, time.Since(t0))
	}
	// Operations on an ended guest say so.
	if err := inst.Kill(); !errors.Is(err, driver.ErrExited) {
		t.Errorf("Kill after exit: %v", err)
	}
}

// TestProcessSuspendResume freezes and thaws the guest's groups.
func TestProcessSuspendResume(t *testing.T) {
	cfg := drivertest.Config(t)
	d := driver.NewProcess(cfg)
	s := spec(t, cgroupdriver.KindProcess, "freeze")
	s.Command = []string{"sleep", "1000"}
	inst := start(t, d, s)
	if err := inst.Suspend(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got := freezerState(t, inst); got != "FROZEN" {
		t.Errorf("after Suspend the freezer is %s", got)
	}
	if got := procState(inst.PID()); got != "D" && got != "S" && got != "T" {
		t.Logf("frozen guest in state %s", got)
	}
	if err := inst.Resume(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got := freezerState(t, inst); got != "THAWED" {
		t.Errorf("after Resume the freezer is %s", got)
	}
	// Stopping a suspended guest works: it is thawed first.
	if err := inst.Suspend(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	st, err := inst.Stop(testCtx(t), 5*time.Second)
	if err != nil || st.Signal != syscall.SIGTERM {
		t.Errorf("Stop of a suspended guest: %v, %v", st, err)
	}
}

// TestProcessOOMKilled: a guest that allocates past its memory limit is
// killed by the kernel, and the status says so.
func TestProcessOOMKilled(t *testing.T) {
	cfg := drivertest.Config(t)
	d := driver.NewProcess(cfg)
	s := spec(t, cgroupdriver.KindProcess, "oom")
	s.Command = []string{self(t)}
	s.Env = []string{helperEnv + "=alloc"}
	s.MemoryBytes = 96 << 20
	inst := start(t, d, s)
	st := wait(t, inst)
	if !st.OOMKilled || st.Signal != syscall.SIGKILL {
		t.Errorf("status = %v, want OOM-killed by SIGKILL\n%s", st, readFile(t, inst.LogPath()))
	}
	stats, err := cfg.Cgroups.Stats(s.Guest)
	if err != nil || stats.Memory.Events.OOMKill == 0 {
		t.Errorf("oom_kill counter: %+v, %v", stats.Memory.Events, err)
	}
}

// TestProcessLogCap: a guest that writes far more than its cap leaves a log
// under the cap that ends with its last output.
func TestProcessLogCap(t *testing.T) {
	cfg := drivertest.Config(t)
	d := driver.NewProcess(cfg)
	s := spec(t, cgroupdriver.KindProcess, "chatty")
	s.LogMaxBytes = 64 << 10
	s.Command = []string{"sh", "-c", `i=0; while [ $i -lt 20000 ]; do echo "line $i of output that goes on for a while"; i=$((i+1)); done; echo LAST`}
	inst := start(t, d, s)
	if st := wait(t, inst); st.Code != 0 {
		t.Fatalf("status %v", st)
	}
	waitFor(t, "the log under its cap", 5*time.Second, func() bool {
		fi, err := os.Stat(inst.LogPath())
		return err == nil && fi.Size() <= s.LogMaxBytes
	})
	l := lines(t, inst)
	if len(l) == 0 || l[len(l)-1] != "LAST" {
		t.Errorf("the log does not end with the last output: %d lines, last %q", len(l), l[len(l)-1:])
	}
}
