package driver

import (
	"context"
	"errors"
	"fmt"

	"github.com/corral-dev/corral/cgroupdriver"
)

// schedinfoKnobs are the knobs written to a QEMU guest's per-thread groups
// once its threads are placed.
func schedinfoKnobs() []string {
	return []string{"vcpu_period", "vcpu_quota", "emulator_period", "emulator_quota", "global_period", "global_quota",
		"numa_nodeset", "emulatorpin", "vcpupin"}
}

// placeVCPUs puts a started VM's threads into the guest's per-vCPU and
// emulator groups, as libvirt does, and writes vcpu_* and emulator_* to
// them (the writes before launch had no child groups to go to).
func (d *QEMU) placeVCPUs(ctx context.Context, q *QMP, g cgroupdriver.Guest, res cgroupdriver.Resources) error {
	threads, err := q.VCPUThreads(ctx)
	if err != nil {
		return fmt.Errorf("find the vCPU threads: %w", err)
	}
	if err := d.cfg.Cgroups.PlaceThreads(g, threads); errors.Is(err, cgroupdriver.ErrThreadsUnsupported) {
		return nil // one group, as before: vcpu_* were written to it at start
	} else if err != nil {
		return err
	}
	if _, err := d.cfg.Cgroups.Apply(g, res.Only(schedinfoKnobs()...)); err != nil {
		return fmt.Errorf("limit the vCPU groups: %w", err)
	}
	return nil
}
