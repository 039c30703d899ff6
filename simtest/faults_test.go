package simtest_test

import (
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/simtest"
)

var (
	seedFlag  = flag.Uint64("seed", 0, "run TestFaults with this seed only (the replay of a failing seed)")
	seedsFlag = flag.Int("seeds", 0, "run TestFaults with this many more seeds, from a random start")
	fromFlag  = flag.Uint64("from", 0, "the first of the -seeds seeds (0: random)")
	stepsFlag = flag.Int("steps", 50, "steps of each TestFaults schedule")
	nodesFlag = flag.Int("nodes", 4, "agents (hosts) of each TestFaults cluster")
	rateFlag  = flag.Float64("faultrate", 0.3, "share of TestFaults steps that inject a fault")
	downFlag  = flag.Int("maxdown", 0, "servers TestFaults may fault at once (0: 2 for seeds divisible by 3, else 1)")
	fullFlag  = flag.Bool("diskfull", false, "TestFaults disk faults fail log appends only (a full disk), not every log write")
	traceFlag = flag.Bool("steplog", false, "log every step and heal of TestFaults")
)

// ciSeeds are the seeds every run of TestFaults tries.
var ciSeeds = []uint64{1, 2, 3, 4, 5, 6}

// faultNodes is the cluster TestFaults runs: three servers and nodes
// n1 to n<nodes>.
func faultNodes(seed uint64, nodes int) simtest.Config {
	cfg := simtest.Config{Seed: seed, Servers: 3}
	for i := range nodes {
		cfg.Nodes = append(cfg.Nodes, simtest.NodeConfig{ID: fmt.Sprintf("n%d", i+1)})
	}
	return cfg
}

// logTail keeps the last lines written to it.
type logTail struct {
	mu    sync.Mutex
	lines []string
}

func (l *logTail) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, strings.TrimRight(string(p), "\n"))
	if len(l.lines) > 400 {
		l.lines = l.lines[len(l.lines)-300:]
	}
	return len(p), nil
}

func (l *logTail) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// faultTotals adds up what the seeds of one TestFaults did.
type faultTotals struct {
	mu     sync.Mutex
	seeds  []uint64
	failed []uint64
	faults map[simtest.StepKind]int
	ops    map[simtest.StepKind]int
	opErrs int
	skip   int
	leader int
	check  simtest.CheckStats
}

func (f *faultTotals) add(seed uint64, failed bool, n simtest.NemesisStats, k simtest.CheckStats) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seeds = append(f.seeds, seed)
	if failed {
		f.failed = append(f.failed, seed)
	}
	for kind, x := range n.Faults {
		f.faults[kind] += x
	}
	for kind, x := range n.Ops {
		f.ops[kind] += x
	}
	f.opErrs += n.OpErrors
	f.skip += n.Skipped
	f.leader += n.LeaderChanges
	f.check.Add(k)
}

func (f *faultTotals) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	slices.Sort(f.seeds)
	var faults, ops []string
	total := 0
	for _, k := range slices.Sorted(maps.Keys(f.faults)) {
		faults = append(faults, fmt.Sprintf("%s=%d", k, f.faults[k]))
		total += f.faults[k]
	}
	for _, k := range slices.Sorted(maps.Keys(f.ops)) {
		ops = append(ops, fmt.Sprintf("%s=%d", k, f.ops[k]))
	}
	c := f.check
	return fmt.Sprintf("seeds run: %d %v, failed: %v\n"+
		"faults injected: %d (%s); skipped (target busy): %d; leader changes: %d\n"+
		"client operations: %s; not acknowledged: %d\n"+
		"acknowledged writes: %d (%d events); lost: %d\n"+
		"duplicate running guests: %d; divergent servers: %d; orphans: %d; hosts not converged: %d\n"+
		"consistent reads: %d, refused: %d, stale-read violations: %d\n"+
		"log: %d events; published to the event subscriber: %d, neither published nor announced as a gap: %d\n"+
		"nodes declared down: %d; placements: %d; lease expiries (hosts fenced): %d",
		len(f.seeds), f.seeds, f.failed, total, strings.Join(faults, " "), f.skip, f.leader, strings.Join(ops, " "), f.opErrs,
		c.Acked, c.AckedEvents, c.Lost, c.Duplicates, c.Divergent, c.Orphans, c.Unconverged,
		c.Reads, c.ReadsRefused, c.StaleReads, c.LogIndex, c.Published, c.Unpublished, c.NodeDowns, c.Placements, c.LeaseExpiries)
}

// TestFaults runs a seeded schedule of client operations and faults
// (server and agent crashes, partitions, pauses, disk write failures, a
// lossy bus) against three servers and four agents, checking after every
// step that the servers' logs agree and, on every host change, that no
// guest runs unfrozen in two places; at the end it heals everything and
// checks that no acknowledged event was lost, the logs are identical,
// every host runs what the log says and nothing is orphaned.
//
//	go test ./simtest -run TestFaults -seed N   # replay one seed
//	go test ./simtest -run TestFaults -seeds N  # N more seeds
func TestFaults(t *testing.T) {
	seeds := ciSeeds
	if *seedFlag != 0 {
		seeds = []uint64{*seedFlag}
	}
	if *seedsFlag > 0 {
		start := uint64(time.Now().UnixNano())%1_000_000_000 + 1000
		if *fromFlag != 0 {
			start = *fromFlag
		}
		for i := range *seedsFlag {
			seeds = append(seeds, start+uint64(i))
		}
		t.Logf("extra seeds %d to %d", start, start+uint64(*seedsFlag)-1)
	}
	tot := &faultTotals{faults: map[simtest.StepKind]int{}, ops: map[simtest.StepKind]int{}}
	t.Run("seeds", func(t *testing.T) {
		for _, seed := range seeds {
			t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
				runFaults(t, seed, *nodesFlag, *stepsFlag, tot)
			})
		}
	})
	t.Logf("simtest summary:\n%s", tot)
}

func runFaults(t *testing.T, seed uint64, nodes, steps int, tot *faultTotals) {
	replay := fmt.Sprintf("go test ./simtest -run 'TestFaults$' -seed %d -nodes %d -steps %d -faultrate %v -maxdown %d -diskfull=%v -steplog -v", seed, nodes, steps, *rateFlag, *downFlag, *fullFlag)
	simtest.Run(t, seed, func(t *testing.T) {
		var ns simtest.NemesisStats
		fenced := -1
		cfg := faultNodes(seed, nodes)
		// Warnings of every daemon, shown when the seed fails: a seed
		// does not always replay exactly.
		logs := &logTail{}
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
		c := simtest.New(t, cfg)
		k := simtest.NewChecker(c)
		k.WatchPublished(c.Context())
		// Count the seed even when it fails: synctest ends the test at
		// once after a failure in the bubble.
		defer func() {
			if t.Failed() {
				for _, s := range c.Servers() {
					if cs := s.Coordinator(); cs != nil {
						t.Logf("%s: leader %v, applied %d, disk failing %v", s.ID, cs.IsLeader(), cs.AppliedIndex(), s.Disk.Failing())
					} else {
						t.Logf("%s: stopped", s.ID)
					}
				}
				t.Logf("the daemons' last warnings:\n%s", logs)
			}
			ks := k.Stats()
			if fenced >= 0 {
				ks.LeaseExpiries = fenced
			}
			tot.add(seed, t.Failed(), ns, ks)
		}()
		ctx := c.Context()
		errorf := func(format string, args ...any) {
			t.Helper()
			t.Errorf("seed %d: %s\n\treplay: %s", seed, fmt.Sprintf(format, args...), replay)
		}
		n := &simtest.Nemesis{C: c, K: k, Seed: seed, Errorf: errorf, Logf: t.Logf, Verbose: *traceFlag}
		if seed%3 == 0 {
			n.MaxServerFaults = 2 // lose the quorum now and then
		}
		n.DiskFull = *fullFlag
		if *downFlag > 0 {
			n.MaxServerFaults = *downFlag
		}
		steps := simtest.Schedule(seed, simtest.ScheduleConfig{Steps: steps, Servers: len(c.Servers()), Agents: len(c.Agents()), FaultRate: *rateFlag})
		ns = n.Run(ctx, steps)

		// Heal, let node-down, re-placement and the agents' passes run
		// their course, then check the end state.
		n.HealAll()
		c.WaitLeader()
		c.Advance(simtest.NodeDownTimeout)
		if err := k.CheckConverged(ctx, 2*time.Minute); err != nil {
			errorf("%v", err)
		}
		for _, d := range k.Duplicates() {
			errorf("two running copies: %s", d)
		}
		// Stop the agents (their guests run on) so that the log stops
		// growing, and compare the servers' logs once they caught up.
		fenced = k.Stats().LeaseExpiries // before the stops let leases run out
		for _, a := range c.Agents() {
			a.Stop()
		}
		deadline := time.Now().Add(time.Minute)
		for {
			if err := k.CheckLogs(ctx); err != nil {
				errorf("%v", err)
				break
			}
			if k.LogsEven() || time.Now().After(deadline) {
				break
			}
			c.Advance(100 * time.Millisecond)
		}
		if err := k.CheckAcked(); err != nil {
			errorf("%v", err)
		}
		// The leader publishes what it committed shortly after; give it
		// a moment before calling an index unpublished.
		for end := time.Now().Add(10 * time.Second); len(k.Unpublished()) > 0 && time.Now().Before(end); {
			c.Advance(100 * time.Millisecond)
		}
		if err := k.CheckPublished(); err != nil {
			errorf("%v", err)
		}
	})
}

// TestSchedule: one seed, one schedule; another seed, another.
func TestSchedule(t *testing.T) {
	cfg := simtest.ScheduleConfig{Steps: 200, Servers: 3, Agents: 4}
	a, b := simtest.Schedule(42, cfg), simtest.Schedule(42, cfg)
	if !slices.Equal(a, b) {
		t.Fatal("two schedules of seed 42 differ")
	}
	if slices.Equal(a, simtest.Schedule(43, cfg)) {
		t.Fatal("seeds 42 and 43 give the same schedule")
	}
	kinds := map[simtest.StepKind]int{}
	for _, st := range a {
		kinds[st.Kind]++
	}
	for _, k := range []simtest.StepKind{simtest.FaultCrashServer, simtest.FaultCrashAgent, simtest.FaultPartitionServer,
		simtest.FaultIsolateAgent, simtest.FaultPauseServer, simtest.FaultPauseAgent, simtest.FaultDisk, simtest.FaultBus,
		simtest.OpCreate, simtest.OpRead, simtest.OpTune} {
		if kinds[k] == 0 {
			t.Errorf("200 steps of seed 42 have no %s: %v", k, kinds)
		}
	}
}
