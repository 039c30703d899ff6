package nodeagent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
)

// fenceGuard is the agent's side of the fencer (fencer.go): it starts the
// fencer or adopts the one a previous agent started, starts a new one when
// it died, renews the lease after every heartbeat that succeeded, and says
// whether the agent may act on guests (liftFence, mayAct).
type fenceGuard struct {
	req     fencerRequest
	command []string
	dir     string // <StateDir>/fence
	log     *slog.Logger
	// lock answers whether a fencer is alive (any goroutine); frozen
	// whether each of req.Dirs is set frozen (the Run goroutine); lease
	// renews and reads the lease: on kept descriptors (fenceprobe.go).
	lock   lockProbe
	frozen []freezeProbe
	lease  leaseProbe

	mu      sync.Mutex
	adopted bool // logged once
	// current: a fencer of this version guards, which reads the lease
	// renewed in place (leaseProbe); until one is known to, the lease is
	// written as a file of one number, which every fencer reads.
	current bool
	valid   bool   // the last renewal found the lease still running
	lastErr string // the last renewal error, logged once
}

// groupPaths is what the fencer needs of the cgroup driver besides its
// report: where each guest's groups are (*cgroupdriver.Driver has it).
type groupPaths interface {
	Paths(g cgroupdriver.Guest) ([]string, error)
}

// freezeDirs returns the kind directories of the freezer hierarchy: the v1
// hierarchy that carries the freezer, else cgroup v2.
func freezeDirs(cg Cgroups) ([]FreezeDir, error) {
	p, ok := cg.(groupPaths)
	if !ok {
		return nil, fmt.Errorf("%w: the fencer needs the cgroup driver's group paths (%T has no Paths method): use *cgroupdriver.Driver, or leave Fencer.Command empty", ErrInvalidConfig, cg)
	}
	rep := cg.Report()
	idx := -1
	for i, h := range rep.Hierarchies {
		if h.Version == 1 && h.Has("freezer") {
			idx = i
			break
		}
	}
	if idx < 0 {
		for i, h := range rep.Hierarchies {
			if h.Version == 2 {
				idx = i
			}
		}
	}
	if idx < 0 {
		return nil, fmt.Errorf("%w: the fencer needs a freezer: mount the v1 freezer controller or use cgroup v2", ErrInvalidConfig)
	}
	var out []FreezeDir
	for _, k := range cgroupdriver.Kinds() {
		paths, err := p.Paths(cgroupdriver.Guest{Kind: k, ID: "x"})
		if err != nil || len(paths) != len(rep.Hierarchies) {
			return nil, fmt.Errorf("corral: the %s groups' paths: %v", k, err)
		}
		out = append(out, FreezeDir{Path: filepath.Dir(paths[idx]), Version: rep.Hierarchies[idx].Version})
	}
	// Guests in cluster partitions live in <root>/corral/partitions/<name>/<kind>.
	paths, err := p.Paths(cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "x", Partition: "x"})
	if err != nil || len(paths) != len(rep.Hierarchies) {
		return nil, fmt.Errorf("corral: the partitions' groups' paths: %v", err)
	}
	parts := filepath.Dir(filepath.Dir(filepath.Dir(paths[idx])))
	out = append(out, FreezeDir{Path: parts, Version: rep.Hierarchies[idx].Version, Depth: 3})
	return out, nil
}

func newFenceGuard(cfg Config, cg Cgroups, log *slog.Logger) (*fenceGuard, error) {
	dirs, err := freezeDirs(cg)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(cfg.StateDir, fenceDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("corral: the fencer's directory: %w", err)
	}
	return &fenceGuard{
		req:     fencerRequest{StateDir: cfg.StateDir, Dirs: dirs, Poll: cfg.Fencer.Poll, Version: fencerVersion},
		command: cfg.Fencer.Command, dir: dir, log: log.With("fence", dir),
	}, nil
}

// close closes the probes' descriptors, once Run's goroutines are done.
func (f *fenceGuard) close() {
	f.lock.close()
	f.lease.close()
	for i := range f.frozen {
		f.frozen[i].close()
	}
}

// ensure makes sure a fencer guards the lease: the one running (started
// by this agent or a previous one) when it guards the same groups, else a
// new one.
func (f *fenceGuard) ensure() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lock.alive(f.dir) {
		info, err := readFencerInfo(f.dir)
		if err == nil && info.same(f.req) {
			f.current = true
			if !f.adopted {
				f.adopted = true
				f.log.Info("a fencer guards the lease", "pid", info.PID)
			}
			return nil
		}
		f.log.Info("replacing a fencer that guards other groups", "was", info, "err", err)
		if err := StopFencer(f.req.StateDir, 5*time.Second); err != nil {
			return err
		}
	}
	return f.start()
}

func readFencerInfo(dir string) (fencerRequest, error) {
	var info fencerRequest
	b, err := os.ReadFile(filepath.Join(dir, infoFile))
	if err == nil {
		err = json.Unmarshal(b, &info)
	}
	return info, err
}

// maxFencerLog bounds the fencer's log: a longer one is started afresh.
const maxFencerLog = 1 << 20

// start runs a new fencer in a session of its own and waits until it
// holds the lock. f.mu is held.
//
// A fencer that finds the lock taken exits busy: another fencer got there
// first, or a probe of the lock (lockHeld, on the Run goroutine) held it
// for that moment. Only the first leaves one guarding; in the second it
// tries again, at most three times in all.
func (f *fenceGuard) start() error {
	for try := 1; ; try++ {
		err := f.startOnce()
		if !errors.Is(err, errFencerLost) || try == 3 {
			return err
		}
	}
}

// errFencerLost: the new fencer found the lock taken, and yet no fencer
// holds it.
var errFencerLost = errors.New("corral: the new fencer found the lock taken, but no fencer holds it")

func (f *fenceGuard) startOnce() error {
	env, err := json.Marshal(f.req)
	if err != nil {
		return err
	}
	logPath := filepath.Join(f.dir, fencerLog)
	flags := os.O_WRONLY | os.O_CREATE | os.O_APPEND
	if st, err := os.Stat(logPath); err == nil && st.Size() > maxFencerLog {
		flags |= os.O_TRUNC
	}
	logf, err := os.OpenFile(logPath, flags, 0o600)
	if err != nil {
		return fmt.Errorf("corral: the fencer's log: %w", err)
	}
	defer logf.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd := exec.Command(f.command[0], f.command[1:]...)
	cmd.Env = append(os.Environ(), fencerEnv+"="+string(env))
	cmd.Dir = "/"
	cmd.Stderr = logf
	cmd.ExtraFiles = []*os.File{w}
	// Its own session: no signal meant for the agent (a terminal's, a
	// process group kill) reaches it, and no parent-death signal.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return fmt.Errorf("corral: starting the fencer %q: %w", f.command[0], err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }() // reaps it while this agent lives
	r.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, len(readyToken))
	_, rerr := io.ReadFull(r, buf)
	if rerr == nil && bytes.Equal(buf, []byte(readyToken)) {
		f.adopted, f.current = true, true
		f.log.Info("fencer started", "pid", cmd.Process.Pid, "poll", f.req.Poll)
		return nil
	}
	var werr error
	select {
	case werr = <-exited:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		werr = <-exited
	}
	var ee *exec.ExitError
	if errors.As(werr, &ee) && ee.ExitCode() == fencerBusy {
		if f.lock.alive(f.dir) {
			return nil // another one got there first: it guards
		}
		return errFencerLost
	}
	return fmt.Errorf("corral: the fencer did not start (%v, %v): see %s", rerr, werr, logPath)
}

// check starts a new fencer when none runs. The heartbeat calls it.
func (f *fenceGuard) check() {
	if f.lock.alive(f.dir) {
		return
	}
	f.log.Warn("no fencer guards the lease: starting one")
	if err := f.ensure(); err != nil {
		f.log.Error("starting the fencer", "err", err)
	}
}

// renew extends the lease to deadline (CLOCK_BOOTTIME nanoseconds). It
// reports whether the lease had run out before: the agent may act again.
func (f *fenceGuard) renew(deadline int64) bool {
	prev, why := f.lease.deadline(filepath.Join(f.dir, leaseFile))
	expired := why != "" || prev <= now()
	f.mu.Lock()
	legacy := !f.current
	f.mu.Unlock()
	var err error
	if legacy {
		f.lease.close()
		err = writeLease(f.req.StateDir, deadline, true)
	} else {
		err = f.lease.write(f.req.StateDir, deadline)
	}
	if err == nil && !expired && deadline < prev {
		// The fencer sleeps until the deadline it read last: an earlier
		// one (a shorter fence timeout than the last agent's) must wake it.
		wakeFencer(f.dir)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		if err.Error() != f.lastErr {
			f.lastErr = err.Error()
			f.log.Error("renewing the fence lease: the fencer will freeze the guests when it runs out", "err", err)
		}
		f.valid = false
		return false
	}
	f.lastErr = ""
	was := f.valid
	f.valid = true
	return expired || !was
}

// mayAct reports whether the agent may act on guests: a fencer guards the
// lease and the lease has not run out. Acting without it could thaw or
// start a guest just as the fencer freezes, or while no one would.
func (f *fenceGuard) mayAct() bool {
	if !f.lock.alive(f.dir) {
		return false
	}
	d, why := f.lease.deadline(filepath.Join(f.dir, leaseFile))
	return why == "" && d > now()
}

// mayRun reports whether the lease runs long enough for the agent to start
// or thaw a guest: at least a quarter of the fence timeout (a renewed
// lease runs at least half of it). A guest started into a group the
// fencer freezes meanwhile would block the start until someone thaws it.
func (f *fenceGuard) mayRun(fenceTimeout time.Duration) bool {
	d, why := f.lease.deadline(filepath.Join(f.dir, leaseFile))
	return why == "" && time.Duration(d-now()) >= fenceTimeout/4
}

// liftFence takes down the fence the fencer put up (the kind directories
// frozen) without letting any guest run: every populated guest group is
// first frozen on its own, and every guest the agent holds marked frozen,
// so that only the pass that follows, on a freshly listed desired state,
// thaws those the log still assigns here and destroys the rest. It reports
// whether the kind directories are thawed (a pass may start guests).
func (a *Agent) liftFence() bool {
	f := a.fence
	if len(f.frozen) != len(f.req.Dirs) {
		f.frozen = make([]freezeProbe, len(f.req.Dirs))
	}
	var up []FreezeDir
	for i, d := range f.req.Dirs {
		if frozen, err := f.frozen[i].frozen(d); err == nil && frozen {
			up = append(up, d)
		}
	}
	if len(up) == 0 {
		return true
	}
	held := 0 // populated guest groups the fence held
	for _, d := range up {
		groups, err := guestGroups(d)
		if err != nil {
			a.log.Error("lifting the fence: listing the guests' groups", "dir", d.Path, "err", err)
			return false
		}
		for _, c := range groups {
			if !populated(c) {
				continue
			}
			held++
			if err := setFreeze(c, true); err != nil {
				a.log.Error("lifting the fence: freezing a guest on its own first", "group", c.Path, "err", err)
				return false
			}
		}
	}
	for _, g := range a.guests {
		if g.phase == PhaseRunning && g.inst != nil && !g.frozen {
			g.frozen = true
			a.persist(g)
		}
	}
	for _, d := range up {
		if err := setFreeze(d, false); err != nil {
			a.log.Error("lifting the fence", "dir", d.Path, "err", err)
			return false
		}
	}
	if held == 0 {
		// A first start: the fencer froze the empty kind directories
		// before the first lease was written. Nothing was held.
		a.log.Debug("lifted the fencer's freeze of the kind directories; no guest was in them", "dirs", len(up))
	} else {
		a.log.Warn("the fencer had frozen the guests: each stays frozen until a pass on a fresh list thaws what the log still assigns here", "guests", held)
	}
	a.relist()
	return true
}

// guestGroups lists the groups d.Depth levels below d (one level when
// unset): the guests' groups a fence covers.
func guestGroups(d FreezeDir) ([]FreezeDir, error) {
	level := []FreezeDir{{Path: d.Path, Version: d.Version}}
	for range max(d.Depth, 1) {
		var next []FreezeDir
		for _, g := range level {
			ents, err := os.ReadDir(g.Path)
			if err != nil {
				if errors.Is(err, os.ErrNotExist) && g.Path == d.Path {
					return nil, nil
				}
				return nil, err
			}
			for _, e := range ents {
				if e.IsDir() {
					next = append(next, FreezeDir{Path: filepath.Join(g.Path, e.Name()), Version: d.Version})
				}
			}
		}
		level = next
	}
	return level, nil
}
