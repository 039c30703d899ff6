package driver_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/nodeagent/driver"
	"github.com/corral-dev/corral/nodeagent/driver/drivertest"
)

// TestQEMUBalloon is the balloon's must-show: a 128 MiB guest under TCG
// that touched 64 MiB of its RAM is ballooned to 64 MiB; the balloon's
// actual size reaches the target within tolerance and the memory cgroup's
// usage of the QEMU process falls, as QEMU hands the ballooned pages back.
func TestQEMUBalloon(t *testing.T) {
	t.Parallel()
	a := drivertest.VM(t)
	cfg := drivertest.Config(t)
	d := newQEMU(t, cfg)
	s := vmSpec(t, a, "vm-balloon")
	s.Append += " corral.fill=64"
	inst := start(t, d, s)
	ctx := testCtx(t)
	waitLog(t, inst, "CORRAL-GUEST-FILLED", bootTimeout)
	waitLog(t, inst, drivertest.Marker, bootTimeout)
	usage := func() int64 {
		n, err := strconv.ParseInt(groupFile(t, inst, "memory.usage_in_bytes"), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// The balloon driver loads after the marker; QEMU accepts a target
	// before it does and the driver acts on it once loaded.
	before := usage()
	const target = 64 << 20
	t0 := time.Now()
	if err := inst.SetBalloon(ctx, target); err != nil {
		t.Fatal(err)
	}
	var actual int64
	waitFor(t, "the balloon within tolerance of 64 MiB", 60*time.Second, func() bool {
		var err error
		actual, err = inst.BalloonActual(ctx)
		return err == nil && events.BalloonCompliant(target, actual)
	})
	complied := time.Since(t0)
	var after int64
	waitFor(t, "the memory cgroup's usage to fall", 30*time.Second, func() bool {
		after = usage()
		return after < before-16<<20
	})
	t.Logf("balloon 128 MiB -> 64 MiB: actual %s after %v; memory cgroup usage %s -> %s (%s freed)",
		events.FormatSize(actual), complied.Round(time.Millisecond), events.FormatSize(before), events.FormatSize(after),
		events.FormatSize(before-after))
	if got, want := driver.BalloonSoftLimit(cgroupdriver.KindQEMU, target), events.QEMUMemoryLimit(target); got != want {
		t.Errorf("soft limit %d, want %d", got, want)
	}
}

// TestBalloonWithoutDevice: a process guest has no balloon, and says so.
func TestBalloonWithoutDevice(t *testing.T) {
	t.Parallel()
	cfg := drivertest.Config(t)
	d := driver.NewProcess(cfg)
	s := spec(t, cgroupdriver.KindProcess, "nob")
	s.Command = []string{"/bin/sleep", "1000"}
	inst := start(t, d, s)
	ctx := testCtx(t)
	if err := inst.SetBalloon(ctx, 64<<20); !errors.Is(err, driver.ErrNoBalloon) || !strings.Contains(err.Error(), s.Guest.ID) {
		t.Errorf("SetBalloon on a process guest: %v", err)
	}
	if _, err := inst.BalloonActual(ctx); !errors.Is(err, driver.ErrNoBalloon) {
		t.Errorf("BalloonActual on a process guest: %v", err)
	}
	if got := driver.BalloonSoftLimit(cgroupdriver.KindProcess, 64<<20); got != 64<<20 {
		t.Errorf("process soft limit %d, want the target", got)
	}
}
