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
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/corral-dev/corral/cgroupdriver"
)

// A spare init is a container init started ahead of need: this binary
// re-executed with the container's namespaces, past the Go runtime's start
// and every package's init (tens of milliseconds for the agent's binary,
// most of a container start), waiting for a request. [LXC.Start] hands
// the next container to it instead of starting an init then, and starts
// the next spare in the background.
//
// A spare runs nothing of any guest's until it is told which: it sits in
// the agent's own groups reading its socket. The driver moves it into the
// guest's groups ([cgroupdriver.Driver.Attach]) before it sends the
// request, so the container's setup and command run inside them as with
// the entry shim. It gets the guest's log as its output through the
// socket. A spare whose agent is gone reads EOF and exits.
//
// Spares serve the plain case: no user namespace, no network interface,
// no launch memory policy; those start an init as before.

// spareEnv is initEnv's value in a spare: the request comes on spareFD.
const spareEnv = "spare"

// spareFD is the spare's end of its socket with the driver.
const spareFD = 3

// spare is one waiting init.
type spare struct {
	cmd  *exec.Cmd
	sock *os.File // the driver's end
}

// spares holds at most one waiting init per driver.
type spares struct {
	mu      sync.Mutex
	next    *spare
	filling bool
}

// take returns the waiting spare, if any, and starts the next one.
func (d *LXC) takeSpare() *spare {
	d.spares.mu.Lock()
	defer d.spares.mu.Unlock()
	s := d.spares.next
	d.spares.next = nil
	if s != nil && !processAlive(s.cmd) {
		s.discard()
		s = nil
	}
	d.fillSpareLocked()
	return s
}

// fillSpareLocked starts a spare in the background unless one waits or is
// being started.
func (d *LXC) fillSpareLocked() {
	if !d.cfg.SpareInit || d.spares.next != nil || d.spares.filling {
		return
	}
	d.spares.filling = true
	go func() {
		s, err := startSpare()
		d.spares.mu.Lock()
		defer d.spares.mu.Unlock()
		d.spares.filling = false
		if err != nil {
			d.log.Warn("starting a spare container init; containers start without one", "err", err)
			return
		}
		d.spares.next = s
	}()
}

// CloseSpares ends the waiting spare init, if any.
func (d *LXC) CloseSpares() {
	d.spares.mu.Lock()
	s := d.spares.next
	d.spares.next = nil
	d.spares.mu.Unlock()
	if s != nil {
		s.discard()
	}
}

func startSpare() (*spare, error) {
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
	if err := cmd.Start(); err != nil {
		mine.Close()
		return nil, err
	}
	return &spare{cmd: cmd, sock: mine}, nil
}

// discard kills and reaps a spare that will not be used.
func (s *spare) discard() {
	s.sock.Close() // a spare still reading exits on EOF
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
}

// processAlive reports whether the spare has not exited, without reaping
// it.
func processAlive(cmd *exec.Cmd) bool {
	var si siginfoChild
	_, _, e := unix.Syscall6(unix.SYS_WAITID, unix.P_PID, uintptr(cmd.Process.Pid), uintptr(unsafe.Pointer(&si)), unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, 0, 0)
	return e == 0 && si.Pid == 0
}

// hand moves the spare into the guest's groups and gives it the request
// enc, the guest's log as its output and errW (its ErrFD). On error the
// spare is killed and reaped.
func (d *LXC) hand(s *spare, spec *Spec, logf, errW *os.File, enc []byte) error {
	if err := d.cfg.Cgroups.Attach(s.cmd.Process.Pid, spec.Guest); err != nil {
		s.discard()
		return err
	}
	rights := unix.UnixRights(int(logf.Fd()), int(errW.Fd()))
	err := unix.Sendmsg(int(s.sock.Fd()), enc, rights, nil, 0)
	s.sock.Close()
	if err != nil {
		s.discard()
		return fmt.Errorf("hand the container to a spare init: %w", err)
	}
	return nil
}

// maxSpareRequest bounds the request a spare is handed, one datagram on
// its socket (below the socket's default buffer); a larger one starts an
// init of its own.
const maxSpareRequest = 64 << 10

// receiveSpareRequest is the spare's side: wait for the request, make the
// log its output and the error pipe its ErrFD. EOF (the agent is gone)
// exits quietly.
func receiveSpareRequest(req *initRequest) error {
	buf := make([]byte, maxSpareRequest+1)
	oob := make([]byte, unix.CmsgSpace(2*4))
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
	if err != nil || len(fds) != 2 {
		return fmt.Errorf("read the request's descriptors: %v (%d)", err, len(fds))
	}
	if err := json.Unmarshal(buf[:n], req); err != nil {
		return fmt.Errorf("bad request: %w", err)
	}
	// The log becomes stdout and stderr; the error pipe goes where the
	// request says (close-on-exec, as in an init started directly).
	for _, to := range []int{1, 2} {
		if err := unix.Dup3(fds[0], to, 0); err != nil {
			return fmt.Errorf("dup the log: %w", err)
		}
	}
	unix.Close(fds[0])
	if req.ErrFD < 3 {
		return errors.New("bad request: no error descriptor")
	}
	if err := unix.Dup3(fds[1], req.ErrFD, unix.O_CLOEXEC); err != nil {
		return fmt.Errorf("dup the error pipe: %w", err)
	}
	unix.Close(fds[1])
	return nil
}

// launchSpare runs the container in a spare when one waits and the guest
// needs nothing a spare cannot give; ok is false when it did not try.
func (d *LXC) launchSpare(ctx context.Context, spec *Spec, logf *os.File, req *initRequest) (l *launched, ok bool, err error) {
	if spec.Network != nil || len(spec.IDMap) > 0 || d.cfg.Cgroups.MemPolicyFor(spec.Resources) != (cgroupdriver.MemPolicy{}) {
		return nil, false, nil
	}
	r := *req
	r.ErrFD = 4 // any descriptor the spare does not use
	enc, err := json.Marshal(&r)
	if err != nil || len(enc) > maxSpareRequest {
		return nil, false, nil
	}
	s := d.takeSpare()
	if s == nil {
		return nil, false, nil
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		s.discard()
		return nil, true, fmt.Errorf("%w: %s: %w", ErrStart, spec.Guest, err)
	}
	defer pr.Close()
	err = d.hand(s, spec, logf, pw, enc)
	pw.Close()
	if err != nil {
		return nil, true, fmt.Errorf("%w: %s: %w", ErrStart, spec.Guest, err)
	}
	l, err = d.awaitInit(ctx, spec, s.cmd, pr, nil)
	return l, true, err
}
