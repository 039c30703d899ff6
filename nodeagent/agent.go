package nodeagent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/nodeagent/driver"
)

var (
	// ErrBadDesired is returned when the desired state holds a value the
	// agent cannot turn into cgroup settings.
	ErrBadDesired = errors.New("corral: desired state the agent cannot apply")
	// ErrMissingDeps is returned by New when a required dependency is nil.
	ErrMissingDeps = errors.New("corral: agent dependency missing")
	// errFenced is returned by report while the node is fenced: nothing
	// leaves the agent then, and what was not reported is retried later.
	errFenced = errors.New("corral: node fenced, not reporting")
)

// Deps are the agent's collaborators. Coordinator, Notifier, Cgroups and
// Drivers are required; Drivers must be built on Cgroups.
type Deps struct {
	Coordinator Coordinator
	Notifier    Notifier
	Cgroups     Cgroups
	Drivers     Drivers
	// Shaper shapes guests' traffic (domiftune); nil shapes nothing.
	Shaper Shaper
	// Logger receives what the agent does; nil discards.
	Logger *slog.Logger
}

// Agent makes one host match the log. Build it with New, run it with Run;
// Close lets go of the guests without stopping them, as an agent that
// exits for a restart does.
type Agent struct {
	cfg    Config
	deps   Deps
	log    *slog.Logger
	secret string
	fence  *fenceGuard // nil without a fencer
	// reserver and reservation enforce the reserve (Config.GroupPID);
	// reserver is nil without.
	reserver    Reserver
	reservation cgroupdriver.Reservation
	// balloons follows each guest's balloon target (balloon.go); only the
	// run loop touches it.
	balloons balloonWatch
	// shaping is what the shaper last applied (shape.go); only the run
	// loop touches it.
	shaping shapeState
	// net is the node's guest network (netguest.go); nil without a bridge.
	net     *guestNet
	metrics *agentMetrics

	ready     chan struct{}
	readyOnce sync.Once
	wake      chan struct{} // a pass is due; buffered, never blocks a sender
	fenced    atomic.Bool   // set by the heartbeat, read by the loop
	lists     atomic.Uint64 // how often the desired state was listed
	scans     atomic.Uint64 // how often a pass searched for orphans

	// The node's desired state as the agent knows it (list, then watch):
	// listed once, then folded forward by the node's updates. Until a
	// list is in, updates wait in buffered.
	dmu      sync.Mutex
	desired  Desired
	listed   bool
	buffered []api.NodeUpdate
	// behind is a node index a heartbeat reported beyond desired; if the
	// next heartbeat finds desired still short of it, an update was lost.
	behind uint64
	// relists counts the lists asked for; a list that was in flight when
	// another was asked may predate the subscription and does not count.
	relists uint64

	mu      sync.Mutex
	names   map[string]bool // guests held or desired: the notifications that concern us
	cancel  context.CancelFunc
	runDone chan struct{}
	closed  bool

	// guests is only touched by the goroutine running Run (and by Close
	// once Run has returned).
	guests map[string]*guest
	// parts are the partitions held on the host (partition.go), touched
	// by the same goroutine.
	parts            map[string]*partState
	partsUnsupported bool
	// restarts remembers each guest's restarts on this node, and
	// restartTimer pokes the loop when a restart's delay passed
	// (restart.go); touched by the same goroutine.
	restarts map[string]*restartLog
	// migrations are the migrations this agent takes part in, by guest
	// (migrate.go); touched only by the Run goroutine.
	migrations   map[string]*migrationRun
	restartTimer *time.Timer
	// scanned is when a pass last searched the host for orphans; touched
	// by the same goroutine.
	scanned time.Time
}

// guest is one run of a guest the agent holds.
type guest struct {
	name      string
	kind      cgroupdriver.Kind
	partition string // the cluster partition its groups live in, "" for none
	gen       uint64
	inst      Instance // nil when the start failed or the run was lost
	phase     Phase
	// exit is the status of an ended run; startErr why it never started.
	exit     driver.ExitStatus
	startErr error
	missing  bool

	frozen        bool
	startReported bool
	exitReported  bool
	exitIndex     uint64
	applied       map[string]string
	// refused holds knob values the host refused, so they are neither
	// written again nor taken for drift until the log asks for another.
	refused map[string]string

	// net is the network the guest's run got, nil for none.
	net *driver.Network

	hits      uint64 // limit hits at the last usage report
	hitsKnown bool

	// run is the generation's run this is (0 for the first, n after n
	// restarts), named in its reports; policy the guest's restart policy
	// as of its start; decision what follows its end, decided once
	// (restart.go); ended says why the agent ended it, when it did.
	run      int
	policy   *events.RestartPolicy
	decision *RestartDecision
	ended    string
}

// New checks cfg and deps, creates the state directory and the node
// secret (or reads the one a previous run created). It starts nothing.
func New(cfg Config, deps Deps) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Coordinator == nil || deps.Notifier == nil || deps.Cgroups == nil || deps.Drivers == nil {
		return nil, fmt.Errorf("%w: Coordinator, Notifier, Cgroups and Drivers are required", ErrMissingDeps)
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Join(cfg.StateDir, guestsDir), 0o700); err != nil {
		return nil, fmt.Errorf("corral: agent state directory: %w", err)
	}
	secret, err := loadSecret(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	a := &Agent{
		cfg: cfg, deps: deps, log: log.With("node", cfg.NodeID), secret: secret,
		ready: make(chan struct{}), wake: make(chan struct{}, 1),
		names: map[string]bool{}, guests: map[string]*guest{}, restarts: map[string]*restartLog{},
	}
	if a.net, err = newGuestNet(cfg); err != nil {
		return nil, err
	}
	if len(cfg.Fencer.Command) > 0 {
		if a.fence, err = newFenceGuard(cfg, deps.Cgroups, a.log); err != nil {
			return nil, err
		}
	}
	a.metrics = newAgentMetrics(a)
	if cfg.GroupPID != 0 {
		var ok bool
		if a.reserver, ok = deps.Cgroups.(Reserver); !ok {
			return nil, fmt.Errorf("%w: enforcing the reserve needs a cgroup driver that can move the agent (%T has no Reserve method): use *cgroupdriver.Driver, or leave GroupPID 0", ErrMissingDeps, deps.Cgroups)
		}
		cpus, mem := a.capacity()
		if a.reservation, err = cgroupdriver.ReservationFor(cpus, mem, cfg.ReserveCPUs, cfg.ReserveMemoryBytes); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
	}
	return a, nil
}

// capacity is the host's CPUs and memory as the node registers them.
func (a *Agent) capacity() (int, int64) {
	cpus, mem := a.cfg.CPUs, a.cfg.MemoryBytes
	if cpus == 0 {
		cpus = runtime.NumCPU()
	}
	if mem == 0 {
		var err error
		if mem, err = memTotal("/proc/meminfo"); err != nil {
			a.log.Warn("reading the host's memory", "err", err)
		}
	}
	return cpus, mem
}

// enterOwnGroup moves the agent into its own group and caps the corral
// root with the reserve (Config.GroupPID). With a reserve configured a
// failure is the agent's end: running on while the host is not protected
// is what the operator asked not to happen. Without one, the move only
// tidies the tree (and lets cgroup v2 enable controllers below an own
// group that holds processes): the agent warns and goes on where it is.
func (a *Agent) enterOwnGroup() error {
	if a.reserver == nil {
		return nil
	}
	ws, err := a.reserver.Reserve(a.reservation, a.cfg.GroupPID)
	if err != nil {
		if a.cfg.ReserveCPUs > 0 || a.cfg.ReserveMemoryBytes > 0 {
			return fmt.Errorf("corral: the agent cannot enforce its reserve (%d CPUs, %d bytes of memory) on this host: %w; fix that, or run without a reserve", a.cfg.ReserveCPUs, a.cfg.ReserveMemoryBytes, err)
		}
		a.log.Warn("the agent stays in the group it was started in: moving it into its own group failed", "err", err)
		return nil
	}
	applied := make([]string, len(ws))
	for i, w := range ws {
		applied[i] = w.Path() + "=" + w.Value
	}
	a.log.Info("the agent runs in its own group; the corral root holding it and every guest is capped",
		"memory_limit", limitText(a.reservation.MemoryHardLimit), "cpu_limit", limitText(cpuLimit(a.reservation)),
		"reserve_cpus", a.cfg.ReserveCPUs, "reserve_memory", a.cfg.ReserveMemoryBytes, "writes", applied)
	return nil
}

// cpuLimit is a reservation's CPU cap in CPUs, or nil when unmanaged.
func cpuLimit(r cgroupdriver.Reservation) *int64 {
	if r.CPUQuotaUs == nil || *r.CPUQuotaUs == cgroupdriver.Unlimited || r.CPUPeriodUs == nil {
		return r.CPUQuotaUs
	}
	return new(*r.CPUQuotaUs / int64(*r.CPUPeriodUs))
}

func limitText(v *int64) string {
	switch {
	case v == nil:
		return "not managed (no controller)"
	case *v == cgroupdriver.Unlimited:
		return "unlimited (no reserve)"
	}
	return strconv.FormatInt(*v, 10)
}

// Ready is closed once the agent has adopted what a previous run left,
// registered its node and made one full pass over its desired state.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// Run moves the agent into its own group (Config.GroupPID), adopts the
// guests a previous agent left running, registers the node, then follows
// the log until ctx is done or Close is called. It returns nil after
// Close, ctx's error otherwise, and at once the error when a configured
// reserve cannot be enforced on the host. Run may be called once.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a.mu.Lock()
	if a.closed || a.runDone != nil {
		a.mu.Unlock()
		return errors.New("corral: agent already run or closed")
	}
	a.cancel = cancel
	a.runDone = make(chan struct{})
	a.mu.Unlock()
	defer close(a.runDone)

	// First: the fencer started below inherits the group.
	if err := a.enterOwnGroup(); err != nil {
		return err
	}
	a.adopt(ctx)
	if a.fence != nil {
		defer a.fence.close() // after every goroutine started below is done
		// Before anything else: the guests adopted may be running, and
		// from now on only a lease this agent renews keeps them so.
		if err := a.fence.ensure(); err != nil {
			a.log.Error("starting the fencer; retried every heartbeat", "err", err)
		}
	}
	if err := a.register(ctx); err != nil {
		return a.exitErr(ctx)
	}
	if p, ok := a.deps.Drivers.(preparer); ok {
		// Once every goroutine below is done, and before the fencer
		// goes: a spare init left to exit on its own outlives the agent
		// as an orphan, its groups held until the host's init reaps it.
		defer p.Unprepare()
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { a.heartbeat(ctx) })
	subscribed := make(chan struct{})
	wg.Go(func() { a.watch(ctx, subscribed) })
	wg.Go(func() { a.serveLogs(ctx) })
	wg.Go(func() { a.serveConsoles(ctx) })

	resync := time.NewTicker(a.cfg.ResyncInterval)
	defer resync.Stop()
	usage := time.NewTicker(a.cfg.UsageInterval)
	defer usage.Stop()
	defer func() {
		if a.restartTimer != nil {
			a.restartTimer.Stop()
		}
	}()
	// List once the subscription is in place, so no update falls between
	// the list and the watch; a bus that is slow to subscribe costs one
	// more list later, not a missed update.
	select {
	case <-subscribed:
	case <-time.After(a.cfg.HeartbeatInterval):
	case <-ctx.Done():
		return a.exitErr(ctx)
	}
	a.poke()
	// full: the pass is a resync, or the first; scan: the last pass acted
	// (what it did may leave a group behind), or it is the first. A pass
	// woken by an update does not scan before it acts, so that a start
	// does not wait for the scan (about a millisecond); the pass after it
	// does.
	full, scan := true, true
	for {
		select {
		case <-ctx.Done():
			return a.exitErr(ctx)
		case <-a.wake:
		case <-resync.C:
			full = true
		case <-usage.C:
			a.reportUsage(ctx)
			a.watchBalloons(ctx, &a.balloons, time.Now())
			continue
		}
		if a.fenced.Load() {
			a.freezeHeld(ctx)
			continue
		}
		if a.fence != nil {
			may := a.fence.mayAct()
			a.metrics.lease.Set(b2f(may))
			if !may || !a.liftFence() {
				continue // the heartbeat pokes once the lease is renewed
			}
		}
		scan = scan || time.Since(a.scanned) >= a.cfg.OrphanInterval
		if ok, acted := a.pass(ctx, full, scan); ok {
			// What a pass did may leave a group behind (a removal
			// that failed half-way): the next pass looks.
			full, scan = false, acted
			a.readyOnce.Do(func() {
				a.checkDrift(ctx) // what changed while no agent ran
				close(a.ready)
			})
		}
	}
}

func (a *Agent) exitErr(ctx context.Context) error {
	a.mu.Lock()
	closed := a.closed
	a.mu.Unlock()
	if closed {
		return nil
	}
	return ctx.Err()
}

// Close stops Run and lets go of every guest without touching it: the
// guests keep running and a later agent on the same state directory adopts
// them. It is safe to call more than once.
func (a *Agent) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	cancel, done := a.cancel, a.runDone
	a.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	for _, g := range a.guests {
		if g.inst != nil {
			g.inst.Release()
		}
	}
	return nil
}

// poke asks for a pass; it never blocks.
func (a *Agent) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// pass makes the host match the desired state, listing it first when it
// is due (start, reconnect, gap). full (a resync) reads the partitions'
// limits back and re-applies the shaping; scan searches the host for
// orphans and deleted partitions. It reports whether the desired state
// was known, and whether the pass took any action.
func (a *Agent) pass(ctx context.Context, full, scan bool) (ok, acted bool) {
	d, ok := a.current(ctx)
	if !ok {
		return false, false
	}
	a.syncPartitions(d, full, scan)
	a.followPolicies(d)
	obs := a.observe(d, scan)
	var cleaned []string
	var wake time.Duration // the shortest restart delay still to pass
	now := time.Now()
	a.captureFinals(ctx, d)
	for _, act := range Reconcile(d, obs) {
		if ctx.Err() != nil {
			return false, acted
		}
		if act.Op == OpStart {
			if w := a.restartWait(act, now); w > 0 {
				if wake == 0 || w < wake {
					wake = w
				}
				continue
			}
		}
		if (act.Op == OpStart || act.Op == OpThaw) && d.NodeDown {
			a.log.Info("the log has this node down: its guests may run elsewhere, not starting or thawing", "guest", act.Guest, "op", act.Op)
			continue // node.up (or a registration) comes as an update and pokes
		}
		if (act.Op == OpStart || act.Op == OpThaw) && a.fence != nil && !a.fence.mayRun(a.cfg.FenceTimeout) {
			a.log.Warn("the fence lease runs out soon: not starting or thawing until it is renewed", "guest", act.Guest, "op", act.Op)
			continue // the renewal pokes once the lease had run out; else the next resync
		}
		a.metrics.actions.WithLabelValues(string(act.Op)).Inc()
		acted = true
		if removed := a.do(ctx, d, act); removed != "" {
			cleaned = append(cleaned, removed)
		}
	}
	a.migrate(ctx, d)
	if wake > 0 {
		a.wakeAt(wake)
	}
	if len(cleaned) > 0 {
		a.reportCleanup(ctx, cleaned)
	}
	a.shape(ctx, d, full)
	a.setNames(d)
	if p, ok := a.deps.Drivers.(preparer); ok {
		// Once the pass's starts are reported: the drivers' work ahead
		// of the next start (an lxc spare init) takes a core for a while.
		p.Prepare()
	}
	a.metrics.passes.Inc()
	return true, acted
}

// current returns the desired state, listing it when no list is in or a
// gap made it unreliable, and folding in what arrived while it listed.
func (a *Agent) current(ctx context.Context) (Desired, bool) {
	a.dmu.Lock()
	if a.listed {
		d := a.desired
		a.dmu.Unlock()
		return d, true
	}
	asked := a.relists
	a.dmu.Unlock()
	d, err := a.deps.Coordinator.Desired(ctx, a.cfg.NodeID)
	a.lists.Add(1)
	if err != nil {
		if ctx.Err() == nil {
			a.log.Warn("listing the desired state", "err", err)
		}
		return Desired{}, false
	}
	a.dmu.Lock()
	defer a.dmu.Unlock()
	if a.listed && a.desired.Index >= d.Index {
		return a.desired, true
	}
	slices.SortFunc(a.buffered, func(x, y api.NodeUpdate) int { return cmp.Compare(x.Index, y.Index) })
	for _, u := range a.buffered {
		next, ok := Fold(d, u)
		if !ok {
			break // lost on the way: the heartbeat will tell, and we list again
		}
		d = next
	}
	if a.relists != asked {
		// Asked again while this list was under way: it may miss what
		// came before the new subscription. Use it, and list once more.
		a.poke()
		return d, true
	}
	a.desired, a.listed, a.buffered, a.behind = d, true, nil, 0
	return d, true
}

// Lists returns how often the agent listed its desired state: once at
// start and after every reconnect or gap, never per event.
func (a *Agent) Lists() uint64 { return a.lists.Load() }

// update folds one of the node's updates into the desired state. It runs
// on the watch goroutine.
func (a *Agent) update(u api.NodeUpdate) {
	a.dmu.Lock()
	if !a.listed {
		if len(a.buffered) < maxBuffered {
			a.buffered = append(a.buffered, u)
		}
		a.dmu.Unlock()
		return
	}
	next, ok := Fold(a.desired, u)
	switch {
	case !ok:
		a.log.Info("gap in the node's updates: listing again", "have", a.desired.Index, "update", u.Index, "prev", u.Prev)
		a.listed, a.buffered = false, []api.NodeUpdate{u}
	case next.Index == a.desired.Index:
		a.dmu.Unlock()
		return // a duplicate or a late one
	default:
		moot := !changesDesired(u) && next.NodeDown == a.desired.NodeDown
		a.desired = next
		if moot {
			// The node's own usage report coming back, say: the index
			// moves on, nothing to reconcile.
			a.dmu.Unlock()
			return
		}
	}
	a.dmu.Unlock()
	a.poke()
}

// changesDesired reports whether u carries a guest or a partition the
// node must run or remove; an update without either changes nothing a
// pass would act on, unless it turns the node down or up.
func changesDesired(u api.NodeUpdate) bool {
	return u.Guest != nil || u.Removed != "" || u.Partition != nil || u.PartitionRemoved != ""
}

// maxBuffered bounds the updates kept while a list is due.
const maxBuffered = 4096

// relist marks the desired state as due for a list and asks for a pass.
func (a *Agent) relist() {
	a.dmu.Lock()
	a.listed, a.buffered = false, nil
	a.relists++
	a.dmu.Unlock()
	a.poke()
}

// setNames records which guests concern the agent, for the watcher. At
// rest the set is the one recorded: it is checked, not made again.
func (a *Agent) setNames(d Desired) {
	a.mu.Lock()
	same := a.sameNames(d)
	a.mu.Unlock()
	if same {
		return
	}
	names := make(map[string]bool, len(d.Guests)+len(a.guests))
	for _, g := range d.Guests {
		names[g.Name] = true
	}
	for n := range a.guests {
		names[n] = true
	}
	a.mu.Lock()
	a.names = names
	a.mu.Unlock()
}

// sameNames reports whether a.names are d's guests and the held ones;
// a.mu is held.
func (a *Agent) sameNames(d Desired) bool {
	n := 0
	for _, g := range d.Guests {
		if !a.names[g.Name] {
			return false
		}
		if _, held := a.guests[g.Name]; !held {
			n++
		}
	}
	for name := range a.guests {
		if !a.names[name] {
			return false
		}
	}
	return n+len(a.guests) == len(a.names)
}

func (a *Agent) concerns(guest string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.names[guest]
}

// freezeHeld freezes every running guest: the coordinator has not heard
// from the agent for longer than the fence timeout and may soon place the
// guests elsewhere.
func (a *Agent) freezeHeld(ctx context.Context) {
	for _, act := range Fence(a.observeHeld()) {
		g := a.guests[act.Guest]
		if err := g.inst.Suspend(ctx); err != nil {
			a.log.Error("fencing: freeze failed", "guest", g.name, "err", err)
			continue
		}
		g.frozen = true
		a.persist(g)
		a.log.Warn("fenced: guest frozen", "guest", g.name, "generation", g.gen)
	}
}

// guestDir is the guest's driver state directory.
func (a *Agent) guestDir(name string) string {
	return filepath.Join(a.cfg.StateDir, guestsDir, name)
}

const guestsDir = "guests"

// watchDone pokes the loop when the guest ends.
func (a *Agent) watchDone(ctx context.Context, inst Instance) {
	go func() {
		select {
		case <-inst.Done():
			a.poke()
		case <-ctx.Done():
		}
	}()
}

// cg names g's groups for the cgroup driver.
func (g *guest) cg() cgroupdriver.Guest {
	return cgroupdriver.Guest{Kind: g.kind, ID: g.name, Partition: g.partition}
}
