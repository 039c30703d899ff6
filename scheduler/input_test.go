package scheduler_test

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/scheduler"
	st "github.com/corral-dev/corral/scheduler/schedulertest"
)

func TestParseCPUSet(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want scheduler.CPUSet
	}{
		{"0", scheduler.CPUSet{0}},
		{"0-3,6", scheduler.CPUSet{0, 1, 2, 3, 6}},
		{" 6,0-1 ", scheduler.CPUSet{0, 1, 6}},
		{"0-2,1-3", scheduler.CPUSet{0, 1, 2, 3}},
		{"8191", scheduler.CPUSet{8191}},
		{"007", scheduler.CPUSet{7}},
	} {
		got, err := scheduler.ParseCPUSet(tc.in)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ParseCPUSet(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ in, hint string }{
		{"", "write CPU ids and ranges"},
		{",", "empty element"},
		{"0,,1", "empty element"},
		{"a", "not a CPU id"},
		{"3-1", "write it as 1-3"},
		{"-1", "missing end"},
		{"0-", "missing end"},
		{"8192", "largest supported id 8191"},
		{"0-99999999999999999999", "largest supported id"},
		{"1 ,2", "not a CPU id"},
		{"+1", "not a CPU id"},
		{"0-1-2", "not a CPU id"},
	} {
		_, err := scheduler.ParseCPUSet(tc.in)
		if !errors.Is(err, scheduler.ErrInvalidCPUSet) || !strings.Contains(err.Error(), tc.hint) {
			t.Errorf("ParseCPUSet(%q) error = %v; want ErrInvalidCPUSet mentioning %q", tc.in, err, tc.hint)
		}
	}
	if s := (scheduler.CPUSet{0, 1, 2, 3, 6, 8, 9}).String(); s != "0-3,6,8-9" {
		t.Errorf("String = %q", s)
	}
}

func TestParseConstraint(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want scheduler.Constraint
	}{
		{"rack=a", scheduler.Constraint{Key: "rack", Op: scheduler.OpEqual, Value: "a"}},
		{" rack != a ", scheduler.Constraint{Key: "rack", Op: scheduler.OpNotEqual, Value: "a"}},
		{"corral.io/class=big_1.x", scheduler.Constraint{Key: "corral.io/class", Op: scheduler.OpEqual, Value: "big_1.x"}},
	} {
		got, err := scheduler.ParseConstraint(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseConstraint(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ in, hint string }{
		{"", "write key=value or key!=value"},
		{"rack", "write rack=VALUE or rack!=VALUE"},
		{"=a", "no label key before ="},
		{"!=a", "no label key before !="},
		{"rack=", "write rack=VALUE"},
		{"rack!=", "write rack!=VALUE"},
		{"ra ck=a", `contains ' '`},
		{"rack=a=b", `contains '='`},
		{"rack==a", `must start with a letter or digit`},
		{"-rack=a", "must start with a letter or digit"},
		{"rack=" + strings.Repeat("a", 64), "the limit is 63"},
	} {
		_, err := scheduler.ParseConstraint(tc.in)
		if !errors.Is(err, scheduler.ErrInvalidConstraint) || !strings.Contains(err.Error(), tc.hint) {
			t.Errorf("ParseConstraint(%q) error = %v; want ErrInvalidConstraint mentioning %q", tc.in, err, tc.hint)
		}
	}
	if _, err := scheduler.ParseConstraints([]string{"rack=a", "zone"}); !errors.Is(err, scheduler.ErrInvalidConstraint) {
		t.Errorf("ParseConstraints with a bad element: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := scheduler.DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig: %v", err)
	}
	for _, tc := range []struct {
		edit func(*scheduler.Config)
		hint string
	}{
		{func(c *scheduler.Config) { c.CPUOvercommit = 0.5 }, "CPUOvercommit 0.5 is below 1; use 1 for no overcommit"},
		{func(c *scheduler.Config) { c.MemoryOvercommit = 0 }, "MemoryOvercommit 0 is below 1"},
		{func(c *scheduler.Config) { c.MemoryOvercommit = math.NaN() }, "MemoryOvercommit NaN"},
		{func(c *scheduler.Config) { c.CPUOvercommit = 5000 }, "CPUOvercommit 5000 is above 1000"},
		{func(c *scheduler.Config) { c.Algorithm = "random" }, `Algorithm "random" is unknown; use "binpack" or "spread"`},
		{func(c *scheduler.Config) { c.CandidateLimit = -1 }, "CandidateLimit -1 is negative"},
		{func(c *scheduler.Config) { c.MaxReasons = -1 }, "MaxReasons -1 is negative"},
	} {
		cfg := scheduler.DefaultConfig()
		tc.edit(&cfg)
		err := cfg.Validate()
		if !errors.Is(err, scheduler.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.hint) {
			t.Errorf("Validate() = %v; want ErrInvalidConfig mentioning %q", err, tc.hint)
		}
		if _, err := scheduler.Schedule(st.Snapshot(t), nil, cfg, zeroTime, 0); !errors.Is(err, scheduler.ErrInvalidConfig) {
			t.Errorf("Schedule with a bad config: %v", err)
		}
	}
}

func TestGuestValidate(t *testing.T) {
	bad := scheduler.Guest{Name: "g", Driver: "process", MemoryBytes: 1, VCPUs: 1,
		Constraints: []scheduler.Constraint{{Key: "rack", Op: scheduler.OpEqual}}}
	err := bad.Validate()
	if !errors.Is(err, scheduler.ErrInvalidGuest) || !errors.Is(err, scheduler.ErrInvalidConstraint) {
		t.Errorf("bad constraint: %v; want both ErrInvalidGuest and ErrInvalidConstraint", err)
	}
	if strings.Count(err.Error(), "corral:") != 1 {
		t.Errorf("message repeats the prefix: %q", err)
	}
	for _, tc := range []struct {
		g    scheduler.Guest
		hint string
	}{
		{st.Guest("g").VCPUs(2).CPUSet("0-3").Build(), "CPUSet 0-3 has 4 CPUs but the guest has only 2 vCPUs"},
		{st.Guest("g").VCPUs(2).Pin(3).Build(), "PinCPUs is 3 but the guest has 2 vCPUs"},
		{st.Guest("g").VCPUs(2).Pin(1).CPUSet("0").Build(), "not both"},
		{st.Guest("g").Memory(0).Build(), "MemoryBytes is 0"},
		{st.Guest("g").VCPUs(0).Build(), "VCPUs is 0"},
		{st.Guest("g").Driver("").Build(), "Driver is empty"},
		{st.Guest("g").SpreadBy("app").Build(), "add --label app=VALUE"},
		{st.Guest("g").Label("a b", "x").Build(), `label key "a b" contains ' '`},
		{scheduler.Guest{Name: "g", Driver: "process", MemoryBytes: 1, VCPUs: 4, CPUSet: scheduler.CPUSet{3, 1}}, "ascending"},
	} {
		err := tc.g.Validate()
		if !errors.Is(err, scheduler.ErrInvalidGuest) || !strings.Contains(err.Error(), tc.hint) {
			t.Errorf("Validate() = %v; want ErrInvalidGuest mentioning %q", err, tc.hint)
		}
	}
	snap := st.Snapshot(t, st.Node("n1").CPUs(4).Build())
	g := st.Guest("g").VCPUs(2).CPUSet("3-4").Build()
	if err := snap.ValidateGuest(&g); !errors.Is(err, scheduler.ErrInvalidGuest) || !strings.Contains(err.Error(), "names cpu 4, which no node has") {
		t.Errorf("ValidateGuest with a cpu no node has: %v", err)
	}
}

func TestNewSnapshotErrors(t *testing.T) {
	alloc := func(name, cpus string) scheduler.Allocation {
		a := scheduler.Allocation{Guest: name, MemoryBytes: 1, VCPUs: 1}
		if cpus != "" {
			a.CPUs = st.MustCPUSet(cpus)
		}
		return a
	}
	for _, tc := range []struct {
		nodes []scheduler.Node
		hint  string
	}{
		{[]scheduler.Node{st.Node("n1").Build(), st.Node("n1").Build()}, `node "n1" appears twice`},
		{[]scheduler.Node{st.Node("").Build()}, "empty ID"},
		{[]scheduler.Node{st.Node("n1").CPUs(2).Reserve(3, 0).Build()}, "ReservedCPUs 3 is outside 0-2"},
		{[]scheduler.Node{st.Node("n1").Memory(1).Reserve(0, 2).Build()}, "ReservedMemoryBytes 2 is more than MemoryBytes 1"},
		{[]scheduler.Node{st.Node("n1").Alloc(alloc("g", "")).Build(), st.Node("n2").Alloc(alloc("g", "")).Build()}, `guest "g" is also allocated on node "n1"`},
		{[]scheduler.Node{st.Node("n1").Alloc(alloc("a", "0-1")).Alloc(alloc("b", "1")).Build()}, `cpu 1 is pinned by both "a" and "b"`},
		{[]scheduler.Node{st.Node("n1").CPUs(2).Alloc(alloc("a", "5")).Build()}, "cpu 5, which the node does not have"},
		{[]scheduler.Node{{ID: "n1", CPUs: scheduler.CPUSet{1, 0}}}, "ascending"},
	} {
		_, err := scheduler.NewSnapshot(tc.nodes)
		if !errors.Is(err, scheduler.ErrInvalidSnapshot) || !strings.Contains(err.Error(), tc.hint) {
			t.Errorf("NewSnapshot = %v; want ErrInvalidSnapshot mentioning %q", err, tc.hint)
		}
	}
}

// TestCheckPlacementConcurrentPlans is invariant 3: two plans made from the
// same snapshot each fit alone, but once the first commits the FSM refuses
// the second, with the node's reason.
func TestCheckPlacementConcurrentPlans(t *testing.T) {
	cfg := scheduler.DefaultConfig()
	snap := st.Snapshot(t, st.Node("n1").CPUs(4).Memory(4*st.GiB).Build())
	a := st.Guest("a").Memory(3 * st.GiB).Build()
	b := st.Guest("b").Memory(3 * st.GiB).Build()
	planA, _ := scheduler.Schedule(snap, []scheduler.Guest{a}, cfg, zeroTime, 1)
	planB, _ := scheduler.Schedule(snap, []scheduler.Guest{b}, cfg, zeroTime, 2)
	if len(planA.Placements) != 1 || len(planB.Placements) != 1 {
		t.Fatalf("each plan should place its guest alone: %v / %v", planA.Summary, planB.Summary)
	}
	after := st.Commit(t, snap, cfg, planA.Placements)
	err := scheduler.CheckPlacement(after, planB.Placements[0], cfg)
	var fit *scheduler.FitError
	if !errors.Is(err, scheduler.ErrNoFit) || !errors.As(err, &fit) || fit.Reason.Code != scheduler.ReasonMemory {
		t.Fatalf("second plan: %v; want a memory FitError", err)
	}
	if want := "corral: guest b does not fit: node n1: needs 3072 MiB memory, 1024 MiB free"; err.Error() != want {
		t.Errorf("message %q; want %q", err, want)
	}
}

func TestCheckPlacementPinnedOverlap(t *testing.T) {
	cfg := scheduler.DefaultConfig()
	snap := st.Snapshot(t, st.Node("n1").CPUs(8).Build())
	a := st.Guest("a").VCPUs(2).Pin(2).Build()
	b := st.Guest("b").VCPUs(2).Pin(2).Build()
	planA, _ := scheduler.Schedule(snap, []scheduler.Guest{a}, cfg, zeroTime, 1)
	planB, _ := scheduler.Schedule(snap, []scheduler.Guest{b}, cfg, zeroTime, 1)
	if !slices.Equal(planA.Placements[0].CPUs, planB.Placements[0].CPUs) {
		t.Fatalf("both plans should choose the same free CPUs: %v / %v", planA.Placements[0].CPUs, planB.Placements[0].CPUs)
	}
	after := st.Commit(t, snap, cfg, planA.Placements)
	err := scheduler.CheckPlacement(after, planB.Placements[0], cfg)
	if err == nil || err.Error() != "corral: guest b does not fit: node n1: cpuset 0-1: cpu 0 pinned by a" {
		t.Errorf("overlapping cpuset: %v", err)
	}
}

func TestCheckPlacementRefusals(t *testing.T) {
	cfg := scheduler.DefaultConfig()
	placed := scheduler.Allocation{Guest: "old", MemoryBytes: st.GiB, VCPUs: 1}
	snap := st.Snapshot(t,
		st.Node("n1").Alloc(placed).Build(),
		st.Node("n2").Draining().Build(),
		st.Node("n3").Down().Build())
	g := st.Guest("g").Build()
	pinned := st.Guest("p").VCPUs(2).Pin(2).Build()
	for _, tc := range []struct {
		p    scheduler.Placement
		want error
		hint string
	}{
		{scheduler.Placement{Guest: g, Node: "n9"}, scheduler.ErrUnknownNode, `node "n9", which the cluster does not have`},
		{scheduler.Placement{Guest: st.Guest("old").Build(), Node: "n1"}, scheduler.ErrAlreadyPlaced, `already allocated on node "n1"`},
		{scheduler.Placement{Guest: g, Node: "n2"}, scheduler.ErrNoFit, "node n2: draining"},
		{scheduler.Placement{Guest: g, Node: "n3"}, scheduler.ErrNoFit, "node n3: down"},
		{scheduler.Placement{Guest: g, Node: "n1", CPUs: scheduler.CPUSet{1}}, scheduler.ErrInvalidPlacement, "not pinned"},
		{scheduler.Placement{Guest: pinned, Node: "n1", CPUs: scheduler.CPUSet{1}}, scheduler.ErrInvalidPlacement, "asked for 2 pinned CPUs"},
		{scheduler.Placement{Guest: pinned, Node: "n1", CPUs: scheduler.CPUSet{7, 8}}, scheduler.ErrNoFit, "cpu 8 not on node"},
		{scheduler.Placement{Guest: st.Guest("bad").VCPUs(0).Build(), Node: "n1"}, scheduler.ErrInvalidGuest, "VCPUs is 0"},
	} {
		err := scheduler.CheckPlacement(snap, tc.p, cfg)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.hint) {
			t.Errorf("CheckPlacement(%s on %s) = %v; want %v mentioning %q", tc.p.Guest.Name, tc.p.Node, err, tc.want, tc.hint)
		}
	}
	if err := scheduler.CheckPlacement(snap, scheduler.Placement{Guest: pinned, Node: "n1", CPUs: scheduler.CPUSet{6, 7}}, cfg); err != nil {
		t.Errorf("free CPUs 6-7: %v", err)
	}
}

// TestNodeOrderDoesNotMatter: NewSnapshot sorts nodes, so a plan depends on
// the cluster's content, not on the order the coordinator listed it in.
func TestNodeOrderDoesNotMatter(t *testing.T) {
	mk := func(order []string) *scheduler.Snapshot {
		var ns []scheduler.Node
		for _, id := range order {
			ns = append(ns, st.Node(id).Build())
		}
		return st.Snapshot(t, ns...)
	}
	gs := []scheduler.Guest{st.Guest("a").Build(), st.Guest("b").Build(), st.Guest("c").Build()}
	cfg := scheduler.DefaultConfig()
	cfg.Algorithm = scheduler.Spread
	p1, _ := scheduler.Schedule(mk([]string{"n1", "n2", "n3"}), gs, cfg, zeroTime, 9)
	p2, _ := scheduler.Schedule(mk([]string{"n3", "n1", "n2"}), gs, cfg, zeroTime, 9)
	for i := range p1.Placements {
		if p1.Placements[i].Node != p2.Placements[i].Node {
			t.Fatalf("placement %d: %s vs %s", i, p1.Placements[i].Node, p2.Placements[i].Node)
		}
	}
}

// TestConcurrentReaders: a Snapshot is read-only, so the leader may schedule
// while the FSM re-checks against the same snapshot (run with -race).
func TestConcurrentReaders(t *testing.T) {
	snap := st.Snapshot(t, st.Node("n1").Build(), st.Node("n2").Build())
	gs := []scheduler.Guest{st.Guest("a").Pin(1).Build(), st.Guest("b").Label("app", "x").SpreadBy("app").Build()}
	cfg := scheduler.DefaultConfig()
	done := make(chan scheduler.Plan)
	for range 4 {
		go func() {
			p, _ := scheduler.Schedule(snap, gs, cfg, zeroTime, 3)
			for _, pl := range p.Placements {
				if err := scheduler.CheckPlacement(snap, pl, cfg); err != nil {
					t.Error(err)
				}
			}
			done <- p
		}()
	}
	for range 4 {
		if p := <-done; p.Summary.Placed != 2 {
			t.Errorf("placed %d of 2", p.Summary.Placed)
		}
	}
}

// TestDuplicatesInLongList checks the duplicate check on a list long enough
// for the radix path: exactly the later copies of a valid guest fail with
// ErrDuplicateGuest, and a copy after an invalid one is scheduled.
func TestDuplicatesInLongList(t *testing.T) {
	var nodes []scheduler.Node
	for i := range 50 {
		nodes = append(nodes, st.Node(fmt.Sprintf("n%d", i)).CPUs(64).Memory(1<<40).Build())
	}
	snap := st.Snapshot(t, nodes...)
	const n = 10_000
	var guests []scheduler.Guest
	want := map[int]bool{} // index -> duplicate
	for i := range n {
		guests = append(guests, st.Guest(fmt.Sprintf("g%d", i)).Build())
		if i%1000 == 0 {
			guests = append(guests, st.Guest(fmt.Sprintf("g%d", i)).Build(), st.Guest(fmt.Sprintf("g%d", i)).Build())
			want[len(guests)-2], want[len(guests)-1] = true, true
		}
	}
	bad := st.Guest("late").Build()
	bad.Driver = ""
	guests = append(guests, bad, st.Guest("late").Build())
	plan, err := scheduler.Schedule(snap, guests, scheduler.DefaultConfig(), time.Time{}, 1)
	if err != nil {
		t.Fatal(err)
	}
	dups := 0
	for _, f := range plan.Failures {
		switch {
		case errors.Is(f.Err, scheduler.ErrDuplicateGuest):
			dups++
		case f.Guest == "late" && errors.Is(f.Err, scheduler.ErrInvalidGuest):
		default:
			t.Errorf("unexpected failure %s: %v", f.Guest, f.Err)
		}
	}
	if dups != len(want) || plan.Summary.Placed != n+1 {
		t.Errorf("%d duplicates, %s; want %d duplicates and %d placed", dups, plan.Summary, len(want), n+1)
	}
}
