package driver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
)

// Instance is one run of a guest, started or adopted by a [Driver]. Its
// methods may be called from any goroutine. It watches the guest's main
// process through a pidfd (so signals never reach a process that reused
// the pid) and, once it ends, records the [ExitStatus] in the state record
// and closes Done.
type Instance struct {
	cg      *cgroupdriver.Driver
	log     *slog.Logger
	guest   cgroupdriver.Guest
	rec     record // immutable copy of the record as started
	recPath string
	adopted bool
	qmp     *QMP // qemu only
	// pidf is the pidfd of the main process, registered with the runtime
	// poller; nil when the guest had already ended when adopted. The
	// watch closes it (under mu) once it has reaped or let go.
	pidf *os.File
	caps *logCaps

	done       chan struct{} // closed once status is set
	release    chan struct{} // closed by Release
	wg         sync.WaitGroup
	mu         sync.Mutex
	status     ExitStatus
	released   bool
	pidfClosed bool
}

func newInstance(b *base, rec *record, recPath string, adopted bool) *Instance {
	return &Instance{
		cg: b.cfg.Cgroups, log: b.log.With("guest", rec.Guest.String()), guest: rec.Guest,
		rec: *rec, recPath: recPath, adopted: adopted, caps: b.caps,
		done: make(chan struct{}), release: make(chan struct{}),
	}
}

// Guest names the guest and its groups.
func (i *Instance) Guest() cgroupdriver.Guest { return i.guest }

// PID is the host pid of the guest's main process: the command of a
// process guest (also its process group), the init of a container, QEMU.
func (i *Instance) PID() int { return i.rec.PID }

// StartedAt is when the driver started the guest.
func (i *Instance) StartedAt() time.Time { return i.rec.StartedAt }

// Adopted reports whether the instance came from [Driver.Adopt].
func (i *Instance) Adopted() bool { return i.adopted }

// LogPath is the guest's size-capped output log. The guest appends to it
// directly; when it grows past its cap its oldest part is cut (see
// logcap.go), so the file shrinks from the front: a reader following it
// that finds the size below its offset starts again from 0, as tail -F
// does after a truncation.
func (i *Instance) LogPath() string { return i.rec.LogPath }

// Cgroups lists the guest's group directories, one per hierarchy.
func (i *Instance) Cgroups() []string {
	p, _ := i.cg.Paths(i.guest)
	return p
}

// QMP is the QMP client of a qemu guest (it connects on use), nil for the
// other kinds.
func (i *Instance) QMP() *QMP { return i.qmp }

// Done is closed once the guest has ended and its status is known.
func (i *Instance) Done() <-chan struct{} { return i.done }

// Status returns the exit status, and whether the guest has ended.
func (i *Instance) Status() (ExitStatus, bool) {
	select {
	case <-i.done:
		i.mu.Lock()
		defer i.mu.Unlock()
		return i.status, true
	default:
		return ExitStatus{}, false
	}
}

// Wait blocks until the guest ends, ctx is done, or the instance is
// released.
func (i *Instance) Wait(ctx context.Context) (ExitStatus, error) {
	select {
	case <-i.done:
		s, _ := i.Status()
		return s, nil
	case <-i.release:
		return ExitStatus{}, ErrReleased
	case <-ctx.Done():
		return ExitStatus{}, ctx.Err()
	}
}

// signal sends sig to the main process through its pidfd.
func (i *Instance) signal(sig syscall.Signal) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.pidf == nil || i.pidfClosed {
		return ErrExited
	}
	rc, err := i.pidf.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = signalPidfd(int(fd), sig) }); err != nil {
		return err
	}
	return serr
}

// closePidfd closes the pidfd; signals fail with ErrExited from then on.
func (i *Instance) closePidfd() {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.pidfClosed = true
	i.pidf.Close()
}

func (i *Instance) checkLive() error {
	i.mu.Lock()
	released := i.released
	i.mu.Unlock()
	if released {
		return ErrReleased
	}
	if _, ended := i.Status(); ended {
		return ErrExited
	}
	return nil
}

// Stop ends the guest gracefully and waits for it: SIGTERM to a process
// guest's process group or to a container's init (an init without a
// handler ignores it, as PID 1 does), system_powerdown to a qemu guest.
// When the guest has not ended after timeout it is killed (qemu: QMP quit,
// then SIGKILL). A suspended guest is resumed first so it can act on the
// request. Stop returns the exit status, or ctx's error when even the
// killed guest has not ended in time.
func (i *Instance) Stop(ctx context.Context, timeout time.Duration) (ExitStatus, error) {
	if err := i.checkLive(); err != nil {
		if errors.Is(err, ErrExited) {
			s, _ := i.Status()
			return s, nil
		}
		return ExitStatus{}, err
	}
	// A frozen guest cannot act on SIGTERM or the power button.
	if err := i.Resume(ctx); err != nil && !errors.Is(err, ErrExited) {
		i.log.Warn("resume before stop", "err", err)
	}
	if err := i.terminate(ctx); err != nil && !errors.Is(err, ErrExited) {
		i.log.Warn("graceful stop", "err", err)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-i.done:
		s, _ := i.Status()
		return s, nil
	case <-ctx.Done():
	case <-t.C:
	}
	i.log.Info("guest did not stop in time, killing it", "timeout", timeout)
	if err := i.forceStop(ctx); err != nil && !errors.Is(err, ErrExited) {
		return ExitStatus{}, err
	}
	return i.Wait(ctx)
}

// Kill sends SIGKILL to the guest (the whole process group of a process
// guest) and thaws it, since a task frozen by the v1 freezer does not die
// until thawed. It does not wait; see [Instance.Wait].
func (i *Instance) Kill() error {
	if err := i.checkLive(); err != nil {
		return err
	}
	err := i.kill()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Without a freezer nothing can be frozen: only other failures count.
	if terr := i.cg.Thaw(ctx, i.guest); terr != nil && err == nil && !errors.Is(terr, cgroupdriver.ErrControllerMissing) {
		err = terr
	}
	return err
}

func (i *Instance) kill() error {
	err := i.signal(syscall.SIGKILL)
	if i.guest.Kind == cgroupdriver.KindProcess {
		// The group outlives its leader while members remain.
		_ = signalGroup(i.rec.PID, syscall.SIGKILL)
	}
	return err
}

// terminate asks the guest to end.
func (i *Instance) terminate(ctx context.Context) error {
	switch i.guest.Kind {
	case cgroupdriver.KindProcess:
		return signalGroup(i.rec.PID, syscall.SIGTERM)
	case cgroupdriver.KindQEMU:
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if err := i.qmp.Powerdown(qctx); err != nil {
			// QEMU ends cleanly on SIGTERM; the guest OS is not asked.
			i.log.Warn("system_powerdown failed, sending SIGTERM to QEMU", "err", err)
			return i.signal(syscall.SIGTERM)
		}
		return nil
	}
	return i.signal(syscall.SIGTERM)
}

// forceStop ends the guest now: QMP quit for qemu (QEMU flushes and
// exits), SIGKILL when that fails or takes longer than a second, SIGKILL
// for the others.
func (i *Instance) forceStop(ctx context.Context) error {
	if i.guest.Kind == cgroupdriver.KindQEMU {
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		err := i.qmp.Quit(qctx)
		if err == nil {
			select {
			case <-i.done:
				cancel()
				return nil
			case <-qctx.Done():
			}
		}
		cancel()
	}
	return i.Kill()
}

// Suspend freezes the guest: its groups' freezer, after QMP stop for
// qemu (so the VM's clocks stop with it and QEMU reports it paused). QEMU
// itself is frozen then: QMP does not answer until [Instance.Resume].
func (i *Instance) Suspend(ctx context.Context) error {
	if err := i.checkLive(); err != nil {
		return err
	}
	if i.qmp != nil {
		if err := i.qmp.Stop(ctx); err != nil {
			return err
		}
	}
	return i.cg.Freeze(ctx, i.guest)
}

// Resume thaws the guest, then continues a qemu VM. Resuming a guest that
// is not suspended is not an error.
func (i *Instance) Resume(ctx context.Context) error {
	if err := i.checkLive(); err != nil {
		return err
	}
	if err := i.cg.Thaw(ctx, i.guest); err != nil {
		return err
	}
	if i.qmp != nil {
		return i.qmp.Cont(ctx)
	}
	return nil
}

// Destroy kills the guest if it still runs, waits for its end, removes its
// groups (killing anything left in them) and its state record and socket.
// The log stays: the agent removes the state directory when the guest is
// undefined. Destroy on a released instance fails with [ErrReleased].
func (i *Instance) Destroy(ctx context.Context) error {
	i.mu.Lock()
	released := i.released
	i.mu.Unlock()
	if released {
		return ErrReleased
	}
	if _, ended := i.Status(); !ended {
		if err := i.Kill(); err != nil && !errors.Is(err, ErrExited) {
			return err
		}
		if _, err := i.Wait(ctx); err != nil {
			return fmt.Errorf("corral: destroy %s: %w", i.guest, err)
		}
	}
	i.wg.Wait()
	if i.qmp != nil {
		i.qmp.Close()
	}
	if err := i.cg.Remove(ctx, i.guest); err != nil {
		return err
	}
	if err := removeHostIf(i.rec.HostIf); err != nil {
		return fmt.Errorf("corral: destroy %s: removing its interface: %w", i.guest, err)
	}
	return removeFiles(i.recPath, i.rec.QMPSocket, i.rec.ConsoleSocket)
}

// Release lets go of the guest without touching it: the watch and the log
// cap stop, descriptors close, the guest keeps running, and its record
// stays for [Driver.Adopt]. This is what an agent that exits for a restart
// does. Stop, Kill, Suspend, Resume, Destroy and Wait fail with
// [ErrReleased] afterwards.
func (i *Instance) Release() {
	i.mu.Lock()
	if i.released {
		i.mu.Unlock()
		return
	}
	i.released = true
	close(i.release)
	i.mu.Unlock()
	i.caps.remove(i)
	if i.pidf != nil {
		// Wakes the watch, which closes the pidfd.
		_ = i.pidf.SetReadDeadline(time.Now())
	}
	i.wg.Wait()
	if i.qmp != nil {
		i.qmp.Close()
	}
}

func removeFiles(paths ...string) error {
	var errs []error
	for _, p := range paths {
		if p == "" {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
