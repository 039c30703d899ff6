package scheduler_test

import (
	"flag"
	"fmt"
	"os"
	"reflect"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/corral-dev/corral/scheduler"
	st "github.com/corral-dev/corral/scheduler/schedulertest"
)

// TestPlanProperties checks, for random clusters and guest streams:
//   - every pending guest is placed or fails, exactly once;
//   - the FSM re-check accepts every placement in order (CheckPlacement), so
//     no node is over-committed beyond its ratios and pinned cpusets never
//     overlap or touch the host reserve (also checked by the naive model);
//   - a guest left pending fits on no node of the final state, even with a
//     small CandidateLimit (the fallback to a full scan);
//   - every failure has one reason per node, none of them "fits";
//   - the same seed gives the same plan.
//
// Unless -rapid.checks is given, TestMain raises rapid's default of 100
// cases per property to 1000: the interesting combinations (a pinned guest
// on a node whose reserve it names, say) are rare in random clusters.
func TestPlanProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		cfg := genConfig(t)
		snap := st.Snapshot(t, genNodes(t, cfg)...)
		pending := genGuests(t)
		seed := rapid.Uint64().Draw(t, "seed")
		now := time.Unix(1700000000, 0)

		plan, err := scheduler.Schedule(snap, pending, cfg, now, seed)
		if err != nil {
			t.Fatalf("Schedule: %v", err)
		}
		seen := map[string]int{}
		for _, p := range plan.Placements {
			seen[p.Guest.Name]++
		}
		for _, f := range plan.Failures {
			seen[f.Guest]++
			if f.Err != nil {
				continue
			}
			total := 0
			for _, c := range f.Counts {
				total += c.Nodes
				if c.Code == scheduler.ReasonNone {
					t.Fatalf("%s: a node reports fits: %s", f.Guest, f)
				}
			}
			if total != len(snap.Nodes()) || f.Nodes != total {
				t.Fatalf("%s: counts cover %d nodes of %d", f.Guest, total, len(snap.Nodes()))
			}
		}
		for _, g := range pending {
			if seen[g.Name] != 1 {
				t.Fatalf("guest %s appears %d times in the plan", g.Name, seen[g.Name])
			}
		}
		for _, p := range plan.Placements {
			n, _ := snap.Node(p.Node)
			for _, c := range p.CPUs {
				if slices.Contains(n.CPUs[:n.ReservedCPUs], c) {
					t.Fatalf("%s pinned to host-reserved cpu %d on %s", p.Guest.Name, c, p.Node)
				}
			}
		}
		final := snap
		for _, p := range plan.Placements {
			n, _ := final.Node(p.Node)
			if !modelFits(n, &p.Guest, cfg) {
				t.Fatalf("%s placed on %s, which the model says does not fit", p.Guest.Name, p.Node)
			}
			final = st.Commit(t, final, cfg, []scheduler.Placement{p})
		}
		checkFinal(t, snap, final, plan, pending, cfg)

		again, _ := scheduler.Schedule(snap, pending, cfg, now, seed)
		if !reflect.DeepEqual(plan, again) {
			t.Fatalf("same seed, different plans:\n%v\n%v", plan, again)
		}
	})
}

// TestCheckPlacementAgreesWithModel checks the FSM re-check against the
// naive model, one random guest on one random node at a time.
func TestCheckPlacementAgreesWithModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		cfg := genConfig(t)
		nodes := genNodes(t, cfg)
		if len(nodes) == 0 {
			return
		}
		snap := st.Snapshot(t, nodes...)
		g := genGuests(t)
		if len(g) == 0 {
			return
		}
		guest := g[0]
		if snap.ValidateGuest(&guest) != nil {
			return
		}
		n := &snap.Nodes()[rapid.IntRange(0, len(nodes)-1).Draw(t, "node")]
		p := scheduler.Placement{Guest: guest, Node: n.ID, CPUs: guest.CPUSet}
		if guest.PinCPUs > 0 {
			p.CPUs = lowestFree(n, guest.PinCPUs)
			if p.CPUs == nil {
				return // the model cannot pick CPUs either; covered by Schedule
			}
		}
		err := scheduler.CheckPlacement(snap, p, cfg)
		if want := modelFits(n, &guest, cfg); (err == nil) != want {
			t.Fatalf("CheckPlacement(%s on %s) = %v, model says fits=%v", guest.Name, n.ID, err, want)
		}
	})
}

func lowestFree(n *scheduler.Node, k int) scheduler.CPUSet {
	var out scheduler.CPUSet
	for i, c := range n.CPUs {
		if i < n.ReservedCPUs || len(out) == k {
			continue
		}
		taken := false
		for _, a := range n.Allocations {
			taken = taken || a.CPUs.Contains(c)
		}
		if !taken {
			out = append(out, c)
		}
	}
	if len(out) < k {
		return nil
	}
	return out
}

func genConfig(t *rapid.T) scheduler.Config {
	cfg := scheduler.DefaultConfig()
	cfg.Algorithm = rapid.SampledFrom([]scheduler.Algorithm{scheduler.Binpack, scheduler.Spread}).Draw(t, "algorithm")
	cfg.CPUOvercommit = rapid.SampledFrom([]float64{1, 1, 1.5, 2, 3}).Draw(t, "cpu-ratio")
	cfg.MemoryOvercommit = rapid.SampledFrom([]float64{1, 1, 1.25, 2}).Draw(t, "mem-ratio")
	cfg.CandidateLimit = rapid.IntRange(0, 3).Draw(t, "limit")
	cfg.MaxReasons = rapid.IntRange(0, 2).Draw(t, "reasons")
	return cfg
}

var (
	drivers     = []string{"process", "qemu", "lxc"}
	constraints = []string{"rack=a", "rack!=a", "rack=b", "zone=1", "zone!=2"}
)

// genNodes makes up to 6 nodes whose existing allocations fit (per the model).
func genNodes(t *rapid.T, cfg scheduler.Config) []scheduler.Node {
	count := rapid.IntRange(0, 6).Draw(t, "nodes")
	nodes := make([]scheduler.Node, 0, count)
	alloc := 0
	for i := range count {
		ncpu := rapid.IntRange(1, 10).Draw(t, "ncpu")
		base := rapid.SampledFrom([]int{0, 0, 2}).Draw(t, "cpu-base")
		b := st.Node(fmt.Sprintf("n%d", i)).
			CPUSet(fmt.Sprintf("%d-%d", base, base+ncpu-1)).
			Memory(rapid.SampledFrom([]uint64{1, 2, 4, 8}).Draw(t, "mem-gib")*st.GiB).
			Reserve(rapid.IntRange(0, min(2, ncpu)).Draw(t, "reserve-cpus"), rapid.SampledFrom([]uint64{0, 512 * st.MiB}).Draw(t, "reserve-mem")).
			Drivers(rapid.OneOf(rapid.Just(drivers), rapid.SliceOfNDistinct(rapid.SampledFrom(drivers), 0, 3, rapid.ID)).Draw(t, "drivers")...).
			Status(rapid.SampledFrom([]scheduler.NodeStatus{scheduler.NodeUp, scheduler.NodeUp, scheduler.NodeUp, scheduler.NodeUp, scheduler.NodeDown, scheduler.NodeStatusUnknown}).Draw(t, "status")).
			Eligibility(rapid.SampledFrom([]scheduler.Eligibility{scheduler.Eligible, scheduler.Eligible, scheduler.Eligible, scheduler.Eligible, scheduler.Draining, scheduler.Ineligible}).Draw(t, "eligibility"))
		if r := rapid.SampledFrom([]string{"", "a", "b"}).Draw(t, "rack"); r != "" {
			b.Label("rack", r)
		}
		b.Label("zone", rapid.SampledFrom([]string{"1", "2"}).Draw(t, "zone"))
		n := b.Build()
		for range rapid.IntRange(0, 4).Draw(t, "allocs") {
			g := genGuest(t, fmt.Sprintf("a%d", alloc))
			alloc++
			up := n
			up.Status, up.Eligibility, up.Drivers, up.Labels = scheduler.NodeUp, scheduler.Eligible, []string{g.Driver}, nil
			g.Constraints, g.SpreadBy = nil, ""
			cpus := g.CPUSet
			if g.PinCPUs > 0 {
				if cpus = lowestFree(&n, g.PinCPUs); cpus == nil {
					continue
				}
				g.PinCPUs, g.CPUSet = 0, cpus
			}
			if !modelFits(&up, &g, cfg) {
				continue
			}
			n.Allocations = append(n.Allocations, scheduler.Allocation{
				Guest: g.Name, MemoryBytes: g.MemoryBytes, VCPUs: g.VCPUs, CPUs: cpus, Labels: g.Labels,
				SpreadBy: rapid.SampledFrom([]string{"", "app"}).Draw(t, "alloc-spread"),
			})
		}
		nodes = append(nodes, n)
	}
	return nodes
}

func genGuests(t *rapid.T) []scheduler.Guest {
	gs := make([]scheduler.Guest, rapid.IntRange(0, 20).Draw(t, "guests"))
	for i := range gs {
		gs[i] = genGuest(t, fmt.Sprintf("g%d", i))
	}
	return gs
}

func genGuest(t *rapid.T, name string) scheduler.Guest {
	b := st.Guest(name).
		Driver(rapid.SampledFrom(drivers).Draw(t, "driver")).
		Memory(rapid.SampledFrom([]uint64{256, 512, 1024, 2048, 3072}).Draw(t, "mem-mib") * st.MiB)
	vcpus := rapid.IntRange(1, 4).Draw(t, "vcpus")
	b.VCPUs(vcpus)
	for _, c := range rapid.SliceOfN(rapid.SampledFrom(constraints), 0, 2).Draw(t, "constraints") {
		b.Constraint(c)
	}
	if app := rapid.SampledFrom([]string{"", "web", "db"}).Draw(t, "app"); app != "" {
		b.Label("app", app)
		if rapid.Bool().Draw(t, "spread") {
			b.SpreadBy("app")
		}
	}
	switch rapid.IntRange(0, 4).Draw(t, "pin-kind") {
	case 1:
		hi := rapid.SampledFrom([]int{3, 5, 11}).Draw(t, "cpuset-range")
		ids := rapid.SliceOfNDistinct(rapid.IntRange(0, hi), 1, vcpus, rapid.ID).Draw(t, "cpuset")
		slices.Sort(ids)
		b.CPUSet(scheduler.CPUSet(ids).String())
	case 2:
		b.Pin(rapid.IntRange(1, vcpus).Draw(t, "pin"))
	}
	return b.Build()
}

func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "rapid.checks" })
	if !set && !testing.Short() {
		if err := flag.Set("rapid.checks", "1000"); err != nil {
			panic(err)
		}
	}
	os.Exit(m.Run())
}
