package driver_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
	"github.com/corral-dev/corral/nodeagent/driver"
	"github.com/corral-dev/corral/nodeagent/driver/drivertest"
)

// TestAdoptAfterAgentKilled: an agent process starts a guest and is killed
// with SIGKILL; a new driver adopts the same, still running guest from the
// state record, refuses to start a second copy, stops it, and says that
// the exit status of a process it did not start is unknown.
func TestAdoptAfterAgentKilled(t *testing.T) {
	rep := cgrouptest.RequireHost(t)
	part := cgrouptest.NewPartition(t, rep)
	cfg := drivertest.ConfigOn(t, part)
	s := spec(t, cgroupdriver.KindProcess, "orphan")
	s.Command = []string{"sleep", "1000"}

	agent := exec.Command(self(t))
	agent.Env = append(os.Environ(), helperEnv+"=agent", "AGENT_PARTITION="+part, "AGENT_GUEST="+s.Guest.ID, "AGENT_STATE="+s.StateDir)
	out, err := agent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = agent.Process.Kill(); _ = agent.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	pid, perr := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "pid ")))
	if err != nil || perr != nil {
		t.Fatalf("agent said %q (%v)", line, err)
	}
	if err := agent.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = agent.Wait()
	// The guest, orphaned, is reparented: its parent is no longer the
	// agent.
	waitFor(t, "the guest to be reparented", 5*time.Second, func() bool { return ppid(pid) != agent.Process.Pid })

	d := driver.NewProcess(cfg)
	if _, err := d.Start(testCtx(t), s); !errors.Is(err, driver.ErrAlreadyRunning) {
		t.Errorf("Start of a guest that runs: %v, want ErrAlreadyRunning", err)
	}
	inst, err := d.Adopt(testCtx(t), s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { destroy(t, inst) })
	if inst.PID() != pid {
		t.Errorf("adopted pid %d, the agent started %d", inst.PID(), pid)
	}
	if pids, _ := cfg.Cgroups.Pids(s.Guest); len(pids) != 1 || pids[0] != pid {
		t.Errorf("the group holds %v, want only %d", pids, pid)
	}
	st, err := inst.Stop(testCtx(t), 5*time.Second)
	if err != nil || !errors.Is(st.Err, driver.ErrExitUnknown) || st.Code != -1 {
		t.Errorf("Stop of the adopted guest: %v, %v; want an unknown status", st, err)
	}
	if err := inst.Destroy(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	checkGone(t, cfg, s, pid)
}

func ppid(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return -1
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	n, _ := strconv.Atoi(f[1])
	return n
}

// TestAdoptContainer drops the driver's in-memory state of a running
// container (Release) and adopts it with a new driver.
func TestAdoptContainer(t *testing.T) {
	rootfs := drivertest.Rootfs(t)
	cfg := drivertest.Config(t)
	s := spec(t, cgroupdriver.KindLXC, "ct-adopt")
	s.Rootfs = rootfs
	s.Command = []string{"/bin/sh", "-c", `trap "exit 9" TERM; echo ready; sleep 1000 & wait`}
	first := start(t, driver.NewLXC(cfg), s)
	waitLog(t, first, "ready", 10*time.Second)
	first.Release()
	if err := first.Kill(); !errors.Is(err, driver.ErrReleased) {
		t.Errorf("Kill after Release: %v", err)
	}
	if err := syscall.Kill(first.PID(), 0); err != nil {
		t.Fatalf("Release stopped the guest: %v", err)
	}
	inst, err := driver.NewLXC(cfg).Adopt(testCtx(t), s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { destroy(t, inst) })
	if inst.PID() != first.PID() {
		t.Errorf("adopted pid %d, want %d", inst.PID(), first.PID())
	}
	// This test process is still the container's parent, so the status
	// is known.
	st, err := inst.Stop(testCtx(t), 10*time.Second)
	if err != nil || st.Code != 9 {
		t.Errorf("Stop: %v, %v; want code 9", st, err)
	}
}

// TestAdoptEnded: a guest that ended while no driver watched is adopted as
// ended; a record whose pid now names another process (start time
// differs) is never taken for the guest.
func TestAdoptEnded(t *testing.T) {
	cfg := drivertest.Config(t)
	d := driver.NewProcess(cfg)

	s := spec(t, cgroupdriver.KindProcess, "gone")
	s.Command = []string{"sleep", "1000"}
	first := start(t, d, s)
	first.Release()
	if err := syscall.Kill(first.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	inst, err := d.Adopt(testCtx(t), s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { destroy(t, inst) })
	if st := wait(t, inst); st.Signal != syscall.SIGKILL {
		t.Errorf("status of a guest killed while released: %v", st)
	}
	// The status is in the record now: a later adoption reads it back.
	again, err := d.Adopt(testCtx(t), s)
	if err != nil {
		t.Fatal(err)
	}
	if st, ok := again.Status(); !ok || st.Signal != syscall.SIGKILL {
		t.Errorf("status from the record: %v, %v", st, ok)
	}

	s2 := spec(t, cgroupdriver.KindProcess, "reused")
	s2.Command = []string{"sleep", "1000"}
	live := start(t, d, s2)
	live.Release()
	rec := filepath.Join(s2.StateDir, driver.RecordFile)
	var m map[string]any
	if err := json.Unmarshal([]byte(readFile(t, rec)), &m); err != nil {
		t.Fatal(err)
	}
	m["start_time"] = m["start_time"].(float64) + 1
	b, _ := json.Marshal(m)
	if err := os.WriteFile(rec, b, 0o600); err != nil {
		t.Fatal(err)
	}
	other, err := d.Adopt(testCtx(t), s2)
	if err != nil {
		t.Fatal(err)
	}
	if st, ok := other.Status(); !ok || !errors.Is(st.Err, driver.ErrExitUnknown) {
		t.Errorf("adopting a reused pid: %v ended=%v, want an ended guest of unknown status", st, ok)
	}
	if err := syscall.Kill(live.PID(), 0); err != nil {
		t.Errorf("the process behind the reused pid was touched: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Kill(live.PID(), syscall.SIGKILL); destroy(t, other) })

	if _, err := d.Adopt(testCtx(t), spec(t, cgroupdriver.KindProcess, "never")); !errors.Is(err, driver.ErrNoRecord) {
		t.Errorf("Adopt without a record: %v", err)
	}
}
