package nodeagent

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
)

// This file pins how the agent follows its node's updates: Fold (pure),
// the watch callback, the list that a gap or a lost update asks for, and
// the heartbeat's check for an update that never arrived.

func upd(index, prev uint64, g *DesiredGuest) api.NodeUpdate {
	return api.NodeUpdate{Index: index, Prev: prev, Guest: g}
}

func gone(index, prev uint64, name string) api.NodeUpdate {
	return api.NodeUpdate{Index: index, Prev: prev, Removed: name}
}

func ptr(g DesiredGuest) *DesiredGuest { return &g }

// render is a desired state in a compact comparable form.
func render(d Desired) string {
	parts := []string{fmt.Sprintf("@%d", d.Index)}
	for _, g := range d.Guests {
		parts = append(parts, fmt.Sprintf("%s/%d/%s/%s", g.Name, g.Generation, g.Desired, g.Status))
	}
	return strings.Join(parts, " ")
}

// TestFold: duplicates and late updates change nothing; an update that
// follows what the state holds (its Prev at most the state's index) is
// folded in; one whose Prev is newer than the state shows a gap.
func TestFold(t *testing.T) {
	base := Desired{Index: 10, Guests: []DesiredGuest{
		dg("db", 3, DesiredRunning, StatusRunning),
		dg("web", 5, DesiredRunning, StatusRunning),
	}}
	for _, tc := range []struct {
		name string
		u    api.NodeUpdate
		want string
		ok   bool
	}{
		{"duplicate", upd(10, 8, ptr(dg("web", 9, DesiredRunning, StatusPlaced))),
			"@10 db/3/running/running web/5/running/running", true},
		{"late", gone(7, 6, "web"),
			"@10 db/3/running/running web/5/running/running", true},
		{"in order", upd(11, 10, ptr(dg("web", 5, DesiredRunning, StatusExited))),
			"@11 db/3/running/running web/5/running/exited", true},
		{"in order after other nodes' events", upd(14, 9, ptr(dg("db", 3, DesiredStopped, StatusRunning))),
			"@14 db/3/stopped/running web/5/running/running", true},
		{"gap via prev", upd(13, 12, ptr(dg("web", 5, DesiredStopped, StatusRunning))),
			"@10 db/3/running/running web/5/running/running", false},
		{"gap via prev, removal", gone(13, 11, "db"),
			"@10 db/3/running/running web/5/running/running", false},
		{"new guest placed", upd(11, 10, ptr(dg("cache", 11, DesiredRunning, StatusPlaced))),
			"@11 db/3/running/running web/5/running/running cache/11/running/placed", true},
		{"removal", gone(11, 10, "db"),
			"@11 web/5/running/running", true},
		{"removal of a guest not held", gone(11, 10, "nope"),
			"@11 db/3/running/running web/5/running/running", true},
		{"replacement by a new generation", upd(12, 10, ptr(dg("db", 12, DesiredRunning, StatusPlaced))),
			"@12 db/12/running/placed web/5/running/running", true},
		{"node event, no guest", upd(11, 10, nil),
			"@11 db/3/running/running web/5/running/running", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := render(base)
			got, ok := Fold(base, tc.u)
			if ok != tc.ok || render(got) != tc.want {
				t.Errorf("Fold(%s, index %d prev %d) = %s, %v; want %s, %v", before, tc.u.Index, tc.u.Prev, render(got), ok, tc.want, tc.ok)
			}
			if render(base) != before {
				t.Errorf("Fold modified its input: %s, was %s", render(base), before)
			}
			if ok && got.Index != base.Index && len(got.Guests) > 0 {
				got.Guests[0].Status = "scribbled"
				if render(base) != before {
					t.Errorf("Fold's result shares its guests with the input")
				}
			}
		})
	}

	// Folding a stream in order gives what a list at its end would.
	d := Desired{Index: 2}
	for _, u := range []api.NodeUpdate{
		upd(3, 1, ptr(dg("web", 3, DesiredRunning, StatusPlaced))),
		upd(5, 3, ptr(dg("db", 5, DesiredRunning, StatusPlaced))),
		upd(6, 5, ptr(dg("web", 3, DesiredRunning, StatusRunning))),
		upd(6, 5, ptr(dg("web", 3, DesiredRunning, StatusRunning))), // duplicate
		upd(3, 1, ptr(dg("web", 3, DesiredRunning, StatusPlaced))),  // late
		gone(9, 6, "db"),
	} {
		var ok bool
		if d, ok = Fold(d, u); !ok {
			t.Fatalf("update %d after %d: gap", u.Index, d.Index)
		}
	}
	if got, want := render(d), "@9 web/3/running/running"; got != want {
		t.Errorf("folded stream = %s, want %s", got, want)
	}
}

// bareAgent is an agent with nothing but what following updates needs.
func bareAgent(coord Coordinator) *Agent {
	return &Agent{cfg: Config{NodeID: testNode}, deps: Deps{Coordinator: coord}, log: slog.New(slog.DiscardHandler),
		wake: make(chan struct{}, 1), names: map[string]bool{}}
}

func woke(a *Agent) bool {
	select {
	case <-a.wake:
		return true
	default:
		return false
	}
}

// TestAgentUpdate: duplicates and late updates are dropped without a
// pass; an update in order is folded and asks for a pass when it changes
// what the node runs; a gap asks for a list, and what arrives until the
// list is in waits for it.
func TestAgentUpdate(t *testing.T) {
	a := bareAgent(nil)
	a.desired, a.listed = Desired{Index: 10, Guests: []DesiredGuest{dg("web", 5, DesiredRunning, StatusPlaced)}}, true
	for _, tc := range []struct {
		name     string
		u        api.NodeUpdate
		wake     bool
		want     string
		listed   bool
		buffered int
	}{
		{"duplicate", upd(10, 9, ptr(dg("web", 5, DesiredStopped, StatusPlaced))), false, "@10 web/5/running/placed", true, 0},
		{"late", gone(4, 2, "web"), false, "@10 web/5/running/placed", true, 0},
		{"in order", upd(12, 10, ptr(dg("web", 5, DesiredRunning, StatusRunning))), true, "@12 web/5/running/running", true, 0},
		// No guest, no partition, no change of node.down: the node's own
		// usage report coming back, folded without a pass.
		{"nothing to reconcile", upd(14, 12, nil), false, "@14 web/5/running/running", true, 0},
		{"node down", api.NodeUpdate{Index: 15, Prev: 14, Event: []byte(`{"type":"node.down"}`)}, true, "@15 web/5/running/running", true, 0},
		{"gap", upd(20, 18, ptr(dg("db", 18, DesiredRunning, StatusPlaced))), true, "@15 web/5/running/running", false, 1},
		{"while a list is due", upd(21, 20, ptr(dg("db", 18, DesiredRunning, StatusRunning))), false, "@15 web/5/running/running", false, 2},
	} {
		a.update(tc.u)
		if got := woke(a); got != tc.wake {
			t.Errorf("%s: woke %v, want %v", tc.name, got, tc.wake)
		}
		if got := render(a.desired); got != tc.want || a.listed != tc.listed || len(a.buffered) != tc.buffered {
			t.Errorf("%s: desired %s listed %v buffered %d; want %s %v %d", tc.name, got, a.listed, len(a.buffered), tc.want, tc.listed, tc.buffered)
		}
	}
}

// TestAgentCurrent: a list folds in the updates that arrived while it
// was due, drops those it already covers, and is not repeated until
// another gap.
func TestAgentCurrent(t *testing.T) {
	f := newFakeCoordinator(t, testNode)
	f.place(sleeper("web")) // 1
	f.place(sleeper("db"))  // 2
	a := bareAgent(f)
	// Arrived before the list was in: 2 is in the list, 3 follows it.
	a.update(upd(2, 1, ptr(dg("db", 2, DesiredRunning, StatusPlaced))))
	a.update(upd(3, 2, ptr(dg("db", 2, DesiredStopped, StatusPlaced))))
	d, ok := a.current(context.Background())
	if !ok || render(d) != "@3 db/2/stopped/placed web/1/running/placed" || a.Lists() != 1 {
		t.Fatalf("first current = %s, %v after %d lists", render(d), ok, a.Lists())
	}
	a.update(upd(4, 3, nil))
	if d, _ = a.current(context.Background()); d.Index != 4 || a.Lists() != 1 {
		t.Errorf("after an update in order: index %d after %d lists, want 4 after 1", d.Index, a.Lists())
	}

	// A buffered update that does not follow the list is left out; the
	// next one in shows the gap and the agent lists again.
	for range 5 {
		f.elsewhere() // the log moves on to 7 with other nodes' events
	}
	a.relist()
	a.update(upd(9, 8, ptr(dg("web", 1, DesiredStopped, StatusPlaced))))
	if d, _ = a.current(context.Background()); render(d) != "@7 db/2/running/placed web/1/running/placed" || a.Lists() != 2 {
		t.Errorf("list with a gap in what waited = %s after %d lists", render(d), a.Lists())
	}
	a.update(upd(10, 9, nil))
	if a.listed {
		t.Error("an update after a lost one did not ask for a list")
	}
	if lists, _, _ := f.counters(); lists != 2 {
		t.Errorf("the coordinator saw %d lists, want 2", lists)
	}
}

// TestCheckBehind: a heartbeat's node index beyond the desired state is
// a lost update only when the next heartbeat finds the state still short
// of it; updates that keep arriving in time never make the agent list.
func TestCheckBehind(t *testing.T) {
	a := bareAgent(nil)
	a.desired, a.listed = Desired{Index: 10}, true
	for _, tc := range []struct {
		name    string
		arrive  *api.NodeUpdate // folded before the heartbeat
		nodeIdx uint64
		relist  bool
	}{
		{"up to date", nil, 10, false},
		{"node index below the list's (a global index)", nil, 7, false},
		{"behind once", nil, 12, false},
		{"caught up", &api.NodeUpdate{Index: 12, Prev: 10}, 12, false},
		{"behind again", nil, 14, false},
		{"the update arrived, a newer one is on its way", &api.NodeUpdate{Index: 14, Prev: 12}, 16, false},
		{"behind twice: lost", nil, 17, true},
		{"while the list is due", nil, 17, false},
	} {
		if tc.arrive != nil {
			a.update(*tc.arrive)
			woke(a)
		}
		a.checkBehind(tc.nodeIdx)
		if got := woke(a); got != tc.relist || (tc.relist && a.listed) {
			t.Errorf("%s: node index %d with desired at %d: relisted %v (listed %v), want %v", tc.name, tc.nodeIdx, a.desired.Index, got, a.listed, tc.relist)
		}
	}
	if a.behind != 0 {
		t.Errorf("with a list due, the heartbeat still holds node index %d as missing", a.behind)
	}
}

// TestFakeCoordinatorUpdates: the fake publishes one update per change,
// chained by Prev, with the guest as the node must run it.
func TestFakeCoordinatorUpdates(t *testing.T) {
	f := newFakeCoordinator(t, testNode)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan api.NodeUpdate, 16)
	ready := make(chan struct{})
	go f.Watch(ctx, testNode, func() { close(ready) }, func(u api.NodeUpdate) { got <- u })
	<-ready
	gen := f.place(sleeper("web"))
	f.elsewhere()
	f.tune("web", "cpu_shares", "500")
	f.undefine("web")
	var us []api.NodeUpdate
	for range 3 {
		us = append(us, <-got)
	}
	if us[0].Index != gen || us[0].Guest == nil || us[0].Guest.Generation != gen || *us[0].Guest.Resources.MemoryHardLimit != 64<<20 {
		t.Errorf("placement update %+v", us[0])
	}
	if us[1].Index != gen+2 || us[1].Prev != gen || us[1].Guest.Resources.Knobs()["cpu_shares"] != "500" {
		t.Errorf("tuning update %+v", us[1])
	}
	if us[2].Prev != us[1].Index || us[2].Removed != "web" || us[2].Guest != nil {
		t.Errorf("removal update %+v", us[2])
	}
	e, err := events.Unmarshal(us[1].Event)
	if err != nil || e.Index != us[1].Index || e.Type != events.TypeGuestTuned {
		t.Errorf("update event %+v, %v", e, err)
	}
	if idx, _ := f.Heartbeat(ctx, testNode, ""); idx != us[2].Index {
		t.Errorf("heartbeat node index %d, want %d", idx, us[2].Index)
	}
	if d, _ := f.Desired(ctx, testNode); d.Index != us[2].Index || len(d.Guests) != 0 || !slices.Equal(f.lost, nil) {
		t.Errorf("desired %+v", d)
	}
}
