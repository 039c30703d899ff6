package nodeagent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// A fencer at rest sleeps until the lease's deadline instead of polling:
// at rest every wake-up costs a Go process a few context switches, which
// on a virtual machine is a good part of the agent's whole budget, and a
// lease the agent renews every heartbeat only moves later. What could
// make it run out sooner wakes the fencer too:
//
//	wake         a FIFO the agent writes a byte to when it renews the
//	             lease to an earlier deadline than the one it replaces
//	             (an agent restarted with a shorter fence timeout)
//	inotify      a file of the fence directory removed (the lease, or
//	             all of them: removing the state directory starts there;
//	             the directories' own deletion is reported only once the
//	             fencer's open files in them are closed), the fence or
//	             the state directory moved
//	SIGTERM      StopFencer
//
// The renewals themselves (the lease written in place, or a file made,
// then renamed over it) raise none of the events watched, so a fencer at
// rest wakes once per fence timeout less a heartbeat, not once per poll.
const wakeFile = "wake"

// leaseWaiter is what the fencer sleeps on: a CLOCK_BOOTTIME timer set to
// an absolute time (the lease's clock: a suspended host's deadline passes
// while it sleeps), the wake FIFO, an inotify watch and a stop eventfd,
// in one epoll set. The fencer's goroutine blocks in epoll_wait.
type leaseWaiter struct {
	ep, timer, fifo, ino, stop int
}

// newLeaseWaiter sets up the waiter for the fence directory dir below
// stateDir. The fencer calls it before it first reads the lease, so that
// nothing written after that read goes unnoticed.
func newLeaseWaiter(stateDir, dir string) (*leaseWaiter, error) {
	w := &leaseWaiter{ep: -1, timer: -1, fifo: -1, ino: -1, stop: -1}
	ok := false
	defer func() {
		if !ok {
			w.Close()
		}
	}()
	var err error
	if w.ep, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("corral: epoll: %w", err)
	}
	if w.timer, err = unix.TimerfdCreate(unix.CLOCK_BOOTTIME, unix.TFD_CLOEXEC|unix.TFD_NONBLOCK); err != nil {
		return nil, fmt.Errorf("corral: timerfd: %w", err)
	}
	if w.stop, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return nil, fmt.Errorf("corral: eventfd: %w", err)
	}
	if w.fifo, err = openWakeFIFO(filepath.Join(dir, wakeFile)); err != nil {
		return nil, err
	}
	if w.ino, err = unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK); err != nil {
		return nil, fmt.Errorf("corral: inotify: %w", err)
	}
	for _, watch := range []struct {
		path string
		mask uint32
	}{
		{dir, unix.IN_DELETE | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF},
		{stateDir, unix.IN_DELETE_SELF | unix.IN_MOVE_SELF},
	} {
		if _, err := unix.InotifyAddWatch(w.ino, watch.path, watch.mask); err != nil {
			return nil, fmt.Errorf("corral: watching %s: %w", watch.path, err)
		}
	}
	for _, fd := range []int{w.timer, w.stop, w.fifo, w.ino} {
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
		if err := unix.EpollCtl(w.ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			return nil, fmt.Errorf("corral: epoll_ctl: %w", err)
		}
	}
	ok = true
	return w, nil
}

// openWakeFIFO makes the wake FIFO (replacing anything else by its name)
// and opens it for reading. Read-write: with the fencer itself holding a
// writer, the FIFO never reports the end of a writer that came and went.
func openWakeFIFO(path string) (int, error) {
	if st, err := os.Lstat(path); err == nil && st.Mode()&os.ModeNamedPipe == 0 {
		os.Remove(path)
	}
	if err := unix.Mkfifo(path, 0o600); err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, fmt.Errorf("corral: the fencer's wake FIFO: %w", err)
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("corral: the fencer's wake FIFO: %w", err)
	}
	return fd, nil
}

// wait sleeps until the CLOCK_BOOTTIME time at (nanoseconds), or until
// something wakes the fencer sooner (Stop among them).
func (w *leaseWaiter) wait(at int64) error {
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(max(at, 1))}
	if err := unix.TimerfdSettime(w.timer, unix.TFD_TIMER_ABSTIME, &spec, nil); err != nil {
		return fmt.Errorf("corral: timerfd_settime: %w", err)
	}
	var evs [4]unix.EpollEvent
	for {
		n, err := unix.EpollWait(w.ep, evs[:], -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("corral: epoll_wait: %w", err)
		}
		var buf [4096]byte
		for _, ev := range evs[:n] {
			if int(ev.Fd) == w.stop {
				continue // stays set: every later wait returns at once
			}
			// Drained, so that what woke the fencer once does not again.
			for {
				if _, err := unix.Read(int(ev.Fd), buf[:]); err != nil {
					break
				}
			}
		}
		return nil
	}
}

// Stop wakes the waiting fencer for good. Any goroutine may call it.
func (w *leaseWaiter) Stop() {
	unix.Write(w.stop, []byte{1, 0, 0, 0, 0, 0, 0, 0}) // any non-zero counter will do
}

func (w *leaseWaiter) Close() {
	for _, fd := range []int{w.ep, w.timer, w.fifo, w.ino, w.stop} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// wakeFencer wakes the fencer guarding the fence directory dir, if one
// waits, so that it reads the lease again now. It never blocks.
func wakeFencer(dir string) {
	fd, err := unix.Open(filepath.Join(dir, wakeFile), unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return // ENXIO: no fencer has it open; one that starts reads the lease
	}
	unix.Write(fd, []byte{1}) // EAGAIN: full, so it has been woken already
	unix.Close(fd)
}
