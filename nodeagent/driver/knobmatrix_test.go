package driver_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/nodeagent/driver"
	"github.com/corral-dev/corral/nodeagent/driver/drivertest"
	"golang.org/x/sys/unix"
)

// knobCase is one knob of the matrix: the text a guest starts with and the
// text a live change sets, and the file (in the guest's group, or in a
// child group of a QEMU guest) that must then hold each value.
type knobCase struct {
	knob        string
	start, live string
	// file is the file the knob writes; sub the child group of a QEMU
	// guest whose threads are placed ("" for the guest's own group).
	file, sub string
	// want turns the knob's text into the file's content (nil: the same).
	want func(text string) string
	// qemuOnly knobs have no meaning for other kinds.
	qemuOnly bool
}

// TestEveryKnobOnEveryDriver is the matrix of issue 11's "a real-host test
// per knob × driver": each driver starts a guest with every knob this host
// can take, each knob's file holds its value, a live change of every knob
// reaches its file, and a knob written by hand is seen as drift. The
// cgroup version is the host's: here, v1 (this host's cgroup2 has no
// controller but hugetlb; TestV2KnobsRefusedWithoutController covers v2).
func TestEveryKnobOnEveryDriver(t *testing.T) {
	const mib = 1 << 20
	cases := []knobCase{
		{knob: "cpu_shares", start: "512", live: "256", file: "cpu.shares"},
		{knob: "vcpu_period", start: "100000", live: "50000", file: "cpu.cfs_period_us", sub: "vcpu0"},
		{knob: "vcpu_quota", start: "50000", live: "40000", file: "cpu.cfs_quota_us", sub: "vcpu0"},
		{knob: "emulator_period", start: "100000", live: "80000", file: "cpu.cfs_period_us", sub: "emulator", qemuOnly: true},
		{knob: "emulator_quota", start: "20000", live: "10000", file: "cpu.cfs_quota_us", sub: "emulator", qemuOnly: true},
		{knob: "global_period", start: "100000", live: "100000", file: "cpu.cfs_period_us", qemuOnly: true},
		{knob: "global_quota", start: "150000", live: "120000", file: "cpu.cfs_quota_us", qemuOnly: true},
		{knob: "cpuset_cpus", start: "0", live: "0-1", file: "cpuset.cpus"},
		{knob: "numa_nodeset", start: "0", live: "0", file: "cpuset.mems"},
		{knob: "hard_limit", start: strconv.Itoa(384 * mib), live: strconv.Itoa(320 * mib), file: "memory.limit_in_bytes"},
		{knob: "soft_limit", start: strconv.Itoa(128 * mib), live: strconv.Itoa(96 * mib), file: "memory.soft_limit_in_bytes"},
		{knob: "pids_max", start: "64", live: "48", file: "pids.max"},
		{knob: "emulatorpin", start: "0", live: "1", file: "cpuset.cpus", sub: "emulator", qemuOnly: true},
		{knob: "vcpupin", start: "0:0", live: "0:1", file: "cpuset.cpus", sub: "vcpu0", qemuOnly: true,
			want: func(text string) string { return strings.TrimPrefix(text, "0:") }},
	}
	for _, kind := range []cgroupdriver.Kind{cgroupdriver.KindProcess, cgroupdriver.KindLXC, cgroupdriver.KindQEMU} {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			cfg := drivertest.Config(t)
			host := cfg.Cgroups.Host()
			cases := slices.Clone(cases)
			if host.SwapAccounting {
				cases = append(cases, knobCase{knob: "swap_hard_limit", start: strconv.Itoa(512 * mib), live: strconv.Itoa(448 * mib), file: "memory.memsw.limit_in_bytes"})
			}
			if host.BlkioWeightFile != "" {
				cases = append(cases, knobCase{knob: "blkio_weight", start: "500", live: "300", file: host.BlkioWeightFile})
			}
			if dev, majmin := wholeDisk(t); dev != "" {
				throttle := func(text string) string { _, v, _ := strings.Cut(text, ","); return majmin + " " + v }
				cases = append(cases,
					knobCase{knob: "device_read_bytes_sec", start: dev + ",10485760", live: dev + ",5242880", file: "blkio.throttle.read_bps_device", want: throttle},
					knobCase{knob: "device_write_iops_sec", start: dev + ",100", live: dev + ",50", file: "blkio.throttle.write_iops_device", want: throttle},
					knobCase{knob: "devices", start: dev + ":r", live: dev + ":rw", file: "devices.list", want: func(text string) string {
						_, access, _ := strings.Cut(text, ":")
						return "b " + majmin + " " + access
					}})
			}

			var s driver.Spec
			var d driver.Driver
			switch kind {
			case cgroupdriver.KindProcess:
				d = driver.NewProcess(cfg)
				s = spec(t, kind, "matrix")
				s.Command = []string{"sleep", "600"}
			case cgroupdriver.KindLXC:
				d = driver.NewLXC(cfg)
				s = spec(t, kind, "matrix")
				s.Rootfs = drivertest.Rootfs(t)
				s.Command = []string{"/bin/sleep", "600"}
			case cgroupdriver.KindQEMU:
				d = newQEMU(t, cfg)
				s = vmSpec(t, drivertest.VM(t), "matrix")
			}
			s.MemoryBytes = 128 * mib
			setAll := func(r *cgroupdriver.Resources, live bool) {
				for _, c := range cases {
					if c.qemuOnly && kind != cgroupdriver.KindQEMU {
						continue
					}
					v := c.start
					if live {
						v = c.live
					}
					if err := r.SetKnob(c.knob, v); err != nil {
						t.Fatalf("SetKnob(%s, %s): %v", c.knob, v, err)
					}
				}
			}
			setAll(&s.Resources, false)
			inst := start(t, d, s)
			check := func(when string, live bool) {
				t.Helper()
				for _, c := range cases {
					if c.qemuOnly && kind != cgroupdriver.KindQEMU {
						continue
					}
					text := c.start
					if live {
						text = c.live
					}
					want := text
					if c.want != nil {
						want = c.want(text)
					}
					sub := c.sub
					if kind != cgroupdriver.KindQEMU {
						sub = ""
					}
					got, ok := knobFile(inst, sub, c.file)
					switch {
					case !ok:
						t.Errorf("%s: %s: no group of %s has %s", when, c.knob, filepath.Join(s.Guest.ID, sub), c.file)
					case c.file == "devices.list":
						if !slices.Contains(strings.Split(got, "\n"), want) {
							t.Errorf("%s: %s: devices.list lacks %q:\n%s", when, c.knob, want, got)
						}
					case got != want:
						t.Errorf("%s: %s: %s/%s = %q, want %q", when, c.knob, sub, c.file, got, want)
					}
				}
			}
			check("at start", false)

			var live cgroupdriver.Resources
			setAll(&live, true)
			if _, err := cfg.Cgroups.Apply(inst.Guest(), live); err != nil {
				t.Fatalf("live change: %v", err)
			}
			check("after a live change", true)
			obs, err := cfg.Cgroups.Observe(inst.Guest(), live)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range obs {
				if o.Drift {
					t.Errorf("drift right after a live change: %+v", o)
				}
			}
			if kind == cgroupdriver.KindQEMU {
				// The whole guest's cap lowered below its vCPUs' in one
				// change: on v1 the kernel takes it only once the vCPUs
				// are lowered, though the plan writes the cap first.
				var lower cgroupdriver.Resources
				for knob, v := range map[string]string{"global_quota": "30000", "vcpu_quota": "10000"} {
					if err := lower.SetKnob(knob, v); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := cfg.Cgroups.Apply(inst.Guest(), lower); err != nil {
					t.Fatalf("lowering global_quota below vcpu_quota: %v", err)
				}
				for sub, want := range map[string]string{"": "30000", "vcpu0": "10000"} {
					if got, _ := knobFile(inst, sub, "cpu.cfs_quota_us"); got != want {
						t.Errorf("after lowering: %s/cpu.cfs_quota_us = %q, want %s", sub, got, want)
					}
				}
				live.GlobalQuotaUs, live.CPUQuotaUs = lower.GlobalQuotaUs, lower.CPUQuotaUs
			}
			// Someone writes the guest's pids.max by hand: the agent's drift
			// check sees exactly that knob.
			p, ok := knobPath(inst, "", "pids.max")
			if !ok {
				t.Fatal("no pids.max")
			}
			if err := os.WriteFile(p, []byte("33"), 0); err != nil {
				t.Fatal(err)
			}
			obs, _ = cfg.Cgroups.Observe(inst.Guest(), live)
			var drifted []string
			for _, o := range obs {
				if o.Drift {
					drifted = append(drifted, o.Knob+":"+o.Want+"->"+o.Got)
				}
			}
			if !slices.Equal(drifted, []string{"pids_max:48->33"}) {
				t.Errorf("drift = %v, want pids_max:48->33", drifted)
			}
		})
	}
}

// TestV2KnobsRefusedWithoutController: on a cgroup v2 hierarchy without
// a controller (this host's unified mount has none but hugetlb), a knob
// that needs it is refused before anything is written, naming the
// controller, rather than written to a file that is not there.
func TestV2KnobsRefusedWithoutController(t *testing.T) {
	drivertest.Config(t) // skips unless this host has writable cgroups
	rep := cgroupdriver.Report{Mode: cgroupdriver.ModeV2, Hierarchies: []cgroupdriver.Hierarchy{{
		Version: 2, MountPoint: "/sys/fs/cgroup/unified", MountRoot: "/", Group: "/",
	}}}
	ccfg := cgroupdriver.DefaultConfig()
	ccfg.Report = &rep
	cg, err := cgroupdriver.New(ccfg)
	if err != nil {
		t.Fatalf("a driver on the unified hierarchy alone: %v", err)
	}
	for _, knob := range []struct{ name, value, controller string }{
		{"cpu_shares", "512", "cpu"},
		{"hard_limit", "268435456", "memory"},
		{"pids_max", "64", "pids"},
		{"cpuset_cpus", "0", "cpuset"},
		{"blkio_weight", "500", "blkio"},
		{"net_cls_classid", "65537", "net_cls"},
	} {
		var r cgroupdriver.Resources
		if err := r.SetKnob(knob.name, knob.value); err != nil {
			t.Fatal(err)
		}
		err := cg.Validate(r)
		if err == nil {
			t.Errorf("%s on a v2 hierarchy without %s: accepted", knob.name, knob.controller)
			continue
		}
		if !strings.Contains(err.Error(), knob.name) || !strings.Contains(err.Error(), knob.controller) {
			t.Errorf("%s refused with %q: it should name the knob and the controller %s", knob.name, err, knob.controller)
		}
	}
}

// knobFile reads file in the guest's group (or its child group sub) in
// whichever hierarchy has it.
func knobFile(inst *driver.Instance, sub, file string) (string, bool) {
	p, ok := knobPath(inst, sub, file)
	if !ok {
		return "", false
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(b)), true
}

func knobPath(inst *driver.Instance, sub, file string) (string, bool) {
	for _, dir := range inst.Cgroups() {
		p := filepath.Join(dir, sub, file)
		if _, err := os.Stat(p); err == nil {
			return p, true
		}
	}
	return "", false
}

// wholeDisk returns a whole disk of this host (not a loop device) as a
// path and major:minor, or "" when it has none.
func wholeDisk(t testing.TB) (string, string) {
	for _, p := range []string{"/dev/vda", "/dev/sda", "/dev/nvme0n1", "/dev/xvda"} {
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK {
			return p, fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
	}
	t.Log("no whole disk on this host: the blkio throttle and device ACL rows are not run")
	return "", ""
}
