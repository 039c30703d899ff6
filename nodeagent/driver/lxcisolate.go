package driver

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// What the container init does, as root of the host in the container's
// namespaces, to keep the container from reaching the host: the steps
// libvirt's LXC driver takes, and Docker's defaults where libvirt has
// none. See README "Container isolation".

// Directories of a container's private writable layer in its state
// directory: overlayfs's upper and work directories and the mount point
// of the merged tree (mounted in the container's mount namespace only).
const (
	layerUpper  = "rootfs-upper"
	layerWork   = "rootfs-work"
	layerMerged = "rootfs"
)

// prepareLayer creates the container's layer directories under stateDir
// and returns the overlayfs mount options. The upper directory keeps the
// container's writes across restarts; it goes with the state directory
// when the guest is undefined. The shared rootfs is only ever the
// read-only lower layer.
func prepareLayer(spec *Spec) (opts, merged string, err error) {
	rootfs, stateDir := spec.Rootfs, spec.StateDir
	for _, p := range []string{rootfs, stateDir} {
		if strings.ContainsAny(p, ",:\\") {
			return "", "", fmt.Errorf("%w: %s: path %q holds ',', ':' or '\\', which overlayfs options cannot carry; use a path without them", ErrInvalidSpec, spec.Guest, p)
		}
	}
	upper, work := filepath.Join(stateDir, layerUpper), filepath.Join(stateDir, layerWork)
	merged = filepath.Join(stateDir, layerMerged)
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return "", "", fmt.Errorf("%w: %s: state directory: %w", ErrStart, spec.Guest, err)
	}
	for _, d := range []string{upper, work, merged} {
		if err := os.Mkdir(d, 0o755); err != nil && !os.IsExist(err) {
			return "", "", fmt.Errorf("%w: %s: container layer: %w", ErrStart, spec.Guest, err)
		}
	}
	return "lowerdir=" + rootfs + ",upperdir=" + upper + ",workdir=" + work, merged, nil
}

// roProcPaths are the parts of /proc libvirt's LXC driver makes read-only:
// kernel settings, the magic SysRq key, interrupt and bus settings.
var roProcPaths = []string{"sys", "sysrq-trigger", "irq", "bus"}

// protectProc bind-mounts each of roProcPaths read-only over itself in
// the /proc mounted at proc. One that this kernel lacks is skipped.
func protectProc(proc string) error {
	for _, name := range roProcPaths {
		p := filepath.Join(proc, name)
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		if err := unix.Mount(p, p, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind /proc/%s: %w", name, err)
		}
		if err := unix.Mount("", p, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("make /proc/%s read-only: %w", name, err)
		}
	}
	return nil
}

const linuxCapabilityVersion3 = 0x20080522

// dropCapabilities leaves the calling thread, which must be locked to
// its goroutine and exec the command, with only the capabilities keep
// names (by number) in its bounding, permitted, effective and inheritable
// sets, and none ambient. Root keeps exactly keep across exec: execve
// grants root its bounding set, and no_new_privs caps it at permitted.
func dropCapabilities(keep []int) error {
	last, err := lastCap()
	if err != nil {
		return err
	}
	var set [2]uint32
	for _, c := range keep {
		if c <= last {
			set[c/32] |= 1 << (c % 32)
		}
	}
	for c := 0; c <= last; c++ {
		if set[c/32]&(1<<(c%32)) != 0 {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear the ambient capabilities: %w", err)
	}
	hdr := unix.CapUserHeader{Version: linuxCapabilityVersion3}
	data := [2]unix.CapUserData{
		{Effective: set[0], Permitted: set[0], Inheritable: set[0]},
		{Effective: set[1], Permitted: set[1], Inheritable: set[1]},
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	return nil
}

// lastCap is the highest capability number the running kernel knows.
func lastCap() (int, error) {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n < 0 || n > 63 {
		return 0, fmt.Errorf("/proc/sys/kernel/cap_last_cap says %q", b)
	}
	return n, nil
}

// deniedSyscalls fail with EPERM in a container: loading or unloading
// kernel modules, replacing the kernel, reboot, file handles that walk
// past a mount (the "shocker" escape), swap, process accounting, port
// I/O, the kernel keyring (not namespaced), BPF and perf events.
var deniedSyscalls = []uint32{
	unix.SYS_INIT_MODULE, unix.SYS_FINIT_MODULE, unix.SYS_DELETE_MODULE,
	unix.SYS_KEXEC_LOAD, unix.SYS_KEXEC_FILE_LOAD, unix.SYS_REBOOT,
	unix.SYS_OPEN_BY_HANDLE_AT, unix.SYS_SWAPON, unix.SYS_SWAPOFF, unix.SYS_ACCT,
	unix.SYS_IOPL, unix.SYS_IOPERM, unix.SYS_ADD_KEY, unix.SYS_REQUEST_KEY,
	unix.SYS_KEYCTL, unix.SYS_BPF, unix.SYS_PERF_EVENT_OPEN,
}

// seccompProgram is the container's system call filter, classic BPF over
// struct seccomp_data (nr at 0, arch at 4, args from 16): i386 and x32
// calls, whose numbers differ, are refused whole; each of deniedSyscalls
// gets EPERM; clone and unshare get EPERM when they ask for a new user
// namespace (in which the container's root would get CAP_SYS_ADMIN back
// and could mount); clone3, whose flags sit behind a pointer a filter
// cannot follow, gets ENOSYS so that C libraries fall back to clone.
// Everything else is allowed.
func seccompProgram() []unix.SockFilter {
	const (
		ld   = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq  = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		jge  = unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K
		jset = unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K
		ret  = unix.BPF_RET | unix.BPF_K
		x32  = 0x40000000
	)
	allow := unix.SockFilter{Code: ret, K: unix.SECCOMP_RET_ALLOW}
	eperm := unix.SockFilter{Code: ret, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)}
	enosys := unix.SockFilter{Code: ret, K: unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)}
	p := []unix.SockFilter{
		{Code: ld, K: 4},
		{Code: jeq, K: unix.AUDIT_ARCH_X86_64, Jt: 1},
		eperm,
		{Code: ld, K: 0},
		{Code: jge, K: x32, Jf: 1},
		eperm,
		{Code: jeq, K: unix.SYS_CLONE3, Jf: 1},
		enosys,
	}
	for _, nr := range []uint32{unix.SYS_CLONE, unix.SYS_UNSHARE} {
		p = append(p,
			unix.SockFilter{Code: jeq, K: nr, Jf: 4},
			unix.SockFilter{Code: ld, K: 16}, // low half of args[0]: the flags
			unix.SockFilter{Code: jset, K: unix.CLONE_NEWUSER, Jf: 1},
			eperm,
			allow,
		)
	}
	for _, nr := range deniedSyscalls {
		p = append(p, unix.SockFilter{Code: jeq, K: nr, Jf: 1}, eperm)
	}
	return append(p, allow)
}

// installSeccomp sets no_new_privs and loads the filter on the calling
// thread, which must then exec the command.
func installSeccomp() error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	prog := seccompProgram()
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.Prctl(unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&fprog)), 0, 0); err != nil {
		return fmt.Errorf("load the seccomp filter: %w", err)
	}
	return nil
}
