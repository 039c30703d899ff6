package cgroupdriver_test

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
)

func TestReservationFor(t *testing.T) {
	r, err := cgroupdriver.ReservationFor(4, 8<<30, 1, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if *r.MemoryHardLimit != 7<<30 || *r.CPUQuotaUs != 3*cgroupdriver.ReservePeriodUs || *r.CPUPeriodUs != cgroupdriver.ReservePeriodUs || r.CPUShares != nil {
		t.Errorf("ReservationFor(4 CPUs, 8GiB, 1, 1GiB) = %s", show(r))
	}
	// No reserve lifts what an earlier one set.
	r, err = cgroupdriver.ReservationFor(4, 8<<30, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if *r.MemoryHardLimit != cgroupdriver.Unlimited || *r.CPUQuotaUs != cgroupdriver.Unlimited || r.CPUPeriodUs != nil {
		t.Errorf("ReservationFor without a reserve = %s, want both lifted", show(r))
	}
	for _, bad := range []struct {
		cpus, rcpus int
		mem, rmem   int64
	}{{4, 4, 8 << 30, 0}, {4, 0, 8 << 30, 8 << 30}, {2, 3, 1 << 30, 2 << 30}, {4, -1, 8 << 30, 0}} {
		if _, err := cgroupdriver.ReservationFor(bad.cpus, bad.mem, bad.rcpus, bad.rmem); err == nil {
			t.Errorf("ReservationFor(%d, %d, %d, %d) accepted", bad.cpus, bad.mem, bad.rcpus, bad.rmem)
		} else if bad.rcpus >= 0 && !errors.Is(err, cgroupdriver.ErrReserveTooLarge) {
			t.Errorf("ReservationFor(%d, %d, %d, %d): %v, want ErrReserveTooLarge", bad.cpus, bad.mem, bad.rcpus, bad.rmem, err)
		}
	}
}

func show(r cgroupdriver.Reservation) string {
	var b strings.Builder
	if r.MemoryHardLimit != nil {
		b.WriteString(" memory=" + strconv.FormatInt(*r.MemoryHardLimit, 10))
	}
	if r.CPUQuotaUs != nil {
		b.WriteString(" quota=" + strconv.FormatInt(*r.CPUQuotaUs, 10))
	}
	if r.CPUPeriodUs != nil {
		b.WriteString(" period=" + strconv.FormatUint(*r.CPUPeriodUs, 10))
	}
	if r.CPUShares != nil {
		b.WriteString(" shares=" + strconv.FormatUint(*r.CPUShares, 10))
	}
	return "{" + strings.TrimSpace(b.String()) + "}"
}

// TestHostReserveForHost is what `corral agent --reserve-memory 1GiB
// --reserve-cpus 1` does on the host: a process standing in for the agent
// lands in <partition>/corral/agent in every hierarchy, the corral root is
// capped at the host's memory minus the reserve and at its CPUs minus the
// reserve, freezing the guests' kind directories (as the fencer does)
// leaves the agent running, guests created afterwards get their own groups
// below the root, and a restart without the reserve lifts both caps.
func TestHostReserveForHost(t *testing.T) {
	rep := cgrouptest.RequireHost(t)
	cfg := cgroupdriver.DefaultConfig()
	cfg.Report, cfg.Partition = &rep, cgrouptest.NewPartition(t, rep)
	d, err := cgroupdriver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mem := hostMemory(t)
	cpus, reserveCPUs := runtime.NumCPU(), 1
	if cpus < 2 {
		reserveCPUs = 0
	}
	r, err := cgroupdriver.ReservationFor(cpus, mem, reserveCPUs, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	agent := exec.Command("sleep", "1000")
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = agent.Process.Kill()
		_ = agent.Wait()
	})
	ws, err := d.Reserve(r, agent.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("applied %v", ws)

	pid := strconv.Itoa(agent.Process.Pid)
	agentDirs := d.AgentDirs()
	t.Logf("agent groups: %v", agentDirs)
	if len(agentDirs) != len(rep.Hierarchies) {
		t.Fatalf("AgentDirs = %v, want one per hierarchy of %v", agentDirs, rep.Hierarchies)
	}
	for _, dir := range agentDirs {
		if procs := strings.Fields(readHost(t, dir+"/cgroup.procs")); !slices.Contains(procs, pid) {
			t.Errorf("%s holds %v, not the agent %s", dir, procs, pid)
		}
	}
	byKey := map[string]string{}
	for _, line := range strings.Split(readHost(t, "/proc/"+pid+"/cgroup"), "\n") {
		if parts := strings.SplitN(line, ":", 3); len(parts) == 3 {
			byKey[parts[1]] = parts[2]
		}
	}
	for _, h := range rep.Hierarchies {
		key := ""
		if h.Version == 1 {
			key = strings.Join(h.Controllers, ",")
		}
		if got, want := byKey[key], cfg.Partition+"/corral/agent"; got != want {
			t.Errorf("hierarchy %s: the agent is in %q, want %q", h, got, want)
		}
	}

	memDir, cpuDir := partitionDir(t, rep, cfg.Partition, "memory"), partitionDir(t, rep, cfg.Partition, "cpu")
	root := func(hdir string) string { return filepath.Join(hdir, "corral") }
	page := int64(os.Getpagesize())
	wantMem := strconv.FormatInt((mem-1<<30)/page*page, 10)
	switch {
	case memDir != "":
		if got := readHost(t, root(memDir)+"/memory.limit_in_bytes"); got != wantMem {
			t.Errorf("memory.limit_in_bytes of the corral root = %s, want host memory %d minus 1GiB = %s", got, mem, wantMem)
		}
	case hasV2(rep, "memory"):
		if got := readHost(t, root(v2Dir(t, rep, cfg.Partition))+"/memory.max"); got != wantMem {
			t.Errorf("memory.max of the corral root = %s, want %s", got, wantMem)
		}
	default:
		t.Log("no memory controller: the memory cap is not tested here")
	}
	wantQuota := strconv.Itoa((cpus - reserveCPUs) * cgroupdriver.ReservePeriodUs)
	if reserveCPUs == 0 {
		wantQuota = "-1"
	}
	if cpuDir != "" {
		if got := readHost(t, root(cpuDir)+"/cpu.cfs_quota_us"); got != wantQuota {
			t.Errorf("cpu.cfs_quota_us of the corral root = %s, want %s (%d CPUs, %d reserved)", got, wantQuota, cpus, reserveCPUs)
		}
		if got := readHost(t, root(cpuDir)+"/cpu.cfs_period_us"); reserveCPUs > 0 && got != "100000" {
			t.Errorf("cpu.cfs_period_us of the corral root = %s, want 100000", got)
		}
	} else {
		t.Log("no v1 cpu controller: the CPU cap is not tested here")
	}

	// The fencer freezes the kind directories; the agent is not below them.
	if fdir := partitionDir(t, rep, cfg.Partition, "freezer"); fdir != "" {
		kind := root(fdir) + "/process"
		if err := os.MkdirAll(kind, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(kind+"/freezer.state", []byte("FROZEN"), 0); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.WriteFile(kind+"/freezer.state", []byte("THAWED"), 0) })
		if got := readHost(t, root(fdir)+"/agent/freezer.state"); got != "THAWED" {
			t.Errorf("the agent's group is %s while the guests are frozen", got)
		}
		if st := procState(t, agent.Process.Pid); st == "" || st == "D" {
			t.Errorf("the agent's state is %q while the guests are frozen", st)
		}
		if err := os.WriteFile(kind+"/freezer.state", []byte("THAWED"), 0); err != nil {
			t.Fatal(err)
		}
	}

	// Guests still get their own groups below the capped root.
	g := create(t, d, "after")
	out, err := run(t, d, g, nil, "cat", "/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	checkSelfCgroup(t, rep, cfg.Partition, g, out)

	// An agent restarted without a reserve lifts the caps.
	r, err = cgroupdriver.ReservationFor(cpus, mem, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Reserve(r, agent.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if memDir != "" {
		if got := readHost(t, root(memDir)+"/memory.limit_in_bytes"); got != "9223372036854771712" {
			t.Errorf("memory.limit_in_bytes of the corral root = %s after the reserve was dropped, want unlimited", got)
		}
	}
	if cpuDir != "" {
		if got := readHost(t, root(cpuDir)+"/cpu.cfs_quota_us"); got != "-1" {
			t.Errorf("cpu.cfs_quota_us of the corral root = %s after the reserve was dropped, want -1", got)
		}
	}
}

// partitionDir returns the partition's directory in the v1 hierarchy
// carrying c, or "" when no v1 hierarchy does.
func partitionDir(t *testing.T, rep cgroupdriver.Report, partition, c string) string {
	t.Helper()
	for _, h := range rep.Hierarchies {
		if h.Version == 1 && h.Has(c) {
			dir, err := h.Dir(partition)
			if err != nil {
				t.Fatal(err)
			}
			return dir
		}
	}
	return ""
}

func hasV2(rep cgroupdriver.Report, c string) bool {
	for _, h := range rep.Hierarchies {
		if h.Version == 2 && slices.Contains(h.Controllers, c) {
			return true
		}
	}
	return false
}

func v2Dir(t *testing.T, rep cgroupdriver.Report, partition string) string {
	t.Helper()
	for _, h := range rep.Hierarchies {
		if h.Version == 2 {
			dir, err := h.Dir(partition)
			if err != nil {
				t.Fatal(err)
			}
			return dir
		}
	}
	return ""
}

// hostMemory is MemTotal in bytes.
func hostMemory(t *testing.T) int64 {
	t.Helper()
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) >= 2 && fields[0] == "MemTotal:" {
			kib, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kib << 10
		}
	}
	t.Fatal("/proc/meminfo has no MemTotal")
	return 0
}

// procState is the one-letter state in /proc/<pid>/stat.
func procState(t *testing.T, pid int) string {
	t.Helper()
	s := readHost(t, "/proc/"+strconv.Itoa(pid)+"/stat")
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return ""
	}
	return s[i+2 : i+3]
}
