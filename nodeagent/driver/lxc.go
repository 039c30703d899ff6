package driver

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
)

// LXC runs containers as libvirt's LXC driver makes them, without the lxc
// tools: new pid, mount, UTS, IPC, network and cgroup namespaces (the
// cgroup one rooted at the guest's own groups); the root is an overlayfs
// of the shared root file system (read-only, below) and the guest's own
// layer in its state directory, made the root with pivot_root, the host's
// tree detached; /proc is mounted with /proc/sys, /proc/sysrq-trigger,
// /proc/irq and /proc/bus read-only, /sys read-only, /dev is a small
// tmpfs holding only the devices the guest's device ACL allows (bind
// mounts of the host's nodes, a private devpts for ptmx and the pseudo
// terminals, /dev/shm); the host name is the guest's; the network
// namespace has only lo, up. The command runs as PID 1 with the reduced
// capability set ([events.ContainerCapabilities]), no_new_privs and a
// seccomp filter (see lxcisolate.go): it gets SIGTERM on stop only if it
// handles it, as any PID 1. With [Spec.IDMap] the container also gets
// its own user namespace, its root an unprivileged host id (lxcuserns.go).
//
// The setup runs in the container's first process before the command: this
// binary re-executed as a container init ([RunInitIfRequested]), which on
// cgroup v1 the cgroup entry shim execs after joining the groups, so the
// container's first instruction already runs inside them. The whole setup
// lives in the container's mount namespace: nothing needs unmounting when
// it ends.
type LXC struct {
	base
	spares spares // lxcspare.go
}

// NewLXC returns the lxc driver; cfg must be valid.
func NewLXC(cfg Config) *LXC {
	return &LXC{base: newBase(cgroupdriver.KindLXC, cfg)}
}

// initEnv marks this binary, re-executed, as a container init; its value
// is a JSON initRequest.
const initEnv = "_CORRAL_DRIVER_INIT"

// initExitCode is the exit status of an init that could not set up the
// container or exec its command.
const initExitCode = 126

// initRequest is everything the container init needs.
type initRequest struct {
	Rootfs   string    `json:"rootfs"`
	Overlay  string    `json:"overlay"` // overlayfs options: rootfs below, the guest's layer above
	Merged   string    `json:"merged"`  // where the layers are mounted: the container's root
	Caps     []int     `json:"caps"`    // the capabilities it keeps, by number
	Hostname string    `json:"hostname"`
	Argv     []string  `json:"argv"`
	Env      []string  `json:"env"`
	Devices  []devNode `json:"devices"`
	PTS      bool      `json:"pts"` // a private devpts, /dev/ptmx and /dev/pts/N
	ErrFD    int       `json:"err_fd"`
	// A user namespace (lxcuserns.go): the init waits on CtlFD for the
	// agent, then mounts Lower (the idmapped rootfs), Upper and Work.
	UserNS             bool   `json:"userns,omitempty"`
	CtlFD              int    `json:"ctl_fd,omitempty"`
	Upper, Work, Lower string `json:",omitempty"`
	// GoFD, when set, is a pipe the init reads one byte from once it has
	// set the container up, before it makes its cgroup namespace and
	// execs the command: the driver's go-ahead once the container's eth0
	// is in place and the init is in every group of the container's, its
	// resources written (EOF means one could not be made).
	GoFD int `json:"go_fd,omitempty"`
}

// devNode is a device node the container's /dev gets, bind-mounted from
// the host's /dev/<Name>.
type devNode struct {
	Name         string `json:"name"`
	Major, Minor int64
}

// containerDevices are the nodes a container may get, libvirt's set.
var containerDevices = []devNode{
	{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8},
	{"urandom", 1, 9}, {"tty", 5, 0},
}

// devicesFor returns the nodes of containerDevices acl allows, and
// whether it allows ptmx (5:2) and the pseudo terminals (136:*), then the
// extra devices named by path (/dev/net/tun becomes net/tun). An extra
// device given by number gets no node: the container may mknod it if its
// access has m.
func devicesFor(acl *cgroupdriver.DeviceACL) (nodes []devNode, pts bool) {
	base := acl.Rules(cgroupdriver.KindLXC, false)
	allows := func(major, minor int64) bool {
		for _, r := range base {
			if r.Type == 'a' || (r.Type == 'c' && (r.Major == cgroupdriver.AnyDevice || r.Major == major) &&
				(r.Minor == cgroupdriver.AnyDevice || r.Minor == minor) && strings.ContainsAny(r.Access, "rw")) {
				return true
			}
		}
		return false
	}
	for _, n := range containerDevices {
		if allows(n.Major, n.Minor) {
			nodes = append(nodes, n)
		}
	}
	for _, r := range acl.Extra {
		if name, ok := strings.CutPrefix(r.Path, "/dev/"); ok && !slices.ContainsFunc(nodes, func(n devNode) bool { return n.Name == name }) {
			nodes = append(nodes, devNode{Name: name})
		}
	}
	return nodes, allows(5, 2) && allows(136, 0)
}

// Start starts the container and returns once its command has been
// exec'd as PID 1, inside its groups and namespaces. It uses the waiting
// spare init, if any, and never starts the next one: [LXC.Prepare] does.
func (d *LXC) Start(ctx context.Context, spec Spec) (*Instance, error) {
	if err := spec.validate(); err != nil {
		return nil, err
	}
	if spec.Rootfs == "" {
		return nil, fmt.Errorf("%w: %s: an lxc guest needs a root file system (rootfs)", ErrInvalidSpec, spec.Guest)
	}
	if st, err := os.Stat(spec.Rootfs); err != nil || !st.IsDir() {
		if err == nil {
			err = fmt.Errorf("not a directory")
		}
		return nil, fmt.Errorf("%w: %s: rootfs %s: %w", ErrInvalidSpec, spec.Guest, spec.Rootfs, err)
	}
	res := spec.Resources
	if res.MemoryHardLimit == nil && spec.MemoryBytes > 0 {
		res.MemoryHardLimit = new(spec.MemoryBytes)
	}
	if res.Devices == nil {
		res.Devices = &cgroupdriver.DeviceACL{}
	}
	nodes, pts := devicesFor(res.Devices)
	argv := spec.Command
	if len(argv) == 0 {
		argv = []string{"/bin/sh"}
	}
	caps, err := spec.capabilities()
	if err != nil {
		return nil, err
	}
	overlay, merged, err := prepareLayer(&spec)
	if err != nil {
		return nil, err
	}
	req := initRequest{
		Rootfs: spec.Rootfs, Overlay: overlay, Merged: merged, Caps: caps,
		Hostname: spec.hostname(), Argv: argv,
		Env: spec.guestEnv("container=corral"), Devices: nodes, PTS: pts, ErrFD: 3,
	}
	if spec.Network != nil {
		req.GoFD = 4
	}
	if c := d.claimFor(&spec, res, &req); c != nil {
		inst, err := d.start(ctx, spec, res, c.create, func(ctx context.Context, spec *Spec, logf *os.File) (*launched, error) {
			return d.launchSpare(ctx, spec, logf, c)
		})
		if !c.created {
			d.putBack(c.s) // refused before its groups were made
		}
		return inst, err
	}
	return d.start(ctx, spec, res, nil, func(ctx context.Context, spec *Spec, logf *os.File) (*launched, error) {
		return d.launch(ctx, spec, logf, &req)
	})
}

// lxcCloneFlags are the namespaces a container init is cloned with; the
// cgroup namespace it makes itself, once inside its groups.
const lxcCloneFlags = syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC | syscall.CLONE_NEWNET

// launch starts a container init of its own for the container, through
// the entry shim on cgroup v1.
func (d *LXC) launch(ctx context.Context, spec *Spec, logf *os.File, req *initRequest) (*launched, error) {
	g := spec.Guest
	enc, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrStart, g, err)
	}
	defer pr.Close()
	files := []*os.File{pw} // fd 3 = ErrFD
	var netW *os.File
	if spec.Network != nil {
		netR, w, err := os.Pipe()
		if err != nil {
			pw.Close()
			return nil, fmt.Errorf("%w: %s: %w", ErrStart, g, err)
		}
		defer netR.Close()
		defer w.Close()
		files, netW = append(files, netR), w // fd 4 = GoFD
	}
	cmd := &exec.Cmd{
		Path:       "/proc/self/exe",
		Args:       []string{"corral-init", g.ID},
		Env:        []string{initEnv + "=" + string(enc)},
		Dir:        "/",
		Stdout:     logf,
		Stderr:     logf,
		ExtraFiles: files,
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: lxcCloneFlags,
			Setsid:     true,
		},
	}
	var userns *userNSStart
	if len(spec.IDMap) > 0 {
		if userns, err = prepareUserNS(cmd, spec, req); err != nil {
			pw.Close()
			return nil, err
		}
		if enc, err = json.Marshal(req); err != nil {
			pw.Close()
			return nil, err
		}
		cmd.Env = []string{initEnv + "=" + string(enc)}
	}
	err = cgroupdriver.WithMemPolicy(cmd, d.cfg.Cgroups.MemPolicyFor(spec.Resources))
	if err == nil && userns != nil {
		err = userns.start(cmd, d.cfg.Cgroups, g, spec.Rootfs)
	} else if err == nil {
		err = d.cfg.Cgroups.Start(cmd, g)
	}
	pw.Close()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrStart, g, err)
	}
	var netErr error
	if netW != nil {
		files[1].Close()
		if netErr = attachVeth(ctx, spec.Network, cmd.Process.Pid); netErr == nil {
			_, netErr = netW.Write([]byte{1})
		}
		if netErr != nil {
			netErr = fmt.Errorf("giving the container its eth0: %w", netErr)
		}
		netW.Close()
	}
	return d.awaitInit(ctx, spec, cmd, pr, netErr)
}

// awaitInit waits for the init's error pipe pr: it closes when the init
// execs the command (close-on-exec) and has why when it cannot. goErr is
// why the driver gave the init no go-ahead, if it did not.
func (d *LXC) awaitInit(ctx context.Context, spec *Spec, cmd *exec.Cmd, pr *os.File, goErr error) (*launched, error) {
	g := spec.Guest
	if dl, ok := ctx.Deadline(); ok {
		_ = pr.SetReadDeadline(dl)
	} else {
		_ = pr.SetReadDeadline(time.Now().Add(30 * time.Second))
	}
	msg, rerr := io.ReadAll(pr)
	if len(msg) == 0 && rerr == nil && goErr == nil {
		l := &launched{cmd: cmd}
		if spec.Network != nil {
			l.hostIf = spec.Network.HostIf
		}
		return l, nil
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if rerr != nil {
		return nil, fmt.Errorf("%w: %s: waiting for the container init: %w", ErrStart, g, rerr)
	}
	if goErr != nil && (len(msg) == 0 || strings.Contains(string(msg), errNoGoAhead)) {
		return nil, fmt.Errorf("%w: %s: %w", ErrStart, g, goErr)
	}
	class, text, _ := strings.Cut(string(msg), ":")
	if class == initErrSpec {
		return nil, fmt.Errorf("%w: %s: %s", ErrInvalidSpec, g, strings.TrimSpace(text))
	}
	return nil, fmt.Errorf("%w: %s: %s", ErrStart, g, strings.TrimSpace(text))
}

// Adopt re-attaches to a container from its state record.
func (d *LXC) Adopt(ctx context.Context, spec Spec) (*Instance, error) {
	return d.adopt(ctx, spec, nil)
}
