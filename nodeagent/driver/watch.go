package driver

import (
	"context"
	"errors"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corral-dev/corral/cgroupdriver"
)

// watch starts watching the instance: a goroutine waits for the main
// process to end, and the host's log check (logcaps.go) keeps the log under
// its cap. pidfd is a non-blocking pidfd of the main process, or -1 when it
// has already ended.
func (i *Instance) watch(pidfd int) {
	if pidfd < 0 {
		i.finish(ExitStatus{Code: -1, Err: ErrExitUnknown})
		return
	}
	i.pidf = os.NewFile(uintptr(pidfd), "pidfd")
	i.wg.Add(1)
	go i.waitExit()
	i.caps.add(i)
}

// waitExit blocks in the runtime's poller until the pidfd turns readable
// (the process ended) or Release sets a deadline.
func (i *Instance) waitExit() {
	defer i.wg.Done()
	rc, err := i.pidf.SyscallConn()
	if err != nil {
		i.log.Error("watch guest", "err", err)
		return
	}
	exited := false
	err = rc.Read(func(fd uintptr) bool {
		exited = pidfdExited(int(fd))
		return exited
	})
	if !exited {
		// Released, or a pidfd the poller refused: poll instead.
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			exited = i.pollExit(rc)
		}
		if !exited {
			i.closePidfd()
			return
		}
	}
	status := ExitStatus{Code: -1, Err: ErrExitUnknown}
	_ = rc.Control(func(fd uintptr) {
		code, sig, child, err := reapPidfd(int(fd))
		if err != nil {
			i.log.Warn("reap guest", "err", err)
		}
		if child {
			status = ExitStatus{Code: code, Signal: sig}
		}
	})
	i.closePidfd()
	i.finish(status)
}

// pollExit is the fallback for a kernel whose pidfds cannot be polled by
// the runtime: check every 10ms until the process ends or the instance is
// released.
func (i *Instance) pollExit(rc syscall.RawConn) bool {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		exited := false
		_ = rc.Control(func(fd uintptr) { exited = pidfdExited(int(fd)) })
		if exited {
			return true
		}
		select {
		case <-i.release:
			return false
		case <-t.C:
		}
	}
}

// finish completes the status (OOM, QEMU's shutdown reason), cleans what
// the guest left in its groups, records the status and closes Done.
func (i *Instance) finish(s ExitStatus) {
	if i.qmp != nil {
		s.Detail = i.qmp.shutdownReason(200 * time.Millisecond)
	}
	if st, err := i.cg.Stats(i.guest); err == nil {
		s.OOMKilled = oomKilled(s, i.rec.OOMKills, st.Memory.Events.OOMKill)
	}
	if i.guest.Kind == cgroupdriver.KindProcess {
		// The guest is its main process: children it left behind (even in
		// other process groups) go with it.
		i.sweepGroup()
	}
	if i.caps.remove(i) {
		i.trim() // what the guest wrote since the last check
	}
	rec := i.rec
	rec.Exit = exitRecordOf(s)
	if err := writeRecord(i.recPath, &rec); err != nil {
		i.log.Warn("record exit", "err", err)
	}
	i.log.Info("guest ended", "status", s.String())
	i.mu.Lock()
	i.status = s
	i.mu.Unlock()
	close(i.done)
}

// sweepGroup kills every process left in the guest's groups: frozen first
// so none can fork or exit and have its pid reused between listing and
// signalling, then thawed so the signals land.
func (i *Instance) sweepGroup() {
	pids, err := i.cg.Pids(i.guest)
	if err != nil || len(pids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	frozen := i.cg.Freeze(ctx, i.guest) == nil
	if pids, err = i.cg.Pids(i.guest); err == nil {
		for _, pid := range pids {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
	if frozen {
		_ = i.cg.Thaw(ctx, i.guest)
	}
}

func (i *Instance) trim() {
	n, err := trimLog(i.rec.LogPath, i.rec.LogMaxBytes)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		i.log.Warn("cap guest log", "err", err)
	}
	if n > 0 {
		i.log.Debug("guest log trimmed", "dropped_bytes", n)
	}
}
