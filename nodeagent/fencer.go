package nodeagent

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corral-dev/corral/coordinator/bus"
)

// The fencer is the half of fencing that does not need the agent alive
// (invariant 6): a tiny process of the agent's own binary, started by the
// agent in a session of its own so that it outlives the agent (kill -9,
// crash, OOM kill, a stopped process). The agent renews a lease after every
// heartbeat that succeeded; the fencer reads it when its deadline comes
// (or sooner, when woken: fencerwait.go) and, once it has run out,
// freezes the kind directories
// <partition>/corral/{process,lxc,qemu} in the freezer hierarchy (v1
// freezer.state, v2 cgroup.freeze), which freezes every guest below them
// and leaves the agent's own group, <partition>/corral/agent, alone. It
// never thaws: only an agent that is back in touch with the coordinator
// does, after its first pass (liftFence).
//
// Everything lives in <StateDir>/fence:
//
//	lease        the deadline, CLOCK_BOOTTIME nanoseconds, twice (a read
//	             that meets a renewal shows two numbers), and the boot's
//	             ID (a lease of another boot has run out), renewed in place
//	             (a file of one number for a fencer older than this)
//	fencer.lock  flock'ed by the live fencer for its whole life
//	fencer.json  the live fencer's pid and what it guards
//	fencer.log   the fencer's own log (its standard error)
//	wake         a FIFO the fencer reads: a byte makes it read the lease
//
// A missing or unreadable lease counts as run out. While the lease has run
// out the fencer reads it, and freezes again, every poll interval. A fencer exits on
// SIGTERM ([StopFencer]) and when the state directory is gone (after one
// last freeze); a second fencer on the same directory exits at once.

// MaxFencerPoll bounds [FencerConfig.Poll]. The coordinator counts it in
// the margin between a node's fence timeout and its node-down timeout:
// a fencer freezes at most a poll after the lease's deadline (in fact
// when its timer fires, at the deadline).
const MaxFencerPoll = 100 * time.Millisecond

// fencerEnv carries the fencer's request into the re-executed binary.
const fencerEnv = "CORRAL_FENCER"

const (
	fenceDir   = "fence"
	leaseFile  = "lease"
	lockFile   = "fencer.lock"
	infoFile   = "fencer.json"
	fencerLog  = "fencer.log"
	readyToken = "ready\n"

	// fencerBusy is the exit code of a fencer that found another one
	// guarding the same state directory.
	fencerBusy = 3
)

// FreezeDir is one directory the fencer freezes: a kind directory in the
// freezer hierarchy (or the directory of the cluster's partitions), and
// that hierarchy's cgroup version.
type FreezeDir struct {
	Path    string `json:"path"`
	Version int    `json:"version"`
	// Depth is how far below Path the guests' groups are: 0 or 1 for a
	// kind directory, 3 for the partitions (<name>/<kind>/<guest>).
	Depth int `json:"depth,omitempty"`
}

// fencerRequest is what the agent tells a fencer it starts, and what the
// fencer records in fencer.json once it guards.
type fencerRequest struct {
	StateDir string        `json:"state_dir"`
	Dirs     []FreezeDir   `json:"dirs"`
	Poll     time.Duration `json:"poll_ns"`
	PID      int           `json:"pid,omitempty"`
	// Version is fencerVersion: an agent replaces a fencer of an older
	// one (which polls the lease ten times a second).
	Version int `json:"version,omitempty"`
}

// fencerVersion 2 sleeps until the lease's deadline (fencerwait.go); 3
// reads the lease renewed in place, its deadline twice (leaseLine).
const fencerVersion = 3

func (r fencerRequest) same(o fencerRequest) bool {
	if r.StateDir != o.StateDir || r.Poll != o.Poll || r.Version != o.Version || len(r.Dirs) != len(o.Dirs) {
		return false
	}
	for i := range r.Dirs {
		if r.Dirs[i] != o.Dirs[i] {
			return false
		}
	}
	return true
}

// RunFencerIfRequested must be called first thing in main (after the
// cgroup shim and the container init) of every binary that runs agents
// with a fencer. In an ordinary run it returns at once; in a process the
// agent started as its fencer it guards the lease and never returns.
func RunFencerIfRequested() {
	v, ok := syscall.Getenv(fencerEnv)
	if !ok {
		return
	}
	var req fencerRequest
	if err := json.Unmarshal([]byte(v), &req); err != nil || req.StateDir == "" || req.Poll <= 0 {
		fmt.Fprintf(os.Stderr, "corral fencer: bad %s (%v): the agent starts the fencer, do not run it by hand\n", fencerEnv, err)
		os.Exit(2)
	}
	os.Exit(runFencer(req))
}

// TuneProcess tunes the runtime of a process that runs an agent and no
// NATS server (`corral agent`): nats-server's once-a-second CPU sampler,
// which every process linking nats-server carries, is stopped; and Go
// code runs on one P unless the GOMAXPROCS variable is set (getenv), since
// the agent's work is one pass at a time and a second P only adds a
// spinning thread's wake-ups to each timer. System calls (cgroup files,
// fork and exec of guests) still run beside it: a thread blocked in one
// hands its P on. Call it before the agent starts. It returns the
// GOMAXPROCS it found.
func TuneProcess(getenv func(string) string) (procs int) {
	bus.StopSampler()
	procs = runtime.GOMAXPROCS(0)
	if getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	return procs
}

func runFencer(req fencerRequest) int {
	// One goroutine does the work: a second P only adds a spinning
	// thread's wake-ups to each of the process's timers. The fencer
	// serves no NATS, so nats-server's once-a-second sampler, which this
	// binary carries, is stopped.
	runtime.GOMAXPROCS(1)
	bus.StopSampler()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("fencer", os.Getpid(), "state", req.StateDir)
	dir := filepath.Join(req.StateDir, fenceDir)
	lock, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		log.Error("opening the lock file", "err", err)
		return 2
	}
	// Closing the file, which its finalizer would do once nothing refers
	// to it, drops the lock: hold it until the fencer exits.
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		log.Info("another fencer guards this state directory", "err", err)
		return fencerBusy
	}
	// Before the lease is first read: what changes it afterwards wakes us.
	// Without a waiter (no inotify instance left, say) the fencer polls,
	// as it always did: better a busy fencer than none.
	w, err := newLeaseWaiter(req.StateDir, dir)
	if err != nil {
		log.Warn("polling the lease: cannot sleep until its deadline", "err", err, "poll", req.Poll)
		w = nil
	} else {
		defer w.Close()
	}
	req.PID = os.Getpid()
	if b, err := json.Marshal(req); err == nil {
		if err := writeAtomic(filepath.Join(dir, infoFile), b); err != nil {
			log.Warn("writing fencer.json", "err", err)
		}
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	var stopping atomic.Bool
	go func() {
		<-stop
		stopping.Store(true)
		if w != nil {
			w.Stop()
		}
	}()
	log.Info("guarding the lease", "dirs", req.Dirs, "poll", req.Poll)

	ready := os.NewFile(3, "ready")
	var fencing bool
	var lastErr, lastWaitErr string
	for {
		if _, err := os.Stat(req.StateDir); errors.Is(err, os.ErrNotExist) {
			freezeAll(req.Dirs)
			log.Info("the agent's state directory is gone: guests left frozen, exiting")
			return 0
		}
		// At rest, sleep until the deadline; fencing, poll, which pushes
		// a FREEZING group on and notices a renewal.
		next, why := leaseDeadline(filepath.Join(dir, leaseFile))
		switch t := now(); {
		case why != "" || next <= t:
			if why == "" {
				why = fmt.Sprintf("deadline passed %v ago", time.Duration(t-next))
			}
			if !fencing {
				fencing = true
				log.Warn("lease ran out: freezing every guest", "why", why)
			}
			if err := freezeAll(req.Dirs); err != nil && err.Error() != lastErr {
				lastErr = err.Error()
				log.Error("freezing", "err", err)
			}
			next = now() + req.Poll.Nanoseconds()
		case fencing:
			// Renewed: an agent is back. It thaws, not us.
			fencing, lastErr = false, ""
			log.Info("lease renewed; the agent lifts the fence")
		}
		if ready != nil {
			// Once the lease was read: from now on what changes it wakes
			// the waiter set up before that read.
			ready.WriteString(readyToken)
			ready.Close()
			ready = nil
		}
		if w == nil {
			time.Sleep(req.Poll)
		} else if err := w.wait(next); err != nil {
			// Never sleep past a deadline on a broken waiter: poll.
			if err.Error() != lastWaitErr {
				lastWaitErr = err.Error()
				log.Error("waiting for the lease's deadline; polling instead", "err", err)
			}
			time.Sleep(req.Poll)
		}
		if stopping.Load() {
			log.Info("stopped")
			os.Remove(filepath.Join(dir, infoFile))
			return 0
		}
	}
}

// now is the lease clock: CLOCK_BOOTTIME, which goes on while the host is
// suspended (the coordinator's clock does too) and is never set.
func now() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		panic("corral: CLOCK_BOOTTIME: " + err.Error()) // Linux has had it since 2.6.39
	}
	return ts.Nano()
}

// leaseDeadline returns the lease's deadline, CLOCK_BOOTTIME nanoseconds,
// or why it has none (missing, unreadable).
func leaseDeadline(path string) (int64, string) {
	var buf [32]byte
	n, err := unix.Readlink(path, buf[:])
	switch {
	case err == nil:
		// A symlink's target: the lease of an agent of fencer version 2.
		return parseLease(buf[:n])
	case !errors.Is(err, unix.EINVAL):
		return 0, (&os.PathError{Op: "readlink", Path: path, Err: err}).Error()
	}
	for try := 0; ; try++ {
		b, err := os.ReadFile(path)
		if err != nil {
			return 0, err.Error()
		}
		d, why := parseLease(b)
		if why != errTornLease || try == 2 {
			return d, why
		}
		// Read while the agent wrote it: the next read is whole.
	}
}

// The lease file holds the deadline twice (leaseLine), so that a read
// that met a renewal half-way, which a file rewritten in place allows,
// shows as two different numbers instead of a third one.
const errTornLease = "the lease was read half-renewed"

// leaseLine is the lease file's content for deadline: the deadline twice,
// each as 19 digits (any int64), so that every renewal writes the same
// bytes' range over the last, then this boot's ID. CLOCK_BOOTTIME starts
// again at zero when the host boots, so a lease left by the last boot
// could otherwise read as running for as long as that boot had lasted.
func leaseLine(deadline int64) []byte {
	if id := bootID(); id != "" {
		return fmt.Appendf(nil, "%019d %019d %s\n", deadline, deadline, id)
	}
	return fmt.Appendf(nil, "%019d %019d\n", deadline, deadline)
}

// bootID is the kernel's ID of this boot, or "" when it cannot be read
// (then leases carry none and are taken as of this boot, as before).
var bootID = sync.OnceValue(func() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if id := strings.TrimSpace(string(b)); err == nil && isBootID(id) {
		return id
	}
	return ""
})

// isBootID reports whether s is written as a boot ID is: a UUID in
// lower-case hex.
func isBootID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case c < '0' || c > '9' && c < 'a' || c > 'f':
			return false
		}
	}
	return true
}

// parseLease reads a lease's content: leaseLine's (with or without a boot
// ID), or one number (a symlink's target, or the file an older agent
// wrote). A lease written in another boot has run out.
func parseLease(b []byte) (int64, string) {
	f := strings.Fields(string(b))
	boot := ""
	if len(f) == 3 {
		if boot = f[2]; !isBootID(boot) {
			return 0, fmt.Sprintf("unreadable lease %q", b)
		}
		f = f[:2]
	}
	var d [2]int64
	for i, s := range f {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || i >= len(d) {
			return 0, fmt.Sprintf("unreadable lease %q", b)
		}
		d[i] = v
	}
	switch {
	case len(f) == 0:
		return 0, fmt.Sprintf("unreadable lease %q", b)
	case len(f) == 2 && d[0] != d[1]:
		return 0, errTornLease
	case boot != "" && boot != bootID():
		return 0, fmt.Sprintf("the lease was written in another boot (%s; this one is %s)", boot, bootID())
	}
	return d[0], ""
}

// writeLease writes the lease afresh: a file made under another name and
// renamed over the lease, atomic. A fencer of this version reads
// leaseLine's two numbers, and the agent then renews the file in place
// (leaseProbe.write): a rename over a file costs ext4 a data block written
// out (auto_da_alloc) and ~150 µs of CPU, a symlink made and renamed over
// still ~150 µs in an idle agent, an in-place write a few. An older
// fencer reads one number: legacy writes that.
func writeLease(stateDir string, deadline int64, legacy bool) error {
	path := filepath.Join(stateDir, fenceDir, leaseFile)
	if legacy {
		return writeAtomic(path, []byte(strconv.FormatInt(deadline, 10)+"\n"))
	}
	os.Remove(path + ".link") // left by a version 2 agent that died half-way
	return writeAtomic(path, leaseLine(deadline))
}

func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// freezeAll freezes every directory that exists and is not frozen yet. It
// does not wait: the next poll pushes a FREEZING group on (reading
// freezer.state makes the kernel re-check it).
func freezeAll(dirs []FreezeDir) error {
	var errs []error
	for _, d := range dirs {
		if err := setFreeze(d, true); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// setFreeze sets the group's own freezer setting when it differs.
func setFreeze(d FreezeDir, frozen bool) error {
	self, err := selfFrozen(d)
	if err != nil {
		return err
	}
	if self == frozen {
		if d.Version == 1 {
			os.ReadFile(filepath.Join(d.Path, "freezer.state")) // re-checks a FREEZING group
		}
		return nil
	}
	file, val := "cgroup.freeze", "0"
	if frozen {
		val = "1"
	}
	if d.Version == 1 {
		file, val = "freezer.state", "THAWED"
		if frozen {
			val = "FROZEN"
		}
	}
	if err := os.WriteFile(filepath.Join(d.Path, file), []byte(val), 0); err != nil {
		return fmt.Errorf("corral: %s/%s = %s: %w", d.Path, file, val, err)
	}
	return nil
}

// selfFrozen reports whether the group itself is set frozen (not merely
// frozen through a parent).
func selfFrozen(d FreezeDir) (bool, error) {
	b, err := os.ReadFile(filepath.Join(d.Path, selfFreezeFile(d)))
	if err != nil {
		return false, err
	}
	return strings.TrimSpace(string(b)) == "1", nil
}

// selfFreezeFile is the file saying whether d itself is set frozen.
func selfFreezeFile(d FreezeDir) string {
	if d.Version == 1 {
		return "freezer.self_freezing"
	}
	return "cgroup.freeze"
}

// populated reports whether the group or a group below it holds a task.
func populated(d FreezeDir) bool {
	if d.Version == 2 {
		b, err := os.ReadFile(filepath.Join(d.Path, "cgroup.events"))
		return err == nil && strings.Contains(string(b), "populated 1")
	}
	found := false
	filepath.WalkDir(d.Path, func(p string, e os.DirEntry, err error) error {
		if err != nil || found || !e.IsDir() {
			return nil
		}
		if b, err := os.ReadFile(filepath.Join(p, "cgroup.procs")); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			found = true
		}
		return nil
	})
	return found
}

// StopFencer stops the fencer guarding stateDir, if one runs, and waits
// until it is gone (or timeout passes). Guests it froze stay frozen. An
// operator retiring a node, and tests, call it; an agent never does.
func StopFencer(stateDir string, timeout time.Duration) error {
	dir := filepath.Join(stateDir, fenceDir)
	if !fencerAlive(dir) {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(dir, infoFile))
	var info fencerRequest
	if err == nil {
		err = json.Unmarshal(b, &info)
	}
	if err != nil || info.PID <= 0 {
		return fmt.Errorf("corral: a fencer guards %s but %s is unreadable (%v): find it with fuser %s and stop it with SIGTERM", stateDir, infoFile, err, filepath.Join(dir, lockFile))
	}
	if err := syscall.Kill(info.PID, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("corral: stopping the fencer (pid %d): %w", info.PID, err)
	}
	deadline := time.Now().Add(timeout)
	for fencerAlive(dir) {
		if time.Now().After(deadline) {
			return fmt.Errorf("corral: the fencer (pid %d) of %s still runs %v after SIGTERM: kill it with SIGKILL", info.PID, stateDir, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// fencerAlive reports whether a fencer holds the lock in dir. The
// heartbeat asks every second: raw descriptors, not an *os.File, which
// would try (and fail) to add a regular file to the poller each time.
func fencerAlive(dir string) bool {
	fd, err := unix.Open(filepath.Join(dir, lockFile), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	held, err := lockHeld(fd)
	return err == nil && held
}
