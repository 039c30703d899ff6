package cgroupdriver

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Reclaim presses a guest's memory down to a size: the stick of the
// balloon, for a guest that did not give memory back by itself.
//
// On cgroup v1 the memory.limit_in_bytes of the guest's group is lowered
// to the size and then set back to what it was: the kernel reclaims from
// the group while the write runs and, when it cannot reach the size (the
// rest is anonymous memory and there is no swap), fails the write with
// EBUSY rather than OOM-killing anything. While the limit is low the
// group's OOM killer is disabled (memory.oom_control), so a task that
// allocates in that window waits instead of being killed; both are put back
// before Reclaim returns. The press is one shot: a guest that allocates
// again keeps its hard limit, and the balloon watch reports it again.
//
// On cgroup v2 the amount above the size is written to memory.reclaim
// (Linux 5.19 and later), which fails with EAGAIN when the kernel could not
// reclaim all of it; no limit changes.

// ErrNoReclaim is returned by [Driver.Reclaim] on a host that cannot
// reclaim a group's memory on demand.
var ErrNoReclaim = errors.New("corral: this host cannot reclaim a guest's memory on demand: it needs the memory controller, and on cgroup v2 memory.reclaim (Linux 5.19 or later)")

// ErrReclaimShort is wrapped by [Reclaimed.Err] when the kernel could not
// reclaim down to the size asked.
var ErrReclaimShort = errors.New("corral: the kernel could not reclaim the guest's memory down to the size asked (what is left is in use, or there is no swap for it)")

// Reclaimed is what one [Driver.Reclaim] did: the group's memory usage
// before and after, and Err (wrapping [ErrReclaimShort] with the kernel's
// error) when it stayed above the size.
type Reclaimed struct {
	Before, After uint64
	Err           error
}

// Freed is how far the usage fell, 0 when it rose meanwhile.
func (r Reclaimed) Freed() uint64 {
	if r.After >= r.Before {
		return 0
	}
	return r.Before - r.After
}

// Reclaim presses g's memory down towards size bytes, as described above.
// An error means Reclaim could not work on g's group (or, on v1, could not
// put its limits back: the agent's drift repair then rewrites them); the
// kernel falling short of size is Reclaimed.Err, not an error.
func (d *Driver) Reclaim(g Guest, size int64) (Reclaimed, error) {
	if err := g.Validate(); err != nil {
		return Reclaimed{}, err
	}
	if size <= 0 {
		return Reclaimed{}, fmt.Errorf("corral: reclaim %s to %d bytes: give a positive size", g, size)
	}
	i, v := d.l.at(cMemory)
	if i < 0 {
		return Reclaimed{}, fmt.Errorf("%w (%s)", ErrNoReclaim, g)
	}
	dir := d.l.guestDir(i, g)
	usageFile := "/memory.usage_in_bytes"
	if v == 2 {
		usageFile = "/memory.current"
	}
	usage := func() (uint64, error) { return readUint(dir + usageFile) }
	var r Reclaimed
	var err error
	if r.Before, err = usage(); err != nil {
		return r, fmt.Errorf("corral: reclaim %s: %w", g, err)
	}
	r.After = r.Before
	if r.Before <= uint64(size) {
		return r, nil
	}
	if v == 2 {
		err = reclaimV2(dir, r.Before-uint64(size))
	} else {
		err = pressV1(dir, size)
	}
	var short *shortError
	switch {
	case errors.As(err, &short):
		r.Err = fmt.Errorf("%w: %v", ErrReclaimShort, short.err)
	case errors.Is(err, unix.ENOENT) && v == 2:
		return r, fmt.Errorf("%w (%s: %v)", ErrNoReclaim, g, err)
	case err != nil:
		return r, fmt.Errorf("corral: reclaim %s: %w", g, err)
	}
	if r.After, err = usage(); err != nil {
		return r, fmt.Errorf("corral: reclaim %s: %w", g, err)
	}
	return r, nil
}

// shortError is the kernel's refusal to reclaim down to the size.
type shortError struct{ err error }

func (e *shortError) Error() string { return e.err.Error() }

// reclaimV2 asks the kernel to reclaim n bytes from the group in dir.
func reclaimV2(dir string, n uint64) error {
	err := writeFile(dir+"/memory.reclaim", strconv.FormatUint(n, 10))
	if isErrno(err, unix.EAGAIN) {
		return &shortError{err}
	}
	return err
}

// pressV1 lowers the v1 group in dir to size bytes with its OOM killer
// held off, then puts its limit and OOM killer back.
func pressV1(dir string, size int64) (err error) {
	limitFile, oomFile := dir+"/memory.limit_in_bytes", dir+"/memory.oom_control"
	limit, err := readFile(limitFile)
	if err != nil {
		return err
	}
	if n, perr := strconv.ParseInt(limit, 10, 64); perr == nil && n <= size {
		return nil // the hard limit is already at or below the size
	}
	oom, err := readFile(oomFile)
	if err != nil {
		return err
	}
	wasDisabled := strings.Contains(oom, "oom_kill_disable 1")
	if !wasDisabled {
		if err := writeFile(oomFile, "1"); err != nil {
			return err
		}
		defer func() {
			if e := writeFile(oomFile, "0"); e != nil && err == nil {
				err = fmt.Errorf("putting the OOM killer back: %w", e)
			}
		}()
	}
	press := writeFile(limitFile, strconv.FormatInt(size, 10))
	if press == nil || isErrno(press, unix.EBUSY) {
		// Back to the hard limit the group had; the press succeeded or
		// the kernel reclaimed what it could.
		if err := writeFile(limitFile, limit); err != nil {
			return fmt.Errorf("putting the hard limit %s back: %w", limit, err)
		}
	}
	switch {
	case isErrno(press, unix.EBUSY):
		return &shortError{press}
	case press != nil:
		return press
	}
	return nil
}
