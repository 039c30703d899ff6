package cgroupdriver_test

import (
	"errors"
	"testing"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
)

// Where no hierarchy takes per-vCPU groups (cgroup v1 without the cpu
// controller, and no cgroup2) a pin is refused when it is validated,
// saying so, and nothing is planned.
func TestPinsNeedThreadGroups(t *testing.T) {
	noCPU := cgrouptest.Layout{Name: "v1-without-cpu", Build: func(t testing.TB) *cgrouptest.Fake {
		return cgrouptest.NewFake(t, []cgrouptest.Mount{
			{Point: "/sys/fs/cgroup/cpuset", Options: "rw,cpuset"},
			{Point: "/sys/fs/cgroup/memory", Options: "rw,memory"},
		}, "2:memory:/\n1:cpuset:/\n", "")
	}}
	d, _ := fakeDriver(t, noCPU)
	for _, r := range []cgroupdriver.Resources{{VCPUPin: map[int]string{0: "0"}}, {EmulatorPin: "0"}} {
		ws, err := d.Plan(web, r)
		if !errors.Is(err, cgroupdriver.ErrThreadsUnsupported) || len(ws) != 0 {
			t.Errorf("Plan(%+v) = %v, %v; want ErrThreadsUnsupported and no writes", r, ws, err)
		}
	}
	if err := d.PlaceThreads(web, map[int]int{0: 100}); !errors.Is(err, cgroupdriver.ErrThreadsUnsupported) {
		t.Errorf("PlaceThreads without cpu or cgroup2 = %v, want ErrThreadsUnsupported", err)
	}
}
