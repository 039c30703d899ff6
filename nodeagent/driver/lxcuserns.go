package driver

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/events"
)

// A container with an id map ([Spec.IDMap]) gets its own user namespace,
// which owns its other namespaces: its root is an unprivileged host id
// (100000 by default) whose capabilities count only inside. What needs the
// host's privileges is done by the agent, around the clone:
//
//   - the agent clones the init with CLONE_NEWUSER and the others, writes
//     the map (os/exec does, before the child runs on), and the child
//     keeps the agent's ids (host root, as an owner of the state
//     directory) with every capability of the new namespace, ambient so
//     that they survive the exec of this binary;
//   - the init waits on its control socket while the agent writes its pid
//     into every group's cgroup.procs (the namespace's root may not), and
//     makes an idmapped mount of the shared rootfs for the namespace
//     (open_tree, mount_setattr MOUNT_ATTR_IDMAP: only the host's root
//     may) and passes it over the socket;
//   - the init opens its layer's directories, becomes the namespace's
//     root (host id 100000, the owner of its upper layer) and mounts the
//     rest as that: the idmapped rootfs, read-only, below its overlayfs
//     (userxattr), /proc, /sys, /dev; then as without a user namespace.
//
// The rootfs's files owned by the host's root are the container's root's
// through the idmapped mount, the shared tree itself is never written,
// and what the container writes to its layer belongs to the mapped ids on
// the host. The command is PID 1.
//
// Unlike a start through the entry shim, the init's own start-up (the Go
// runtime of this binary, before it waits) runs in the agent's groups:
// os/exec offers no hook between writing the map and the exec. Nothing of
// the guest's runs before the init is in its groups; on cgroup v1 the few
// pages the init touched before that stay charged to the agent.

// layerLower is where, in the container's mount namespace only, the
// idmapped rootfs is attached for overlayfs.
const layerLower = "rootfs-lower"

// userNSStart is the agent's half of a user-namespaced container start.
type userNSStart struct {
	ctl   *os.File // the agent's end of the init's control socket
	child *os.File // the init's end, its fd req.CtlFD
}

// prepareUserNS sets cmd up to be cloned into a user namespace with
// spec's map, hands the layer to the container's root and fills req's
// user namespace fields. cmd.ExtraFiles get the init's control socket.
func prepareUserNS(cmd *exec.Cmd, spec *Spec, req *initRequest) (*userNSStart, error) {
	g := spec.Guest
	if err := events.ValidateIDMap(spec.IDMap); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidSpec, g, err)
	}
	rootID, _ := events.HostID(spec.IDMap, 0)
	for _, d := range []string{layerUpper, layerWork} {
		if err := os.Lchown(filepath.Join(spec.StateDir, d), int(rootID), int(rootID)); err != nil {
			return nil, fmt.Errorf("%w: %s: hand the container layer to its root: %w", ErrStart, g, err)
		}
	}
	lower := filepath.Join(spec.StateDir, layerLower)
	if err := os.Mkdir(lower, 0o755); err != nil && !os.IsExist(err) {
		return nil, fmt.Errorf("%w: %s: container layer: %w", ErrStart, g, err)
	}
	last, err := lastCap()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrStart, g, err)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: control socket: %w", ErrStart, g, err)
	}
	u := &userNSStart{ctl: os.NewFile(uintptr(fds[0]), "corral-init-ctl"), child: os.NewFile(uintptr(fds[1]), "corral-init-ctl")}
	var ids []syscall.SysProcIDMap
	for _, r := range spec.IDMap {
		ids = append(ids, syscall.SysProcIDMap{ContainerID: int(r.Container), HostID: int(r.Host), Size: int(r.Count)})
	}
	attr := cmd.SysProcAttr
	attr.Cloneflags |= syscall.CLONE_NEWUSER
	attr.UidMappings, attr.GidMappings = ids, ids
	attr.GidMappingsEnableSetgroups = true
	for c := 0; c <= last; c++ {
		attr.AmbientCaps = append(attr.AmbientCaps, uintptr(c))
	}
	cmd.ExtraFiles = append(cmd.ExtraFiles, u.child)
	req.UserNS = true
	req.CtlFD = 2 + len(cmd.ExtraFiles)
	req.Upper, req.Work, req.Lower = filepath.Join(spec.StateDir, layerUpper), filepath.Join(spec.StateDir, layerWork), lower
	return u, nil
}

// start starts cmd, puts it into g's groups and gives it the idmapped
// rootfs. On error the child is killed and reaped.
func (u *userNSStart) start(cmd *exec.Cmd, cg *cgroupdriver.Driver, g cgroupdriver.Guest, rootfs string) error {
	defer u.ctl.Close()
	err := cmd.Start()
	u.child.Close()
	if err != nil {
		if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.EPERM) {
			return fmt.Errorf("clone into a user namespace: %w (does this kernel allow user namespaces? see /proc/sys/user/max_user_namespaces)", err)
		}
		return err
	}
	if err := u.handOver(cmd.Process.Pid, cg, g, rootfs); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return err
	}
	return nil
}

func (u *userNSStart) handOver(pid int, cg *cgroupdriver.Driver, g cgroupdriver.Guest, rootfs string) error {
	if err := cg.Attach(pid, g); err != nil {
		return err
	}
	lower, err := idmappedTree(pid, rootfs)
	if err != nil {
		return err
	}
	defer unix.Close(lower)
	fd := int(u.ctl.Fd())
	if err := unix.Sendmsg(fd, []byte{1}, unix.UnixRights(lower), nil, 0); err != nil {
		return fmt.Errorf("pass the rootfs to the container init: %w", err)
	}
	return nil
}

// idmappedTree returns a detached, read-only, nosuid, nodev mount of
// rootfs whose ids are seen through the user namespace of process pid.
func idmappedTree(pid int, rootfs string) (int, error) {
	ns, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/ns/user", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open the container's user namespace: %w", err)
	}
	defer unix.Close(ns)
	tree, err := unix.OpenTree(unix.AT_FDCWD, rootfs, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("clone the mount of rootfs %s: %w", rootfs, err)
	}
	attr := unix.MountAttr{
		Attr_set:  unix.MOUNT_ATTR_IDMAP | unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV,
		Userns_fd: uint64(ns),
	}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		unix.Close(tree)
		return -1, fmt.Errorf("idmap rootfs %s for the container's user namespace: %w (its file system must support idmapped mounts: ext4, xfs, btrfs, tmpfs on Linux 6.3 or later)", rootfs, err)
	}
	return tree, nil
}

// enterUserNS is the init's half, first thing in setupContainer: it
// waits for the agent, attaches the idmapped rootfs, becomes the
// namespace's root and mounts the container's layer over it, leaving
// the calling thread in the merged tree. It returns the container's root
// relative to the working directory (".").
func enterUserNS(req *initRequest) (string, error) {
	lower, err := awaitAgent(req.CtlFD)
	if err != nil {
		return "", err
	}
	// As the host's root, owner of the state directory: the namespace's
	// root may not pass through it.
	open := func(p string) (int, error) {
		fd, err := unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, fmt.Errorf("open %s: %w", p, err)
		}
		return fd, nil
	}
	var dirs [4]int
	for i, p := range []string{req.Upper, req.Work, req.Merged, req.Lower} {
		if dirs[i], err = open(p); err != nil {
			return "", err
		}
	}
	upper, work, merged, lowerAt := dirs[0], dirs[1], dirs[2], dirs[3]
	// From here on as the namespace's root; syscall's calls change every
	// thread of this process.
	if err := syscall.Setresgid(0, 0, 0); err != nil {
		return "", fmt.Errorf("become the user namespace's root group: %w", err)
	}
	if err := syscall.Setgroups(nil); err != nil {
		return "", fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setresuid(0, 0, 0); err != nil {
		return "", fmt.Errorf("become the user namespace's root: %w", err)
	}
	if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
		return "", fmt.Errorf("unshare the cgroup namespace: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return "", fmt.Errorf("make / private: %w", err)
	}
	const empty = unix.MOVE_MOUNT_F_EMPTY_PATH | unix.MOVE_MOUNT_T_EMPTY_PATH
	if err := unix.MoveMount(lower, "", lowerAt, "", empty); err != nil {
		return "", fmt.Errorf("attach the idmapped rootfs %s at %s: %w", req.Rootfs, req.Lower, err)
	}
	fdPath := func(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }
	fs, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return "", fmt.Errorf("overlayfs: %w", err)
	}
	defer unix.Close(fs)
	for _, kv := range [][2]string{{"lowerdir", fdPath(lower)}, {"upperdir", fdPath(upper)}, {"workdir", fdPath(work)}} {
		if err := unix.FsconfigSetString(fs, kv[0], kv[1]); err != nil {
			return "", fmt.Errorf("overlayfs %s=%s (%s): %w", kv[0], kv[1], req.Overlay, err)
		}
	}
	if err := unix.FsconfigSetFlag(fs, "userxattr"); err != nil {
		return "", fmt.Errorf("overlayfs userxattr: %w", err)
	}
	if err := unix.FsconfigCreate(fs); err != nil {
		return "", fmt.Errorf("mount the container's layer over rootfs %s (%s): %w", req.Rootfs, req.Overlay, err)
	}
	root, err := unix.Fsmount(fs, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("mount the container's layer: %w", err)
	}
	if err := unix.MoveMount(root, "", merged, "", empty); err != nil {
		return "", fmt.Errorf("attach the container's root at %s: %w", req.Merged, err)
	}
	if err := unix.Fchdir(root); err != nil {
		return "", fmt.Errorf("enter the container's root: %w", err)
	}
	for _, fd := range []int{root, lower, upper, work, merged, lowerAt} {
		unix.Close(fd)
	}
	return ".", nil
}

// awaitAgent blocks until the agent has put this process into its
// groups and passes the idmapped rootfs, and returns that mount.
func awaitAgent(ctl int) (int, error) {
	defer unix.Close(ctl)
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(ctl, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("wait for the agent: %w", err)
	}
	if n == 0 {
		return -1, errors.New("the agent gave the start up before handing over the rootfs")
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return -1, fmt.Errorf("the agent's hand-over holds no rootfs (%d messages, %v)", len(msgs), err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return -1, fmt.Errorf("the agent's hand-over holds %d file descriptors (%v), want the rootfs", len(fds), err)
	}
	return fds[0], nil
}
