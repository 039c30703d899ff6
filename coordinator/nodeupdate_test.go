package coordinator

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/bus"
	"github.com/corral-dev/corral/coordinator/cluster"
	"github.com/corral-dev/corral/events"
)

// TestCreatePlacesInOneProposal: a create that a node takes at once
// commits its definition, start request and placement as one raft entry,
// three events with their own indexes.
func TestCreatePlacesInOneProposal(t *testing.T) {
	s, cl := startAgentServer(t)
	ctx := context.Background()
	if _, err := cl.RegisterNode(ctx, agentNode("n1"), ""); err != nil {
		t.Fatal(err)
	}
	// The new leader registers itself; wait for that, so only the create
	// appends from here on.
	WaitFor(t, 5*time.Second, "the leader to register itself", func() bool {
		var n int
		s.fsm.read(func(st *cluster.State) { n = len(st.Servers) })
		return n == 1
	})
	WaitFor(t, 5*time.Second, "raft to apply what it appended", func() bool { return s.raft.AppliedIndex() == s.raft.LastIndex() })
	before := s.raft.LastIndex()
	res, err := cl.CreateGuest(ctx, api.CreateGuest{Name: "web", Driver: "process", Memory: "64MiB", Command: []string{"/bin/true"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Indexes) != 3 || res.Indexes[1] != res.Indexes[0]+1 || res.Indexes[2] != res.Indexes[0]+2 {
		t.Fatalf("create committed indexes %v, want three in a row", res.Indexes)
	}
	if after := s.raft.LastIndex(); after != before+1 {
		t.Fatalf("raft appended %d entries for one create, want 1", after-before)
	}
	g, err := cl.Guest(ctx, "web")
	if err != nil || g.Node != "n1" || g.Generation != res.Indexes[2] || g.Status != api.StatusPlaced {
		t.Fatalf("guest after create: %+v %v", g, err)
	}
	var placed events.Event
	cl.History(ctx, "web", func(e events.Event) error {
		if e.Type == events.TypeGuestPlaced {
			placed = e
		}
		return nil
	})
	if placed.Index != res.Indexes[2] || placed.Actor == "" || placed.Reason == "" {
		t.Fatalf("placement event %+v", placed)
	}

	// With a guest waiting before it, a new one keeps its turn: no
	// placement in its create.
	create(t, cl, "huge", "64GiB", nil)
	res, err = cl.CreateGuest(ctx, api.CreateGuest{Name: "late", Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}})
	if err != nil || len(res.Indexes) != 2 {
		t.Fatalf("create behind a pending guest: %+v %v", res, err)
	}
	WaitFor(t, 5*time.Second, "the scheduler to place late", func() bool { return guestsOn(t, cl)["late"] == "n1" })
}

// TestNodeUpdatesOnlyToTheirNode: every event about a guest reaches its
// node's subject with the guest as the node must run it and the node's
// previous index; another node's subject gets nothing about it.
func TestNodeUpdatesOnlyToTheirNode(t *testing.T) {
	s, cl := startAgentServer(t)
	ctx := context.Background()
	nc, err := bus.Dial(s.NATSURL(), "test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	on1, stop1, err := nc.Subscribe(bus.NodeSubject("n1"))
	if err != nil {
		t.Fatal(err)
	}
	defer stop1()
	on2, stop2, err := nc.Subscribe(bus.NodeSubject("n2"))
	if err != nil {
		t.Fatal(err)
	}
	defer stop2()
	// Nodes without a secret are never declared down for want of
	// heartbeats, so nothing but the test's own events reaches them.
	n1 := agentNode("n1")
	n1.Labels = map[string]string{"rack": "a"}
	r1, err := cl.RegisterNode(ctx, n1, "")
	if err != nil {
		t.Fatal(err)
	}
	r2, err := cl.RegisterNode(ctx, agentNode("n2"), "")
	if err != nil {
		t.Fatal(err)
	}
	next := func(ch <-chan bus.Msg, what string) api.NodeUpdate {
		t.Helper()
		select {
		case m := <-ch:
			var u api.NodeUpdate
			if err := json.Unmarshal(m.Data, &u); err != nil || u.Index != m.Index || u.Prev != m.Prev {
				t.Fatalf("%s: update %s (headers index %d prev %d): %v", what, m.Data, m.Index, m.Prev, err)
			}
			return u
		case <-time.After(5 * time.Second):
			t.Fatalf("no update for %s", what)
		}
		return api.NodeUpdate{}
	}
	if u := next(on1, "n1's registration"); u.Index != r1.Index || u.Guest != nil {
		t.Fatalf("n1's first update: %+v", u)
	}
	if u := next(on2, "n2's registration"); u.Index != r2.Index {
		t.Fatalf("n2's first update: %+v", u)
	}

	res, err := cl.CreateGuest(ctx, api.CreateGuest{Name: "web", Driver: "process", Memory: "64MiB", CPUShares: 512,
		CPUSet: "1", Constraints: []string{"rack=a"}, Command: []string{"/bin/sleep", "1"}})
	if err != nil {
		t.Fatal(err)
	}
	u := next(on1, "web's placement")
	if u.Index != res.Index || u.Prev != r1.Index || u.Guest == nil || u.Guest.Name != "web" || u.Guest.Generation != res.Index ||
		u.Guest.Desired != api.DesiredRunning || u.Guest.Resources.CpusetCPUs != "1" || *u.Guest.Resources.CPUShares != 512 ||
		*u.Guest.Resources.MemoryHardLimit != 64<<20 || u.Guest.Definition.Command[0] != "/bin/sleep" {
		t.Fatalf("n1's update for web: %+v", u)
	}
	if _, err := cl.Tune(ctx, api.TuneGuest{Name: "web", Set: map[string]string{"cpu_shares": "700"}}); err != nil {
		t.Fatal(err)
	}
	tu := next(on1, "web's tuning")
	if tu.Prev != u.Index || tu.Guest == nil || *tu.Guest.Resources.CPUShares != 700 {
		t.Fatalf("n1's update for the tuning: %+v", tu)
	}
	if _, err := cl.GuestAction(ctx, "web", "destroy"); err != nil {
		t.Fatal(err)
	}
	if d := next(on1, "web's removal"); d.Removed != "web" || d.Guest != nil {
		t.Fatalf("n1's update for the destroy: %+v", d)
	}
	// n2's own report reaches n2, and it is the first thing n2 hears
	// since its registration: nothing about web came its way.
	if _, err := cl.Report(ctx, "n2", "", []api.ReportItem{api.NewReportItem("", &events.NodeUsage{IntervalMs: 1000})}); err != nil {
		t.Fatal(err)
	}
	if u := next(on2, "n2's usage report"); u.Prev != r2.Index || strings.Contains(string(u.Event), "web") {
		t.Fatalf("n2's next update: %+v", u)
	}
	select {
	case m := <-on2:
		t.Fatalf("n2 got more: %s", m.Data)
	default:
	}
}

// TestEncodeNodeUpdate: the hand-built encoding decodes to what
// encoding/json would have written.
func TestEncodeNodeUpdate(t *testing.T) {
	ev := []byte(`{"index":7,"type":"guest.placed","v":1,"time":"2026-01-01T00:00:00Z","actor":"scheduler","guest":"web","node":"n1","payload":{"node":"n1"}}`)
	g := &api.DesiredGuest{Name: "web", Generation: 7, Desired: api.DesiredRunning, Status: api.StatusPlaced}
	for _, rt := range []cluster.Route{{Node: "n1", Prev: 3, Guest: g}, {Node: "n2", Prev: 5, Removed: "web"}, {Node: "n1", Prev: 0}} {
		got, err := encodeNodeUpdate(Record{Index: 7, Data: ev}, rt)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(api.NodeUpdate{Index: 7, Prev: rt.Prev, Event: ev, Guest: rt.Guest, Removed: rt.Removed})
		var a, b api.NodeUpdate
		if err := json.Unmarshal(got, &a); err != nil {
			t.Fatalf("%s: %v", got, err)
		}
		json.Unmarshal(want, &b)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("encoded %s, want %s", got, want)
		}
	}
}
