package cgroupdriver_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
)

// schedKnobs are the knobs that go to a QEMU guest's per-thread groups.
func schedKnobs() cgroupdriver.Resources {
	return cgroupdriver.Resources{
		CPUPeriodUs: new(uint64(100000)), CPUQuotaUs: new(int64(50000)),
		EmulatorPeriodUs: new(uint64(50000)), EmulatorQuotaUs: new(int64(20000)),
		GlobalPeriodUs: new(uint64(100000)), GlobalQuotaUs: new(int64(150000)),
		CpusetCPUs: "0-3", CpusetMems: "0",
		EmulatorPin: "0", VCPUPin: map[int]string{0: "1", 1: "2-3"},
	}
}

// placeFake makes, on a fake host, the groups PlaceThreads leaves behind
// for web with two vCPUs: vcpu0, vcpu1 and emulator under its group in
// every hierarchy, each holding the given thread ids.
func placeFake(t *testing.T, d *cgroupdriver.Driver) []string {
	t.Helper()
	dirs, err := d.Paths(web)
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range dirs {
		for sub, tids := range map[string]string{"": "", "vcpu0": "101", "vcpu1": "102", "emulator": "100 103"} {
			p := filepath.Join(dir, sub)
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			for f, v := range map[string]string{"cgroup.threads": tids, "tasks": tids, "cgroup.type": "domain", "cgroup.subtree_control": ""} {
				if err := os.WriteFile(filepath.Join(p, f), []byte(v+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	return dirs
}

// TestThreadsPlanGolden pins where a QEMU guest's schedinfo and pins go
// once its threads are placed: on v2 vcpu_* to each vcpuN's cpu.max,
// emulator_* to emulator's, global_* to the guest's own, vcpupin and
// emulatorpin to the children's cpuset.cpus; on v1 the same in the CFS
// files. The plan applied to the fake host reads back without drift, and
// a child changed by hand is the one drift found.
func TestThreadsPlanGolden(t *testing.T) {
	for _, name := range []string{"v2", "separate"} {
		t.Run(name, func(t *testing.T) {
			var l cgrouptest.Layout
			for _, x := range cgrouptest.Layouts() {
				if x.Name == name {
					l = x
				}
			}
			d, fake := fakeDriver(t, l)
			placeFake(t, d)
			ws, err := d.Plan(web, schedKnobs())
			if err != nil {
				t.Fatalf("Plan: %v", err)
			}
			var b strings.Builder
			fmt.Fprintf(&b, "# layout %s: %s with vcpu0, vcpu1 and emulator placed\n", l.Name, web)
			for _, w := range ws {
				fmt.Fprintf(&b, "%-22s %s = %q\n", w.Knob, fake.Relative(w.Path()), w.Value)
			}
			golden(t, filepath.Join("testdata", "threads", l.Name+".golden"), b.String())

			fake.Materialize(t, ws)
			obs, err := d.Observe(web, schedKnobs())
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range obs {
				if o.Drift {
					t.Errorf("drift right after apply: %+v", o)
				}
			}
			file, value := "cpu.max", "40000 100000"
			if name != "v2" {
				file, value = "cpu.cfs_quota_us", "40000"
			}
			var vcpu1 string
			for _, w := range ws {
				if w.File == file && filepath.Base(w.Dir) == "vcpu1" {
					vcpu1 = w.Dir
				}
			}
			if vcpu1 == "" {
				t.Fatalf("no %s write for vcpu1 in %v", file, ws)
			}
			if err := os.WriteFile(filepath.Join(vcpu1, file), []byte(value+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			obs, err = d.Observe(web, schedKnobs())
			if err != nil {
				t.Fatal(err)
			}
			var drift []string
			for _, o := range obs {
				if o.Drift {
					drift = append(drift, fake.Relative(o.Dir)+"/"+o.File)
				}
			}
			if want := []string{fake.Relative(vcpu1) + "/" + file}; !slices.Equal(drift, want) {
				t.Errorf("drift in %v, want only %v", drift, want)
			}
		})
	}
}

// TestPlaceThreadsV2Fake checks the writes PlaceThreads makes on a cgroup2
// with cpu and cpuset, which this project's host lacks (its cgroup2 offers
// neither): every child becomes a threaded group, and the guest's group
// enables cpu and cpuset for them in cgroup.subtree_control. The threads
// are already placed (an adopted guest): a fake cgroupfs does not move
// them; TestPlaceThreadsV2Host moves real ones.
func TestPlaceThreadsV2Fake(t *testing.T) {
	var l cgrouptest.Layout
	for _, x := range cgrouptest.Layouts() {
		if x.Name == "v2" {
			l = x
		}
	}
	d, _ := fakeDriver(t, l)
	dirs := placeFake(t, d)
	if len(dirs) != 1 {
		t.Fatalf("groups %v, want one", dirs)
	}
	dir := dirs[0]

	// A vCPU thread the guest does not hold is refused before any write.
	err := d.PlaceThreads(web, map[int]int{0: 101, 1: 999})
	if err == nil || !strings.Contains(err.Error(), "thread 999 of vCPU 1") {
		t.Fatalf("PlaceThreads with a stranger's thread = %v, want a refusal naming it", err)
	}
	if got := readHost(t, filepath.Join(dir, "vcpu0", "cgroup.type")); got != "domain" {
		t.Fatalf("vcpu0/cgroup.type = %q after a refused placement, want it untouched", got)
	}
	if err := d.PlaceThreads(web, map[int]int{0: 101, 1: 102}); err != nil {
		t.Fatalf("PlaceThreads: %v", err)
	}
	for _, sub := range []string{"vcpu0", "vcpu1", "emulator"} {
		if got := readHost(t, filepath.Join(dir, sub, "cgroup.type")); got != "threaded" {
			t.Errorf("%s/cgroup.type = %q, want threaded", sub, got)
		}
	}
	if got := readHost(t, filepath.Join(dir, "cgroup.subtree_control")); got != "+cpu +cpuset" {
		t.Errorf("guest's cgroup.subtree_control = %q, want \"+cpu +cpuset\" (only threaded controllers)", got)
	}
	// The v1 file is left alone on v2: threads move through cgroup.threads.
	if got := readHost(t, filepath.Join(dir, "vcpu0", "tasks")); got != "101" {
		t.Errorf("vcpu0/tasks = %q: PlaceThreads wrote a v1 file on v2", got)
	}
	if err := d.PlaceThreads(web, map[int]int{0: 101, 1: 102, 2: 102}); err == nil || errors.Is(err, cgroupdriver.ErrThreadsUnsupported) {
		t.Errorf("two vCPUs on one thread = %v, want a refusal", err)
	}
}
