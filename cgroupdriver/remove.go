package cgroupdriver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Remove deletes the guest's groups everywhere. A group that still holds
// tasks is thawed and its tasks killed (cgroup.kill on v2; on v1 frozen,
// signalled and thawed, so none can fork or be replaced by a reused pid);
// EBUSY is then retried with a bounded backoff until ctx is done or the
// configured RemoveTimeout passes, after which the error wraps [ErrBusy].
// Removing a guest that does not exist is not an error.
func (d *Driver) Remove(ctx context.Context, g Guest) error {
	if err := g.Validate(); err != nil {
		return err
	}
	return d.removeDirs(ctx, g.String(), func(i int) string { return d.l.guestDir(i, g) })
}

// RemoveOrphan removes a group that [Driver.Orphans] reported, including
// stray directories whose names are not valid guest IDs.
func (d *Driver) RemoveOrphan(ctx context.Context, o Guest) error {
	if !safeComponent(string(o.Kind)) || (o.ID != "" && !safeComponent(o.ID)) {
		return fmt.Errorf("%w: orphan %q/%q is not a directory name", ErrInvalidGuestID, o.Kind, o.ID)
	}
	if o.Kind == agentGroup && o.ID == "" {
		return fmt.Errorf("corral: %s is the agent's own group, not an orphan", agentGroup)
	}
	if o.Kind == partitionsGroup && o.ID == "" {
		return fmt.Errorf("corral: %s holds the cluster's partitions, not an orphan: remove a partition with RemovePartition", partitionsGroup)
	}
	return d.removeDirs(ctx, string(o.Kind)+"/"+o.ID, func(i int) string {
		if o.ID == "" {
			return d.l.rootDir(i) + "/" + string(o.Kind)
		}
		return d.l.kindDir(i, o.Kind) + "/" + o.ID
	})
}

func safeComponent(s string) bool {
	if s == "" || s == "." || s == ".." || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] == '/' || s[i] == 0 {
			return false
		}
	}
	return true
}

// removeDirs removes dirOf(i) in every hierarchy: one rmdir each (after
// the children, such as a QEMU guest's per-vCPU groups) when the groups are
// empty, the slow path otherwise.
func (d *Driver) removeDirs(ctx context.Context, name string, dirOf func(int) string) error {
	var busy []int
	for i := range d.l.hs {
		d.files.forget(dirOf(i))
		err := removeTree(dirOf(i))
		switch {
		case err == nil:
		case isErrno(err, unix.EBUSY) || isErrno(err, unix.ENOTEMPTY):
			busy = append(busy, i)
		default:
			return fmt.Errorf("corral: remove %s: %w", name, err)
		}
	}
	if len(busy) == 0 {
		return nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.cfg.RemoveTimeout)
		defer cancel()
	}
	backoff := time.Millisecond
	for {
		if err := d.killAll(ctx, dirOf); err != nil {
			return fmt.Errorf("corral: remove %s: %w", name, err)
		}
		var (
			still   []int
			lastErr error
		)
		for _, i := range busy {
			if err := removeTree(dirOf(i)); err != nil {
				if !isErrno(err, unix.EBUSY) && !isErrno(err, unix.ENOTEMPTY) {
					return fmt.Errorf("corral: remove %s: %w", name, err)
				}
				still, lastErr = append(still, i), err
			}
		}
		if busy = still; len(busy) == 0 {
			return nil
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: remove %s: %v (%v)", ErrBusy, name, lastErr, ctx.Err())
		case <-t.C:
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

// removeTree removes dir and the groups below it, deepest first.
func removeTree(dir string) error {
	subs, err := subdirs(dir)
	if err != nil {
		if isErrno(err, unix.ENOENT) {
			return nil
		}
		return err
	}
	for _, s := range subs {
		if err := removeTree(dir + "/" + s); err != nil {
			return err
		}
	}
	if err := unix.Rmdir(dir); err != nil && err != unix.ENOENT {
		return fmt.Errorf("rmdir %s: %w", dir, err)
	}
	return nil
}

// Orphans lists the groups under the corral root, in any hierarchy, that
// known does not name: guests of a known kind that are not in known (with
// their ID), and stray directories directly under the root (with an empty
// ID). The agent's own group, the partitions' directory and the spares
// this Driver holds ([Driver.StartSpare]) are never listed; guests inside partitions are not scanned here. The result is
// sorted.
func (d *Driver) Orphans(known []Guest) ([]Guest, error) {
	want := make(map[Guest]bool, len(known))
	for _, g := range known {
		want[g] = true
	}
	found := map[Guest]bool{}
	for i := range d.l.hs {
		entries, err := subdirs(d.l.rootDir(i))
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return nil, fmt.Errorf("corral: orphans: %w", err)
		}
		for _, e := range entries {
			k := Kind(e)
			if !slices.Contains(Kinds(), k) {
				if e != agentGroup && e != partitionsGroup {
					found[Guest{Kind: k}] = true
				}
				continue
			}
			ids, err := subdirs(d.l.kindDir(i, k))
			if err != nil && !errors.Is(err, unix.ENOENT) {
				return nil, fmt.Errorf("corral: orphans: %w", err)
			}
			for _, id := range ids {
				if d.spares.held(k, id) {
					continue
				}
				if g := (Guest{Kind: k, ID: id}); !want[g] {
					found[g] = true
				}
			}
		}
	}
	out := make([]Guest, 0, len(found))
	for g := range found {
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b Guest) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

// killAll kills every task in dirOf(i) (and below) in every hierarchy.
// cgroup v2 does it atomically with cgroup.kill. On v1 the group is frozen
// first so no task can fork or exit (and have its pid reused) between
// listing and signalling, then thawed so the signals are delivered.
func (d *Driver) killAll(ctx context.Context, dirOf func(int) string) error {
	fi, fv := d.l.at(cFreezer)
	if fi >= 0 && fv == 1 {
		fctx, cancel := context.WithTimeout(ctx, time.Second)
		// A group that cannot freeze (tasks in uninterruptible sleep) is
		// still signalled below.
		_ = freezeDir(fctx, dirOf(fi), 1, true)
		cancel()
		defer func() {
			// Thaw even when ctx has run out, or the group stays frozen.
			tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			_ = freezeDir(tctx, dirOf(fi), 1, false)
			cancel()
		}()
	}
	for i, h := range d.l.hs {
		dir := dirOf(i)
		if h.Version == 2 {
			if err := writeFile(dir+"/cgroup.kill", "1"); err == nil || !exists(dir) {
				continue
			}
			// Before Linux 5.14 there is no cgroup.kill: signal one by one.
		}
		if err := signalTree(dir, syscall.SIGKILL); err != nil {
			return err
		}
	}
	return nil
}

// signalTree sends sig to every process in dir and its descendants.
func signalTree(dir string, sig syscall.Signal) error {
	procs, err := readFile(dir + "/cgroup.procs")
	switch {
	case isErrno(err, unix.EOPNOTSUPP):
		procs = "" // a v2 threaded group: its processes are its parent's
	case isErrno(err, unix.ENOENT):
		return nil
	case err != nil:
		return err
	}
	for _, f := range strings.Fields(procs) {
		var pid int
		if _, err := fmt.Sscan(f, &pid); err == nil && pid > 0 {
			_ = syscall.Kill(pid, sig) // ESRCH: already gone
		}
	}
	subs, err := subdirs(dir)
	if err != nil {
		return nil
	}
	for _, s := range subs {
		if err := signalTree(dir+"/"+s, sig); err != nil {
			return err
		}
	}
	return nil
}
