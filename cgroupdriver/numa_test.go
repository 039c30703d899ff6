package cgroupdriver_test

import (
	"errors"
	"testing"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
)

// Where the cpu controller is on cgroup v2 there are no per-vCPU groups:
// a pin is refused when it is validated, saying so, and nothing is planned.
func TestPinsNeedThreadGroups(t *testing.T) {
	var v2 cgrouptest.Layout
	for _, l := range cgrouptest.Layouts() {
		if l.Name == "v2" {
			v2 = l
		}
	}
	d, _ := fakeDriver(t, v2)
	for _, r := range []cgroupdriver.Resources{{VCPUPin: map[int]string{0: "0"}}, {EmulatorPin: "0"}} {
		ws, err := d.Plan(web, r)
		if !errors.Is(err, cgroupdriver.ErrThreadsUnsupported) || len(ws) != 0 {
			t.Errorf("Plan(%+v) = %v, %v; want ErrThreadsUnsupported and no writes", r, ws, err)
		}
	}
}
