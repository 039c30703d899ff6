package driver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corral-dev/corral/cgroupdriver"
)

// base is what the three drivers share: the start and adopt sequences
// around a kind's own launch step.
type base struct {
	kind cgroupdriver.Kind
	cfg  Config
	log  *slog.Logger
	caps *logCaps // shared by the drivers of a Set
}

func newBase(kind cgroupdriver.Kind, cfg Config) base {
	caps := cfg.caps
	if caps == nil {
		caps = newLogCaps(cfg.LogCheckInterval)
	}
	return base{kind: kind, cfg: cfg, log: cfg.logger().With("driver", string(kind)), caps: caps}
}

// Kind is the kind of guest the driver runs.
func (b *base) Kind() cgroupdriver.Kind { return b.kind }

// launched is what a kind's launch step returns: the started command (not
// waited for) and, for qemu, its QMP client and socket.
type launched struct {
	cmd       *exec.Cmd
	qmp       *QMP
	qmpSocket string
	// consoleSocket is the serial console's socket of a qemu guest.
	consoleSocket string
	hostIf        string // the guest's host-side interface, if any
}

// launchFunc starts the guest's main process in its groups with logf as
// its output. On error it has killed and reaped whatever it started.
type launchFunc func(ctx context.Context, spec *Spec, logf *os.File) (*launched, error)

// createFunc makes a guest's groups in place of [cgroupdriver.Driver.Create]
// (from a spare, say); logf is the guest's output log. abandon, when not
// nil, is called when the start fails after it returned, before the
// groups are removed.
type createFunc func(g cgroupdriver.Guest, logf *os.File) (abandon func(), err error)

// start is the sequence of every Start: check, create (with create, when
// not nil) and fill the groups, launch, record, watch. Any failure undoes
// all of it.
func (b *base) start(ctx context.Context, spec Spec, res cgroupdriver.Resources, create createFunc, launch launchFunc) (*Instance, error) {
	if err := spec.validate(); err != nil {
		return nil, err
	}
	g := spec.Guest
	if g.Kind != b.kind {
		return nil, fmt.Errorf("%w: %s: the %s driver cannot run a %s guest", ErrInvalidSpec, g, b.kind, g.Kind)
	}
	cg := b.cfg.Cgroups
	if err := cg.Validate(res); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidSpec, g, err)
	}
	if err := os.MkdirAll(spec.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("%w: %s: state directory: %w", ErrStart, g, err)
	}
	if err := refuseRunning(&spec); err != nil {
		return nil, err
	}
	if create == nil {
		create = func(g cgroupdriver.Guest, _ *os.File) (func(), error) { return nil, cg.Create(g) }
	}
	logf, err := openLog(spec.logPath())
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrStart, g, err)
	}
	defer logf.Close() // the guest holds its own descriptor
	abandon, err := create(g, logf)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrStart, g, err)
	}
	undo := func(err error) (*Instance, error) {
		if abandon != nil {
			abandon()
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if rerr := cg.Remove(rctx, g); rerr != nil {
			b.log.Error("remove groups after failed start", "guest", g.String(), "err", rerr)
			err = errors.Join(err, rerr)
		}
		_ = removeFiles(spec.recordPath())
		return nil, err
	}
	if _, err := cg.Apply(g, res); err != nil {
		return undo(fmt.Errorf("%w: %s: %w", ErrStart, g, err))
	}
	var oom0 uint64
	if st, err := cg.Stats(g); err == nil {
		oom0 = st.Memory.Events.OOMKill
	}
	l, err := launch(ctx, &spec, logf)
	if err != nil {
		return undo(err)
	}
	pid := l.cmd.Process.Pid
	abort := func(err error) (*Instance, error) {
		killTree(l.cmd, g.Kind)
		if l.qmp != nil {
			l.qmp.Close()
		}
		_ = removeFiles(l.qmpSocket, l.consoleSocket)
		_ = removeHostIf(l.hostIf)
		return undo(fmt.Errorf("%w: %s: %w", ErrStart, g, err))
	}
	// The child is not reaped until the watch reaps it, so the pid cannot
	// have been reused yet.
	fd, err := openPidfd(pid, 0)
	if err != nil {
		return abort(fmt.Errorf("pidfd_open: %w", err))
	}
	rec := &record{
		Version: recordVersion, Guest: g, PID: pid, StartedAt: time.Now().UTC(),
		OOMKills: oom0, QMPSocket: l.qmpSocket, ConsoleSocket: l.consoleSocket, HostIf: l.hostIf, LogPath: spec.logPath(), LogMaxBytes: spec.logMax(),
	}
	if rec.StartTime, err = procStartTime(pid); err == nil {
		rec.BootID, err = bootID()
	}
	if err == nil {
		err = writeRecord(spec.recordPath(), rec)
	}
	if err != nil {
		unix.Close(fd)
		return abort(err)
	}
	_ = l.cmd.Process.Release() // the pidfd watch reaps it
	inst := newInstance(b, rec, spec.recordPath(), false)
	inst.qmp = l.qmp
	inst.watch(fd)
	b.log.Info("guest started", "guest", g.String(), "pid", pid)
	return inst, nil
}

// killTree kills a command that started but must not run, and reaps it.
func killTree(cmd *exec.Cmd, kind cgroupdriver.Kind) {
	if kind == cgroupdriver.KindProcess {
		_ = signalGroup(cmd.Process.Pid, syscall.SIGKILL)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

// refuseRunning fails when the state directory's record names a guest
// process that still runs: a second copy must never start.
func refuseRunning(spec *Spec) error {
	rec, err := readRecord(spec.recordPath())
	if errors.Is(err, ErrNoRecord) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrStart, spec.Guest, err)
	}
	if rec.Exit != nil {
		return nil
	}
	if boot, _ := bootID(); boot != rec.BootID {
		return nil
	}
	fd, err := openPidfd(rec.PID, rec.StartTime)
	if err != nil {
		return nil
	}
	exited := pidfdExited(fd)
	unix.Close(fd)
	if exited {
		return nil
	}
	return fmt.Errorf("%w: %s: pid %d from %s; adopt it", ErrAlreadyRunning, spec.Guest, rec.PID, spec.recordPath())
}

// adopt is the sequence of every Adopt. reattach, when set, returns the
// client of the guest's control channel (QMP), checking it answers when
// the guest is alive.
func (b *base) adopt(ctx context.Context, spec Spec, reattach func(ctx context.Context, rec *record, alive bool) *QMP) (*Instance, error) {
	if err := spec.validate(); err != nil {
		return nil, err
	}
	rec, err := readRecord(spec.recordPath())
	if err != nil {
		return nil, err
	}
	if rec.Guest != spec.Guest {
		return nil, fmt.Errorf("corral: adopt %s: the record in %s is of %s", spec.Guest, spec.StateDir, rec.Guest)
	}
	inst := newInstance(b, rec, spec.recordPath(), true)
	if rec.Exit != nil {
		if reattach != nil {
			inst.qmp = reattach(ctx, rec, false)
		}
		inst.status = rec.Exit.status()
		close(inst.done)
		return inst, nil
	}
	fd := -1
	if boot, err := bootID(); err == nil && boot == rec.BootID {
		fd, err = openPidfd(rec.PID, rec.StartTime)
		if err != nil && err != unix.ESRCH {
			return nil, fmt.Errorf("corral: adopt %s: pidfd_open %d: %w", spec.Guest, rec.PID, err)
		}
		if err != nil {
			fd = -1
		}
	}
	if fd >= 0 {
		// A pid that is not in the guest's groups is not the guest, whatever
		// the record says.
		pids, err := b.cfg.Cgroups.Pids(spec.Guest)
		if (err != nil || !slices.Contains(pids, rec.PID)) && !pidfdExited(fd) {
			unix.Close(fd)
			return nil, fmt.Errorf("corral: adopt %s: pid %d is not in the guest's groups (%v); refusing it", spec.Guest, rec.PID, err)
		}
	}
	if reattach != nil {
		inst.qmp = reattach(ctx, rec, fd >= 0)
	}
	inst.watch(fd)
	b.log.Info("guest adopted", "guest", spec.Guest.String(), "pid", rec.PID, "running", fd >= 0)
	return inst, nil
}
