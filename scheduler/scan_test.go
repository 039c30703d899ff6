package scheduler_test

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/corral-dev/corral/scheduler"
	st "github.com/corral-dev/corral/scheduler/schedulertest"
)

// TestScanShortcutsKeepPlans checks that the scan's shortcuts (closing
// nodes on the rule of the guest's own kind, the per-key index of the few
// nodes a constrained guest may use, failures counted per class) change no
// plan: for random clusters of 65 to 300 nodes, partly full, with racks,
// drivers, down and draining nodes, and guests with constraints, pinned
// CPUs and anti-affinity, the plan equals the one the plain scan makes, for
// both algorithms and several candidate limits.
func TestScanShortcutsKeepPlans(t *testing.T) {
	for seed := range uint64(60) {
		r := rand.New(rand.NewPCG(seed, 99))
		nodes := scanNodes(r)
		guests := scanGuests(r)
		cfg := scheduler.DefaultConfig()
		cfg.Algorithm = []scheduler.Algorithm{scheduler.Binpack, scheduler.Spread}[seed%2]
		cfg.CandidateLimit = []int{32, 0, 1, 3, 8}[seed/2%5]
		cfg.CPUOvercommit = []float64{1, 2, 4}[r.IntN(3)]
		cfg.MaxReasons = r.IntN(3)
		snap := st.Snapshot(t, nodes...)
		fast, err := scheduler.Schedule(snap, guests, cfg, time.Time{}, seed)
		if err != nil {
			t.Fatal(err)
		}
		restore := scheduler.SetPlainScan(true)
		plain, err := scheduler.Schedule(snap, guests, cfg, time.Time{}, seed)
		restore()
		if err != nil {
			t.Fatal(err)
		}
		if fast.Summary.Placed == 0 || fast.Summary.Pending == 0 {
			t.Fatalf("seed %d: %s; the test needs both placements and failures", seed, fast.Summary)
		}
		if !reflect.DeepEqual(fast, plain) {
			for i := range min(len(fast.Placements), len(plain.Placements)) {
				if f, p := fast.Placements[i], plain.Placements[i]; !reflect.DeepEqual(f, p) {
					t.Fatalf("seed %d (%s, limit %d): placement %d differs: %s on %s (ranked %d), plain scan %s on %s (ranked %d)",
						seed, cfg.Algorithm, cfg.CandidateLimit, i, f.Guest.Name, f.Node, f.Ranked, p.Guest.Name, p.Node, p.Ranked)
				}
			}
			t.Fatalf("seed %d: plans differ: %s against %s", seed, fast.Summary, plain.Summary)
		}
	}
}

func scanNodes(r *rand.Rand) []scheduler.Node {
	nodes := make([]scheduler.Node, 65+r.IntN(236))
	alloc := 0
	for i := range nodes {
		ncpu := 2 + r.IntN(15)
		b := st.Node(fmt.Sprintf("n%03d", i)).CPUs(ncpu).Memory(uint64(2+r.IntN(15))*st.GiB).
			Reserve(r.IntN(2), 512*st.MiB).
			Label("rack", fmt.Sprintf("r%d", r.IntN(12))).Label("zone", fmt.Sprintf("z%d", r.IntN(3)))
		ds := []string{"process"}
		if r.IntN(3) > 0 {
			ds = append(ds, "qemu")
		}
		b.Drivers(ds...)
		switch r.IntN(20) {
		case 0:
			b.Down()
		case 1:
			b.Draining()
		}
		for range r.IntN(5) {
			b.Alloc(scheduler.Allocation{Guest: fmt.Sprintf("a%d", alloc), MemoryBytes: st.GiB, VCPUs: 1 + r.IntN(3)})
			alloc++
		}
		nodes[i] = b.Build()
	}
	return nodes
}

func scanGuests(r *rand.Rand) []scheduler.Guest {
	gs := make([]scheduler.Guest, 200+r.IntN(1500))
	for i := range gs {
		vcpus := 1 + r.IntN(4)
		b := st.Guest(fmt.Sprintf("g%04d", i)).Driver([]string{"process", "qemu"}[r.IntN(2)]).
			Memory(uint64(256<<r.IntN(5)) * st.MiB).VCPUs(vcpus)
		switch r.IntN(7) {
		case 6:
			b.Constraint("rack=nowhere")
		case 0:
			b.Constraint(fmt.Sprintf("rack=r%d", r.IntN(12)))
		case 1:
			b.Constraint(fmt.Sprintf("rack=r%d", r.IntN(12))).Constraint(fmt.Sprintf("zone=z%d", r.IntN(3)))
		case 2:
			b.Constraint(fmt.Sprintf("zone!=z%d", r.IntN(3)))
		}
		switch r.IntN(12) {
		case 0:
			b.Pin(1 + r.IntN(vcpus))
		case 1:
			b.CPUSet(fmt.Sprintf("%d", 1+r.IntN(4)))
		case 2, 3:
			b.Label("app", fmt.Sprintf("app%d", r.IntN(8))).SpreadBy("app")
		case 4:
			b.Label("app", fmt.Sprintf("app%d", r.IntN(8)))
		}
		gs[i] = b.Build()
	}
	return gs
}
