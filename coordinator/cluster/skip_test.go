package cluster

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/scheduler"
)

// TestBadNodeIsSkipped: a node whose record the scheduler cannot read (one
// an older build let register with 8,193 CPUs) is left out of placement and
// named, and the guest goes to a good node; a new registration like it is
// refused.
func TestBadNodeIsSkipped(t *testing.T) {
	if events.MaxNodeCPUs != scheduler.MaxCPUID+1 {
		t.Fatalf("events.MaxNodeCPUs %d does not match the scheduler's CPU IDs 0-%d", events.MaxNodeCPUs, scheduler.MaxCPUID)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st := NewState()
	apply := func(e events.Event) {
		t.Helper()
		if _, err := st.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
	node := func(id string, cpus int) events.NodeRegistered {
		return events.NodeRegistered{ID: id, CPUs: cpus, MemoryBytes: 8 << 30, Drivers: map[string]string{"process": "1"}}
	}
	huge := node("huge", 8193)
	apply(subject(events.New(now, "old", &huge), "", "huge"))
	good := node("good", 4)
	apply(subject(events.New(now, "agent", &good), "", "good"))
	apply(subject(events.New(now, "cli", &events.GuestDefined{Name: "web", Driver: "process", MemoryBytes: 64 << 20, VCPUs: 1, CPUShares: 1024, Command: []string{"/bin/true"}}), "web", ""))
	apply(subject(events.New(now, "cli", &events.GuestStartRequested{}), "web", ""))

	w := st.Work(now)
	plan, skipped, err := st.PlanInput(w.Guests, w.Moving).Schedule(now)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Placements) != 1 || plan.Placements[0].Node != "good" {
		t.Fatalf("plan %+v, want web on good", plan)
	}
	if len(skipped) != 1 || !strings.Contains(skipped[0].Error(), `"huge"`) || !errors.Is(skipped[0], scheduler.ErrInvalidSnapshot) {
		t.Fatalf("skipped %v, want the huge node named", skipped)
	}

	again := RegisterNode{NodeRegistered: node("huge2", 8193)}
	if _, err := again.Decide(st, now, "agent"); !errors.Is(err, events.ErrInvalid) || api.ErrorOf(err).Code != api.CodeInvalid {
		t.Fatalf("registering 8193 CPUs: %v", err)
	}
	long := RegisterNode{NodeRegistered: node("odd", 2)}
	long.Drivers = map[string]string{"process": strings.Repeat("v", 100)}
	if _, err := long.Decide(st, now, "agent"); !errors.Is(err, events.ErrInvalid) {
		t.Fatalf("a 100-character driver version: %v", err)
	}
}

// TestCreateWaitsBehindMovingGuests: guests that must move off a lost node
// come before a new guest, so a create does not place it at once.
func TestCreateWaitsBehindMovingGuests(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st := NewState()
	apply := func(e events.Event) {
		t.Helper()
		if _, err := st.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"n1", "n2"} {
		n := events.NodeRegistered{ID: id, CPUs: 1, MemoryBytes: 1 << 30, Drivers: map[string]string{"process": "1"}}
		apply(subject(events.New(now, "agent", &n), "", id))
	}
	a := CreateGuest{CreateGuest: api.CreateGuest{Name: "a", Driver: "process", Memory: "512MiB", Command: []string{"/bin/true"}}}
	evs, err := a.Decide(st, now, "cli")
	if err != nil || len(evs) != 3 {
		t.Fatalf("create a: %v %v", evs, err)
	}
	for _, e := range evs {
		apply(e)
	}
	from := st.Guests["a"].Node
	apply(subject(events.New(now, "server", &events.NodeDown{}), "", from))
	b := CreateGuest{CreateGuest: api.CreateGuest{Name: "b", Driver: "process", Memory: "512MiB", Command: []string{"/bin/true"}}}
	evs, err = b.Decide(st, now, "cli")
	if err != nil || len(evs) != 2 {
		t.Fatalf("create b while a waits to move: %d events %v, want the definition and start only", len(evs), err)
	}
}

// TestPlaceNowLooksAtAFewNodes: on a large cluster a create places its
// guest after looking at a few nodes drawn from the state's index, the same
// ones on every replay, and on one that fits.
func TestPlaceNowLooksAtAFewNodes(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st := bigState(t, 2000)
	g := &Guest{GuestDefined: events.GuestDefined{Name: "web", Driver: "process", MemoryBytes: 64 << 20, VCPUs: 1, CPUShares: 1024, Command: []string{"/bin/true"}}}
	p1, ok1 := st.PlaceNow(g, now)
	p2, ok2 := st.Clone().PlaceNow(g, now)
	if !ok1 || !ok2 || p1 != p2 {
		t.Fatalf("PlaceNow gave %+v %v and, on a copy, %+v %v", p1, ok1, p2, ok2)
	}
	if _, ok := st.Nodes[p1.Node]; !ok {
		t.Fatalf("placed on unknown node %q", p1.Node)
	}
	if got := len(st.candidates(placeNowCandidates)); got != placeNowCandidates {
		t.Fatalf("%d candidates, want %d", got, placeNowCandidates)
	}
}

func bigState(tb testing.TB, nodes int) *State {
	tb.Helper()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st := NewState()
	for i := range nodes {
		id := "n" + strconv.Itoa(i)
		n := events.NodeRegistered{ID: id, CPUs: 16, MemoryBytes: 64 << 30, Drivers: map[string]string{"process": "1"}}
		if _, err := st.Apply(subject(events.New(now, "agent", &n), "", id)); err != nil {
			tb.Fatal(err)
		}
	}
	return st
}

// BenchmarkCreateDecide: what validating and placing one create costs the
// leader, with 100 and with 10,000 nodes: the same, since a create looks
// at a few nodes only.
func BenchmarkCreateDecide(b *testing.B) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, nodes := range []int{100, 10000} {
		b.Run(strconv.Itoa(nodes)+"-nodes", func(b *testing.B) {
			st := bigState(b, nodes)
			c := CreateGuest{CreateGuest: api.CreateGuest{Name: "web", Driver: "process", Memory: "64MiB", Command: []string{"/bin/true"}}}
			b.ResetTimer()
			for range b.N {
				evs, err := c.Decide(st, now, "bench")
				if err != nil || len(evs) != 3 {
					b.Fatalf("%d events, %v", len(evs), err)
				}
			}
		})
	}
}
