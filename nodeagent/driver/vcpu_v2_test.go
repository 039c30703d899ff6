package driver_test

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
	"github.com/corral-dev/corral/nodeagent/driver"
	"github.com/corral-dev/corral/nodeagent/driver/drivertest"
)

// TestQEMUVCPUGroupsV2 boots a 2-vCPU VM under TCG with a cgroup driver
// that sees this host's cgroup2 (/sys/fs/cgroup/unified) and, for the
// memory limit every QEMU guest gets, the v1 memory hierarchy alone: CPU
// accounting is then cgroup2's (cpu.stat is in every v2 group), and its
// vcpu0, vcpu1 and emulator groups there are threaded groups, each vCPU
// thread alone in its own, every other QEMU thread in emulator, the
// guest's group the "domain threaded" root listing QEMU's process; destroy
// removes the threaded subtree. This host's cgroup2 has no cpu controller,
// so no cpu.max is written here (TestThreadsPlanGolden in cgroupdriver
// pins it).
func TestQEMUVCPUGroupsV2(t *testing.T) {
	t.Parallel()
	a := drivertest.VM(t)
	rep := cgrouptest.RequireHost(t)
	u, ok := rep.Unified()
	mem, memOK := rep.Controller("memory")
	if !ok || !memOK || mem.Version != 1 {
		t.Skip("skipping: this test wants a cgroup2 hierarchy and the memory controller on cgroup v1, as this project's host has them")
	}
	v2 := cgroupdriver.Report{Mode: cgroupdriver.ModeHybrid, Hierarchies: []cgroupdriver.Hierarchy{mem, u}}
	ccfg := cgroupdriver.DefaultConfig()
	ccfg.Report, ccfg.Partition = &v2, cgrouptest.NewPartition(t, v2)
	cg, err := cgroupdriver.New(ccfg)
	if err != nil {
		t.Fatalf("a driver on the unified hierarchy alone: %v", err)
	}
	cfg := driver.DefaultConfig()
	cfg.Cgroups, cfg.LogCheckInterval, cfg.QEMU.Accel = cg, 50*time.Millisecond, driver.AccelTCG
	d := newQEMU(t, cfg)
	s := vmSpec(t, a, "vcpu2")
	s.VCPUs = 2
	inst := start(t, d, s)
	ctx := testCtx(t)

	vcpus, err := inst.QMP().VCPUThreads(ctx)
	if err != nil || len(vcpus) != 2 || vcpus[0] == vcpus[1] {
		t.Fatalf("vCPU threads %v, %v; want two distinct threads (MTTCG)", vcpus, err)
	}
	dir := ""
	for _, d := range inst.Cgroups() {
		if strings.HasPrefix(d, u.MountPoint+"/") {
			dir = d
		}
	}
	if dir == "" {
		t.Fatalf("groups %v, want one in the unified hierarchy %s", inst.Cgroups(), u.MountPoint)
	}
	for n, tid := range vcpus {
		sub := filepath.Join(dir, cgroupdriver.VCPUGroup(n))
		if got := fields(t, filepath.Join(sub, "cgroup.threads")); !slices.Equal(got, []string{strconv.Itoa(tid)}) {
			t.Errorf("%s/cgroup.threads = %v, want exactly thread %d", sub, got, tid)
		}
	}
	for _, sub := range []string{"vcpu0", "vcpu1", cgroupdriver.EmulatorGroup} {
		if got := readFile(t, filepath.Join(dir, sub, "cgroup.type")); got != "threaded\n" {
			t.Errorf("%s/cgroup.type = %q, want threaded", sub, got)
		}
	}
	if got := readFile(t, filepath.Join(dir, "cgroup.type")); got != "domain threaded\n" {
		t.Errorf("guest's cgroup.type = %q, want domain threaded", got)
	}
	if got := fields(t, filepath.Join(dir, "cgroup.threads")); len(got) != 0 {
		t.Errorf("guest's cgroup.threads = %v, want no thread left in the guest's own group", got)
	}
	if got := fields(t, filepath.Join(dir, "cgroup.procs")); !slices.Equal(got, []string{strconv.Itoa(inst.PID())}) {
		t.Errorf("guest's cgroup.procs = %v, want QEMU %d", got, inst.PID())
	}
	emu := fields(t, filepath.Join(dir, cgroupdriver.EmulatorGroup, "cgroup.threads"))
	if !slices.Contains(emu, strconv.Itoa(inst.PID())) {
		t.Errorf("emulator/cgroup.threads = %v, lacks QEMU's main thread %d", emu, inst.PID())
	}
	tasks, err := os.ReadDir("/proc/" + strconv.Itoa(inst.PID()) + "/task")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("QEMU %d: %d threads, vCPUs %v, emulator %v", inst.PID(), len(tasks), vcpus, emu)
	if pids, err := cg.Pids(s.Guest); err != nil || !slices.Equal(pids, []int{inst.PID()}) {
		t.Errorf("Pids = %v, %v; want [%d]", pids, err, inst.PID())
	}

	if err := inst.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	checkGone(t, cfg, s, inst.PID())
}
