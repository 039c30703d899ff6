package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
)

// fakeCoordinator is an in-memory coordinator for one node: it holds the
// node's desired state as the coordinator computes it (Resources included),
// applies the agent's reports to it as the state machine would, records
// them, and publishes every change as an api.NodeUpdate whose Prev chains
// the node's updates. Like NATS it may lose updates: a watcher whose
// buffer is full misses one, and a test can make it lose chosen ones.
type fakeCoordinator struct {
	t    testing.TB
	node string

	mu         sync.Mutex
	index      uint64         // the log's last index
	nodeIndex  uint64         // the last index that concerned node
	guests     []DesiredGuest // placed on node, sorted by name
	reports    []Report
	reportedAt []time.Time // when each report came, for restart delays
	registered []events.NodeRegistered
	secret     string
	hbFail     bool
	lists      int // Desired calls
	heartbeats int // successful Heartbeat calls
	readies    int // subscriptions whose ready returned
	watchers   map[int]chan api.NodeUpdate
	nextW      int
	// lose, when set, says which updates the bus loses on the way to
	// every watcher; lost records their indexes. overflows counts updates
	// a watcher missed because its buffer was full.
	lose      func(api.NodeUpdate) bool
	lost      []uint64
	overflows int
}

var errUnreachable = errors.New("fake: leader unreachable")

// watchBuffer is a watcher's buffer: large enough that a test which
// wants no loss gets none, yet a full one drops, as NATS may.
const watchBuffer = 4096

func newFakeCoordinator(t testing.TB, node string) *fakeCoordinator {
	return &fakeCoordinator{t: t, node: node, watchers: map[int]chan api.NodeUpdate{}}
}

// find returns the index of guest name in f.guests, or -1; mu must be held.
func (f *fakeCoordinator) find(name string) int {
	return slices.IndexFunc(f.guests, func(g DesiredGuest) bool { return g.Name == name })
}

// get returns the placed guest name; the test fails when there is none.
// mu must be held.
func (f *fakeCoordinator) get(name string) *DesiredGuest {
	i := f.find(name)
	if i < 0 {
		f.t.Errorf("fake: guest %q is not placed on %s", name, f.node)
		return &DesiredGuest{}
	}
	return &f.guests[i]
}

// commit appends an event about guest (or the node, when guest is "") and
// publishes the node's update: the guest as the node must now run it, or
// its removal when it is no longer placed here. mu must be held.
func (f *fakeCoordinator) commit(guest string, p events.Payload) uint64 {
	f.index++
	e := events.New(time.Now(), "fake", p)
	e.Index, e.Guest, e.Node = f.index, guest, f.node
	raw, err := events.Marshal(e)
	if err != nil {
		f.t.Errorf("fake: %v", err)
	}
	u := api.NodeUpdate{Index: f.index, Prev: f.nodeIndex, Event: raw}
	f.nodeIndex = f.index
	if guest != "" {
		if i := f.find(guest); i >= 0 {
			g := f.guests[i] // a copy: the fake replaces fields, never writes through them
			u.Guest = &g
		} else {
			u.Removed = guest
		}
	}
	if f.lose != nil && f.lose(u) {
		f.lost = append(f.lost, u.Index)
		return f.index
	}
	for _, w := range f.watchers {
		select {
		case w <- u:
		default: // NATS may drop: the agent must cope
			f.overflows++
		}
	}
	return f.index
}

// elsewhere commits an event that concerns another node: the log's index
// moves on, the node's updates skip it.
func (f *fakeCoordinator) elsewhere() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index++
	return f.index
}

func (f *fakeCoordinator) Register(ctx context.Context, n events.NodeRegistered, secret string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.secret != "" && f.secret != secret {
		return fmt.Errorf("fake: node %s registered with another secret", n.ID)
	}
	f.secret = secret
	f.registered = append(f.registered, n)
	f.commit("", &n)
	return nil
}

func (f *fakeCoordinator) Desired(ctx context.Context, node string) (Desired, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists++
	if f.hbFail {
		return Desired{}, errUnreachable
	}
	if node != f.node {
		return Desired{}, fmt.Errorf("%w: fake: node %q is not %q", ErrRefused, node, f.node)
	}
	return Desired{Index: f.index, Guests: slices.Clone(f.guests)}, nil
}

func (f *fakeCoordinator) Report(ctx context.Context, node, secret string, items []Report) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hbFail {
		return 0, errUnreachable
	}
	if secret != f.secret {
		return 0, fmt.Errorf("%w: wrong secret", ErrRefused)
	}
	for _, it := range items {
		var g *DesiredGuest
		if i := f.find(it.Guest); i >= 0 {
			g = &f.guests[i]
		}
		switch p := it.Payload.(type) {
		case *events.GuestStarted:
			if g == nil || g.Generation != p.Generation || g.Restart != p.Restart {
				return 0, fmt.Errorf("%w: stale start", ErrRefused)
			}
			g.Status = StatusRunning
		case *events.GuestExited:
			if g == nil || g.Generation != p.Generation || g.Restart != p.Restart {
				return 0, fmt.Errorf("%w: stale exit", ErrRefused)
			}
			g.Status = StatusExited
			if p.Error != "" {
				g.Status = StatusFailed
			}
		case *events.GuestRestarting:
			// As the state machine: the next run of the generation.
			if g == nil || g.Generation != p.Generation || g.Desired != DesiredRunning {
				return 0, fmt.Errorf("%w: stale restart", ErrRefused)
			}
			g.Status, g.Restart = StatusPlaced, g.Restart+1
		}
		f.reports = append(f.reports, it)
		f.reportedAt = append(f.reportedAt, time.Now())
		f.commit(it.Guest, it.Payload)
	}
	return f.index, nil
}

func (f *fakeCoordinator) Heartbeat(ctx context.Context, node, secret string) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hbFail {
		return 0, errUnreachable
	}
	f.heartbeats++
	return f.nodeIndex, nil
}

func (f *fakeCoordinator) Watch(ctx context.Context, node string, ready func(), fn func(api.NodeUpdate)) error {
	if node != f.node {
		return fmt.Errorf("fake: no updates for node %q", node)
	}
	ch := make(chan api.NodeUpdate, watchBuffer)
	f.mu.Lock()
	id := f.nextW
	f.nextW++
	f.watchers[id] = ch
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.watchers, id)
		f.mu.Unlock()
	}()
	ready()
	f.mu.Lock()
	f.readies++
	f.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case u := <-ch:
			fn(u)
		}
	}
}

// resourcesOf is what the coordinator computes for a new placement: the
// definition's cpu_shares and memory (for a VM with QEMU's headroom).
func resourcesOf(def events.GuestDefined) cgroupdriver.Resources {
	var r cgroupdriver.Resources
	if def.CPUShares > 0 {
		r.CPUShares = new(uint64(def.CPUShares))
	}
	mem := def.MemoryBytes
	if def.Driver == events.DriverQEMU {
		mem = events.QEMUMemoryLimit(mem)
	}
	if mem > 0 {
		r.MemoryHardLimit = new(mem)
	}
	return r
}

// place defines and places a guest on the node, desired running, and
// returns its generation.
func (f *fakeCoordinator) place(def events.GuestDefined) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if i := f.find(def.Name); i >= 0 {
		f.guests = slices.Delete(f.guests, i, i+1)
	}
	gen := f.index + 1
	f.guests = append(f.guests, DesiredGuest{Name: def.Name, Generation: gen, Desired: DesiredRunning, Status: StatusPlaced,
		Definition: def, Resources: resourcesOf(def)})
	slices.SortFunc(f.guests, func(a, b DesiredGuest) int { return strings.Compare(a.Name, b.Name) })
	f.commit(def.Name, &events.GuestPlaced{Node: f.node})
	return gen
}

func (f *fakeCoordinator) setDesired(name, desired string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	g := f.get(name)
	if desired == DesiredRunning && (g.Status == StatusExited || g.Status == StatusFailed) {
		g.Status = StatusPlaced
	}
	g.Desired = desired
	if desired == DesiredRunning {
		f.commit(name, &events.GuestStartRequested{})
	} else {
		f.commit(name, &events.GuestStopRequested{})
	}
}

// pause asks for the guest to be suspended (or resumed).
func (f *fakeCoordinator) pause(name string, paused bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.get(name).Paused = paused
	if paused {
		f.commit(name, &events.GuestSuspendRequested{})
	} else {
		f.commit(name, &events.GuestResumeRequested{})
	}
}

func (f *fakeCoordinator) undefine(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if i := f.find(name); i >= 0 {
		f.guests = slices.Delete(f.guests, i, i+1)
	}
	f.commit(name, &events.GuestUndefined{})
}

// moveAway places the guest on another node.
func (f *fakeCoordinator) moveAway(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if i := f.find(name); i >= 0 {
		f.guests = slices.Delete(f.guests, i, i+1)
	}
	f.commit(name, &events.GuestPlaced{Node: "elsewhere"})
}

// tune sets a knob, in its canonical text, as the coordinator folds a
// tuning into the guest's Resources.
func (f *fakeCoordinator) tune(name, knob, value string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	g := f.get(name)
	old := g.Resources.Knobs()[knob]
	if err := g.Resources.SetKnob(knob, value); err != nil {
		f.t.Errorf("fake: tune %s: %v", name, err)
		return
	}
	f.commit(name, &events.GuestTuned{Knob: knob, Old: old, New: value, Live: true})
}

func (f *fakeCoordinator) setUnreachable(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hbFail = down
}

// setLose makes the bus lose every update lose accepts (nil: none).
func (f *fakeCoordinator) setLose(lose func(api.NodeUpdate) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lose = lose
}

// loseOnce makes the bus lose the first update match accepts.
func (f *fakeCoordinator) loseOnce(match func(api.NodeUpdate) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lose = func(u api.NodeUpdate) bool {
		if !match(u) {
			return false
		}
		f.lose = nil // called with mu held
		return true
	}
}

// about matches the updates about guest name.
func about(name string) func(api.NodeUpdate) bool {
	return func(u api.NodeUpdate) bool {
		return (u.Guest != nil && u.Guest.Name == name) || u.Removed == name
	}
}

func (f *fakeCoordinator) status(name string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if i := f.find(name); i >= 0 {
		return f.guests[i].Status
	}
	return ""
}

// counters returns how often the agent listed, how many heartbeats
// succeeded and how many subscriptions became ready.
func (f *fakeCoordinator) counters() (lists, heartbeats, readies int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lists, f.heartbeats, f.readies
}

// losses returns the indexes of the updates lost on purpose and the count
// of those a full buffer dropped.
func (f *fakeCoordinator) losses() (lost []uint64, overflows int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.lost), f.overflows
}

// reportsOf returns the reports of type T about guest ("" for node-wide).
func reportsOf[T events.Payload](f *fakeCoordinator, guest string) []T {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []T
	for _, r := range f.reports {
		if p, ok := r.Payload.(T); ok && r.Guest == guest {
			out = append(out, p)
		}
	}
	return out
}

// reportTimes returns when each report of type T about guest came.
func reportTimes[T events.Payload](f *fakeCoordinator, guest string) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []time.Time
	for i, r := range f.reports {
		if _, ok := r.Payload.(T); ok && r.Guest == guest {
			out = append(out, f.reportedAt[i])
		}
	}
	return out
}

func (f *fakeCoordinator) reportCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.reports)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-time.After(5 * time.Millisecond) // poll interval
	}
}

// waitReport waits for the first report of type T about guest that ok
// accepts (nil: any).
func waitReport[T events.Payload](t testing.TB, f *fakeCoordinator, guest string, ok func(T) bool) T {
	t.Helper()
	var got T
	waitFor(t, fmt.Sprintf("a %T report about %q", got, guest), 15*time.Second, func() bool {
		for _, p := range reportsOf[T](f, guest) {
			if ok == nil || ok(p) {
				got = p
				return true
			}
		}
		return false
	})
	return got
}

// TestAgentReportsTuningFailed: a value the host refuses, by the kernel
// (a memory limit below what the guest holds: EBUSY) or by the cgroup
// driver's own check (memory+swap below memory), is reported once as
// guest.tuning_failed with the host's error, not on every pass; other
// knobs of the guest are still applied.
func TestAgentReportsTuningFailed(t *testing.T) {
	h := newHost(t)
	h.start(t)
	t.Cleanup(func() { h.cleanup(t) })
	def := sleeper("web")
	def.Command = []string{"/bin/sh", "-c", `x=$(head -c 24000000 /dev/zero | tr '\0' a); echo held; sleep 1000`}
	h.coord.place(def)
	waitReport[*events.GuestStarted](t, h.coord, "web", nil)
	waitFor(t, "the guest to hold its memory", 15*time.Second, func() bool {
		st, err := h.cg.Stats(cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "web"})
		return err == nil && st.Memory.Usage > 20<<20
	})
	failures := func(knob string) []*events.GuestTuningFailed {
		var out []*events.GuestTuningFailed
		for _, f := range reportsOf[*events.GuestTuningFailed](h.coord, "web") {
			if f.Knob == knob {
				out = append(out, f)
			}
		}
		return out
	}

	h.coord.tune("web", "hard_limit", "4194304")
	f := waitReport(t, h.coord, "web", func(p *events.GuestTuningFailed) bool { return p.Knob == "hard_limit" })
	if f.Value != "4194304" || f.Node != testNode || f.Generation == 0 || !strings.Contains(f.Error, "memory.limit_in_bytes") && !strings.Contains(f.Error, "memory.max") {
		t.Errorf("failure report = %+v", f)
	}
	if err := f.Validate(); err != nil {
		t.Errorf("the report would be refused by the coordinator: %v", err)
	}
	t.Logf("kernel refusal: %s", f.Error)

	h.coord.tune("web", "swap_hard_limit", "16777216") // below the 64 MiB memory limit in force
	s := waitReport(t, h.coord, "web", func(p *events.GuestTuningFailed) bool { return p.Knob == "swap_hard_limit" })
	if s.Value != "16777216" || !strings.Contains(s.Error, "swap_hard_limit") {
		t.Errorf("failure report = %+v", s)
	}
	t.Logf("driver refusal: %s", s.Error)
	h.coord.tune("web", "cpu_shares", "600")
	waitReport(t, h.coord, "web", func(p *events.GuestTuningApplied) bool { return p.Knob == "cpu_shares" && p.Value == "600" })

	usageReports(t, h, 5) // five passes, each with a drift check
	if n, m := len(failures("hard_limit")), len(failures("swap_hard_limit")); n != 1 || m != 1 {
		t.Errorf("%d hard_limit and %d swap_hard_limit failure reports, want one each", n, m)
	}
	for _, ta := range reportsOf[*events.GuestTuningApplied](h.coord, "web") {
		if ta.Value == "4194304" || ta.Value == "16777216" {
			t.Errorf("a refused value was reported as applied: %+v", ta)
		}
	}

	// Values the host takes are applied and reported; no failure follows.
	h.coord.tune("web", "swap_hard_limit", "134217728")
	waitReport(t, h.coord, "web", func(p *events.GuestTuningApplied) bool { return p.Knob == "swap_hard_limit" && p.Value == "134217728" })
	if n := len(failures("swap_hard_limit")); n != 1 {
		t.Errorf("%d swap_hard_limit failure reports after a good value, want 1", n)
	}
}
