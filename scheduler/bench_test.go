package scheduler_test

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/corral-dev/corral/scheduler"
	st "github.com/corral-dev/corral/scheduler/schedulertest"
)

const (
	benchNodes  = 5000
	benchGuests = 100000
)

// benchCluster makes benchNodes empty nodes of mixed sizes (half 16 CPUs /
// 64 GiB, a third 32 / 128 GiB, the rest 64 / 256 GiB; 1 CPU and 2 GiB
// reserved), with mixed drivers and labels rack (25 racks), zone (3) and
// ssd (30%).
func benchCluster(r *rand.Rand) []scheduler.Node { return benchClusterN(r, benchNodes) }

// benchClusterN is benchCluster with n nodes.
func benchClusterN(r *rand.Rand, n int) []scheduler.Node {
	nodes := make([]scheduler.Node, n)
	for i := range nodes {
		cpus, mem := 16, 64*st.GiB
		switch x := r.IntN(100); {
		case x >= 85:
			cpus, mem = 64, 256*st.GiB
		case x >= 50:
			cpus, mem = 32, 128*st.GiB
		}
		b := st.Node(fmt.Sprintf("node-%04d", i)).CPUs(cpus).Memory(mem).Reserve(1, 2*st.GiB).
			Label("rack", fmt.Sprintf("r%d", r.IntN(25))).
			Label("zone", fmt.Sprintf("z%d", r.IntN(3)))
		ds := []string{"process"}
		if r.IntN(10) < 7 {
			ds = append(ds, "qemu")
		}
		if r.IntN(10) < 6 {
			ds = append(ds, "lxc")
		}
		b.Drivers(ds...)
		if r.IntN(10) < 3 {
			b.Label("ssd", "true")
		}
		nodes[i] = b.Build()
	}
	return nodes
}

// benchGuestList makes benchGuests guests: 512 MiB to 8 GiB, 1 to 4 vCPUs,
// a third with one or two constraints, 5% spread by app (1,000 apps), 2%
// asking for 2 pinned CPUs.
func benchGuestList(r *rand.Rand) []scheduler.Guest { return benchGuestListN(r, benchGuests) }

// benchGuestListN is benchGuestList with n guests.
func benchGuestListN(r *rand.Rand, n int) []scheduler.Guest {
	mems := []uint64{512 * st.MiB, 512 * st.MiB, 512 * st.MiB, st.GiB, st.GiB, st.GiB, 2 * st.GiB, 2 * st.GiB, 4 * st.GiB, 8 * st.GiB}
	vcpus := []int{1, 1, 2, 2, 4}
	drivers := []string{"process", "process", "process", "process", "process", "qemu", "qemu", "qemu", "lxc", "lxc"}
	gs := make([]scheduler.Guest, n)
	for i := range gs {
		b := st.Guest(fmt.Sprintf("guest-%06d", i)).
			Memory(mems[r.IntN(len(mems))]).
			VCPUs(vcpus[r.IntN(len(vcpus))]).
			Driver(drivers[r.IntN(len(drivers))])
		if i%3 == 0 {
			cs := []string{
				fmt.Sprintf("rack=r%d", r.IntN(25)),
				fmt.Sprintf("zone=z%d", r.IntN(3)),
				fmt.Sprintf("zone!=z%d", r.IntN(3)),
				"ssd=true",
			}
			b.Constraint(cs[r.IntN(len(cs))])
			if r.IntN(4) == 0 {
				b.Constraint(cs[r.IntN(len(cs))])
			}
		}
		switch x := r.IntN(100); {
		case x < 5:
			b.Label("app", fmt.Sprintf("app%d", r.IntN(1000))).SpreadBy("app")
		case x < 7:
			b.VCPUs(2).Pin(2)
		}
		gs[i] = b.Build()
	}
	return gs
}

// BenchmarkSchedule places 100,000 guests onto 5,000 empty nodes in one
// plan and reports placements per second (CPU overcommit 2, the default
// CandidateLimit of 32).
func BenchmarkSchedule(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	nodes := benchCluster(r)
	guests := benchGuestList(r)
	snap := st.Snapshot(b, nodes...)
	for _, alg := range []scheduler.Algorithm{scheduler.Binpack, scheduler.Spread} {
		b.Run(string(alg), func(b *testing.B) {
			cfg := scheduler.DefaultConfig()
			cfg.Algorithm = alg
			cfg.CPUOvercommit = 2
			b.ReportAllocs()
			placed := 0
			start := time.Now()
			for b.Loop() {
				plan, err := scheduler.Schedule(snap, guests, cfg, time.Time{}, 42)
				if err != nil {
					b.Fatal(err)
				}
				placed += plan.Summary.Placed
				if b.N == 1 || placed == plan.Summary.Placed {
					b.Logf("%s: %s", alg, plan.Summary)
				}
			}
			b.ReportMetric(float64(placed)/time.Since(start).Seconds(), "placements/s")
		})
	}
}

// BenchmarkCheckPlacement is the FSM's per-placement re-check on a node
// that already holds 20 guests.
func BenchmarkCheckPlacement(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 4))
	nodes := benchCluster(r)
	guests := benchGuestList(r)
	cfg := scheduler.DefaultConfig()
	cfg.CPUOvercommit = 2
	plan, err := scheduler.Schedule(st.Snapshot(b, slicesClone(nodes)...), guests, cfg, time.Time{}, 1)
	if err != nil {
		b.Fatal(err)
	}
	snap := snapshotWith(b, nodes, plan.Placements[:benchGuests/2])
	p := plan.Placements[benchGuests/2]
	b.ReportAllocs()
	for b.Loop() {
		_ = scheduler.CheckPlacement(snap, p, cfg)
	}
}

// BenchmarkSnapshotMemory reports the heap a Snapshot of 5,000 nodes holding
// 100,000 allocations takes (nodes, allocations and the snapshot's indexes).
func BenchmarkSnapshotMemory(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 6))
	guests := benchGuestList(r)
	cfg := scheduler.DefaultConfig()
	cfg.CPUOvercommit = 2
	nodes := benchCluster(r)
	plan, err := scheduler.Schedule(st.Snapshot(b, nodes...), guests, cfg, time.Time{}, 1)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		snap := snapshotWith(b, benchCluster(rand.New(rand.NewPCG(5, 6))), plan.Placements)
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)*benchGuests/float64(len(plan.Placements)), "B/100k-guests")
		runtime.KeepAlive(snap)
	}
}

func snapshotWith(b *testing.B, nodes []scheduler.Node, ps []scheduler.Placement) *scheduler.Snapshot {
	byID := make(map[string]int, len(nodes))
	for i := range nodes {
		byID[nodes[i].ID] = i
	}
	for _, p := range ps {
		n := &nodes[byID[p.Node]]
		n.Allocations = append(n.Allocations, p.Allocation())
	}
	return st.Snapshot(b, nodes...)
}

func slicesClone(ns []scheduler.Node) []scheduler.Node { return append([]scheduler.Node(nil), ns...) }
