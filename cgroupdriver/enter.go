package cgroupdriver

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// shimEnv marks a process started by Driver.Start as the v1 entry shim. Its
// value is a JSON shimRequest.
const shimEnv = "_CORRAL_CGROUP_SHIM"

// shimExitCode is the exit status of a shim that could not do its job.
const shimExitCode = 127

type shimRequest struct {
	Procs []string `json:"procs"`  // cgroup.procs files to join, in order
	Path  string   `json:"path"`   // the program to exec
	ErrFD int      `json:"err_fd"` // pipe to report failure on; closed by exec
	// Continue: the program is this binary itself, so the shim does not
	// exec it again but returns from RunShimIfRequested once it joined,
	// and main goes on to the role the command asked for (one start of
	// the runtime instead of two).
	Continue bool `json:"continue,omitempty"`
}

// selfExe is the path that names the running binary: a command with it as
// its Path re-executes the caller.
const selfExe = "/proc/self/exe"

// Start starts cmd so that its first instruction already runs inside every
// group of g, which must have been created. No part of the command ever
// runs outside the guest's limits:
//
//   - cgroup v2 only: the child is cloned straight into the group
//     (clone3 with CLONE_INTO_CGROUP, via SysProcAttr.UseCgroupFD).
//   - cgroup v1 or hybrid: the child is this binary (/proc/self/exe) in the
//     role of a shim: [RunShimIfRequested] writes its pid to cgroup.procs of
//     every hierarchy (the freezer last) and then execs cmd's program with
//     cmd's arguments and environment. Start returns once the exec happened,
//     or the shim's error wrapped in [ErrShim]. When cmd's program is this
//     binary itself (Path "/proc/self/exe", as for a container init), the
//     shim does not exec it a second time: RunShimIfRequested returns
//     once the shim joined, with the shim's variable gone from the
//     environment, and main goes on exactly as the re-executed binary
//     would have. Start returns once that process closed its descriptors
//     on exec, or exited.
//
// The caller keeps full control of cmd (Stdin/Stdout, Dir, ExtraFiles,
// SysProcAttr namespaces) and waits for it with cmd.Wait as usual. Start
// into a frozen group blocks until the group is thawed.
func (d *Driver) Start(cmd *exec.Cmd, g Guest) error {
	if err := g.Validate(); err != nil {
		return err
	}
	if cmd.Process != nil {
		return errors.New("corral: Start: command already started")
	}
	if cmd.Err != nil {
		return cmd.Err
	}
	if cmd.SysProcAttr != nil && cmd.SysProcAttr.UseCgroupFD {
		return errors.New("corral: Start: SysProcAttr.UseCgroupFD is already set")
	}
	if err := d.checkThawed(g); err != nil {
		return err
	}
	dirOf := func(i int) string { return d.l.guestDir(i, g) }
	if len(d.l.hs) == 1 && d.l.v2 == 0 {
		return d.startCloneInto(cmd, g.String(), dirOf)
	}
	return d.startShim(cmd, g.String(), dirOf)
}

// checkThawed refuses a start into a group that is frozen: on v1 the
// group's freezer.state says FROZEN or FREEZING when any ancestor is
// frozen; on v2 cgroup.events says "frozen 1".
func (d *Driver) checkThawed(g Guest) error {
	return d.checkThawedIn(g.String(), func(i int) string { return d.l.guestDir(i, g) })
}

// checkThawedIn is checkThawed for the groups dirOf names, name in errors.
func (d *Driver) checkThawedIn(g string, dirOf func(int) string) error {
	i, v := d.l.at(cFreezer)
	if i < 0 {
		return nil
	}
	dir := dirOf(i)
	if v == 1 {
		if st, err := readFile(dir + "/freezer.state"); err == nil && st != "THAWED" {
			return fmt.Errorf("%w: %s: %s/freezer.state is %s; not starting it until it is thawed", ErrFrozen, g, dir, st)
		}
		return nil
	}
	if ev, err := readFile(dir + "/cgroup.events"); err == nil && strings.Contains(ev, "frozen 1") {
		return fmt.Errorf("%w: %s: %s is frozen; not starting it until it is thawed", ErrFrozen, g, dir)
	}
	return nil
}

// shimTimeout bounds how long a start waits for the shim to join the
// guest's groups: a group frozen in that instant would stop it forever.
const shimTimeout = 30 * time.Second

// startCloneInto and startShim start cmd in the groups dirOf names (by
// hierarchy index); g names them in errors.
func (d *Driver) startCloneInto(cmd *exec.Cmd, g string, dirOf func(int) string) error {
	dir := dirOf(0)
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("corral: start in %s: open %s: %w", g, dir, err)
	}
	defer unix.Close(fd)
	var attr syscall.SysProcAttr
	if cmd.SysProcAttr != nil {
		attr = *cmd.SysProcAttr
	}
	attr.UseCgroupFD, attr.CgroupFD = true, fd
	cmd.SysProcAttr = &attr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("corral: start in %s: %w", g, err)
	}
	return nil
}

func (d *Driver) startShim(cmd *exec.Cmd, g string, dirOf func(int) string) error {
	req := shimRequest{Path: cmd.Path, ErrFD: 3 + len(cmd.ExtraFiles), Continue: cmd.Path == selfExe}
	for _, i := range d.joinOrder() {
		req.Procs = append(req.Procs, dirOf(i)+"/cgroup.procs")
	}
	enc, err := json.Marshal(req)
	if err != nil {
		return err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("corral: start in %s: %w", g, err)
	}
	defer pr.Close()

	path, env, extra := cmd.Path, cmd.Env, cmd.ExtraFiles
	if len(cmd.Args) == 0 {
		cmd.Args = []string{cmd.Path}
	}
	cmd.Path = selfExe
	cmd.Env = append(slices.Clip(cmd.Environ()), shimEnv+"="+string(enc))
	cmd.ExtraFiles = append(slices.Clip(cmd.ExtraFiles), pw)
	err = cmd.Start()
	// What the caller sees of cmd stays the command it asked for.
	cmd.Path, cmd.Env, cmd.ExtraFiles = path, env, extra
	pw.Close()
	if err != nil {
		return fmt.Errorf("corral: start in %s: %w", g, err)
	}
	// The write end closes when the shim execs (close-on-exec) or exits.
	_ = pr.SetReadDeadline(time.Now().Add(shimTimeout))
	msg, rerr := io.ReadAll(pr)
	if errors.Is(rerr, os.ErrDeadlineExceeded) {
		_ = cmd.Process.Kill() // delivered once its group is thawed
		return fmt.Errorf("%w: %s: the entry shim did not exec within %v (its group was frozen meanwhile?); it is killed", ErrShim, g, shimTimeout)
	}
	if len(msg) > 0 {
		_ = cmd.Wait()
		return fmt.Errorf("%w: %s: %s", ErrShim, g, msg)
	}
	return nil
}

// RunShimIfRequested must be the first statement of main in every binary
// that starts guests through [Driver.Start] (and of TestMain in tests that
// do). In an ordinary run it returns at once. In a process started as the
// cgroup v1 entry shim it joins the guest's groups and execs the guest's
// program, and never returns (unless that program is this binary: then it
// returns once joined, and main goes on to the role asked for); likewise
// in one started through
// [WithMemPolicy]. Package init functions run before it, which is
// one more reason for them to have no side effects.
func RunShimIfRequested() {
	v, ok := syscall.Getenv(shimEnv)
	if !ok {
		runMemPolicyShimIfRequested() // a guest's launch memory policy (mempolicy.go)
		return
	}
	var req shimRequest
	fail := func(err error) {
		f := os.NewFile(uintptr(req.ErrFD), "corral-shim-err")
		if f == nil || req.ErrFD < 3 {
			f = os.Stderr
		}
		fmt.Fprintf(f, "corral cgroup shim: %v", err)
		os.Exit(shimExitCode)
	}
	if err := json.Unmarshal([]byte(v), &req); err != nil {
		fail(fmt.Errorf("bad %s: %w", shimEnv, err))
	}
	if req.ErrFD >= 3 {
		syscall.CloseOnExec(req.ErrFD)
	}
	pid := strconv.Itoa(os.Getpid())
	for _, p := range req.Procs {
		if err := writeFile(p, pid); err != nil {
			fail(fmt.Errorf("join %s: %w", p, err))
		}
	}
	if req.Continue {
		// This process is already the program asked for: what follows
		// in main is what the exec would have run. Closing the error
		// pipe tells Start it joined, as the exec would have.
		if err := syscall.Unsetenv(shimEnv); err != nil {
			fail(err)
		}
		if req.ErrFD >= 3 {
			_ = syscall.Close(req.ErrFD)
		}
		runMemPolicyShimIfRequested()
		return
	}
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return len(kv) > len(shimEnv) && kv[:len(shimEnv)+1] == shimEnv+"="
	})
	err := syscall.Exec(req.Path, os.Args, env)
	fail(fmt.Errorf("exec %s: %w", req.Path, err))
}
