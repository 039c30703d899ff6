package nodeagent

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/nodeagent/driver"
	"github.com/corral-dev/corral/nodeagent/driver/drivertest"
)

var idleProfile = flag.String("agentidle.profile", "", "write a CPU profile of BenchmarkAgentIdle's measuring windows (the last one run) to this file")

// BenchmarkAgentIdle measures what an agent costs at rest: N process
// guests (real `sleep` processes in real groups of a test partition) run
// and nothing changes, while the agent does what it does every interval
// (usage report, log caps, heartbeats, the resync with its drift check).
// It runs the agent with the production defaults except UsageInterval,
// in a process tuned as `corral agent`'s (TuneProcess: one P, no
// nats-server sampler), with its fencer as `corral agent` runs it (a
// process of its own: this test binary re-executed, with the default
// poll), against the in-memory coordinator. It measures the test
// process's own CPU (getrusage: user + system, every thread) and context
// switches, and the fencer's (every thread's run time and context
// switches from /proc), over a window that starts just after one usage report and ends just
// after a whole number of further ones. It reports
//
//   - us/guest/interval: the CPU of both per guest per usage interval
//     (the goal is ≤ 100 µs; at a longer interval it should fall per
//     second);
//   - wakeups/s: the context switches of both per second, voluntary and
//     not, as the idle wake-ups;
//   - fencer-us/guest/interval and fencer-wakeups/s: the fencer's share
//     of the two;
//   - core-%: the share of one core the agent and its fencer took;
//   - bare-us/guest: the reference, measured in the same run: reading one
//     guest's counters with cgroupdriver.Stats and nothing else, the floor
//     of one usage pass; and x-bare, the ratio of the two;
//   - floor-us/guest/interval and floor-wakeups/s: the second reference,
//     the test process over a window as long with the agent closed (the
//     Go runtime's own wake-ups); us/guest/interval includes it. The
//     fencer outlives the agent, as across a restart: the next agent
//     adopts it (and lifts the fence it put up meanwhile, before its
//     window starts).
//
// The coordinator is in-process, so its share (recording the reports) is
// counted with the agent's; encoding for the real API is not.
//
//	go test ./nodeagent -run '^$' -bench AgentIdle -benchtime 1x -v -timeout 30m
//
// -agentidle.profile FILE writes a CPU profile of the window (profiling
// adds its own wake-ups: do not read wakeups/s from such a run).
func BenchmarkAgentIdle(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("guests=%d", n), func(b *testing.B) {
			h := newBenchHost(b)
			h.startGuests(b, n)
			for _, iv := range []time.Duration{time.Second, 10 * time.Second} {
				b.Run("interval="+iv.String(), func(b *testing.B) {
					for range b.N {
						h.measureIdle(b, n, iv)
					}
				})
			}
		})
	}
}

// benchHost is a host for a benchmark: a partition of its own, drivers
// configured as the agent runs them, an in-memory coordinator that says
// when a usage report came.
type benchHost struct {
	host
	usage  chan struct{}
	fencer []string // the fencer's command: this test binary
	stop   func()   // closes the running agent, nil when none runs
}

// usageSignal is the in-memory coordinator, telling after every call that
// carried a usage report.
type usageSignal struct {
	*fakeCoordinator
	usage chan<- struct{}
}

func (u usageSignal) Report(ctx context.Context, node, secret string, items []Report) (uint64, error) {
	idx, err := u.fakeCoordinator.Report(ctx, node, secret, items)
	if len(items) > 0 {
		if _, ok := items[0].Payload.(*events.NodeUsage); ok && err == nil {
			select {
			case u.usage <- struct{}{}:
			default:
			}
		}
	}
	return idx, err
}

func newBenchHost(b *testing.B) *benchHost {
	b.Helper()
	rep := cgrouptest.RequireHost(b)
	part := cgrouptest.NewPartition(b, rep)
	// As `corral agent` runs (set GOMAXPROCS to keep its value).
	procs := TuneProcess(os.Getenv)
	b.Cleanup(func() { runtime.GOMAXPROCS(procs) })
	dcfg := drivertest.ConfigOn(b, part)
	dcfg.LogCheckInterval = driver.DefaultConfig().LogCheckInterval // as the agent runs them
	set, err := driver.New(dcfg)
	if err != nil {
		b.Fatal(err)
	}
	state, err := os.MkdirTemp("/tmp", "na")
	if err != nil {
		b.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	h := &benchHost{host: host{cg: dcfg.Cgroups, set: set, state: state, coord: newFakeCoordinator(b, testNode)},
		usage: make(chan struct{}, 1), fencer: []string{exe, "-test.run=^TestFencerProcess$", "-test.timeout=0"}}
	// Registered after the partition's: runs first, so the agent lets go
	// of its guests before the partition's removal kills them.
	b.Cleanup(func() {
		h.closeAgent()
		if err := StopFencer(state, 5*time.Second); err != nil {
			b.Error(err)
		}
		os.RemoveAll(state)
	})
	return h
}

// runAgent runs an agent with the default configuration and the given
// usage interval, and waits until it is ready.
func (h *benchHost) runAgent(b *testing.B, usage time.Duration) {
	b.Helper()
	h.closeAgent()
	cfg := DefaultConfig()
	cfg.NodeID, cfg.StateDir, cfg.UsageInterval = testNode, h.state, usage
	cfg.Fencer.Command = h.fencer
	deps := h.deps()
	deps.Coordinator = usageSignal{h.coord, h.usage}
	a, err := New(cfg, deps)
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(context.Background()) }()
	h.stop = func() {
		a.Close()
		if err := <-done; err != nil {
			b.Errorf("Run: %v", err)
		}
	}
	select {
	case <-a.Ready():
	case err := <-done:
		b.Fatalf("Run ended before ready: %v", err)
	case <-time.After(5 * time.Minute):
		b.Fatal("agent not ready after 5m")
	}
}

func (h *benchHost) closeAgent() {
	if h.stop != nil {
		h.stop()
		h.stop = nil
	}
}

// startGuests places n process guests and waits until the agent reports
// every one running.
func (h *benchHost) startGuests(b *testing.B, n int) {
	b.Helper()
	for i := range n {
		h.coord.place(events.GuestDefined{Name: fmt.Sprintf("idle-%04d", i), Driver: events.DriverProcess,
			MemoryBytes: 16 << 20, VCPUs: 1, CPUShares: 1024, Command: []string{"sleep", "100000"}})
	}
	t0 := time.Now()
	h.runAgent(b, time.Second)
	waitFor(b, fmt.Sprintf("%d guests running", n), 5*time.Minute, func() bool {
		h.coord.mu.Lock()
		defer h.coord.mu.Unlock()
		return !slices.ContainsFunc(h.coord.guests, func(g DesiredGuest) bool { return g.Status != StatusRunning })
	})
	b.Logf("%d guests running after %v", n, time.Since(t0).Round(time.Millisecond))
}

// measureIdle (re)starts the agent with usage interval iv, which adopts
// the running guests, and measures it over whole usage intervals, at
// least a minute and two intervals, so that every window holds the
// once-a-minute orphan search (shorter windows that held it or not gave
// figures twice apart).
func (h *benchHost) measureIdle(b *testing.B, n int, iv time.Duration) {
	b.Helper()
	h.runAgent(b, iv)
	reports := max(2, int((60*time.Second+iv-1)/iv))
	next := func() {
		select {
		case <-h.usage:
		case <-time.After(iv + time.Minute):
			b.Fatal("no usage report")
		}
	}
	// Settle: the first pass after adoption, and one whole interval.
	next()
	next()
	if *idleProfile != "" {
		f, err := os.Create(*idleProfile)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
	}
	info, err := readFencerInfo(filepath.Join(h.state, fenceDir))
	if err != nil {
		b.Fatalf("no fencer runs: %v", err)
	}
	fencerLog := filepath.Join(h.state, fenceDir, fencerLog)
	log0, _ := os.ReadFile(fencerLog)
	r0, f0, t0 := rusage(b), procUsage(b, info.PID), time.Now()
	for range reports {
		next()
	}
	r1, f1, window := rusage(b), procUsage(b, info.PID), time.Since(t0)
	if log1, _ := os.ReadFile(fencerLog); len(log1) > len(log0) {
		// At rest the fencer has nothing to say: what it said is news.
		b.Logf("the fencer logged during the window:\n%s", log1[len(log0):])
	}
	if *idleProfile != "" {
		pprof.StopCPUProfile()
	}
	// The fencer stays, as across an agent's restart: the next agent
	// adopts it, and the figures are a settled process's, not a young
	// one's (its first seconds go to the runtime's start-up).
	h.closeAgent()

	fcpu, fswitches := f1.cpu-f0.cpu, f1.switches-f0.switches
	cpu := cpuOf(r1) - cpuOf(r0) + fcpu
	switches := (r1.Nvcsw + r1.Nivcsw) - (r0.Nvcsw + r0.Nivcsw) + fswitches
	perGuest := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) / float64(reports) }
	per := perGuest(cpu)
	bare := h.bareStats(b)
	floor, floorSwitches := idleFloor(b, window)
	floorPer := perGuest(floor)
	b.ReportMetric(per, "us/guest/interval")
	b.ReportMetric(float64(switches)/window.Seconds(), "wakeups/s")
	b.ReportMetric(perGuest(fcpu), "fencer-us/guest/interval")
	b.ReportMetric(float64(fswitches)/window.Seconds(), "fencer-wakeups/s")
	b.ReportMetric(100*cpu.Seconds()/window.Seconds(), "core-%")
	b.ReportMetric(bare, "bare-us/guest")
	b.ReportMetric(per/bare, "x-bare")
	b.ReportMetric(floorPer, "floor-us/guest/interval")
	b.ReportMetric(float64(floorSwitches)/window.Seconds(), "floor-wakeups/s")
	b.Logf("%d guests, interval %v: %d usage reports over %v, agent and fencer CPU %v (%.1f µs per guest per interval, %.1f× bare Stats of %.1f µs per guest; the test process without the agent: %.1f µs, so %.1f µs net; the fencer alone %v, %.1f µs), %d context switches (%.0f/s, the fencer's %.0f/s; %.0f/s without the agent)",
		n, iv, reports, window.Round(time.Millisecond), cpu, per, per/bare, bare, floorPer, per-floorPer, fcpu, perGuest(fcpu),
		switches, float64(switches)/window.Seconds(), float64(fswitches)/window.Seconds(), float64(floorSwitches)/window.Seconds())
}

// procTotals is what a process used so far, summed over its threads.
type procTotals struct {
	cpu      time.Duration
	switches int64
}

// procUsage reads another process's CPU time (its threads' run time from
// schedstat, in nanoseconds, where /proc/PID/stat counts clock ticks) and
// context switches, voluntary and not. A thread that exited is not
// counted: a fencer at rest starts none.
func procUsage(tb testing.TB, pid int) procTotals {
	tb.Helper()
	task := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(task)
	if err != nil {
		tb.Fatalf("the fencer (pid %d): %v", pid, err)
	}
	var t procTotals
	for _, e := range ents {
		sched, err := os.ReadFile(filepath.Join(task, e.Name(), "schedstat"))
		if err != nil {
			continue // exited meanwhile
		}
		if f := strings.Fields(string(sched)); len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			t.cpu += time.Duration(ns)
		}
		status, err := os.ReadFile(filepath.Join(task, e.Name(), "status"))
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(string(status), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.HasSuffix(k, "ctxt_switches") {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				t.switches += n
			}
		}
	}
	return t
}

// idleFloor is the second reference: the CPU and context switches of this
// process over a window as long, with no agent running and the guests
// left alone. It is what any process of the corral binary pays at rest,
// the fencer too: the Go runtime, and the once-a-second /proc/self/stat
// sampler that nats-server's pse package starts from its init (every
// corral binary links the embedded server). Measured alike on the test
// VM, a program that only sleeps costs ~0.07 ms of CPU a second, one
// that also links nats-server/v2/server ~0.3-0.5 ms, as this process
// does without the agent: the test binary adds nothing of its own.
func idleFloor(b *testing.B, window time.Duration) (time.Duration, int64) {
	r0 := rusage(b)
	<-time.After(window) // measuring what happens while nothing is asked of the process
	r1 := rusage(b)
	return cpuOf(r1) - cpuOf(r0), (r1.Nvcsw + r1.Nivcsw) - (r0.Nvcsw + r0.Nivcsw)
}

// bareStats is the reference: the CPU one cgroupdriver.Stats of a guest
// takes, the median of three passes over every guest.
func (h *benchHost) bareStats(b *testing.B) float64 {
	h.coord.mu.Lock()
	guests := make([]cgroupdriver.Guest, 0, len(h.coord.guests))
	for _, g := range h.coord.guests {
		guests = append(guests, cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: g.Name})
	}
	h.coord.mu.Unlock()
	var per []float64
	for range 3 {
		r0 := rusage(b)
		for _, g := range guests {
			if _, err := h.cg.Stats(g); err != nil {
				b.Fatal(err)
			}
		}
		per = append(per, float64((cpuOf(rusage(b))-cpuOf(r0)).Microseconds())/float64(len(guests)))
	}
	slices.Sort(per)
	return per[1]
}

func rusage(b *testing.B) syscall.Rusage {
	var r syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &r); err != nil {
		b.Fatal(err)
	}
	return r
}

func cpuOf(r syscall.Rusage) time.Duration {
	return time.Duration(r.Utime.Nano() + r.Stime.Nano())
}
