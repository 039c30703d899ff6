package driver

import "errors"

var (
	// ErrUnknownDriver is returned for a driver name other than process,
	// lxc and qemu.
	ErrUnknownDriver = errors.New("corral: unknown driver")

	// ErrDriverUnavailable is returned by [Set.For] for a known driver this
	// host cannot run (for example qemu without qemu-system-x86_64); the
	// error says why.
	ErrDriverUnavailable = errors.New("corral: driver not available on this host")

	// ErrInvalidSpec wraps every refusal of a guest's definition: a missing
	// root file system, an unreadable kernel, a command that does not
	// exist. Nothing is left running and the groups are removed when Start
	// returns it.
	ErrInvalidSpec = errors.New("corral: invalid guest spec")

	// ErrStart wraps a failure to start a valid guest (the host refused a
	// namespace, QEMU exited during start-up, the deadline passed). As with
	// ErrInvalidSpec nothing is left behind.
	ErrStart = errors.New("corral: guest failed to start")

	// ErrAlreadyRunning is returned by [Driver.Start] when the state
	// directory's record names a guest that still runs: adopt it instead of
	// starting a second copy.
	ErrAlreadyRunning = errors.New("corral: guest already running")

	// ErrNoRecord is returned by [Driver.Adopt] when the state directory
	// holds no state record: there is nothing to adopt.
	ErrNoRecord = errors.New("corral: no state record")

	// ErrExitUnknown is the Err of an [ExitStatus] whose exit code and
	// signal cannot be known: the guest was not a child of this process
	// (it was adopted), so only its parent could read them.
	ErrExitUnknown = errors.New("corral: exit status unknown: the guest was not a child of this process")

	// ErrReleased is returned by the methods of an [Instance] after
	// [Instance.Release].
	ErrReleased = errors.New("corral: instance released")

	// ErrExited is returned by operations that need a running guest.
	ErrExited = errors.New("corral: guest has exited")

	// ErrKVMUnusable is returned by [ProbeKVM] when /dev/kvm cannot run
	// guest code at a usable speed.
	ErrKVMUnusable = errors.New("corral: KVM cannot run guests on this host")
)
