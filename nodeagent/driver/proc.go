package driver

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// procStartTime returns field 22 of /proc/PID/stat: when the process
// started, in clock ticks after boot. With the boot id it tells a process
// from a later one that got the same pid.
func procStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and parentheses: fields
	// are counted after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("corral: /proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); field 22 is f[19].
	if len(f) < 20 {
		return 0, fmt.Errorf("corral: /proc/%d/stat: %d fields", pid, len(f)+2)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// bootID identifies the running kernel: a record from before a reboot
// names processes that are gone.
func bootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b)), err
}

// openPidfd returns a non-blocking pidfd for pid and checks that the
// process it refers to started at startTime (0: do not check). Checking
// after opening closes the window in which the pid could be reused: the
// pidfd refers to one process for good.
func openPidfd(pid int, startTime uint64) (int, error) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return -1, err
	}
	if startTime != 0 {
		st, err := procStartTime(pid)
		if err != nil || st != startTime {
			unix.Close(fd)
			return -1, unix.ESRCH
		}
	}
	return fd, nil
}

// pidfdExited reports whether the process behind fd has exited (the pidfd
// polls readable once it has).
func pidfdExited(fd int) bool {
	p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(p, 0)
	return err == nil && n > 0
}

// siginfoChild is the part of siginfo_t that waitid fills for a child on
// x86_64 and arm64: signo, errno, code, padding, pid, uid, status.
type siginfoChild struct {
	Signo, Errno, Code, _ int32
	Pid, UID, Status      int32
	_                     [100]byte
}

// reapPidfd collects the exit status of the process behind fd when it is a
// child of this process. ok is false when it is not (ECHILD): then only
// its parent could have read the status.
func reapPidfd(fd int) (code int, sig syscall.Signal, ok bool, err error) {
	var si siginfoChild
	for {
		_, _, e := unix.Syscall6(unix.SYS_WAITID, unix.P_PIDFD, uintptr(fd), uintptr(unsafe.Pointer(&si)), unix.WEXITED|unix.WNOHANG, 0, 0)
		switch e {
		case 0:
		case unix.EINTR:
			continue
		case unix.ECHILD:
			return 0, 0, false, nil
		default:
			return 0, 0, false, e
		}
		break
	}
	switch si.Code {
	case 1: // CLD_EXITED
		return int(si.Status), 0, true, nil
	case 2, 3: // CLD_KILLED, CLD_DUMPED
		return -1, syscall.Signal(si.Status), true, nil
	}
	// WNOHANG and not yet exited: si was left zero.
	return 0, 0, false, errors.New("corral: waitid: process has not exited")
}

func sigOf(n int) syscall.Signal { return syscall.Signal(n) }

// signalPidfd sends sig through the pidfd, so it reaches this process and
// never one that reused its pid. A process that is already gone is not an
// error.
func signalPidfd(fd int, sig syscall.Signal) error {
	err := unix.PidfdSendSignal(fd, sig, nil, 0)
	if err == unix.ESRCH {
		return nil
	}
	return err
}

// signalGroup sends sig to process group pgid; a group with no process
// left is not an error.
func signalGroup(pgid int, sig syscall.Signal) error {
	if pgid <= 1 {
		return fmt.Errorf("corral: refusing to signal process group %d", pgid)
	}
	err := unix.Kill(-pgid, sig)
	if err == unix.ESRCH {
		return nil
	}
	return err
}

// kernelRelease is uname -r.
func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}
