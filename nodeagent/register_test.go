package nodeagent

import (
	"context"
	"testing"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
	"github.com/corral-dev/corral/nodeagent/driver"
)

// noDrivers is a Drivers that runs nothing, for tests of what a node
// registers.
type noDrivers struct{}

func (noDrivers) Supports(string) error { return nil }
func (noDrivers) Start(context.Context, driver.Spec) (Instance, error) {
	panic("noDrivers starts nothing")
}
func (noDrivers) Adopt(context.Context, driver.Spec) (Instance, error) {
	panic("noDrivers adopts nothing")
}
func (noDrivers) Versions() map[string]string { return nil }

// A node reports per-vCPU groups (what the coordinator checks emulatorpin
// and vcpupin against) wherever its cpu controller is: cgroup v1, or v2
// with threaded vcpuN and emulator groups; not where it has none.
func TestRegistrationVCPUGroups(t *testing.T) {
	noCPU := cgrouptest.Layout{Name: "v2-without-cpu", Partition: "/machine.slice", Build: func(t testing.TB) *cgrouptest.Fake {
		return cgrouptest.NewFake(t, []cgrouptest.Mount{{Point: "/sys/fs/cgroup", V2: true}},
			"0::/system.slice/corral.service\n", "memory pids")
	}}
	want := map[string]bool{"separate": true, "hybrid": true, "v2": true, "v2-without-cpu": false}
	for _, l := range append(cgrouptest.Layouts(), noCPU) {
		w, ok := want[l.Name]
		if !ok {
			continue
		}
		t.Run(l.Name, func(t *testing.T) {
			fake := l.Build(t)
			rep := fake.Report(t)
			// The controllers cgroup2 offers, as DetectHost reads them.
			for i, h := range rep.Hierarchies {
				if h.Version == 2 {
					rep.Hierarchies[i].Controllers = map[string][]string{
						"v2": {"cpuset", "cpu", "io", "memory", "pids"}, "v2-without-cpu": {"memory", "pids"},
					}[l.Name]
				}
			}
			cfg := cgroupdriver.DefaultConfig()
			cfg.Report, cfg.Partition = &rep, l.Partition
			cg, err := cgroupdriver.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			a := &Agent{cfg: Config{NodeID: testNode, CPUs: 2, MemoryBytes: 1 << 30}, deps: Deps{Cgroups: cg, Drivers: noDrivers{}}}
			if got := a.Registration().VCPUGroups; got != w {
				t.Errorf("VCPUGroups = %v on %s, want %v", got, l.Name, w)
			}
		})
	}
}
