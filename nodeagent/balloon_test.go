package nodeagent

import (
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/events"
)

// TestBalloonStep: a guest.balloon when the target is first sampled and
// when compliance flips, never on a sample that changes nothing; one
// guest.balloon_noncompliant once the timeout passed, again only after the
// guest complied and relapsed.
func TestBalloonStep(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st := &balloonState{gen: 7, target: 64 << 20, setAt: t0}
	const timeout = 30 * time.Second
	type want struct{ balloon, noncompliant bool }
	steps := []struct {
		at     time.Duration
		actual int64
		want   want
	}{
		{0, 128 << 20, want{balloon: true}},                    // first sample: reported, not compliant
		{10 * time.Second, 100 << 20, want{}},                  // still above: nothing new
		{30 * time.Second, 90 << 20, want{noncompliant: true}}, // timeout reached
		{40 * time.Second, 90 << 20, want{}},                   // reported once
		{50 * time.Second, 67 << 20, want{balloon: true}},      // within 4 MiB: compliant
		{60 * time.Second, 66 << 20, want{}},
		{70 * time.Second, 80 << 20, want{balloon: true, noncompliant: true}}, // relapse, long past the timeout
	}
	for i, s := range steps {
		got := st.step(t0.Add(s.at), timeout, "n1", s.actual, s.actual+(100<<20))
		var g want
		for _, p := range got {
			switch p := p.(type) {
			case *events.GuestBalloon:
				g.balloon = true
				if p.Compliant != events.BalloonCompliant(64<<20, s.actual) || p.Generation != 7 || p.Actual != s.actual {
					t.Errorf("step %d: %+v", i, p)
				}
			case *events.GuestBalloonNoncompliant:
				g.noncompliant = true
				if p.WaitedMs != s.at.Milliseconds() {
					t.Errorf("step %d: waited %d ms, want %d", i, p.WaitedMs, s.at.Milliseconds())
				}
			}
			if err := p.(interface{ Validate() error }).Validate(); err != nil {
				t.Errorf("step %d: %v", i, err)
			}
		}
		if g != s.want {
			t.Errorf("step %d (actual %d MiB): reported %+v, want %+v", i, s.actual>>20, g, s.want)
		}
	}
}

// TestPressSize: enforcement presses a guest to its soft limit: the
// target plus QEMU's room for a VM, the target itself for a process, and
// memtune's soft limit when the operator set one.
func TestPressSize(t *testing.T) {
	d := DesiredGuest{Memory: 64 << 20}
	if got, want := pressSize(cgroupdriver.KindQEMU, d), events.QEMUMemoryLimit(64<<20); got != want {
		t.Errorf("qemu: %d, want %d (target + QEMU's room)", got, want)
	}
	if got := pressSize(cgroupdriver.KindProcess, d); got != 64<<20 {
		t.Errorf("process: %d, want the target", got)
	}
	d.Resources.MemorySoftLimit = new(int64(cgroupdriver.Unlimited))
	if got := pressSize(cgroupdriver.KindLXC, d); got != 64<<20 {
		t.Errorf("lxc with an unlimited soft limit: %d, want the target", got)
	}
	d.Resources.MemorySoftLimit = new(int64(100 << 20))
	if got := pressSize(cgroupdriver.KindQEMU, d); got != 100<<20 {
		t.Errorf("memtune soft limit: %d, want it", got)
	}
}
