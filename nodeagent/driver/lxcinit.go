package driver

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Classes of init failure, the prefix of what the init reports: the
// guest's definition is at fault (no such command), or the host is.
const (
	initErrSpec  = "spec"
	initErrStart = "start"
)

// errNoGoAhead is what the init says when the driver gave no go-ahead.
const errNoGoAhead = "the driver gave no go-ahead (the container's network or groups were not made)"

// RunInitIfRequested must be called first thing in main, right after
// [cgroupdriver.RunShimIfRequested], in every binary that starts lxc
// guests (and in TestMain of tests that do). In an ordinary run it returns
// at once. In a process started as a container init it sets the container
// up (cgroup namespace, private layer, mounts, /dev, host name,
// pivot_root, lo), gives up what a container must not have (capabilities,
// system calls), execs the guest's command as PID 1 and never returns.
func RunInitIfRequested() {
	v, ok := syscall.Getenv(initEnv)
	if !ok {
		return
	}
	// The cgroup namespace, capabilities, no_new_privs and the seccomp
	// filter are a thread's: the thread that sets them must be the one
	// that execs.
	runtime.LockOSThread()
	pin := pinToOneCPU()
	var req initRequest
	fail := func(class string, err error) {
		f := os.NewFile(uintptr(req.ErrFD), "corral-init-err")
		if f == nil || req.ErrFD < 3 {
			f = os.Stderr
		}
		fmt.Fprintf(f, "%s: container init: %v", class, err)
		os.Exit(initExitCode)
	}
	loUp := false
	var filtered bool // the seccomp filter is in place, or filterErr says why not
	var filterErr error
	if v == spareEnv {
		// The spare's network namespace becomes the container's: its lo
		// can come up before the container is known. Should that fail,
		// the setup tries again and says why. The system call filter
		// (and no_new_privs) is every container's and denies nothing the
		// setup calls: it is loaded while the spare waits, as the
		// request's decoder is built; loading it, the kernel compiles
		// it, a few hundred microseconds of a start otherwise.
		loUp = loopbackUp() == nil
		filterErr, filtered = installSeccomp(), true
		_ = json.Unmarshal([]byte("{}"), new(initRequest))
		if err := receiveSpareRequest(&req); err != nil {
			fail(initErrStart, fmt.Errorf("spare init: %w", err))
		}
	} else if err := json.Unmarshal([]byte(v), &req); err != nil {
		fail(initErrStart, fmt.Errorf("bad %s: %w", initEnv, err))
	}
	if req.ErrFD >= 3 {
		syscall.CloseOnExec(req.ErrFD)
	}
	if len(req.Argv) == 0 {
		fail(initErrSpec, errors.New("no command"))
	}
	if err := setupContainer(&req, loUp); err != nil {
		fail(initErrStart, err)
	}
	if req.GoFD >= 3 {
		// The driver writes one byte once eth0 is in place and this
		// process is in every group of the container's, filled.
		f := os.NewFile(uintptr(req.GoFD), "corral-init-go")
		var b [1]byte
		if n, err := f.Read(b[:]); n != 1 {
			fail(initErrStart, fmt.Errorf("%s: %v", errNoGoAhead, err))
		}
		f.Close()
	}
	if !req.UserNS {
		// The container's own groups, which the entry shim, the clone or
		// the spare's claim put this process in, become its cgroup root.
		if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
			fail(initErrStart, fmt.Errorf("unshare the cgroup namespace: %w", err))
		}
	}
	path, err := lookPathIn(req.Argv[0], req.Env)
	if err != nil {
		fail(initErrSpec, err)
	}
	if err := pin.restore(); err != nil {
		fail(initErrStart, fmt.Errorf("give the command the init's CPU affinity back: %w", err))
	}
	if err := dropCapabilities(req.Caps); err != nil {
		fail(initErrStart, err)
	}
	if !filtered {
		filterErr = installSeccomp()
	}
	if filterErr != nil {
		fail(initErrStart, filterErr)
	}
	err = syscall.Exec(path, req.Argv, req.Env)
	class := initErrStart
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.ENOEXEC) {
		class = initErrSpec
	}
	fail(class, fmt.Errorf("exec %s: %w", path, err))
}

// setupContainer builds the container's file system view and identity,
// and brings lo up unless loUp says it is. It runs in the new namespaces,
// as root of the host.
func setupContainer(req *initRequest, loUp bool) error {
	step := func(what string, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
	root := req.Merged
	if req.UserNS {
		// The same steps as below, as the user namespace's root.
		r, err := enterUserNS(req)
		if err != nil {
			return err
		}
		root = r
	} else {
		// Nothing mounted from here on propagates back to the host.
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			return step("make / private", err)
		}
		// The shared rootfs is the read-only lower layer; the container
		// writes to its own upper layer.
		if err := unix.Mount("overlay", root, "overlay", 0, req.Overlay); err != nil {
			return step("mount the container's layer over rootfs "+req.Rootfs+" ("+req.Overlay+")", err)
		}
	}
	in := func(p string) string { return filepath.Join(root, p) }
	if err := mkdirMount("proc", in("proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return err
	}
	if err := protectProc(in("proc")); err != nil {
		return err
	}
	if st, err := os.Stat(in("sys")); err == nil && st.IsDir() {
		if err := mkdirMount("sysfs", in("sys"), "sysfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return err
		}
	}
	if err := setupDev(in("dev"), req); err != nil {
		return err
	}
	if err := unix.Sethostname([]byte(req.Hostname)); err != nil {
		return step("sethostname", err)
	}
	// pivot_root(".", ".") stacks the old root on top of the new one;
	// detaching it leaves only the container's tree.
	if err := unix.Chdir(root); err != nil {
		return step("chdir rootfs", err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return step("pivot_root", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return step("detach the host's root", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return step("chdir /", err)
	}
	if loUp {
		return nil
	}
	return step("bring up lo", loopbackUp())
}

func mkdirMount(source, target, fstype string, flags uintptr, data string) error {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("mkdir %s: %w", target, err)
	}
	if err := unix.Mount(source, target, fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s on %s: %w", fstype, target, err)
	}
	return nil
}

// setupDev mounts a tmpfs on dev and fills it with the allowed nodes,
// bind-mounted from the host (mknod would need the "m" access the device
// ACL does not give, and this process is already in the guest's groups).
func setupDev(dev string, req *initRequest) error {
	if err := mkdirMount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=755,size=65536"); err != nil {
		return err
	}
	for _, n := range req.Devices {
		target := filepath.Join(dev, n.Name)
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return fmt.Errorf("create %s: %w", filepath.Dir(target), err)
		}
		f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY, 0o666)
		if err != nil {
			return fmt.Errorf("create %s: %w", target, err)
		}
		f.Close()
		if err := unix.Mount("/dev/"+n.Name, target, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind-mount /dev/%s: %w", n.Name, err)
		}
	}
	if req.PTS {
		if err := mkdirMount("devpts", filepath.Join(dev, "pts"), "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"); err != nil {
			return err
		}
		if err := os.Symlink("pts/ptmx", filepath.Join(dev, "ptmx")); err != nil {
			return err
		}
	}
	if err := mkdirMount("shm", filepath.Join(dev, "shm"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"); err != nil {
		return err
	}
	for name, target := range map[string]string{
		"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2",
	} {
		if err := os.Symlink(target, filepath.Join(dev, name)); err != nil {
			return err
		}
	}
	return nil
}

// loopbackUp sets IFF_UP on lo, the only interface of a new network
// namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// lookPathIn resolves name in the PATH of env, inside the container's
// root (this process has pivoted into it).
func lookPathIn(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	path := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("command %q: no executable of that name in the container's PATH (%s)", name, path)
}
