package coordinator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/api"

	"github.com/corral-dev/corral/events"
)

func node(id string, cpus int, mem int64, labels map[string]string) events.NodeRegistered {
	return events.NodeRegistered{ID: id, CPUs: cpus, MemoryBytes: mem, Drivers: map[string]string{"process": "1"}, Labels: labels}
}

func startSched(t *testing.T, nodes ...events.NodeRegistered) (*Server, *api.Client) {
	t.Helper()
	cfg := TestConfig(t, "s1", t.TempDir())
	cfg.Nodes = nodes
	s := StartTestServer(t, cfg)
	<-s.Ready()
	cl, err := api.NewClient(s.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	WaitFor(t, 5*time.Second, "nodes registered", func() bool {
		ns, err := cl.Nodes(context.Background())
		return err == nil && len(ns) == len(nodes)
	})
	return s, cl
}

func create(t *testing.T, cl *api.Client, name, mem string, extra func(*api.CreateGuest)) {
	t.Helper()
	g := api.CreateGuest{Name: name, Driver: "process", Memory: mem, Command: []string{"/bin/true"}}
	if extra != nil {
		extra(&g)
	}
	if _, err := cl.CreateGuest(context.Background(), g); err != nil {
		t.Fatal(err)
	}
}

func guestsOn(t *testing.T, cl *api.Client) map[string]string {
	t.Helper()
	gs, err := cl.Guests(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, g := range gs {
		out[g.Name] = g.Node
	}
	return out
}

func placedEvents(t *testing.T, cl *api.Client, guest string) []events.Event {
	t.Helper()
	var out []events.Event
	err := cl.Events(context.Background(), api.EventQuery{Types: []string{"guest.placed"}, Guest: guest}, func(e events.Event) error {
		out = append(out, e)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// report says, as the node's agent will, that a guest runs.
func report(t *testing.T, cl *api.Client, name string) {
	t.Helper()
	g, err := cl.Guest(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	item := api.NewReportItem(name, &events.GuestStarted{Node: g.Node, Generation: g.Generation, PID: 1})
	if _, err := cl.Report(context.Background(), g.Node, "", []api.ReportItem{item}); err != nil {
		t.Fatal(err)
	}
}

func TestNodeDownReschedulesOnce(t *testing.T) {
	_, cl := startSched(t, node("n1", 8, 4<<30, nil), node("n2", 8, 4<<30, nil))
	ctx := context.Background()
	for i := range 6 {
		create(t, cl, fmt.Sprintf("g%d", i), "256MiB", nil)
	}
	WaitFor(t, 5*time.Second, "all placed", func() bool {
		for _, n := range guestsOn(t, cl) {
			if n == "" {
				return false
			}
		}
		return true
	})
	before := guestsOn(t, cl)
	victim, other := before["g0"], "n1"
	if victim == "n1" {
		other = "n2"
	}
	var lost []string
	for g, n := range before {
		if n == victim {
			lost = append(lost, g)
		}
	}
	if _, err := cl.SetNodeStatus(ctx, victim, api.NodeStatusDown, "test"); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, 5*time.Second, "guests of the lost node moved", func() bool {
		for _, g := range lost {
			if guestsOn(t, cl)[g] != other {
				return false
			}
		}
		return true
	})
	for g, n := range before {
		evs := placedEvents(t, cl, g)
		want := 1
		if n == victim {
			want = 2
		}
		if len(evs) != want {
			t.Errorf("guest %s (was on %s) has %d placements, want %d", g, n, len(evs), want)
		}
	}
	// Bringing the node back moves nothing again.
	if _, err := cl.SetNodeStatus(ctx, victim, api.NodeStatusUp, "test"); err != nil {
		t.Fatal(err)
	}
	// A later guest's placement proves the scheduler ran after that.
	create(t, cl, "later", "64MiB", nil)
	WaitFor(t, 5*time.Second, "later placed", func() bool { return guestsOn(t, cl)["later"] != "" })
	for _, g := range lost {
		if n := len(placedEvents(t, cl, g)); n != 2 {
			t.Errorf("guest %s placed %d times after its node came back", g, n)
		}
	}
}

func TestDrainMaxParallelOne(t *testing.T) {
	_, cl := startSched(t, node("n1", 8, 8<<30, nil), node("n2", 8, 8<<30, nil))
	ctx := context.Background()
	// Keep n2 out while the guests land on n1.
	if _, err := cl.SetEligibility(ctx, api.SetEligibility{ID: "n2", Eligibility: events.Ineligible}); err != nil {
		t.Fatal(err)
	}
	names := []string{"a", "b", "c"}
	for _, n := range names {
		create(t, cl, n, "128MiB", nil)
	}
	WaitFor(t, 5*time.Second, "placed on n1", func() bool {
		on := guestsOn(t, cl)
		return on["a"] == "n1" && on["b"] == "n1" && on["c"] == "n1"
	})
	if _, err := cl.SetEligibility(ctx, api.SetEligibility{ID: "n2", Eligibility: events.Eligible}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.SetEligibility(ctx, api.SetEligibility{ID: "n1", Eligibility: events.Draining, MaxParallel: 1}); err != nil {
		t.Fatal(err)
	}
	for moved := 1; moved <= len(names); moved++ {
		WaitFor(t, 5*time.Second, fmt.Sprintf("%d guests moved", moved), func() bool {
			n := 0
			for _, node := range guestsOn(t, cl) {
				if node == "n2" {
					n++
				}
			}
			return n >= moved
		})
		// Nothing else moves while the moved guest has not started.
		on := guestsOn(t, cl)
		var count int
		var mover string
		for g, node := range on {
			if node == "n2" {
				count++
				if gv, _ := cl.Guest(ctx, g); gv.Status == api.StatusPlaced {
					mover = g
				}
			}
		}
		if count != moved {
			t.Fatalf("%d guests on n2 with max-parallel 1 after %d moves", count, moved)
		}
		report(t, cl, mover)
	}
	WaitFor(t, 5*time.Second, "drain to end", func() bool {
		n, err := cl.Node(ctx, "n1")
		return err == nil && n.Eligibility == events.Ineligible
	})
}

func TestPendingReasonsAndDryRun(t *testing.T) {
	_, cl := startSched(t, node("n1", 2, 1<<30, map[string]string{"rack": "a"}), node("n2", 2, 1<<30, map[string]string{"rack": "b"}))
	ctx := context.Background()
	create(t, cl, "big", "2GiB", nil)
	WaitFor(t, 5*time.Second, "reasons for big", func() bool {
		g, err := cl.Guest(ctx, "big")
		return err == nil && len(g.Unplaced) > 0
	})
	g, _ := cl.Guest(ctx, "big")
	text := strings.Join(g.Unplaced, "\n")
	for _, want := range []string{"node n1: needs 2048 MiB memory, 1024 MiB free", "node n2:"} {
		if !strings.Contains(text, want) {
			t.Errorf("reasons %q lack %q", text, want)
		}
	}
	prev, err := cl.DryRun(ctx, api.CreateGuest{Name: "r", Driver: "process", Memory: "64MiB", Command: []string{"/bin/true"}, Constraints: []string{"rack=b"}})
	if err != nil || prev.Node != "n2" {
		t.Fatalf("dry run: %+v %v", prev, err)
	}
	if _, err := cl.Guest(ctx, "r"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("dry run created the guest: %v", err)
	}
	pin, err := cl.DryRun(ctx, api.CreateGuest{Name: "p", Driver: "process", Memory: "64MiB", VCPUs: 2, PinCPUs: 2, Command: []string{"/bin/true"}})
	if err != nil || pin.CPUs == "" {
		t.Fatalf("pinned dry run: %+v %v", pin, err)
	}
	// Placement rules that cannot be met say so per node.
	none, err := cl.DryRun(ctx, api.CreateGuest{Name: "x", Driver: "process", Memory: "64MiB", Command: []string{"/bin/true"}, Constraints: []string{"rack=c"}})
	if err != nil || none.Node != "" || !strings.Contains(strings.Join(none.Unplaced, "\n"), "rack=c") {
		t.Fatalf("unsatisfiable dry run: %+v %v", none, err)
	}
}

func TestSchedulingBadInput(t *testing.T) {
	s, cl := startSched(t, node("n1", 2, 1<<30, nil))
	ctx := context.Background()
	if err := s.WaitIndex(ctx, s.AppliedIndex()); err != nil {
		t.Fatal(err)
	}
	_, before := s.store.Bounds()
	bad := []api.CreateGuest{
		{Name: "c1", Driver: "process", Memory: "64MiB", Command: []string{"/bin/true"}, Constraints: []string{"rack"}},
		{Name: "c2", Driver: "process", Memory: "64MiB", Command: []string{"/bin/true"}, Constraints: []string{"=a"}},
		{Name: "c3", Driver: "process", Memory: "64MiB", Command: []string{"/bin/true"}, VCPUs: 1, CPUSet: "0-3"},
		{Name: "c4", Driver: "process", Memory: "64MiB", Command: []string{"/bin/true"}, CPUSet: "3-1"},
		{Name: "c5", Driver: "process", Memory: "64MiB", Command: []string{"/bin/true"}, VCPUs: 1, PinCPUs: 2},
		{Name: "c6", Driver: "process", Memory: "64MiB", Command: []string{"/bin/true"}, SpreadBy: "app"},
	}
	for _, g := range bad {
		if _, err := cl.CreateGuest(ctx, g); !errors.Is(err, events.ErrInvalid) {
			t.Errorf("%s: %v", g.Name, err)
		}
	}
	if _, err := cl.SetSchedulerConfig(ctx, events.SchedulerConfig{Algorithm: "binpack", CPUOvercommit: 0.5, MemoryOvercommit: 1}); !errors.Is(err, events.ErrInvalid) {
		t.Errorf("overcommit 0.5: %v", err)
	}
	if _, err := cl.SetSchedulerConfig(ctx, events.SchedulerConfig{Algorithm: "random"}); !errors.Is(err, events.ErrInvalid) {
		t.Errorf("algorithm random: %v", err)
	}
	if _, err := cl.SetEligibility(ctx, api.SetEligibility{ID: "nope", Eligibility: events.Draining}); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("drain of an unknown node: %v", err)
	}
	if _, err := cl.SetEligibility(ctx, api.SetEligibility{ID: "n1", Eligibility: events.Draining, MaxParallel: -1}); !errors.Is(err, events.ErrInvalid) {
		t.Errorf("negative max-parallel: %v", err)
	}
	if _, after := s.store.Bounds(); after != before {
		t.Fatalf("bad input appended events: %d -> %d", before, after)
	}
	// A good config applies.
	if _, err := cl.SetSchedulerConfig(ctx, events.SchedulerConfig{Algorithm: "spread", CPUOvercommit: 2, MemoryOvercommit: 1}); err != nil {
		t.Fatal(err)
	}
	if got, _ := cl.SchedulerConfig(ctx); got.Algorithm != "spread" || got.CPUOvercommit != 2 {
		t.Fatalf("config is %+v", got)
	}
}
