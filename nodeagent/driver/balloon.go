package driver

import (
	"context"
	"errors"
	"fmt"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/events"
)

// ErrNoBalloon is returned for a balloon operation on a guest that has no
// balloon device: a process or lxc guest.
var ErrNoBalloon = errors.New("corral: the guest has no balloon device (only qemu guests do)")

// BalloonSoftLimit is the memory cgroup soft limit of a guest of kind
// ballooned to target bytes: for qemu the target plus QEMU's own room
// ([events.QEMUMemoryLimit] of the target, as the hard limit is of the
// maximum), for the other kinds the target itself.
func BalloonSoftLimit(kind cgroupdriver.Kind, target int64) int64 {
	if kind == cgroupdriver.KindQEMU {
		return events.QEMUMemoryLimit(target)
	}
	return target
}

// SetBalloon asks a qemu guest's balloon driver to leave the guest target
// bytes. It returns once QEMU took the target, not once the guest gave the
// memory back ([Instance.BalloonActual] tells); a guest without a balloon
// driver never does.
func (i *Instance) SetBalloon(ctx context.Context, target int64) error {
	if i.qmp == nil {
		return fmt.Errorf("%w: %s", ErrNoBalloon, i.guest)
	}
	if target <= 0 {
		return fmt.Errorf("corral: %s: balloon target %d: give a positive number of bytes", i.guest, target)
	}
	return i.qmp.SetBalloon(ctx, target)
}

// BalloonActual returns the memory a qemu guest holds by its balloon's
// count: its RAM minus what the balloon took back.
func (i *Instance) BalloonActual(ctx context.Context) (int64, error) {
	if i.qmp == nil {
		return 0, fmt.Errorf("%w: %s", ErrNoBalloon, i.guest)
	}
	return i.qmp.Balloon(ctx)
}
