package cgroupdriver

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Freeze stops every task of the guest and returns once the kernel reports
// the group FROZEN (v1 freezer.state) or frozen (v2 cgroup.events), or
// fails when ctx (or, without a deadline, Config.FreezeTimeout) runs out
// first. The agent uses it to fence guests it may no longer run.
func (d *Driver) Freeze(ctx context.Context, g Guest) error { return d.setFrozen(ctx, g, true) }

// Thaw resumes the guest and returns once the kernel reports it THAWED.
func (d *Driver) Thaw(ctx context.Context, g Guest) error { return d.setFrozen(ctx, g, false) }

func (d *Driver) setFrozen(ctx context.Context, g Guest, frozen bool) error {
	if err := g.Validate(); err != nil {
		return err
	}
	i, v := d.l.at(cFreezer)
	if i < 0 {
		return fmt.Errorf("%w: freezer is not mounted and there is no cgroup v2", ErrControllerMissing)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.cfg.FreezeTimeout)
		defer cancel()
	}
	if err := freezeDir(ctx, d.l.guestDir(i, g), v, frozen); err != nil {
		return fmt.Errorf("corral: freeze=%v %s: %w", frozen, g, err)
	}
	return nil
}

// freezeDir sets the freezer state of one group and waits for it.
func freezeDir(ctx context.Context, dir string, version int, frozen bool) error {
	if version == 1 {
		want := "THAWED"
		if frozen {
			want = "FROZEN"
		}
		if err := writeFile(dir+"/freezer.state", want); err != nil {
			return err
		}
		// Reading freezer.state makes the kernel re-check a FREEZING group.
		return poll(ctx, func() (bool, error) {
			s, err := readFile(dir + "/freezer.state")
			return s == want, err
		})
	}
	want, value := "frozen 0", "0"
	if frozen {
		want, value = "frozen 1", "1"
	}
	if err := writeFile(dir+"/cgroup.freeze", value); err != nil {
		return err
	}
	return poll(ctx, func() (bool, error) {
		s, err := readFile(dir + "/cgroup.events")
		return strings.Contains(s, want), err
	})
}

// poll calls cond until it reports true or fails, backing off from 50µs to
// 10ms between calls, and gives up when ctx is done.
func poll(ctx context.Context, cond func() (bool, error)) error {
	backoff := 50 * time.Microsecond
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, 10*time.Millisecond)
	}
}
