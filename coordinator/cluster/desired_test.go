package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
)

// ev builds an event about guest and node, as a test proposes it.
func ev(p events.Payload, guest, node string) events.Event {
	return subject(events.New(decideNow, "test", p), guest, node)
}

func testNode(id string) *events.NodeRegistered {
	return &events.NodeRegistered{ID: id, CPUs: 4, MemoryBytes: 4 << 30, Drivers: map[string]string{"process": "1", "qemu": "8.2"}}
}

func testGuest(name string) *events.GuestDefined {
	return &events.GuestDefined{Name: name, Driver: events.DriverProcess, MemoryBytes: 256 << 20, VCPUs: 1,
		CPUShares: events.DefaultCPUShares, Command: []string{"/bin/sleep", "100"}, Labels: map[string]string{"app": name}}
}

// mustApply applies events that must be accepted.
func mustApply(t *testing.T, st *State, evs ...events.Event) {
	t.Helper()
	for _, e := range evs {
		if _, err := st.Apply(e); err != nil {
			t.Fatalf("apply %s %s/%s: %v", e.Type, e.Guest, e.Node, err)
		}
	}
}

// commit decides cmd and applies what it proposes.
func commit(t *testing.T, st *State, cmd Command) {
	t.Helper()
	evs, err := cmd.Decide(st, decideNow, "test")
	if err != nil {
		t.Fatalf("%T: %v", cmd, err)
	}
	mustApply(t, st, evs...)
}

func TestResources(t *testing.T) {
	gib := int64(1 << 30)
	base := func(mut func(g *Guest)) *Guest {
		g := &Guest{GuestDefined: *testGuest("g")}
		mut(g)
		return g
	}
	for _, tc := range []struct {
		name string
		g    *Guest
		want cgroupdriver.Resources
	}{
		{
			name: "definition",
			g:    base(func(g *Guest) { g.CPUShares = 512 }),
			want: cgroupdriver.Resources{CPUShares: new(uint64(512)), MemoryHardLimit: new(int64(256 << 20))},
		},
		{
			name: "qemu headroom, small guest",
			g:    base(func(g *Guest) { g.Driver, g.MemoryBytes = events.DriverQEMU, gib }),
			want: cgroupdriver.Resources{CPUShares: new(uint64(1024)), MemoryHardLimit: new(events.QEMUMemoryLimit(gib))},
		},
		{
			name: "qemu headroom, large guest",
			g:    base(func(g *Guest) { g.Driver, g.MemoryBytes = events.DriverQEMU, 8*gib }),
			want: cgroupdriver.Resources{CPUShares: new(uint64(1024)), MemoryHardLimit: new(10 * gib)},
		},
		{
			name: "qemu without memory gets the default's limit",
			g:    base(func(g *Guest) { g.Driver, g.MemoryBytes = events.DriverQEMU, 0 }),
			want: cgroupdriver.Resources{CPUShares: new(uint64(1024)), MemoryHardLimit: new(events.QEMUMemoryLimit(events.DefaultQEMUMemory))},
		},
		{
			name: "nothing defined, only the device ACL managed",
			g:    base(func(g *Guest) { g.CPUShares, g.MemoryBytes = 0, 0 }),
			want: cgroupdriver.Resources{},
		},
		{
			name: "placement pins CPUs",
			g:    base(func(g *Guest) { g.VCPUs, g.CPUs = 2, "2-3" }),
			want: cgroupdriver.Resources{CPUShares: new(uint64(1024)), MemoryHardLimit: new(int64(256 << 20)), CpusetCPUs: "2-3"},
		},
		{
			name: "tuning overrides",
			g: base(func(g *Guest) {
				g.Driver = events.DriverQEMU
				g.Tuning = map[string]string{"cpu_shares": "500", "hard_limit": events.Unlimited, "soft_limit": "134217728",
					"swap_hard_limit": "1073741824", "vcpu_period": "50000", "vcpu_quota": "25000"}
			}),
			want: cgroupdriver.Resources{CPUShares: new(uint64(500)), MemoryHardLimit: new(int64(cgroupdriver.Unlimited)),
				MemorySoftLimit: new(int64(128 << 20)), MemorySwapHardLimit: new(gib),
				CPUPeriodUs: new(uint64(50000)), CPUQuotaUs: new(int64(25000))},
		},
		{
			name: "a quota tuned back to unlimited",
			g:    base(func(g *Guest) { g.Tuning = map[string]string{"vcpu_quota": "-1"} }),
			want: cgroupdriver.Resources{CPUShares: new(uint64(1024)), MemoryHardLimit: new(int64(256 << 20)), CPUQuotaUs: new(int64(cgroupdriver.Unlimited))},
		},
		{
			name: "a tuning this build cannot read is left unmanaged",
			g: base(func(g *Guest) {
				g.Tuning = map[string]string{"cpu_shares": "lots", "io_latency": "5", "soft_limit": "1048576"}
			}),
			want: cgroupdriver.Resources{CPUShares: new(uint64(1024)), MemoryHardLimit: new(int64(256 << 20)), MemorySoftLimit: new(int64(1 << 20))},
		},
		{
			name: "the definition's devices are extra devices",
			g:    base(func(g *Guest) { g.Devices = []string{"/dev/loop-control:rw", "c 10:200 rwm"} }),
			want: cgroupdriver.Resources{CPUShares: new(uint64(1024)), MemoryHardLimit: new(int64(256 << 20)),
				Devices: &cgroupdriver.DeviceACL{Extra: []cgroupdriver.DeviceRule{
					{Path: "/dev/loop-control", Access: "rw"}, {Type: 'c', Major: 10, Minor: 200, Access: "rwm"}}}},
		},
		{
			name: "tuned devices replace the definition's",
			g: base(func(g *Guest) {
				g.Devices = []string{"/dev/loop-control:rw"}
				g.Tuning = map[string]string{"devices": "/dev/fuse:rw"}
			}),
			want: cgroupdriver.Resources{CPUShares: new(uint64(1024)), MemoryHardLimit: new(int64(256 << 20)),
				Devices: &cgroupdriver.DeviceACL{Extra: []cgroupdriver.DeviceRule{{Path: "/dev/fuse", Access: "rw"}}}},
		},
		{
			name: "devices tuned to none leave the minimal set",
			g: base(func(g *Guest) {
				g.Devices = []string{"/dev/loop-control:rw"}
				g.Tuning = map[string]string{"devices": events.NoDevices}
			}),
			want: cgroupdriver.Resources{CPUShares: new(uint64(1024)), MemoryHardLimit: new(int64(256 << 20))},
		},
		{
			name: "unreadable devices keep the definition's",
			g: base(func(g *Guest) {
				g.Devices = []string{"/dev/loop-control:rw"}
				g.Tuning = map[string]string{"devices": "/dev/../etc/passwd:r"}
			}),
			want: cgroupdriver.Resources{CPUShares: new(uint64(1024)), MemoryHardLimit: new(int64(256 << 20)),
				Devices: &cgroupdriver.DeviceACL{Extra: []cgroupdriver.DeviceRule{{Path: "/dev/loop-control", Access: "rw"}}}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.want.Devices == nil {
				// Every guest gets a device ACL: the minimal set, no extras.
				tc.want.Devices = &cgroupdriver.DeviceACL{}
			}
			if got := Resources(tc.g); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Resources = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestResourcesFollowTuning tunes a guest through the commands and checks
// that what its node must run follows every knob.
func TestResourcesFollowTuning(t *testing.T) {
	st := NewState()
	mustApply(t, st, ev(testNode("n1"), "", "n1"))
	commit(t, st, &CreateGuest{api.CreateGuest{Name: "vm", Driver: events.DriverQEMU, Memory: "2GiB", VCPUs: 2, PinCPUs: 2, Kernel: "/boot/vmlinuz"}})
	g := st.Guests["vm"]
	if g.Node != "n1" || g.CPUs == "" {
		t.Fatalf("vm not placed with pinned CPUs: node %q cpus %q", g.Node, g.CPUs)
	}
	r := Resources(g)
	if *r.MemoryHardLimit != events.QEMUMemoryLimit(2<<30) || r.CpusetCPUs != g.CPUs || *r.CPUShares != 1024 {
		t.Fatalf("before tuning: %v", r)
	}
	commit(t, st, &TuneGuest{api.TuneGuest{Name: "vm", Set: map[string]string{"cpu_shares": "300", "hard_limit": "unlimited"}}})
	r = Resources(st.Guests["vm"])
	if *r.CPUShares != 300 || *r.MemoryHardLimit != cgroupdriver.Unlimited || r.CpusetCPUs != g.CPUs {
		t.Fatalf("after tuning: %v", r)
	}
}

// TestResourcesLiveAndConfig checks that a node runs a guest's live
// tuning on top of its persistent one, and starts it again with the
// persistent values only: virsh's --live lasts until the instance ends,
// --config starts with the next one.
func TestResourcesLiveAndConfig(t *testing.T) {
	st := NewState()
	mustApply(t, st, ev(testNode("n1"), "", "n1"), ev(testGuest("web"), "web", ""),
		ev(&events.GuestStartRequested{}, "web", ""), ev(&events.GuestPlaced{Node: "n1"}, "web", "n1"))
	gen := st.Guests["web"].Generation
	mustApply(t, st, ev(&events.GuestStarted{Node: "n1", Generation: gen, PID: 10}, "web", "n1"))
	shares := func(want uint64, when string) {
		t.Helper()
		if r := Resources(st.Guests["web"]); r.CPUShares == nil || *r.CPUShares != want {
			t.Errorf("%s: node runs cpu_shares %v, want %d", when, r.CPUShares, want)
		}
	}
	tune := func(v string, live, config bool) {
		t.Helper()
		commit(t, st, &TuneGuest{api.TuneGuest{Name: "web", Set: map[string]string{"cpu_shares": v}, Live: live, Persistent: config}})
	}

	tune("300", false, true)
	shares(1024, "after --config 300 on the running guest")
	tune("600", true, false)
	shares(600, "after --live 600")
	v := View(st.Guests["web"])
	if v.Knob("cpu_shares") != "600" || v.ConfigKnob("cpu_shares") != "300" || v.CPUShares != 300 || v.LiveTuning["cpu_shares"] != "600" {
		t.Errorf("view: knob %s config %s cpu_shares %d live %v; want 600, 300, 300, 600",
			v.Knob("cpu_shares"), v.ConfigKnob("cpu_shares"), v.CPUShares, v.LiveTuning)
	}

	// The exit's route carries the persistent values for the next start.
	_, routes, err := st.ApplyRouted(ev(&events.GuestExited{Node: "n1", Generation: gen}, "web", "n1"))
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) != 1 || routes[0].Guest == nil || *routes[0].Guest.Resources.CPUShares != 300 {
		t.Errorf("exit routes %v, want web with cpu_shares 300", routes)
	}
	shares(300, "after the exit")
	if g := st.Guests["web"]; g.LiveTuning != nil {
		t.Errorf("live tuning %v outlived the instance", g.LiveTuning)
	}
	if _, err := (&TuneGuest{api.TuneGuest{Name: "web", Set: map[string]string{"cpu_shares": "700"}, Live: true}}).Decide(st, decideNow, "test"); !errors.Is(err, api.ErrConflict) {
		t.Errorf("--live on an exited guest: %v, want a conflict", err)
	}

	// A live override also ends with a new placement.
	mustApply(t, st, ev(&events.GuestStartRequested{}, "web", ""))
	mustApply(t, st, ev(&events.GuestStarted{Node: "n1", Generation: gen, PID: 11}, "web", "n1"))
	tune("900", true, false)
	shares(900, "after --live 900 on the started guest")
	mustApply(t, st, ev(&events.NodeDown{}, "", "n1"), ev(testNode("n2"), "", "n2"), ev(&events.GuestPlaced{Node: "n2"}, "web", "n2"))
	shares(300, "after the guest was placed again")
}

func TestDesiredGuest(t *testing.T) {
	st := NewState()
	mustApply(t, st, ev(testNode("n1"), "", "n1"))
	commit(t, st, &CreateGuest{api.CreateGuest{Name: "web", Driver: "process", Memory: "256MiB", Command: []string{"/bin/sleep", "100"},
		Labels: map[string]string{"app": "web"}, Constraints: []string{"app!=db"}}})
	commit(t, st, &GuestAction{api.GuestAction{Name: "web", Action: "suspend"}})
	commit(t, st, &TuneGuest{api.TuneGuest{Name: "web", Set: map[string]string{"cpu_shares": "200"}}})
	g := st.Guests["web"]
	d := DesiredGuest(g)
	want := api.DesiredGuest{Name: "web", Generation: g.Generation, Desired: DesiredRunning, Status: StatusPlaced, Paused: true,
		Definition: g.GuestDefined, Resources: Resources(g)}
	if !reflect.DeepEqual(d, want) {
		t.Fatalf("DesiredGuest = %+v\nwant %+v", d, want)
	}
	if d.Generation == 0 || *d.Resources.CPUShares != 200 || d.Definition.CPUShares != 1024 {
		t.Errorf("generation %d, resources %v, definition cpu_shares %d", d.Generation, d.Resources, d.Definition.CPUShares)
	}
	// The desired guest is the agent's to keep: it shares nothing with the state.
	d.Definition.Command[0] = "/bin/false"
	d.Definition.Labels["app"] = "changed"
	d.Definition.Constraints[0] = "x=y"
	if g.Command[0] != "/bin/sleep" || g.Labels["app"] != "web" || g.Constraints[0] != "app!=db" {
		t.Errorf("DesiredGuest shares its definition with the state: %+v", g.GuestDefined)
	}
}

func TestStateDesired(t *testing.T) {
	st := NewState()
	mustApply(t, st, ev(testNode("n1"), "", "n1"), ev(testNode("n2"), "", "n2"))
	for _, name := range []string{"b", "a", "c"} {
		mustApply(t, st, ev(testGuest(name), name, ""))
	}
	mustApply(t, st,
		ev(&events.GuestPlaced{Node: "n1"}, "b", "n1"),
		ev(&events.GuestPlaced{Node: "n1"}, "a", "n1"),
		ev(&events.GuestPlaced{Node: "n2"}, "c", "n2"))
	d, err := st.Desired("n1")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range d.Guests {
		names = append(names, g.Name)
		if want := DesiredGuest(st.Guests[g.Name]); !reflect.DeepEqual(g, want) {
			t.Errorf("%s: %+v, want %+v", g.Name, g, want)
		}
	}
	if d.Index != st.Index || d.Node.ID != "n1" || !slices.Equal(names, []string{"a", "b"}) {
		t.Errorf("Desired(n1) = index %d node %s guests %v, want index %d node n1 guests [a b]", d.Index, d.Node.ID, names, st.Index)
	}
	d.Node.Status = "changed"
	if st.Nodes["n1"].Status != NodeStatusUp {
		t.Error("Desired shares its node with the state")
	}
	if d, err := st.Desired("n3"); err == nil {
		t.Errorf("Desired(n3) = %+v, want not found", d)
	}
	empty := NewState()
	mustApply(t, empty, ev(testNode("n1"), "", "n1"))
	if d, err := empty.Desired("n1"); err != nil || d.Guests == nil || len(d.Guests) != 0 {
		t.Errorf("Desired of an empty node = %+v, %v; want an empty, non-nil list", d, err)
	}
}

// routeLine describes a route for comparison: "NODE prev=N" and the guest
// as the node must run it, or the guest it lost.
func routeLine(r Route) string {
	s := fmt.Sprintf("%s prev=%d", r.Node, r.Prev)
	if r.Guest != nil {
		s += fmt.Sprintf(" guest=%s gen=%d status=%s desired=%s", r.Guest.Name, r.Guest.Generation, r.Guest.Status, r.Guest.Desired)
		if r.Guest.Resources.CPUShares != nil {
			s += fmt.Sprintf(" cpu_shares=%d", *r.Guest.Resources.CPUShares)
		}
	}
	if r.Removed != "" {
		s += " removed=" + r.Removed
	}
	return s
}

func TestApplyRouted(t *testing.T) {
	st := NewState()
	steps := []struct {
		name string
		e    events.Event
		want []string
	}{
		{"node n1 registers", ev(testNode("n1"), "", "n1"), []string{"n1 prev=0"}},
		{"node n2 registers", ev(testNode("n2"), "", "n2"), []string{"n2 prev=0"}},
		{"a pending guest concerns no node", ev(testGuest("web"), "web", ""), nil},
		{"nor does asking it to run", ev(&events.GuestStartRequested{}, "web", ""), nil},
		{"its placement routes it to its node", ev(&events.GuestPlaced{Node: "n1"}, "web", "n1"),
			[]string{"n1 prev=1 guest=web gen=5 status=placed desired=running cpu_shares=1024"}},
		{"a tuning carries the new resources", ev(&events.GuestTuned{Knob: "cpu_shares", Old: "1024", New: "500", Live: true, Persistent: true}, "web", ""),
			[]string{"n1 prev=5 guest=web gen=5 status=placed desired=running cpu_shares=500"}},
		{"an agent's report comes back to its node", ev(&events.GuestStarted{Node: "n1", Generation: 5, PID: 7}, "web", "n1"),
			[]string{"n1 prev=6 guest=web gen=5 status=running desired=running cpu_shares=500"}},
		{"usage concerns the node, no guest", ev(&events.NodeUsage{IntervalMs: 1000, Guests: []events.GuestUsage{{Guest: "web", Generation: 5}}}, "", "n1"),
			[]string{"n1 prev=7"}},
		{"another guest", ev(testGuest("db"), "db", ""), nil},
		{"placed on n2, chained on n2's own events", ev(&events.GuestPlaced{Node: "n2"}, "db", "n2"),
			[]string{"n2 prev=2 guest=db gen=10 status=placed desired=stopped cpu_shares=1024"}},
		{"n1 is lost", ev(&events.NodeDown{}, "", "n1"), []string{"n1 prev=8"}},
		{"a move: the guest to its new node, Removed to the old", ev(&events.GuestPlaced{Node: "n2"}, "web", "n2"),
			[]string{"n2 prev=10 guest=web gen=12 status=placed desired=running cpu_shares=500", "n1 prev=11 removed=web"}},
		{"n1 hears no more of web", ev(&events.GuestStopRequested{}, "web", ""),
			[]string{"n2 prev=12 guest=web gen=12 status=placed desired=stopped cpu_shares=500"}},
		{"undefined: Removed", ev(&events.GuestUndefined{}, "db", ""), []string{"n2 prev=13 removed=db"}},
		{"a pending guest's undefinition concerns no node", ev(testGuest("tmp"), "tmp", ""), nil},
		{"", ev(&events.GuestUndefined{}, "tmp", ""), nil},
		{"cluster-wide events concern no node", ev(&events.SchedulerConfig{Algorithm: "spread", CPUOvercommit: 1, MemoryOvercommit: 1}, "", ""), nil},
		{"n1 comes back", ev(&events.NodeUp{}, "", "n1"), []string{"n1 prev=12"}},
	}
	for i, s := range steps {
		c, routes, err := st.ApplyRouted(s.e)
		if err != nil {
			t.Fatalf("step %d (%s): %v", i, s.name, err)
		}
		if c.Index != uint64(i+1) {
			t.Fatalf("step %d (%s): index %d, want %d", i, s.name, c.Index, i+1)
		}
		var got []string
		for _, r := range routes {
			got = append(got, routeLine(r))
		}
		if !slices.Equal(got, s.want) {
			t.Errorf("step %d (%s): routes\n%q\nwant\n%q", i+1, s.name, got, s.want)
		}
		for _, r := range routes {
			if st.NodeIndex(r.Node) != c.Index {
				t.Errorf("step %d (%s): NodeIndex(%s) = %d, want %d", i+1, s.name, r.Node, st.NodeIndex(r.Node), c.Index)
			}
		}
	}
	if got := []uint64{st.NodeIndex("n1"), st.NodeIndex("n2"), st.NodeIndex("n9")}; !slices.Equal(got, []uint64{18, 14, 0}) {
		t.Errorf("NodeIndex n1, n2, n9 = %v, want [18 14 0]", got)
	}

	// A refused event routes nowhere and leaves the chain alone.
	before := st.Clone()
	if _, routes, err := st.ApplyRouted(ev(&events.GuestPlaced{Node: "n1"}, "web", "n1")); !errors.Is(err, api.ErrConflict) || routes != nil {
		t.Errorf("placing a placed guest: routes %v, err %v; want a conflict and no routes", routes, err)
	}
	if !reflect.DeepEqual(before, st) {
		t.Error("a refused event changed the state")
	}

	// Apply keeps the same chain as ApplyRouted, so a follower that never
	// routes hands its agents the same Prev after it becomes leader.
	plain := NewState()
	for _, s := range steps {
		if _, err := plain.Apply(s.e); err != nil {
			t.Fatal(err)
		}
	}
	if !reflect.DeepEqual(plain.NodeEvents, st.NodeEvents) {
		t.Errorf("Apply's node events %v, ApplyRouted's %v", plain.NodeEvents, st.NodeEvents)
	}
	if d, err := DecodeState(mustJSON(t, st)); err != nil || !reflect.DeepEqual(d.NodeEvents, st.NodeEvents) {
		t.Errorf("node events after a snapshot: %v, %v; want %v", d.NodeEvents, err, st.NodeEvents)
	}
}

// TestRouteMatchesDesired checks that folding every route into per-node
// desired states, as an agent does, gives what State.Desired lists.
func TestRouteMatchesDesired(t *testing.T) {
	st := NewState()
	folded := map[string]map[string]api.DesiredGuest{}
	last := map[string]uint64{}
	apply := func(e events.Event) {
		t.Helper()
		c, routes, err := st.ApplyRouted(e)
		if err != nil {
			t.Fatalf("%s: %v", e.Type, err)
		}
		for _, r := range routes {
			if r.Prev != last[r.Node] {
				t.Errorf("index %d on %s: prev %d, but the node's last event was %d", c.Index, r.Node, r.Prev, last[r.Node])
			}
			last[r.Node] = c.Index
			if folded[r.Node] == nil {
				folded[r.Node] = map[string]api.DesiredGuest{}
			}
			switch {
			case r.Guest != nil:
				folded[r.Node][r.Guest.Name] = *r.Guest
			case r.Removed != "":
				delete(folded[r.Node], r.Removed)
			}
		}
	}
	for _, id := range []string{"n1", "n2", "n3"} {
		apply(ev(testNode(id), "", id))
	}
	for i := range 6 {
		name := fmt.Sprintf("g%d", i)
		apply(ev(testGuest(name), name, ""))
		apply(ev(&events.GuestPlaced{Node: fmt.Sprintf("n%d", i%3+1)}, name, fmt.Sprintf("n%d", i%3+1)))
	}
	apply(ev(&events.GuestTuned{Knob: "hard_limit", Old: "268435456", New: "unlimited", Live: true, Persistent: true}, "g0", ""))
	apply(ev(&events.GuestSuspendRequested{}, "g1", ""))
	apply(ev(&events.NodeDown{}, "", "n1"))
	apply(ev(&events.GuestPlaced{Node: "n2"}, "g0", "n2"))
	apply(ev(&events.GuestPlaced{Node: "n3"}, "g3", "n3"))
	apply(ev(&events.GuestUndefined{}, "g4", ""))
	apply(ev(&events.NodeEligibility{Eligibility: events.Draining}, "", "n3"))
	apply(ev(&events.GuestPlaced{Node: "n2"}, "g5", "n2"))
	for _, id := range []string{"n1", "n2", "n3"} {
		d, err := st.Desired(id)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]api.DesiredGuest{}
		for _, g := range d.Guests {
			want[g.Name] = g
		}
		if len(want) == 0 && len(folded[id]) == 0 {
			continue
		}
		if !reflect.DeepEqual(folded[id], want) {
			t.Errorf("%s: folded routes hold %v, Desired lists %v", id, keysOf(folded[id]), keysOf(want))
		}
		if last[id] != st.NodeIndex(id) {
			t.Errorf("%s: last routed index %d, NodeIndex %d", id, last[id], st.NodeIndex(id))
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func keysOf(m map[string]api.DesiredGuest) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestView(t *testing.T) {
	st := NewState()
	mustApply(t, st, ev(testNode("n1"), "", "n1"), ev(testNode("n2"), "", "n2"), ev(testNode("n3"), "", "n3"))
	mustApply(t, st, ev(&events.ServerRegistered{ID: "s1", RaftAddr: "127.0.0.1:7000", HTTPAddr: "127.0.0.1:8000"}, "", ""))
	big := testGuest("big")
	big.MemoryBytes, big.VCPUs = 1<<30, 2
	mustApply(t, st, ev(big, "big", ""), ev(testGuest("web"), "web", ""), ev(testGuest("db"), "db", ""), ev(testGuest("wait"), "wait", ""))
	for _, g := range []string{"big", "web", "db", "wait"} {
		mustApply(t, st, ev(&events.GuestStartRequested{}, g, "")) // placed guests asked to run hold capacity
	}
	mustApply(t, st,
		ev(&events.GuestPlaced{Node: "n1"}, "big", "n1"),
		ev(&events.GuestPlaced{Node: "n1"}, "web", "n1"),
		ev(&events.GuestPlaced{Node: "n2"}, "db", "n2"),
		ev(&events.GuestTuned{Knob: "cpu_shares", Old: "1024", New: "300", Live: true, Persistent: true}, "web", ""))

	v := st.View()
	if v.Index != st.Index || v.Servers["s1"] == nil || v.Servers["s1"].HTTPAddr != "127.0.0.1:8000" {
		t.Errorf("view index %d servers %v", v.Index, v.Servers)
	}
	var ids []string
	for _, n := range v.Nodes {
		ids = append(ids, n.ID)
		mem, cpus := st.Allocated(n.ID)
		if n.AllocatedMemoryBytes != mem || n.AllocatedVCPUs != cpus || n.Guests != len(st.GuestsOn(n.ID)) {
			t.Errorf("node %s: view allocates %d bytes, %d vCPUs, %d guests; state %d, %d, %d",
				n.ID, n.AllocatedMemoryBytes, n.AllocatedVCPUs, n.Guests, mem, cpus, len(st.GuestsOn(n.ID)))
		}
	}
	if !slices.Equal(ids, []string{"n1", "n2", "n3"}) {
		t.Errorf("view nodes %v, want sorted n1 n2 n3", ids)
	}
	if n1 := v.Nodes[0]; n1.AllocatedMemoryBytes != 1<<30+256<<20 || n1.AllocatedVCPUs != 3 || n1.Guests != 2 {
		t.Errorf("n1 allocation %d bytes, %d vCPUs, %d guests; want %d, 3, 2", n1.AllocatedMemoryBytes, n1.AllocatedVCPUs, n1.Guests, 1<<30+256<<20)
	}

	shares := map[string]int{}
	var names []string
	for _, g := range v.Guests {
		names = append(names, g.Name)
		shares[g.Name] = g.CPUShares
	}
	if !slices.Equal(names, []string{"big", "db", "wait", "web"}) {
		t.Errorf("view guests %v, want sorted", names)
	}
	if shares["web"] != 300 || shares["db"] != 1024 {
		t.Errorf("view cpu_shares web %d db %d, want the tuned 300 and the defined 1024", shares["web"], shares["db"])
	}
	if st.Guests["web"].CPUShares != 1024 {
		t.Errorf("View changed the state's definition: cpu_shares %d", st.Guests["web"].CPUShares)
	}
	if g := View(st.Guests["web"]); g.CPUShares != 300 || g.Knob("cpu_shares") != "300" || g == st.Guests["web"] {
		t.Errorf("View(web) cpu_shares %d knob %s", g.CPUShares, g.Knob("cpu_shares"))
	}
	// A view is encoded after the state lock is released: it shares no
	// map or counter that Apply writes in place.
	mustApply(t, st, ev(&events.GuestLimitHit{Node: "n1", Generation: st.Guests["web"].Generation, LimitHits: 1}, "web", "n1"),
		ev(&events.GuestTuningApplied{Node: "n1", Generation: st.Guests["web"].Generation, Knob: "cpu_shares", Value: "300"}, "web", "n1"))
	web := View(st.Guests["web"])
	mustApply(t, st, ev(&events.GuestTuned{Knob: "cpu_shares", Old: "300", New: "400", Live: true, Persistent: true}, "web", ""),
		ev(&events.GuestLimitHit{Node: "n1", Generation: st.Guests["web"].Generation, LimitHits: 2}, "web", "n1"),
		ev(&events.GuestTuningApplied{Node: "n1", Generation: st.Guests["web"].Generation, Knob: "cpu_shares", Value: "400"}, "web", "n1"))
	if web.Tuning["cpu_shares"] != "300" || web.Applied["cpu_shares"] != "300" || web.Usage.LimitHits != 1 || web.CPUShares != 300 {
		t.Errorf("a view taken before a change shows tuning %v applied %v limit hits %d cpu_shares %d; want the values as of the view",
			web.Tuning, web.Applied, web.Usage.LimitHits, web.CPUShares)
	}
	v.Servers["s1"].HTTPAddr = "changed"
	if st.Servers["s1"].HTTPAddr == "changed" {
		t.Error("View shares its servers with the state")
	}
}

// TestDesiredGuestStopFirst: a start asked while a stop is on its way to
// the node leaves the guest stopped in the node's view until the stop's
// exit comes, so that an agent that sees the stop and the start together
// still ends the run; the exit then has the node start it again.
func TestDesiredGuestStopFirst(t *testing.T) {
	st := NewState()
	mustApply(t, st, ev(testNode("n1"), "", "n1"))
	commit(t, st, &CreateGuest{api.CreateGuest{Name: "web", Driver: "process", Memory: "256MiB", Command: []string{"/bin/sleep", "100"}}})
	g := st.Guests["web"]
	gen := g.Generation
	mustApply(t, st, ev(&events.GuestStarted{Node: "n1", Generation: gen, PID: 11}, "web", "n1"))
	commit(t, st, &GuestAction{api.GuestAction{Name: "web", Action: "stop"}})
	if d := DesiredGuest(st.Guests["web"]); d.Desired != DesiredStopped {
		t.Fatalf("after the stop the node's view is %s", d.Desired)
	}
	commit(t, st, &GuestAction{api.GuestAction{Name: "web", Action: "start"}})
	g = st.Guests["web"]
	if !g.StartAfterStop || g.Desired != DesiredRunning {
		t.Fatalf("start after stop: StartAfterStop %v, desired %s", g.StartAfterStop, g.Desired)
	}
	if d := DesiredGuest(g); d.Desired != DesiredStopped || d.Status != StatusRunning {
		t.Fatalf("with the stop's exit to come the node's view is %s/%s, want stopped/running", d.Desired, d.Status)
	}
	mustApply(t, st, ev(&events.GuestExited{Node: "n1", Generation: gen, Code: -1, Signal: "SIGTERM"}, "web", "n1"))
	g = st.Guests["web"]
	if d := DesiredGuest(g); d.Desired != DesiredRunning || d.Status != StatusPlaced || g.StartAfterStop {
		t.Fatalf("after the exit the node's view is %s/%s (StartAfterStop %v), want running/placed", d.Desired, d.Status, g.StartAfterStop)
	}
}
