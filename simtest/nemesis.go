package simtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
)

// A fault schedule is drawn from a seed before the run starts: one seed,
// one schedule. What each client operation acts on (which guest) is drawn
// while the run goes, from a source seeded from the same seed, among the
// guests the run's own acknowledged writes made.

// StepKind is what one step of a schedule does.
type StepKind string

// Client operations.
const (
	OpCreate  StepKind = "create"
	OpStart   StepKind = "start"
	OpStop    StepKind = "stop"
	OpTune    StepKind = "tune"
	OpDestroy StepKind = "destroy"
	OpRead    StepKind = "read" // a consistent read, checked against what was acknowledged
)

// Faults. Each lasts the step's Duration, then heals.
const (
	FaultCrashServer     StepKind = "crash-server"     // stop, then start on its disk
	FaultCrashAgent      StepKind = "crash-agent"      // stop (its guests run on), then start
	FaultPartitionServer StepKind = "partition-server" // one server cut off the other servers
	FaultIsolateAgent    StepKind = "isolate-agent"    // an agent cut off every server (bus and HTTP)
	FaultPauseServer     StepKind = "pause-server"     // a server cut off everyone
	FaultPauseAgent      StepKind = "pause-agent"      // an agent cut off everyone
	FaultDisk            StepKind = "disk-fail"        // a server's raft log writes fail
	FaultBus             StepKind = "bus-chaos"        // the bus drops, duplicates, delays and reorders
)

// Step is one step of a schedule: after Gap of simulated time, do Kind
// to Target (a server's or an agent's position, or [TargetLeader], for
// faults; the server the client talks to, for operations), for Duration
// (faults).
type Step struct {
	Gap      time.Duration
	Kind     StepKind
	Target   int
	Duration time.Duration
}

// TargetLeader targets a fault at the server that leads when it strikes.
const TargetLeader = -1

// fault reports whether the step injects a fault: only faults last.
func (s Step) fault() bool { return s.Duration > 0 }

func (s Step) String() string {
	if s.Duration > 0 {
		if s.Target == TargetLeader {
			return fmt.Sprintf("+%v %s the leader for %v", s.Gap, s.Kind, s.Duration)
		}
		return fmt.Sprintf("+%v %s #%d for %v", s.Gap, s.Kind, s.Target, s.Duration)
	}
	return fmt.Sprintf("+%v %s via #%d", s.Gap, s.Kind, s.Target)
}

// ScheduleConfig shapes a schedule.
type ScheduleConfig struct {
	Steps   int
	Servers int
	Agents  int
	// FaultRate is the share of steps that inject a fault (0.3 when zero).
	FaultRate float64
}

// Schedule draws the schedule of seed.
func Schedule(seed uint64, cfg ScheduleConfig) []Step {
	rng := rand.New(rand.NewPCG(seed, 0x5c4ed))
	if cfg.FaultRate == 0 {
		cfg.FaultRate = 0.3
	}
	ops := []struct {
		k StepKind
		w int
	}{{OpCreate, 30}, {OpRead, 30}, {OpStop, 8}, {OpStart, 10}, {OpTune, 12}, {OpDestroy, 3}}
	faults := []StepKind{FaultCrashServer, FaultCrashAgent, FaultPartitionServer, FaultIsolateAgent,
		FaultPauseServer, FaultPauseAgent, FaultDisk, FaultBus}
	serverFault := map[StepKind]bool{FaultCrashServer: true, FaultPartitionServer: true, FaultPauseServer: true, FaultDisk: true}
	total := 0
	for _, o := range ops {
		total += o.w
	}
	var out []Step
	for range cfg.Steps {
		st := Step{Gap: time.Duration(50+rng.IntN(1500)) * time.Millisecond}
		if rng.Float64() < cfg.FaultRate {
			st.Kind = faults[rng.IntN(len(faults))]
			switch {
			case st.Kind == FaultBus:
			case serverFault[st.Kind]:
				// Half of them hit whoever leads when they strike.
				st.Target = rng.IntN(cfg.Servers)
				if rng.IntN(2) == 0 {
					st.Target = TargetLeader
				}
			default:
				st.Target = rng.IntN(cfg.Agents)
			}
			// Short (within the fence timeout), medium (fenced, not yet
			// down) and long (declared down, its guests moved).
			switch rng.IntN(3) {
			case 0:
				st.Duration = time.Duration(300+rng.IntN(1500)) * time.Millisecond
			case 1:
				st.Duration = FenceTimeout + LeaseMargin + time.Duration(rng.IntN(5000))*time.Millisecond
			default:
				st.Duration = NodeDownTimeout + time.Duration(2000+rng.IntN(8000))*time.Millisecond
			}
		} else {
			n := rng.IntN(total)
			for _, o := range ops {
				if n < o.w {
					st.Kind = o.k
					break
				}
				n -= o.w
			}
			st.Target = rng.IntN(cfg.Servers)
		}
		out = append(out, st)
	}
	return out
}

// NemesisStats counts what a run of a schedule did.
type NemesisStats struct {
	Steps    int
	Faults   map[StepKind]int // injected, by kind
	Skipped  int              // faults not injected: their target was already faulted
	Ops      map[StepKind]int // client operations tried, by kind
	OpErrors int              // of which failed (not acknowledged)
	// LeaderChanges counts the steps after which another server led than
	// after the step before.
	LeaderChanges int
}

// Nemesis runs a schedule against a cluster: client operations through
// the server each step names, faults that heal after their duration, and
// the checker's log check after every step. Every entity has at most one
// fault at a time, and at most MaxServerFaults servers are faulted at
// once.
type Nemesis struct {
	C       *Cluster
	K       *Checker
	Seed    uint64
	Retry   time.Duration // how long a client operation retries; 2s when zero
	Errorf  func(format string, args ...any)
	Logf    func(format string, args ...any)
	Verbose bool

	// MaxServerFaults bounds the servers faulted at once: 1 keeps a
	// quorum of three, 2 lets the cluster lose it for a while.
	MaxServerFaults int
	// DiskFull makes disk faults fail log appends only ([Disk.SetFull]),
	// instead of every log write ([Disk.SetFailing]).
	DiskFull bool

	rng     *rand.Rand // what client operations act on
	readRng *rand.Rand // where the read after a create goes
	heals   []heal
	faulted map[string]bool
	guests  []string        // created, acknowledged
	doomed  map[string]bool // asked to be destroyed (acknowledged or not)
	next    int
	stats   NemesisStats
}

type heal struct {
	at   time.Time
	what string
	fn   func() bool // false: try again a little later
	key  string
}

// Run runs steps and returns what it did.
func (n *Nemesis) Run(ctx context.Context, steps []Step) NemesisStats {
	n.rng = rand.New(rand.NewPCG(n.Seed, 0x0b5))
	n.readRng = rand.New(rand.NewPCG(n.Seed, 0x4ead))
	n.faulted = map[string]bool{}
	n.doomed = map[string]bool{}
	n.stats = NemesisStats{Faults: map[StepKind]int{}, Ops: map[StepKind]int{}}
	if n.Retry == 0 {
		n.Retry = 2 * time.Second
	}
	if n.MaxServerFaults == 0 {
		n.MaxServerFaults = 1
	}
	var leader *Server
	for i, st := range steps {
		n.wait(st.Gap)
		if n.Verbose {
			n.Logf("step %d at %s: %v", i, time.Now().UTC().Format("15:04:05.000"), st)
		}
		n.step(ctx, st)
		n.stats.Steps++
		if n.Verbose {
			n.Logf("after step %d: %s", i, n.C.Describe())
		}
		if l := n.C.Leader(); l != nil && l != leader {
			if leader != nil {
				n.stats.LeaderChanges++
			}
			leader = l
		}
		if err := n.K.CheckLogs(ctx); err != nil {
			n.Errorf("after step %d (%v): %v", i, st, err)
		}
	}
	return n.stats
}

// HealAll heals every fault still in place, in the order they were
// injected; one that cannot heal yet (an agent that cannot register
// while servers are down) is tried again once the others healed.
func (n *Nemesis) HealAll() {
	deadline := time.Now().Add(10 * time.Minute)
	for len(n.heals) > 0 {
		var later []heal
		for _, h := range n.heals {
			if h.fn() {
				delete(n.faulted, h.key)
			} else {
				later = append(later, h)
			}
		}
		n.heals = later
		if len(later) > 0 {
			if time.Now().After(deadline) {
				n.Errorf("could not heal %d faults in 10 minutes: %v", len(later), later[0].what)
				return
			}
			n.C.Advance(500 * time.Millisecond)
		}
	}
	n.C.HealAll()
	n.C.Bus.SetFault(nil)
}

// wait lets d pass, healing what is due on the way.
func (n *Nemesis) wait(d time.Duration) {
	end := time.Now().Add(d)
	for {
		slices.SortStableFunc(n.heals, func(a, b heal) int { return a.at.Compare(b.at) })
		if len(n.heals) == 0 || n.heals[0].at.After(end) {
			break
		}
		h := n.heals[0]
		if dt := time.Until(h.at); dt > 0 {
			n.C.Advance(dt)
		}
		if n.Verbose {
			n.Logf("heal at %s: %s", time.Now().UTC().Format("15:04:05.000"), h.what)
		}
		if h.fn() {
			n.heals = n.heals[1:]
			delete(n.faulted, h.key)
		} else {
			n.heals[0].at = time.Now().Add(500 * time.Millisecond)
		}
	}
	if dt := time.Until(end); dt > 0 {
		n.C.Advance(dt)
	}
}

func (n *Nemesis) serversFaulted() int {
	k := 0
	for _, s := range n.C.servers {
		if n.faulted[s.ID] {
			k++
		}
	}
	return k
}

func (n *Nemesis) skip(st Step) {
	n.stats.Skipped++
	if n.Verbose {
		n.Logf("skipped %v: its target, or too many servers, already faulted", st)
	}
}

func (n *Nemesis) inject(st Step, key, what string, do func(), undo func() bool) {
	if n.faulted[key] {
		n.skip(st)
		return
	}
	n.faulted[key] = true
	n.stats.Faults[st.Kind]++
	do()
	n.heals = append(n.heals, heal{at: time.Now().Add(st.Duration), what: what, fn: undo, key: key})
}

func (n *Nemesis) step(ctx context.Context, st Step) {
	c := n.C
	if st.fault() {
		var s *Server
		var a *Agent
		if st.Target == TargetLeader {
			st.Target = 0
			for i, x := range c.servers {
				if x == c.Leader() {
					st.Target = i
				}
			}
		}
		if st.Target < len(c.servers) {
			s = c.servers[st.Target]
		}
		if st.Target < len(c.agents) {
			a = c.agents[st.Target]
		}
		switch st.Kind {
		case FaultCrashServer, FaultPartitionServer, FaultPauseServer, FaultDisk:
			if !n.faulted[s.ID] && n.serversFaulted() >= n.MaxServerFaults {
				n.skip(st)
				return
			}
		}
		switch st.Kind {
		case FaultCrashServer:
			n.inject(st, s.ID, "restart "+s.ID, s.Stop, func() bool {
				if err := s.Start(); err != nil {
					n.Errorf("restart %s: %v", s.ID, err)
				}
				return true
			})
		case FaultPartitionServer:
			n.inject(st, s.ID, "heal "+s.ID+" with the servers", func() { c.PartitionServers(s.ID) }, func() bool {
				for _, o := range c.servers {
					c.Heal(s.ID, o.ID)
				}
				return true
			})
		case FaultPauseServer:
			n.inject(st, s.ID, "resume "+s.ID, func() { c.Isolate(s.ID) }, func() bool { c.Rejoin(s.ID); return true })
		case FaultDisk:
			set := s.Disk.SetFailing
			if n.DiskFull {
				set = s.Disk.SetFull
			}
			n.inject(st, s.ID, "free the disk of "+s.ID, func() { set(true) }, func() bool { set(false); return true })
		case FaultCrashAgent:
			n.inject(st, a.ID, "restart agent "+a.ID, a.Stop, func() bool {
				if c.Leader() == nil {
					return false // it could not register: try again once there is a leader
				}
				if err := a.Start(); err != nil {
					// Without a quorum it cannot register: not a fault
					// of the agent's. Try again a little later.
					n.Logf("restart agent %s: %v; trying again", a.ID, err)
					return false
				}
				return true
			})
		case FaultIsolateAgent:
			n.inject(st, a.ID, "reconnect agent "+a.ID, func() { c.IsolateAgent(a.ID) }, func() bool {
				for _, o := range c.servers {
					c.Heal(a.ID, o.ID)
				}
				return true
			})
		case FaultPauseAgent:
			n.inject(st, a.ID, "resume agent "+a.ID, func() { c.Isolate(a.ID) }, func() bool { c.Rejoin(a.ID); return true })
		case FaultBus:
			n.inject(st, "bus", "calm the bus", func() { c.Bus.SetFault(Chaos(0.1, 0.1, 50*time.Millisecond)) }, func() bool { c.Bus.SetFault(nil); return true })
		}
		return
	}
	n.op(ctx, st)
}

// live returns a guest the run created and never asked to destroy, "" if
// none.
func (n *Nemesis) live() string {
	var out []string
	for _, g := range n.guests {
		if !n.doomed[g] {
			out = append(out, g)
		}
	}
	if len(out) == 0 {
		return ""
	}
	return out[n.rng.IntN(len(out))]
}

func (n *Nemesis) op(ctx context.Context, st Step) {
	c := n.C
	s := c.servers[st.Target%len(c.servers)]
	cl := c.Client(s)
	cl.Retry = n.Retry
	ctx, cancel := context.WithTimeout(ctx, n.Retry+5*time.Second)
	defer cancel()
	guest := n.live()
	if st.Kind == OpCreate {
		n.next++
		guest = fmt.Sprintf("g%d", n.next)
	}
	if guest == "" {
		return
	}
	n.stats.Ops[st.Kind]++
	var res api.WriteResult
	var err error
	switch st.Kind {
	case OpRead:
		if err := n.K.CheckRead(ctx, s, "client", guest); err != nil {
			n.Errorf("%v", err)
		}
		return
	case OpCreate:
		res, err = cl.CreateGuest(ctx, api.CreateGuest{Name: guest, Driver: "process", Memory: "64M", Command: []string{"/bin/sleep", "infinity"}})
		if err == nil {
			n.guests = append(n.guests, guest)
		}
	case OpStart, OpStop:
		res, err = cl.GuestAction(ctx, guest, string(st.Kind))
	case OpDestroy:
		n.doomed[guest] = true
		res, err = cl.GuestAction(ctx, guest, "destroy")
	case OpTune:
		res, err = cl.Tune(ctx, api.TuneGuest{Name: guest, Set: map[string]string{"cpu_shares": fmt.Sprint(2 + n.rng.IntN(4000))}})
	}
	if err != nil {
		n.stats.OpErrors++
		var ae *api.APIError
		if errors.As(err, &ae) && (ae.Code == api.CodeInternal || ae.Code == api.CodeInvalid) {
			n.Logf("%s %s via %s: %v", st.Kind, guest, s.ID, err)
		}
		return
	}
	n.K.Acked(string(st.Kind), guest, res)
	if st.Kind == OpCreate {
		// A write through one server is in the next default read on any
		// other.
		o := c.servers[(st.Target+1+n.readRng.IntN(len(c.servers)-1))%len(c.servers)]
		if err := n.K.CheckRead(ctx, o, "client", guest); err != nil {
			n.Errorf("read of %s on %s right after its create through %s: %v", guest, o.ID, s.ID, err)
		}
	}
}
