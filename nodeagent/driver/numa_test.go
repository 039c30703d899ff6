package driver_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/nodeagent/driver"
	"github.com/corral-dev/corral/nodeagent/driver/drivertest"
)

// TestProcessNUMAPolicy launches process guests with numatune preferred
// and interleave: the process (past both entry shims) runs its program
// with that memory policy, as /proc/PID/numa_maps shows it, and its
// cpuset.mems is left as it was.
func TestProcessNUMAPolicy(t *testing.T) {
	for mode, want := range map[string]string{cgroupdriver.NUMAPreferred: "prefer:0", cgroupdriver.NUMAInterleave: "interleave:0"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			cfg := drivertest.Config(t)
			d := driver.NewProcess(cfg)
			s := spec(t, cgroupdriver.KindProcess, "numa")
			s.Command = []string{"sleep", "1000"}
			s.MemoryBytes = 64 << 20
			s.Resources.NUMAMode, s.Resources.CpusetMems = mode, "0"
			inst := start(t, d, s)
			maps := "/proc/" + strconv.Itoa(inst.PID()) + "/numa_maps"
			var got string
			waitFor(t, "sleep to be exec'd with its policy", 10*time.Second, func() bool {
				exe, _ := os.Readlink("/proc/" + strconv.Itoa(inst.PID()) + "/exe")
				b, _ := os.ReadFile(maps)
				got = string(b)
				return strings.HasSuffix(exe, "/sleep") && got != ""
			})
			lines := strings.Split(strings.TrimSpace(got), "\n")
			for _, l := range lines {
				if f := strings.Fields(l); len(f) < 2 || f[1] != want {
					t.Fatalf("%s: mapping %q has policy %q, want %s on every mapping", maps, l, f[1], want)
				}
			}
			for _, dir := range inst.Cgroups() {
				if _, err := os.Stat(filepath.Join(dir, "cpuset.mems")); err == nil {
					parent := readFile(t, filepath.Join(filepath.Dir(dir), "cpuset.mems"))
					if got := readFile(t, filepath.Join(dir, "cpuset.mems")); got != parent {
						t.Errorf("cpuset.mems = %q in %s mode, want the parent's %q", got, mode, parent)
					}
				}
			}
		})
	}
}

// TestQEMUNUMAAndPins boots a 2-vCPU VM under TCG with numatune strict,
// emulatorpin and vcpupin: cpuset.mems of the guest's group and of its
// vcpuN and emulator groups hold the nodeset, emulator/cpuset.cpus and
// vcpuN/cpuset.cpus the pins; a live vcpupin reaches vcpu0, and a pin by
// hand is drift.
func TestQEMUNUMAAndPins(t *testing.T) {
	t.Parallel()
	a := drivertest.VM(t)
	cfg := drivertest.Config(t)
	cpus := cfg.Cgroups.Host().CPUs
	last, err := lastID(cpus)
	if err != nil {
		t.Skipf("no cpuset controller to pin with: %v", err)
	}
	d := newQEMU(t, cfg)
	s := vmSpec(t, a, "pin")
	s.VCPUs = 2
	s.Resources.NUMAMode, s.Resources.CpusetMems = cgroupdriver.NUMAStrict, "0"
	s.Resources.EmulatorPin = "0"
	s.Resources.VCPUPin = map[int]string{0: "0", 1: last}
	inst := start(t, d, s)

	dir := ""
	for _, dd := range inst.Cgroups() {
		if _, err := os.Stat(filepath.Join(dd, "vcpu0", "cpuset.cpus")); err == nil {
			dir = dd
		}
	}
	if dir == "" {
		t.Fatalf("no cpuset hierarchy with vcpu0 among %v", inst.Cgroups())
	}
	check := func(file, want string) {
		t.Helper()
		if got := strings.TrimSpace(readFile(t, filepath.Join(dir, file))); got != want {
			t.Errorf("%s = %q, want %q", file, got, want)
		}
	}
	check("cpuset.mems", "0")
	check("vcpu0/cpuset.mems", "0")
	check("vcpu1/cpuset.mems", "0")
	check("emulator/cpuset.mems", "0")
	check("emulator/cpuset.cpus", "0")
	check("vcpu0/cpuset.cpus", "0")
	check("vcpu1/cpuset.cpus", last)

	live := cgroupdriver.Resources{VCPUPin: map[int]string{0: last}, NUMAMode: cgroupdriver.NUMAStrict, CpusetMems: "0"}
	ws, err := cfg.Cgroups.Apply(s.Guest, live)
	if err != nil {
		t.Fatal(err)
	}
	check("vcpu0/cpuset.cpus", last)
	if got := cgroupdriver.Applied(live, ws); got["vcpupin"] != "0:"+last || got["numa_nodeset"] != "0" || got["numa_mode"] != "strict" {
		t.Errorf("Applied = %v, want vcpupin 0:%s, numa_nodeset 0, numa_mode strict", got, last)
	}
	if err := os.WriteFile(filepath.Join(dir, "vcpu0", "cpuset.cpus"), []byte("0"), 0); err != nil {
		t.Fatal(err)
	}
	obs, err := cfg.Cgroups.Observe(s.Guest, live)
	if err != nil {
		t.Fatal(err)
	}
	var drift []string
	for _, o := range obs {
		if o.Drift {
			drift = append(drift, o.Knob+" "+o.Dir)
		}
	}
	if last != "0" && (len(drift) != 1 || drift[0] != "vcpupin "+filepath.Join(dir, "vcpu0")) {
		t.Errorf("drift %v, want only vcpupin in vcpu0", drift)
	}
}

// lastID is the last CPU of a cpuset list.
func lastID(list string) (string, error) {
	parts := strings.Split(strings.TrimSpace(list), ",")
	p := parts[len(parts)-1]
	if i := strings.LastIndex(p, "-"); i >= 0 {
		p = p[i+1:]
	}
	_, err := strconv.Atoi(p)
	return p, err
}
