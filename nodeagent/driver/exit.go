package driver

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/corral-dev/corral/events"
)

// ExitStatus says how a guest ended.
type ExitStatus struct {
	// Code is the exit code of the guest's main process (the command, the
	// container's init, QEMU), or -1 when it was killed by a signal or the
	// code is unknown.
	Code int
	// Signal is the signal that killed the main process, or 0.
	Signal syscall.Signal
	// OOMKilled is set when the kernel's OOM killer acted in the guest's
	// memory group during this run (its oom_kill counter rose) and the main
	// process died of SIGKILL, exited 137 as shells do for a killed child,
	// or ended with an unknown status.
	OOMKilled bool
	// Detail adds what else is known: for qemu the reason QEMU gave in its
	// last SHUTDOWN event ("guest-shutdown", "host-qmp-quit", ...).
	Detail string
	// Err is why Code and Signal are incomplete, or nil. [ErrExitUnknown]
	// when the guest was adopted: only its parent, the agent process that
	// started it, could read them.
	Err error
}

func (s ExitStatus) String() string {
	var out string
	switch {
	case s.Err != nil:
		out = "exit status unknown"
	case s.Signal != 0:
		out = "killed by " + unix.SignalName(s.Signal)
	default:
		out = fmt.Sprintf("exited with code %d", s.Code)
	}
	if s.OOMKilled {
		out += ", OOM-killed"
	}
	if s.Detail != "" {
		out += " (" + s.Detail + ")"
	}
	return out
}

// Event is the guest-exited report for s, for the agent to send with its
// node ID and the placement's generation. An unknown status is reported as
// code -1 without a signal; Error stays empty (it means "could not start").
func (s ExitStatus) Event(node string, generation uint64) *events.GuestExited {
	e := &events.GuestExited{Node: node, Generation: generation, Code: s.Code, OOMKilled: s.OOMKilled}
	if s.Signal != 0 {
		e.Signal = unix.SignalName(s.Signal)
	}
	return e
}

// oomKilled applies the rule documented on ExitStatus.OOMKilled.
func oomKilled(s ExitStatus, before, after uint64) bool {
	if after <= before {
		return false
	}
	return s.Signal == syscall.SIGKILL || s.Code == 128+int(syscall.SIGKILL) || s.Err != nil
}
