package cluster

import (
	"strconv"
	"strings"
	"testing"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
)

// TestMaxMemoryReachesTheHost: a qemu guest's maximum memory, changed with
// --config while it runs, leaves the running instance its RAM and hard
// limit (max + QEMU's room) and is what the next start gets, in its
// definition (QEMU's -m) and its hard limit; the soft limit of a balloon
// target stays the agent's (target + room), never a field of Resources.
func TestMaxMemoryReachesTheHost(t *testing.T) {
	st := NewState()
	vm := testGuest("vm")
	vm.Driver, vm.Command, vm.Kernel, vm.MemoryBytes = events.DriverQEMU, nil, "/k", 256<<20
	mustApply(t, st, ev(testNode("n1"), "", "n1"), ev(vm, "vm", ""),
		ev(&events.GuestStartRequested{}, "vm", ""), ev(&events.GuestPlaced{Node: "n1"}, "vm", "n1"))
	gen := st.Guests["vm"].Generation
	mustApply(t, st, ev(&events.GuestStarted{Node: "n1", Generation: gen, PID: 10}, "vm", "n1"))
	commit(t, st, &TuneGuest{api.TuneGuest{Name: "vm", Set: map[string]string{"max_memory": "512MiB", "memory": "128MiB"}, Persistent: true}})

	check := func(when string, ram int64) {
		t.Helper()
		d := DesiredGuest(st.Guests["vm"])
		if d.Definition.MemoryBytes != ram {
			t.Errorf("%s: definition memory %d, want %d", when, d.Definition.MemoryBytes, ram)
		}
		if r := d.Resources; r.MemoryHardLimit == nil || *r.MemoryHardLimit != events.QEMUMemoryLimit(ram) {
			t.Errorf("%s: hard limit %v, want %d (max memory + QEMU's room)", when, r.MemoryHardLimit, events.QEMUMemoryLimit(ram))
		}
		if got, want := st.Guests["vm"].Knob("hard_limit"), events.QEMUMemoryLimit(ram); got != strconv.FormatInt(want, 10) {
			t.Errorf("%s: hard_limit knob %s, want %d", when, got, want)
		}
		if d.Resources.MemorySoftLimit != nil {
			t.Errorf("%s: soft limit %d in Resources; the balloon's is the agent's", when, *d.Resources.MemorySoftLimit)
		}
	}
	check("running", 256<<20)
	if d := DesiredGuest(st.Guests["vm"]); d.Memory != 0 {
		t.Errorf("running: balloon target %d, want none (the 128MiB target was --config)", d.Memory)
	}
	mustApply(t, st, ev(&events.GuestExited{Node: "n1", Generation: gen}, "vm", "n1"))
	check("next start", 512<<20)
	if d := DesiredGuest(st.Guests["vm"]); d.Memory != 128<<20 || d.BalloonEnforce {
		t.Errorf("next start: balloon target %d enforce %v, want 128MiB, off", d.Memory, d.BalloonEnforce)
	}
	commit(t, st, &TuneGuest{api.TuneGuest{Name: "vm", Set: map[string]string{"balloon_enforce": "yes"}}})
	if d := DesiredGuest(st.Guests["vm"]); !d.BalloonEnforce {
		t.Error("balloon_enforce on does not reach the node")
	}
}

// TestBalloonMemoryPlacement: with the scheduler's balloon_memory option a
// node whose guests gave memory back by their balloons takes another guest
// the scheduler's own pass places; without it the guest stays pending and
// its reason says memory.
func TestBalloonMemoryPlacement(t *testing.T) {
	for _, on := range []bool{false, true} {
		st := NewState()
		n := testNode("n1")
		n.MemoryBytes = 1 << 30
		mustApply(t, st, ev(n, "", "n1"))
		for _, name := range []string{"a", "b"} {
			g := testGuest(name)
			g.MemoryBytes = 512 << 20
			mustApply(t, st, ev(g, name, ""), ev(&events.GuestStartRequested{}, name, ""), ev(&events.GuestPlaced{Node: "n1"}, name, "n1"))
		}
		commit(t, st, &TuneGuest{api.TuneGuest{Name: "a", Set: map[string]string{"memory": "128MiB"}}})
		commit(t, st, &TuneGuest{api.TuneGuest{Name: "b", Set: map[string]string{"memory": "256MiB"}}})
		commit(t, st, &SetSchedulerConfig{events.SchedulerConfig{Algorithm: "binpack", BalloonMemory: on}})
		c := testGuest("c")
		c.MemoryBytes = 512 << 20
		mustApply(t, st, ev(c, "c", ""))

		plan, err := st.Plan([]*Guest{st.Guests["c"]}, nil, decideNow)
		if err != nil {
			t.Fatal(err)
		}
		mem, _ := st.Allocated("n1")
		view := st.NodeView(st.Nodes["n1"])
		if view.AllocatedMemoryBytes != mem {
			t.Errorf("balloon_memory %v: node view allocates %d, Allocated %d", on, view.AllocatedMemoryBytes, mem)
		}
		if !on {
			if len(plan.Placements) != 0 || len(plan.Failures) != 1 {
				t.Fatalf("balloon_memory off: plan %+v, want c pending", plan)
			}
			if why := plan.Failures[0].String(); !strings.Contains(why, "memory") {
				t.Errorf("balloon_memory off: pending reason %q does not say memory", why)
			}
			if mem != 1<<30 {
				t.Errorf("balloon_memory off: allocated %d, want both maxima (1GiB)", mem)
			}
			continue
		}
		if len(plan.Placements) != 1 || plan.Placements[0].Node != "n1" {
			t.Fatalf("balloon_memory on: plan %+v, want c on n1", plan)
		}
		if mem != 384<<20 {
			t.Errorf("balloon_memory on: allocated %d, want the targets (384MiB)", mem)
		}
		p := plan.Placements[0]
		commit(t, st, &PlaceGuests{Placements: []Placement{{Guest: p.Guest.Name, Node: p.Node}}})
		if st.Guests["c"].Node != "n1" {
			t.Fatal("the placement did not commit")
		}
	}
}
