package cgroupdriver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// A spare is a set of groups, one per hierarchy, made ahead of a guest
// whose name is not known yet, with a process started in them
// ([Driver.StartSpare]): a container init waiting for its container, say.
// [Driver.ClaimSpare] turns them into a guest's groups. On cgroup v1 that
// is one rename per hierarchy, and the process is in the guest's groups
// without moving: moving a process between groups waits for an RCU grace
// period (the kernel's cgroup_threadgroup_rwsem), milliseconds on a busy
// host, where a rename takes microseconds. cgroup v2 cannot rename a group:
// there the guest's group is made and the process moved into it.
//
// A spare's groups are <root>/corral/<kind>/_spare-<random>: never a guest's
// name (a guest ID has no '_'), and kept out of [Driver.Orphans] while this
// Driver holds them. Those of a Driver that is gone (an agent that
// crashed) are orphans like any stray group.

// sparePrefix starts the name of every spare's groups.
const sparePrefix = "_spare-"

// Spare names one spare's groups and the process in them.
type Spare struct {
	kind Kind
	name string
	pid  int
}

// PID is the process started in the spare's groups.
func (s *Spare) PID() int { return s.pid }

// spareSet is the spares a Driver holds, by name.
type spareSet struct {
	mu    sync.Mutex
	names map[Kind]map[string]bool
}

func (s *spareSet) hold(k Kind, name string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !on {
		delete(s.names[k], name)
		return
	}
	if s.names == nil {
		s.names = map[Kind]map[string]bool{}
	}
	if s.names[k] == nil {
		s.names[k] = map[string]bool{}
	}
	s.names[k][name] = true
}

func (s *spareSet) held(k Kind, name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.names[k][name]
}

func (d *Driver) spareDir(i int, s *Spare) string { return d.l.kindDir(i, s.kind) + "/" + s.name }

// StartSpare makes a spare's groups for a guest of kind k and starts cmd
// in them as [Driver.Start] starts a guest's command (its first
// instruction inside them). On error nothing is left behind.
func (d *Driver) StartSpare(cmd *exec.Cmd, k Kind) (*Spare, error) {
	if err := (Guest{Kind: k, ID: "spare"}).Validate(); err != nil {
		return nil, err
	}
	var rb [6]byte
	if _, err := rand.Read(rb[:]); err != nil {
		return nil, err
	}
	s := &Spare{kind: k, name: sparePrefix + hex.EncodeToString(rb[:])}
	d.spares.hold(k, s.name, true)
	dirOf := func(i int) string { return d.spareDir(i, s) }
	fail := func(err error) (*Spare, error) {
		ctx, cancel := context.WithTimeout(context.Background(), d.cfg.RemoveTimeout)
		defer cancel()
		err = errors.Join(fmt.Errorf("corral: spare %s: %w", s.name, err), d.removeDirs(ctx, s.name, dirOf))
		d.spares.hold(k, s.name, false)
		return nil, err
	}
	treeReady := false
	for i := range d.l.hs {
		err := mkdir(dirOf(i))
		if err != nil && isErrno(err, unix.ENOENT) && !treeReady {
			if err = d.ensureTree(); err == nil {
				treeReady = true
				err = mkdir(dirOf(i))
			}
		}
		if err != nil {
			return fail(err)
		}
	}
	var err error
	if len(d.l.hs) == 1 && d.l.v2 == 0 {
		err = d.startCloneInto(cmd, s.name, dirOf)
	} else {
		err = d.startShim(cmd, s.name, dirOf)
	}
	if err != nil {
		return fail(err)
	}
	s.pid = cmd.Process.Pid
	return s, nil
}

// ErrSpareUnusable is returned by [Driver.ClaimSpare] when the spare's
// groups cannot become the guest's (a guest in a partition, of another
// kind, or whose groups exist already); the spare is as it was.
var ErrSpareUnusable = errors.New("corral: the spare's groups cannot become the guest's")

// ClaimSpare makes the spare's groups g's, with the spare's process in
// them; the spare is used up. On v1 hierarchies the groups are renamed.
// On v2, g's group is made and the process moved into it: by ClaimSpare
// when a v2 controller applies to g, else by join, which is then not nil.
// A v2 hierarchy that carries no controller (a hybrid host's) sets no
// limit, so the process may set itself up meanwhile; the caller must call
// join, and wait for it, before the process runs anything of g's. A start
// abandoned after the claim removes g's groups ([Driver.Remove]) and what
// is left of the spare's ([Driver.RemoveSpare]). The counter of the
// spare's CPU time is reset, so g's accounting starts at zero. On error
// the spare is as it was.
func (d *Driver) ClaimSpare(s *Spare, g Guest) (join func() error, err error) {
	if err := g.Validate(); err != nil {
		return nil, err
	}
	if g.Partition != "" || g.Kind != s.kind {
		return nil, fmt.Errorf("%w: %s from %s/%s", ErrSpareUnusable, g, s.kind, s.name)
	}
	if !d.spares.held(s.kind, s.name) {
		return nil, fmt.Errorf("%w: %s is used up", ErrSpareUnusable, s.name)
	}
	if err := d.checkThawedIn(s.name, func(i int) string { return d.spareDir(i, s) }); err != nil {
		return nil, err
	}
	var renamed []int
	undo := func(err error) (func() error, error) {
		for _, i := range renamed {
			_ = unix.Rename(d.l.guestDir(i, g), d.spareDir(i, s))
		}
		if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY) {
			err = fmt.Errorf("%w: %w", ErrSpareUnusable, err)
		}
		return nil, fmt.Errorf("corral: claim spare %s for %s: %w", s.name, g, err)
	}
	for i, h := range d.l.hs {
		if h.Version != 1 {
			continue
		}
		if err := unix.Rename(d.spareDir(i, s), d.l.guestDir(i, g)); err != nil {
			return undo(fmt.Errorf("rename in %s: %w", h.MountPoint, err))
		}
		renamed = append(renamed, i)
	}
	if v2 := d.l.v2; v2 >= 0 {
		if err := unix.Mkdir(d.l.guestDir(v2, g), 0o755); err != nil {
			return undo(fmt.Errorf("mkdir in %s: %w", d.l.hs[v2].MountPoint, err))
		}
	}
	d.spares.hold(s.kind, s.name, false)
	if i, v := d.l.at(cCPUAcct); v == 1 {
		// The spare's start-up is not the guest's.
		_ = writeFile(d.l.guestDir(i, g)+"/cpuacct.usage", "0")
	}
	if d.l.v2 < 0 {
		return nil, nil
	}
	join = func() error { return d.joinV2(s, g) }
	if d.v2Controls() {
		return nil, join()
	}
	return join, nil
}

// v2Controls reports whether any controller a guest uses is on the v2
// hierarchy.
func (d *Driver) v2Controls() bool {
	for c := range numControllers {
		if d.l.route[c] == d.l.v2 {
			return true
		}
	}
	return false
}

// joinV2 moves the spare's process from the spare's v2 group into g's and
// removes the spare's.
func (d *Driver) joinV2(s *Spare, g Guest) error {
	v2 := d.l.v2
	if err := writeFile(d.l.guestDir(v2, g)+"/cgroup.procs", strconv.Itoa(s.pid)); err != nil {
		return fmt.Errorf("corral: claim spare %s for %s: %w", s.name, g, err)
	}
	if err := unix.Rmdir(d.spareDir(v2, s)); err != nil && err != unix.ENOENT {
		return fmt.Errorf("corral: claim spare %s for %s: rmdir: %w", s.name, g, err)
	}
	return nil
}

// RemoveSpare removes what is left of a spare's groups, killing what runs
// in them, as [Driver.Remove] does a guest's.
func (d *Driver) RemoveSpare(ctx context.Context, s *Spare) error {
	err := d.removeDirs(ctx, s.name, func(i int) string { return d.spareDir(i, s) })
	if err == nil {
		d.spares.hold(s.kind, s.name, false)
	}
	return err
}
