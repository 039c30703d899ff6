package driver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/corral-dev/corral/cgroupdriver"
)

// A spare init is a container init started ahead of need: this binary
// re-executed with the container's namespaces, past the Go runtime's start
// and every package's init (tens of milliseconds for the agent's binary,
// most of a container start), waiting for a request. [LXC.Start] hands
// the next container to it instead of starting an init then. The next
// spare is started by [LXC.Prepare], which the agent calls once its pass
// (the start and its report) is over: a spare's start-up takes a core for
// tens of milliseconds, which on a small host would slow the very start
// and report it is meant to speed up.
//
// A spare runs nothing of any guest's until it is told which: it sits in
// groups of its own ([cgroupdriver.Driver.StartSpare]), joined before it
// ran main, reading its socket. The driver sends it the request first and
// makes its groups the guest's ([cgroupdriver.Driver.ClaimSpare]: renamed
// on cgroup v1, so the spare never moves there; on a hybrid host, the
// move into the v2 group that holds no controller) and writes the guest's
// resources while the spare sets the container up: the setup is the
// init's own code, and the init waits for the driver's go-ahead, written
// once the groups are the guest's and filled, before it makes its cgroup
// namespace and execs the command, which so runs inside them from its
// first instruction as with the entry shim. It gets the guest's log as
// its output through the socket. A spare whose agent is gone reads EOF
// and exits; its groups are orphans then.
//
// Spares serve the plain case: no user namespace, no network interface,
// no launch memory policy, no cluster partition, a memory limit of at
// least spareMinMemory; those start an init as before.

// spareEnv is initEnv's value in a spare: the request comes on spareFD.
const spareEnv = "spare"

// spareFD is the spare's end of its socket with the driver.
const spareFD = 3

// spareMinMemory is the smallest memory limit of a guest started in a
// spare: the spare's runtime is charged to its groups before the limit is
// written, and a limit below what it uses would fail the start.
const spareMinMemory = 32 << 20

// spare is one waiting init.
type spare struct {
	cmd    *exec.Cmd
	sock   *os.File // the driver's end
	groups *cgroupdriver.Spare
}

// spares holds at most one waiting init per driver.
type spares struct {
	mu      sync.Mutex
	next    *spare
	filling bool
	wanted  bool // a container was started: spares are worth their keep
	closed  bool // Unprepare was called: no more spares
	// busy counts the fills and discards under way; drained, when
	// Unprepare waits, is closed as busy falls to zero.
	busy    int
	drained chan struct{}
}

// begin counts one fill or discard under way; d.spares.mu is held.
func (d *LXC) begin() { d.spares.busy++ }

// end counts one fill or discard over; d.spares.mu is held.
func (d *LXC) end() {
	d.spares.busy--
	if d.spares.busy == 0 && d.spares.drained != nil {
		close(d.spares.drained)
		d.spares.drained = nil
	}
}

// spareReleaseWait bounds Unprepare's wait for the spares to be reaped and
// their groups removed: a spare frozen with its kind directory (by the
// fencer) cannot die until thawed.
const spareReleaseWait = 5 * time.Second

// takeSpare returns the waiting spare, if any.
func (d *LXC) takeSpare() *spare {
	d.spares.mu.Lock()
	s := d.spares.next
	d.spares.next, d.spares.wanted = nil, true
	d.spares.mu.Unlock()
	if s != nil && !processAlive(s.cmd) {
		d.discard(s)
		s = nil
	}
	return s
}

// putBack returns a spare that was taken but not used to wait for the
// next start, or discards it when another waits already.
func (d *LXC) putBack(s *spare) {
	d.spares.mu.Lock()
	if d.spares.next == nil && !d.spares.closed {
		d.spares.next, s = s, nil
	}
	d.spares.mu.Unlock()
	if s != nil {
		d.discard(s)
	}
}

// Prepare starts a spare init in the background, with Config.SpareInit,
// once a container has been started and unless one waits or is being
// started. It never blocks; the agent calls it when its work is done.
func (d *LXC) Prepare() {
	d.spares.mu.Lock()
	defer d.spares.mu.Unlock()
	if !d.cfg.SpareInit || !d.spares.wanted || d.spares.closed || d.spares.next != nil || d.spares.filling {
		return
	}
	d.spares.filling = true
	d.begin()
	go func() {
		s, err := d.startSpare()
		d.spares.mu.Lock()
		defer d.spares.mu.Unlock()
		defer d.end()
		d.spares.filling = false
		if err != nil {
			d.log.Warn("starting a spare container init; containers start without one", "err", err)
			return
		}
		if d.spares.closed {
			d.discardLocked(s)
			return
		}
		d.spares.next = s
	}()
}

// Unprepare ends the waiting spare init, if any, and one being started,
// and waits, up to spareReleaseWait, until they are reaped and their
// groups removed. The agent calls it as it stops: a spare left to exit
// on its own outlives its parent, and a zombie that the host's init is
// slow to reap keeps its groups busy. No spare is started after it.
func (d *LXC) Unprepare() {
	d.spares.mu.Lock()
	s := d.spares.next
	d.spares.next, d.spares.closed = nil, true
	d.spares.mu.Unlock()
	if s != nil {
		d.discard(s)
	}
	d.spares.mu.Lock()
	if d.spares.busy == 0 {
		d.spares.mu.Unlock()
		return
	}
	if d.spares.drained == nil {
		d.spares.drained = make(chan struct{})
	}
	drained := d.spares.drained
	d.spares.mu.Unlock()
	select {
	case <-drained:
	case <-time.After(spareReleaseWait):
		d.log.Warn("a spare container init is not gone yet; its groups are removed as orphans later", "waited", spareReleaseWait)
	}
}

func (d *LXC) startSpare() (*spare, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "spare-init"), os.NewFile(uintptr(fds[1]), "spare-init-child")
	defer theirs.Close()
	cmd := &exec.Cmd{
		Path:       "/proc/self/exe",
		Args:       []string{"corral-init", "spare"},
		Env:        []string{initEnv + "=" + spareEnv},
		Dir:        "/",
		ExtraFiles: []*os.File{theirs}, // fd 3 = spareFD
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: lxcCloneFlags,
			Setsid:     true,
		},
	}
	groups, err := d.cfg.Cgroups.StartSpare(cmd, cgroupdriver.KindLXC)
	if err != nil {
		mine.Close()
		return nil, err
	}
	return &spare{cmd: cmd, sock: mine, groups: groups}, nil
}

// discard kills a spare that will not be used (a no-op for one already
// reaped); it is reaped and what is left of its groups removed in the
// background: a spare frozen with its kind directory (by the fencer) dies
// only once thawed, and a start must not wait for that.
func (d *LXC) discard(s *spare) {
	d.spares.mu.Lock()
	defer d.spares.mu.Unlock()
	d.discardLocked(s)
}

// discardLocked is discard with d.spares.mu held.
func (d *LXC) discardLocked(s *spare) {
	s.sock.Close() // a spare still reading exits on EOF
	_ = s.cmd.Process.Kill()
	d.begin()
	go func() {
		defer func() {
			d.spares.mu.Lock()
			d.end()
			d.spares.mu.Unlock()
		}()
		_ = s.cmd.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := d.cfg.Cgroups.RemoveSpare(ctx, s.groups); err != nil {
			d.log.Warn("removing a spare init's groups", "err", err)
		}
	}()
}

// processAlive reports whether the spare has not exited, without reaping
// it.
func processAlive(cmd *exec.Cmd) bool {
	var si siginfoChild
	_, _, e := unix.Syscall6(unix.SYS_WAITID, unix.P_PID, uintptr(cmd.Process.Pid), uintptr(unsafe.Pointer(&si)), unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, 0, 0)
	return e == 0 && si.Pid == 0
}

// spareClaim is one start in a spare.
type spareClaim struct {
	d   *LXC
	s   *spare
	req *initRequest
	// created: the start got as far as the groups; fresh: the spare's
	// groups could not be the guest's, the container gets an init of its
	// own.
	created, fresh bool
	// The error pipe and the go-ahead pipe of the container handed to
	// the spare (the driver's ends).
	errR, goW *os.File
	// joined delivers what the move into the v2 group came to, when one
	// is under way; joinErr reads it once.
	joined   chan error
	joinOnce sync.Once
	joinRes  error
}

// claimFor takes the waiting spare for the container when it can run in
// one; nil when it cannot or none waits (then one is started for the
// next).
func (d *LXC) claimFor(spec *Spec, res cgroupdriver.Resources, req *initRequest) *spareClaim {
	if spec.Network != nil || len(spec.IDMap) > 0 || spec.Guest.Partition != "" || d.cfg.Cgroups.MemPolicyFor(res) != (cgroupdriver.MemPolicy{}) {
		return nil
	}
	if res.MemoryHardLimit == nil || *res.MemoryHardLimit < spareMinMemory ||
		(res.MemorySwapHardLimit != nil && *res.MemorySwapHardLimit < spareMinMemory) {
		return nil
	}
	if enc, err := json.Marshal(spareRequest(req)); err != nil || len(enc) > maxSpareRequest {
		return nil
	}
	s := d.takeSpare()
	if s == nil {
		return nil
	}
	return &spareClaim{d: d, s: s, req: req}
}

// spareRequest is req as a spare gets it: the error pipe and the
// go-ahead pipe come with it (the spare takes them where they arrive).
func spareRequest(req *initRequest) *initRequest {
	r := *req
	r.ErrFD, r.GoFD = 3, 3
	return &r
}

// create hands the container to the spare, which sets it up meanwhile,
// then makes the spare's groups the guest's and starts the move into the
// v2 group if one is left; the spare execs the command only on the
// go-ahead, once the groups are filled (launchSpare). When the groups
// cannot be the guest's the spare is let go of and the start goes on
// without it.
func (c *spareClaim) create(g cgroupdriver.Guest, logf *os.File) (func(), error) {
	c.created = true
	if err := c.handOver(logf); err != nil {
		c.d.discard(c.s)
		return nil, err
	}
	cg := c.d.cfg.Cgroups
	join, err := cg.ClaimSpare(c.s.groups, g)
	if err != nil {
		// The spare has the container already (a frozen one, too, once
		// thawed): it cannot serve another.
		c.closePipes()
		c.d.discard(c.s)
		if !errors.Is(err, cgroupdriver.ErrSpareUnusable) {
			return nil, err
		}
		c.d.log.Info("a spare init's groups cannot be the guest's; starting an init of its own", "guest", g.String(), "err", err)
		c.fresh = true
		return nil, cg.Create(g)
	}
	if join != nil {
		c.joined = make(chan error, 1)
		go func() { c.joined <- join() }()
	}
	return c.abandon, nil
}

// handOver sends the spare the request, the guest's log as its output,
// the error pipe and the go-ahead pipe.
func (c *spareClaim) handOver(logf *os.File) error {
	enc, err := json.Marshal(spareRequest(c.req))
	if err != nil {
		return err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer errW.Close()
	goR, goW, err := os.Pipe()
	if err != nil {
		errR.Close()
		return err
	}
	defer goR.Close()
	err = unix.Sendmsg(int(c.s.sock.Fd()), enc, unix.UnixRights(int(logf.Fd()), int(errW.Fd()), int(goR.Fd())), nil, 0)
	c.s.sock.Close()
	if err != nil {
		errR.Close()
		goW.Close()
		return fmt.Errorf("hand the container to a spare init: %w", err)
	}
	c.errR, c.goW = errR, goW
	return nil
}

func (c *spareClaim) closePipes() {
	for _, f := range []*os.File{c.errR, c.goW} {
		if f != nil {
			f.Close()
		}
	}
}

// joinErr waits for the move into the v2 group, if one is under way.
func (c *spareClaim) joinErr() error {
	c.joinOnce.Do(func() {
		if c.joined != nil {
			c.joinRes = <-c.joined
		}
	})
	return c.joinRes
}

// abandon ends the spare of a start that failed: once the move is over,
// the spare is killed and reaped (a no-op when its launch did that) and
// what is left of its groups removed.
func (c *spareClaim) abandon() {
	_ = c.joinErr()
	c.closePipes()
	c.d.discard(c.s)
}

// maxSpareRequest bounds the request a spare is handed, one datagram on
// its socket (below the socket's default buffer); a larger one starts an
// init of its own.
const maxSpareRequest = 64 << 10

// receiveSpareRequest is the spare's side: wait for the request, make the
// log its output, the error pipe its ErrFD and the go-ahead pipe, if
// any, its GoFD. EOF (the agent is gone)
// exits quietly.
func receiveSpareRequest(req *initRequest) error {
	buf := make([]byte, maxSpareRequest+1)
	oob := make([]byte, unix.CmsgSpace(3*4))
	n, oobn, _, _, err := unix.Recvmsg(spareFD, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return fmt.Errorf("read the request: %w", err)
	}
	if n == 0 && oobn == 0 {
		os.Exit(0) // the agent let go of this spare
	}
	unix.Close(spareFD)
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return fmt.Errorf("read the request's descriptors: %v", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) < 2 {
		return fmt.Errorf("read the request's descriptors: %v (%d)", err, len(fds))
	}
	if err := json.Unmarshal(buf[:n], req); err != nil {
		return fmt.Errorf("bad request: %w", err)
	}
	if want := 2 + b2i(req.GoFD >= 3); len(fds) != want {
		return fmt.Errorf("read the request's descriptors: %d, want %d", len(fds), want)
	}
	// The log becomes stdout and stderr; the error pipe and the go-ahead
	// are where they arrived (close-on-exec, as in an init started
	// directly): the request's numbers only say which are there.
	for _, to := range []int{1, 2} {
		if err := unix.Dup3(fds[0], to, 0); err != nil {
			return fmt.Errorf("dup the log: %w", err)
		}
	}
	unix.Close(fds[0])
	if req.ErrFD < 3 {
		return errors.New("bad request: no error descriptor")
	}
	req.ErrFD = fds[1]
	if req.GoFD >= 3 {
		req.GoFD = fds[2]
	}
	return nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// launchSpare gives the spare that was handed the container the go-ahead
// once the move into the v2 group, if any, is over, and waits for its
// exec.
func (d *LXC) launchSpare(ctx context.Context, spec *Spec, logf *os.File, c *spareClaim) (*launched, error) {
	if c.fresh {
		return d.launch(ctx, spec, logf, c.req)
	}
	defer c.errR.Close()
	goErr := c.joinErr()
	if goErr == nil {
		_, goErr = c.goW.Write([]byte{1})
	}
	c.goW.Close()
	return d.awaitInit(ctx, spec, c.s.cmd, c.errR, goErr)
}
