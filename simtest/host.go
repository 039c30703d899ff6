package simtest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/nodeagent"
	"github.com/corral-dev/corral/nodeagent/driver"
)

// Host is one simulated machine under a node agent: its control groups,
// as values in memory, and its guests, as fake processes that "run" until
// they are stopped or killed. It outlives the agent on it, so an agent
// that restarts adopts what the host still runs. A test reaches behind
// the agent's back through its methods: change a value (drift), kill a
// guest (a crash), look at what runs.
//
// Host implements [nodeagent.Cgroups] and [nodeagent.Drivers] (the
// drivers are built on the groups, as the real ones are). All methods are
// safe for concurrent use.
type Host struct {
	node        string
	cpus        int
	memoryBytes int64

	mu      sync.Mutex
	groups  map[cgroupdriver.Guest]*Group
	procs   map[string]*proc // by guest ID: what runs, or ended and not yet destroyed
	nextPID int

	// watch, when set, is told every change of whether a guest is active
	// (runs and is not frozen), with the host locked.
	watch func(node, guest string, pid int, active bool)
	// The lease the agent renews; see [Host.RenewLease].
	leaseTimer *time.Timer
	leaseFired int
}

// Group is one guest's control group on a [Host]: the knob values it
// holds now, in canonical text, and every Resources applied to it.
type Group struct {
	Values  map[string]string
	Applied []cgroupdriver.Resources
	Frozen  bool
}

// NewHost returns an empty host with cpus CPUs and memoryBytes of memory.
func NewHost(node string, cpus int, memoryBytes int64) *Host {
	return &Host{node: node, cpus: cpus, memoryBytes: memoryBytes,
		groups: map[cgroupdriver.Guest]*Group{}, procs: map[string]*proc{}, nextPID: 1000}
}

var (
	_ nodeagent.Cgroups  = (*Host)(nil)
	_ nodeagent.Drivers  = (*Host)(nil)
	_ nodeagent.Instance = (*Instance)(nil)
)

// CPUs and MemoryBytes are the host's hardware, as it registers.
func (h *Host) CPUs() int          { return h.cpus }
func (h *Host) MemoryBytes() int64 { return h.memoryBytes }

// Group returns a copy of g's group, false when the host has none.
func (h *Host) Group(g cgroupdriver.Guest) (Group, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	x, ok := h.groups[g]
	if !ok {
		return Group{}, false
	}
	return Group{Values: maps.Clone(x.Values), Applied: slices.Clone(x.Applied), Frozen: x.Frozen}, true
}

// Groups lists the groups the host has, sorted.
func (h *Host) Groups() []cgroupdriver.Guest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.SortedFunc(maps.Keys(h.groups), compareGuest)
}

// SetValue changes one knob of g's group behind the agent's back, as an
// operator writing to the cgroup file by hand would.
func (h *Host) SetValue(g cgroupdriver.Guest, knob, value string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	x, ok := h.groups[g]
	if !ok {
		return fmt.Errorf("%w: %s on %s", ErrNoGroup, g, h.node)
	}
	x.Values[knob] = value
	return nil
}

// Running reports whether the host runs guest id (frozen counts).
func (h *Host) Running(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.procs[id]
	return p != nil && !p.ended()
}

// Kill ends guest id as if its process died of sig; the agent finds out
// through its instance.
func (h *Host) Kill(id string, sig syscall.Signal) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.procs[id]
	if p == nil || p.ended() {
		return fmt.Errorf("simtest: %s runs no guest %s", h.node, id)
	}
	p.end(driver.ExitStatus{Code: -1, Signal: sig})
	return nil
}

// Cgroups.

// Apply writes the text knobs r manages to g's group, creating it, and
// returns one write per knob.
func (h *Host) Apply(g cgroupdriver.Guest, r cgroupdriver.Resources) ([]cgroupdriver.Write, error) {
	if err := g.Validate(); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.applyLocked(g, r), nil
}

func (h *Host) applyLocked(g cgroupdriver.Guest, r cgroupdriver.Resources) []cgroupdriver.Write {
	x := h.groups[g]
	if x == nil {
		x = &Group{Values: map[string]string{}}
		h.groups[g] = x
	}
	x.Applied = append(x.Applied, r)
	knobs := r.Knobs()
	var out []cgroupdriver.Write
	for _, k := range slices.Sorted(maps.Keys(knobs)) {
		x.Values[k] = knobs[k]
		out = append(out, cgroupdriver.Write{Knob: k, Dir: h.dir(g), File: k, Value: knobs[k]})
	}
	return out
}

func (h *Host) dir(g cgroupdriver.Guest) string {
	return "/sim/" + h.node + "/corral/" + string(g.Kind) + "/" + g.ID
}

// Observe compares every text knob r manages with g's group.
func (h *Host) Observe(g cgroupdriver.Guest, r cgroupdriver.Resources) ([]cgroupdriver.Observation, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	x := h.groups[g]
	if x == nil {
		return nil, fmt.Errorf("simtest: observe %s: %w", g, syscall.ENOENT)
	}
	knobs := r.Knobs()
	var out []cgroupdriver.Observation
	for _, k := range slices.Sorted(maps.Keys(knobs)) {
		got := x.Values[k]
		out = append(out, cgroupdriver.Observation{Knob: k, Dir: h.dir(g), File: k, Want: knobs[k], Got: got, Drift: got != knobs[k]})
	}
	return out, nil
}

// Usage reports zero counters for a group that exists.
func (h *Host) Usage(g cgroupdriver.Guest) (cgroupdriver.Stats, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.groups[g] == nil {
		return cgroupdriver.Stats{}, fmt.Errorf("simtest: stats of %s: %w", g, syscall.ENOENT)
	}
	return cgroupdriver.Stats{}, nil
}

// Remove removes g's group; like rmdir on a cgroup it fails while a guest
// still runs in it.
func (h *Host) Remove(ctx context.Context, g cgroupdriver.Guest) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.removeLocked(g)
}

func (h *Host) removeLocked(g cgroupdriver.Guest) error {
	if p := h.procs[g.ID]; p != nil && p.guest == g && !p.ended() {
		return fmt.Errorf("simtest: remove %s: %w", g, syscall.EBUSY)
	}
	delete(h.groups, g)
	return nil
}

// RemoveOrphan kills what runs in g's group and removes it, as the real
// driver does (it kills every process in the group, then removes it).
func (h *Host) RemoveOrphan(ctx context.Context, g cgroupdriver.Guest) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if p := h.procs[g.ID]; p != nil && p.guest == g {
		p.end(driver.ExitStatus{Code: -1, Signal: syscall.SIGKILL})
		delete(h.procs, g.ID)
	}
	return h.removeLocked(g)
}

// Orphans returns the groups that known does not name, sorted.
func (h *Host) Orphans(known []cgroupdriver.Guest) ([]cgroupdriver.Guest, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []cgroupdriver.Guest
	for g := range h.groups {
		if !slices.Contains(known, g) {
			out = append(out, g)
		}
	}
	slices.SortFunc(out, compareGuest)
	return out, nil
}

// Report describes a cgroup v2 host with the controllers corral uses.
func (h *Host) Report() cgroupdriver.Report {
	return cgroupdriver.Report{Mode: cgroupdriver.ModeV2, Hierarchies: []cgroupdriver.Hierarchy{{
		Version: 2, MountPoint: "/sim/" + h.node + "/cgroup", MountRoot: "/",
		Controllers: []string{"cpu", "cpuset", "io", "memory", "pids"},
	}}}
}

func compareGuest(a, b cgroupdriver.Guest) int {
	if a.Kind != b.Kind {
		if a.Kind < b.Kind {
			return -1
		}
		return 1
	}
	switch {
	case a.ID < b.ID:
		return -1
	case a.ID > b.ID:
		return 1
	}
	return 0
}

// Drivers.

// Supports accepts every kind: the fake host runs them all alike.
func (h *Host) Supports(kind string) error {
	switch cgroupdriver.Kind(kind) {
	case cgroupdriver.KindProcess, cgroupdriver.KindLXC, cgroupdriver.KindQEMU:
		return nil
	}
	return fmt.Errorf("%w: %q", driver.ErrUnknownDriver, kind)
}

// Versions names every kind with the version "sim".
func (h *Host) Versions() map[string]string {
	return map[string]string{"process": "sim", "lxc": "sim", "qemu": "sim"}
}

// Start creates the guest's group, writes its resources and "runs" it.
// It refuses a guest the host still runs, with driver.ErrAlreadyRunning.
func (h *Host) Start(ctx context.Context, spec driver.Spec) (nodeagent.Instance, error) {
	if err := spec.Guest.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", driver.ErrInvalidSpec, err)
	}
	if err := h.Supports(string(spec.Guest.Kind)); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if p := h.procs[spec.Guest.ID]; p != nil && !p.ended() {
		return nil, fmt.Errorf("%w: %s", driver.ErrAlreadyRunning, spec.Guest)
	}
	r := spec.Resources
	if r.MemoryHardLimit == nil && spec.MemoryBytes > 0 {
		r.MemoryHardLimit = new(spec.MemoryBytes)
	}
	if spec.StateDir != "" {
		// The guest's output, where the real drivers keep it, for the
		// agent's log reads.
		line := fmt.Sprintf("simtest: %s started on %s: %q\n", spec.Guest, h.node, spec.Command)
		if err := os.WriteFile(filepath.Join(spec.StateDir, driver.LogFile), []byte(line), 0o600); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", driver.ErrStart, spec.Guest, err)
		}
	}
	h.applyLocked(spec.Guest, r)
	h.nextPID++
	p := &proc{host: h, guest: spec.Guest, pid: h.nextPID, done: make(chan struct{})}
	h.procs[spec.Guest.ID] = p
	h.changedLocked(p, false)
	return &Instance{p: p}, nil
}

// Adopt re-attaches to a guest the host still holds (running, or ended
// and not yet destroyed: then its status is unknown, as for a real
// adopted guest). It fails with driver.ErrNoRecord when there is none.
func (h *Host) Adopt(ctx context.Context, spec driver.Spec) (nodeagent.Instance, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.procs[spec.Guest.ID]
	if p == nil || p.guest != spec.Guest {
		return nil, fmt.Errorf("%w: %s", driver.ErrNoRecord, spec.Guest)
	}
	return &Instance{p: p, adopted: true}, nil
}

// proc is a guest's "process" on the host. Its fields are guarded by the
// host's lock; done is closed when it ends.
type proc struct {
	host   *Host
	guest  cgroupdriver.Guest
	pid    int
	done   chan struct{}
	status driver.ExitStatus
	frozen bool
	// leaseFrozen marks a guest the lease's expiry froze, for LiftFence.
	leaseFrozen bool
}

// active reports whether the guest runs and is not frozen: what the
// at-most-one-copy rule counts.
func (p *proc) active() bool { return !p.ended() && !p.frozen }

// setFrozen freezes or thaws p, telling the watcher; the host's lock is
// held.
func (p *proc) setFrozen(on bool) {
	h := p.host
	was := p.active()
	p.frozen = on
	if g := h.groups[p.guest]; g != nil {
		g.Frozen = on
	}
	h.changedLocked(p, was)
}

func (p *proc) ended() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// end records how the guest ended; the host's lock is held.
func (p *proc) end(st driver.ExitStatus) {
	if p.ended() {
		return
	}
	was := p.active()
	p.status = st
	p.frozen = false
	close(p.done)
	p.host.changedLocked(p, was)
}

// Instance is an agent's handle on a guest of a [Host]; it implements
// [nodeagent.Instance]. After Release its methods fail with
// driver.ErrReleased and the guest runs on.
type Instance struct {
	p        *proc
	adopted  bool
	mu       sync.Mutex
	released bool
}

func (i *Instance) PID() int              { return i.p.pid }
func (i *Instance) Adopted() bool         { return i.adopted }
func (i *Instance) Done() <-chan struct{} { return i.p.done }

func (i *Instance) Cgroups() []string { return []string{i.p.host.dir(i.p.guest)} }

// Status says how the guest ended; an adopted guest's exit is unknown.
func (i *Instance) Status() (driver.ExitStatus, bool) {
	h := i.p.host
	h.mu.Lock()
	defer h.mu.Unlock()
	if !i.p.ended() {
		return driver.ExitStatus{}, false
	}
	if i.adopted {
		return driver.ExitStatus{Code: -1, Err: driver.ErrExitUnknown}, true
	}
	return i.p.status, true
}

func (i *Instance) check() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.released {
		return driver.ErrReleased
	}
	return nil
}

// Stop ends the guest as a graceful stop does: it dies of SIGTERM.
func (i *Instance) Stop(ctx context.Context, timeout time.Duration) (driver.ExitStatus, error) {
	if err := i.check(); err != nil {
		return driver.ExitStatus{}, err
	}
	h := i.p.host
	h.mu.Lock()
	i.p.end(driver.ExitStatus{Code: -1, Signal: syscall.SIGTERM})
	h.mu.Unlock()
	st, _ := i.Status()
	return st, nil
}

// Suspend freezes the guest's group.
func (i *Instance) Suspend(ctx context.Context) error { return i.freeze(true) }

// Resume thaws it.
func (i *Instance) Resume(ctx context.Context) error { return i.freeze(false) }

func (i *Instance) freeze(on bool) error {
	if err := i.check(); err != nil {
		return err
	}
	h := i.p.host
	h.mu.Lock()
	defer h.mu.Unlock()
	if i.p.ended() {
		return driver.ErrExited
	}
	i.p.setFrozen(on)
	i.p.leaseFrozen = false // the agent's freeze or thaw now
	return nil
}

// Destroy kills the guest (SIGKILL) and removes its group; the host
// forgets it.
func (i *Instance) Destroy(ctx context.Context) error {
	if err := i.check(); err != nil {
		return err
	}
	h := i.p.host
	h.mu.Lock()
	defer h.mu.Unlock()
	i.p.end(driver.ExitStatus{Code: -1, Signal: syscall.SIGKILL})
	if h.procs[i.p.guest.ID] == i.p {
		delete(h.procs, i.p.guest.ID)
	}
	return h.removeLocked(i.p.guest)
}

// Release lets go of the guest without touching it.
func (i *Instance) Release() {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.released = true
}

// ErrNoGroup is returned by [Host.SetValue] for a guest the host has no
// group for.
var ErrNoGroup = errors.New("simtest: no such group")

// Watch makes the host call fn every time one of its guests becomes
// active (runs and is not frozen) or stops being active, with the pid of
// its instance. fn runs with the host locked, on the goroutine that made
// the change, so that a checker sees every change in the order the host
// made them: it must be quick and must not call the host.
func (h *Host) Watch(fn func(node, guest string, pid int, active bool)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.watch = fn
}

// changedLocked tells the watcher when p's activity changed from was.
func (h *Host) changedLocked(p *proc, was bool) {
	if now := p.active(); now != was && h.watch != nil {
		h.watch(h.node, p.guest.ID, p.pid, now)
	}
}

// Active reports whether the host runs guest id and does not keep it
// frozen.
func (h *Host) Active(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.procs[id]
	return p != nil && p.active()
}

// HostGuest is what a host holds of one guest.
type HostGuest struct {
	Guest  cgroupdriver.Guest
	PID    int
	Ended  bool // its process ended and the guest was not destroyed yet
	Frozen bool
}

// Guests lists the guests the host holds, running or ended and not yet
// destroyed, by ID.
func (h *Host) Guests() map[string]HostGuest {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]HostGuest, len(h.procs))
	for id, p := range h.procs {
		out[id] = HostGuest{Guest: p.guest, PID: p.pid, Ended: p.ended(), Frozen: p.frozen}
	}
	return out
}

// The fencing lease models the per-node watcher that fences a host whose
// agent is gone: the agent renews a lease on every heartbeat that
// succeeds, and when the lease is older than its time to live the host
// freezes every guest it runs, whether the agent lives or not. Thawing is
// left to the agent (its next pass, once the coordinator is reachable
// again), which first stops what the log moved away.
//
// The interface assumed of the real watcher (nodeagent's fencer): after
// every heartbeat that succeeded, RenewLease(sent + FenceTimeout), sent
// being when the heartbeat was sent; the fencer, asleep until the lease's
// deadline, notices expiry then (within nodeagent.MaxFencerPoll at most),
// and freezes; once the agent is back in touch, LiftFence thaws, of what expiry froze, what a fresh list
// of the node's desired state still wants running there. The real agent
// does that itself (liftFence, then a pass on a fresh list); the simulated
// agent runs without a fencer, so its link does it for it, after the
// first heartbeat that succeeds and after the agent's start.

// RenewLease moves the host's fencing lease to run out at deadline.
func (h *Host) RenewLease(deadline time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ttl := time.Until(deadline)
	if h.leaseTimer == nil {
		h.leaseTimer = time.AfterFunc(ttl, h.leaseExpired)
		return
	}
	h.leaseTimer.Reset(ttl)
}

// leaseExpired freezes every guest the host runs.
func (h *Host) leaseExpired() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.leaseFired++
	for _, id := range slices.Sorted(maps.Keys(h.procs)) {
		if p := h.procs[id]; p.active() {
			p.setFrozen(true)
			p.leaseFrozen = true
		}
	}
}

// LeaseExpiries counts how often the host's lease expired.
func (h *Host) LeaseExpiries() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.leaseFired
}

// FenceUp reports whether the lease's expiry froze guests that nothing
// thawed since.
func (h *Host) FenceUp() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range h.procs {
		if p.leaseFrozen && !p.ended() {
			return true
		}
	}
	return false
}

// LiftFence thaws the guests the lease's expiry froze, and nothing thawed
// since, that keep accepts; the others stay frozen for the agent to stop.
// It models the real agent's liftFence followed by its pass on a fresh
// list: a guest the log still assigns here runs again, one it moved away
// never does.
func (h *Host) LiftFence(keep func(guest string) bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, id := range slices.Sorted(maps.Keys(h.procs)) {
		if p := h.procs[id]; p.leaseFrozen && !p.ended() && keep(id) {
			p.setFrozen(false)
			p.leaseFrozen = false
		}
	}
}

// StopLease stops the lease's timer, as the host's shutdown does.
func (h *Host) StopLease() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.leaseTimer != nil {
		h.leaseTimer.Stop()
	}
}
