package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/cluster"

	"github.com/corral-dev/corral/coordinator/api"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/nodeagent/driver"
	"github.com/corral-dev/corral/nodeagent/driver/drivertest"
)

// How much the benchmark starts: process and lxc guests timed per driver,
// qemu guests timed (each boots a kernel under TCG), and running guests
// the agent's CPU cost is measured with.
const (
	benchGuests = 50
	benchVMs    = 5
	benchIdle   = 200
	// benchUsageInterval is corral dev's --usage-interval; the CPU cost is
	// averaged over benchCPUWindow of them.
	benchUsageInterval = time.Second
	benchCPUWindow     = 10
)

// virshLXCStartMedian is libvirt's `virsh start` of a busybox LXC guest
// with 64 MiB on a host of this kind, the reference of issue 4.
const virshLXCStartMedian = 114 * time.Millisecond

// BenchmarkDevGuestStart times, per driver, a guest from `guest create`
// accepted (the API call returning) until the event stream delivers its
// guest.started, end to end through raft, NATS and the node agent of a
// corral dev process, and in the same run the driver alone starting the
// same guest (driver.New and Set.Start, as the agent calls them). It then
// measures the dev process's CPU time per guest per usage interval with
// benchIdle running process guests, less the idle baseline. Everything it
// starts is destroyed and its cgroup partition removed. Run it once:
//
//	go test ./cmd/corral -run '^$' -bench DevGuestStart -benchtime 1x -timeout 30m
func BenchmarkDevGuestStart(b *testing.B) {
	rep := cgrouptest.RequireHost(b)
	rootfs := drivertest.Rootfs(b)
	vm := drivertest.VM(b)
	part := cgrouptest.NewPartition(b, rep)
	ccfg := cgroupdriver.DefaultConfig()
	ccfg.Partition, ccfg.Report = part, &rep
	cg, err := cgroupdriver.New(ccfg)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	p := startDevWith(b, dir, "--cgroup-partition", part, "--qemu-accel", "tcg",
		"--usage-interval", benchUsageInterval.String(), "--log-level", "info")
	c := p.client()
	ctx, cancel := context.WithCancel(context.Background())
	h := &benchHarness{b: b, p: p, c: c, cg: cg, ctx: ctx}
	b.Cleanup(func() {
		h.destroyAll(h.created)
		cancel()
		p.stop(syscall.SIGTERM, waitTimeout)
	})
	// Room for benchIdle one-vCPU guests on any host.
	if _, err := c.SetSchedulerConfig(ctx, events.SchedulerConfig{Algorithm: "binpack", CPUOvercommit: 500, MemoryOvercommit: 4}); err != nil {
		b.Fatal(err)
	}
	h.watch = newStartWatch()
	go h.watch.follow(ctx, c)

	defs := []struct {
		kind cgroupdriver.Kind
		n    int
		cg   api.CreateGuest
	}{
		{cgroupdriver.KindProcess, benchGuests, api.CreateGuest{Driver: "process", Memory: "64MiB", Command: []string{"/bin/sleep", "1000"}}},
		{cgroupdriver.KindLXC, benchGuests, api.CreateGuest{Driver: "lxc", Memory: "64MiB", Rootfs: rootfs, Command: []string{"/bin/sleep", "1000"}}},
		{cgroupdriver.KindQEMU, benchVMs, api.CreateGuest{Driver: "qemu", Memory: "128MiB", Kernel: vm.Kernel, Initrd: vm.Initramfs}},
	}
	alone := h.driverAlone(b)
	b.ResetTimer()
	for iter := range b.N {
		var lines []string
		for _, d := range defs {
			solo := alone.time(d.cg, d.n, d.kind == cgroupdriver.KindQEMU)
			e2e, st := h.endToEnd(fmt.Sprintf("%s%d", d.kind[:1], iter), d.cg, d.n, d.kind)
			lines = append(lines, fmt.Sprintf("%-8s n=%-3d end-to-end p50 %7.2f ms p99 %7.2f ms | driver alone p50 %7.2f ms p99 %7.2f ms | ratio p50 %5.1fx",
				d.kind, d.n, ms(pct(e2e, 50)), ms(pct(e2e, 99)), ms(pct(solo, 50)), ms(pct(solo, 99)), float64(pct(e2e, 50))/float64(pct(solo, 50))))
			for _, q := range []int{50, 99} {
				lines = append(lines, fmt.Sprintf("         p%d: create call %.2f ms; define decided→placement decided %.2f ms, placement→start decided %.2f ms, start decided→seen on the stream %.2f ms",
					q, ms(pct(st.commit, q)), ms(pct(st.schedule, q)), ms(pct(st.agent, q)), ms(pct(st.report, q))))
			}
			b.ReportMetric(ms(pct(e2e, 50)), string(d.kind)+"-e2e-p50-ms")
			b.ReportMetric(ms(pct(e2e, 99)), string(d.kind)+"-e2e-p99-ms")
			b.ReportMetric(ms(pct(solo, 50)), string(d.kind)+"-driver-p50-ms")
		}
		lines = append(lines, fmt.Sprintf("reference: virsh start of an LXC guest, median %v; aim: corral lxc end-to-end median <= 30 ms", virshLXCStartMedian))
		perGuest, idle, busy := h.agentCPU(fmt.Sprintf("i%d", iter))
		lines = append(lines, fmt.Sprintf("corral dev CPU: idle %.2f ms/interval, with %d process guests %.2f ms/interval (interval %v): %.1f µs per guest per interval",
			idle, benchIdle, busy, benchUsageInterval, perGuest))
		b.ReportMetric(perGuest, "cpu-us/guest/interval")
		b.Log("\n" + strings.Join(lines, "\n"))
	}
}

type benchHarness struct {
	b       *testing.B
	p       *devProcess
	c       *api.Client
	cg      *cgroupdriver.Driver
	ctx     context.Context
	watch   *startWatch
	created []cgroupdriver.Guest
}

// stageTimes splits end-to-end starts at the leader's event times.
// commit is how long the CreateGuest call took (the define's raft commit).
type stageTimes struct{ commit, schedule, agent, report []time.Duration }

// endToEnd creates n guests like tmpl one after the other and returns, for
// each, the time from CreateGuest returning to guest.started arriving on
// the event stream. Process and lxc guests are left running until all n
// were timed (as a busy node would hold them); a VM is destroyed before
// the next is created, so that earlier boots do not slow later ones.
func (h *benchHarness) endToEnd(prefix string, tmpl api.CreateGuest, n int, kind cgroupdriver.Kind) ([]time.Duration, stageTimes) {
	b := h.b
	var took []time.Duration
	var st stageTimes
	var batch []cgroupdriver.Guest
	for i := range n {
		g := tmpl
		g.Name = fmt.Sprintf("%s-%d", prefix, i)
		seen := h.watch.expect(g.Name)
		h.created = append(h.created, cgroupdriver.Guest{Kind: kind, ID: g.Name})
		batch = append(batch, cgroupdriver.Guest{Kind: kind, ID: g.Name})
		called := time.Now()
		if _, err := h.c.CreateGuest(h.ctx, g); err != nil {
			b.Fatalf("create %s: %v", g.Name, err)
		}
		accepted := time.Now()
		st.commit = append(st.commit, accepted.Sub(called))
		var s startSeen
		select {
		case s = <-seen:
		case <-time.After(waitTimeout):
			b.Fatalf("guest %s not started within %v", g.Name, waitTimeout)
		}
		if s.err != nil {
			b.Fatalf("guest %s: %v", g.Name, s.err)
		}
		took = append(took, s.at.Sub(accepted))
		st.schedule = append(st.schedule, s.placed.Sub(s.defined))
		st.agent = append(st.agent, s.started.Sub(s.placed))
		st.report = append(st.report, s.at.Sub(s.started))
		if kind == cgroupdriver.KindQEMU {
			h.destroyAll(batch)
			batch = nil
		}
	}
	h.destroyAll(batch)
	return took, st
}

// destroyAll destroys gs through the API and waits for their groups to go.
func (h *benchHarness) destroyAll(gs []cgroupdriver.Guest) {
	b := h.b
	for _, g := range gs {
		if _, err := h.c.GuestAction(context.Background(), g.ID, "destroy"); err != nil {
			var ae *api.APIError
			if !errors.As(err, &ae) || ae.Code != api.CodeNotFound {
				b.Errorf("destroy %s: %v", g.ID, err)
			}
		}
	}
	deadline := time.Now().Add(waitTimeout + time.Duration(len(gs))*100*time.Millisecond)
	for _, g := range gs {
		dirs, _ := h.cg.Paths(g)
		for len(dirs) > 0 {
			if _, err := os.Stat(dirs[0]); errors.Is(err, os.ErrNotExist) {
				break
			}
			if time.Now().After(deadline) {
				b.Errorf("groups of %s left after destroy", g)
				return
			}
			time.Sleep(10 * time.Millisecond) // poll interval
		}
	}
}

// agentCPU returns the dev process's CPU time per guest per usage interval
// with benchIdle running process guests, and its CPU time per interval
// idle and busy, in ms.
func (h *benchHarness) agentCPU(prefix string) (perGuestUs, idleMs, busyMs float64) {
	b := h.b
	window := benchCPUWindow * benchUsageInterval
	idle := h.cpuOver(window)

	tmpl := api.CreateGuest{Driver: "process", Memory: "16MiB", Command: []string{"/bin/sleep", "1000"}}
	gs := make([]cgroupdriver.Guest, benchIdle)
	seen := make([]<-chan startSeen, benchIdle)
	for i := range gs {
		gs[i] = cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: fmt.Sprintf("%s-%d", prefix, i)}
		seen[i] = h.watch.expect(gs[i].ID)
	}
	h.created = append(h.created, gs...)
	var wg sync.WaitGroup
	errs := make(chan error, benchIdle)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < benchIdle; i += 8 {
				g := tmpl
				g.Name = gs[i].ID
				if _, err := h.c.CreateGuest(h.ctx, g); err != nil {
					errs <- fmt.Errorf("create %s: %w", g.Name, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	timeout := time.After(waitTimeout + benchIdle*100*time.Millisecond)
	for i, ch := range seen {
		select {
		case s := <-ch:
			if s.err != nil {
				b.Fatalf("guest %s: %v", gs[i].ID, s.err)
			}
		case <-timeout:
			b.Fatalf("guest %s not started in time", gs[i].ID)
		}
	}
	busy := h.cpuOver(window)
	h.destroyAll(gs)
	idleMs = float64(idle.Microseconds()) / 1000 / benchCPUWindow
	busyMs = float64(busy.Microseconds()) / 1000 / benchCPUWindow
	perGuestUs = (busyMs - idleMs) * 1000 / benchIdle
	return perGuestUs, idleMs, busyMs
}

// cpuOver returns the CPU time (user and system) the dev process used in
// the next window. The window is what is measured, not a wait for a
// condition.
func (h *benchHarness) cpuOver(window time.Duration) time.Duration {
	before := procCPU(h.b, h.p.cmd.Process.Pid)
	time.Sleep(window)
	return procCPU(h.b, h.p.cmd.Process.Pid) - before
}

// procCPU reads utime+stime of pid from /proc/PID/stat, in clock ticks of
// 10 ms (USER_HZ is 100 on Linux).
func procCPU(b testing.TB, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The command name may hold spaces; the fields after it do not.
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		b.Fatal(err)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// soloDrivers starts guests with the drivers alone, on their own
// partition, exactly as the agent builds their specs.
type soloDrivers struct {
	b    *testing.B
	set  *driver.Set
	root string
	seq  int
}

func (h *benchHarness) driverAlone(b *testing.B) *soloDrivers {
	cfg := drivertest.Config(b)
	cfg.LogCheckInterval = driver.DefaultConfig().LogCheckInterval // as the agent runs them
	set, err := driver.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return &soloDrivers{b: b, set: set, root: b.TempDir()}
}

// time starts n guests like tmpl with Set.Start and returns how long each
// Start took. VMs are destroyed one by one, the others after all n.
func (s *soloDrivers) time(tmpl api.CreateGuest, n int, oneByOne bool) []time.Duration {
	b := s.b
	var took []time.Duration
	var insts []*driver.Instance
	destroy := func() {
		for _, inst := range insts {
			dctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			if err := inst.Destroy(dctx); err != nil {
				b.Errorf("destroy %s: %v", inst.Guest(), err)
			}
			cancel()
		}
		insts = nil
	}
	defer destroy()
	for range n {
		s.seq++
		g := tmpl
		g.Name = fmt.Sprintf("solo-%d", s.seq)
		def, err := (&cluster.CreateGuest{CreateGuest: g}).Definition()
		if err != nil {
			b.Fatal(err)
		}
		dir := filepath.Join(s.root, g.Name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			b.Fatal(err)
		}
		spec := driver.SpecFor(g.Name, def, dir)
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		t0 := time.Now()
		inst, err := s.set.Start(ctx, spec)
		d := time.Since(t0)
		cancel()
		if err != nil {
			b.Fatalf("start %s alone: %v", g.Name, err)
		}
		took = append(took, d)
		insts = append(insts, inst)
		if oneByOne {
			destroy()
		}
	}
	return took
}

// startSeen is what the event stream told about one guest's start.
type startSeen struct {
	at                       time.Time // guest.started arrived here
	defined, placed, started time.Time // the events' times, decided on the leader
	err                      error     // the guest exited instead
}

// startWatch follows the event stream and hands each expected guest's
// start to whoever waits for it.
type startWatch struct {
	mu      sync.Mutex
	waiting map[string]chan startSeen
	seen    map[string]*startSeen
}

func newStartWatch() *startWatch {
	return &startWatch{waiting: map[string]chan startSeen{}, seen: map[string]*startSeen{}}
}

// expect must be called before the guest is created.
func (w *startWatch) expect(name string) <-chan startSeen {
	ch := make(chan startSeen, 1)
	w.mu.Lock()
	w.waiting[name] = ch
	w.seen[name] = &startSeen{}
	w.mu.Unlock()
	return ch
}

func (w *startWatch) follow(ctx context.Context, c *api.Client) {
	q := api.EventQuery{Follow: true, Types: []string{
		events.TypeGuestDefined.String(), events.TypeGuestPlaced.String(),
		events.TypeGuestStarted.String(), events.TypeGuestExited.String()}}
	c.Events(ctx, q, func(e events.Event) error {
		now := time.Now()
		w.mu.Lock()
		defer w.mu.Unlock()
		s, ch := w.seen[e.Guest], w.waiting[e.Guest]
		if s == nil || ch == nil {
			return nil
		}
		switch e.Type {
		case events.TypeGuestDefined:
			s.defined = e.Time
		case events.TypeGuestPlaced:
			s.placed = e.Time
		case events.TypeGuestStarted, events.TypeGuestExited:
			if e.Type == events.TypeGuestExited {
				s.err = fmt.Errorf("exited instead of starting: %+v", e.Payload)
			}
			s.at, s.started = now, e.Time
			ch <- *s
			delete(w.waiting, e.Guest)
		}
		return nil
	})
}

// pct is the p-th percentile of ds by nearest rank.
func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (p*len(s)+99)/100 - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
