package driver_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/nodeagent/driver/drivertest"
)

// TestQEMUVCPUGroups boots a 2-vCPU VM under TCG: each vCPU thread is
// alone in its vcpuN group in every hierarchy with cpu, cpuacct or
// cpuset, every other QEMU thread is in emulator, the guest's own group
// holds no thread there, vcpu_*/emulator_*/global_* land where virsh puts
// them, live tuning reaches every vCPU group, and destroy removes it all.
func TestQEMUVCPUGroups(t *testing.T) {
	t.Parallel()
	a := drivertest.VM(t)
	cfg := drivertest.Config(t)
	d := newQEMU(t, cfg)
	s := vmSpec(t, a, "vcpu")
	s.VCPUs = 2
	s.Resources.CPUPeriodUs, s.Resources.CPUQuotaUs = new(uint64(100000)), new(int64(50000))
	s.Resources.EmulatorPeriodUs, s.Resources.EmulatorQuotaUs = new(uint64(50000)), new(int64(20000))
	s.Resources.GlobalPeriodUs, s.Resources.GlobalQuotaUs = new(uint64(100000)), new(int64(150000))
	inst := start(t, d, s)
	ctx := testCtx(t)

	vcpus, err := inst.QMP().VCPUThreads(ctx)
	if err != nil || len(vcpus) != 2 || vcpus[0] == vcpus[1] {
		t.Fatalf("vCPU threads %v, %v; want two distinct threads (MTTCG)", vcpus, err)
	}
	tasks, err := os.ReadDir("/proc/" + strconv.Itoa(inst.PID()) + "/task")
	if err != nil {
		t.Fatal(err)
	}
	var others []string
	for _, e := range tasks {
		if tid, _ := strconv.Atoi(e.Name()); tid != vcpus[0] && tid != vcpus[1] {
			others = append(others, e.Name())
		}
	}
	threadDirs := 0
	for _, dir := range inst.Cgroups() {
		if _, err := os.Stat(filepath.Join(dir, "vcpu0")); err != nil {
			for _, sub := range []string{"vcpu0", "vcpu1", "emulator"} {
				if _, err := os.Stat(filepath.Join(dir, sub)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s/%s exists without vcpu0 (%v)", dir, sub, err)
				}
			}
			continue
		}
		threadDirs++
		for n, tid := range vcpus {
			if got := fields(t, filepath.Join(dir, cgroupdriver.VCPUGroup(n), "tasks")); !slices.Equal(got, []string{strconv.Itoa(tid)}) {
				t.Errorf("%s/vcpu%d/tasks = %v, want exactly thread %d", dir, n, got, tid)
			}
		}
		// QEMU may start and end worker threads meanwhile: every thread
		// that was there both times is in emulator.
		emu := fields(t, filepath.Join(dir, cgroupdriver.EmulatorGroup, "tasks"))
		if len(emu) == 0 {
			t.Errorf("%s/emulator holds no thread", dir)
		}
		for _, tid := range others {
			if _, err := os.Stat("/proc/" + strconv.Itoa(inst.PID()) + "/task/" + tid); err == nil && !slices.Contains(emu, tid) {
				t.Errorf("%s/emulator/tasks = %v, lacks QEMU thread %s", dir, emu, tid)
			}
		}
		if got := fields(t, filepath.Join(dir, "tasks")); len(got) != 0 {
			t.Errorf("%s/tasks = %v, want no thread left in the guest's own group", dir, got)
		}
		if _, err := os.Stat(filepath.Join(dir, "cpuset.cpus")); err == nil {
			want := readFile(t, filepath.Join(dir, "cpuset.cpus"))
			if got := readFile(t, filepath.Join(dir, "vcpu1", "cpuset.cpus")); got != want || strings.TrimSpace(got) == "" {
				t.Errorf("vcpu1 cpuset.cpus %q, want the guest's %q", got, want)
			}
		}
	}
	if threadDirs < 2 {
		t.Fatalf("per-vCPU groups in %d hierarchies of %v; want cpu, cpuacct and cpuset", threadDirs, inst.Cgroups())
	}
	cpuDir := ""
	for _, dir := range inst.Cgroups() {
		if _, err := os.Stat(filepath.Join(dir, "cpu.cfs_quota_us")); err == nil {
			cpuDir = dir
		}
	}
	if cpuDir == "" {
		t.Skip("skipping the quota checks: no cgroup v1 cpu hierarchy")
	}
	for file, want := range map[string]string{
		"vcpu0/cpu.cfs_quota_us": "50000", "vcpu1/cpu.cfs_quota_us": "50000", "vcpu1/cpu.cfs_period_us": "100000",
		"emulator/cpu.cfs_quota_us": "20000", "emulator/cpu.cfs_period_us": "50000",
		"cpu.cfs_quota_us": "150000", "cpu.cfs_period_us": "100000",
	} {
		if got := strings.TrimSpace(readFile(t, filepath.Join(cpuDir, file))); got != want {
			t.Errorf("%s = %s, want %s", file, got, want)
		}
	}

	// Live tuning and read-back go to the children too.
	if _, err := cfg.Cgroups.Apply(s.Guest, cgroupdriver.Resources{CPUQuotaUs: new(int64(30000))}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"vcpu0", "vcpu1"} {
		if got := strings.TrimSpace(readFile(t, filepath.Join(cpuDir, f, "cpu.cfs_quota_us"))); got != "30000" {
			t.Errorf("%s quota after tuning = %s, want 30000", f, got)
		}
	}
	if err := os.WriteFile(filepath.Join(cpuDir, "vcpu1", "cpu.cfs_quota_us"), []byte("40000"), 0); err != nil {
		t.Fatal(err)
	}
	obs, err := cfg.Cgroups.Observe(s.Guest, cgroupdriver.Resources{CPUQuotaUs: new(int64(30000))})
	if err != nil {
		t.Fatal(err)
	}
	var drift []string
	for _, o := range obs {
		if o.Drift {
			drift = append(drift, o.Dir)
		}
	}
	if !slices.Equal(drift, []string{filepath.Join(cpuDir, "vcpu1")}) {
		t.Errorf("drift in %v, want only vcpu1: %+v", drift, obs)
	}

	if err := inst.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	checkGone(t, cfg, s, inst.PID())
}

func fields(t testing.TB, path string) []string {
	t.Helper()
	return strings.Fields(readFile(t, path))
}
