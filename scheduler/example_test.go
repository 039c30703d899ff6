package scheduler_test

import (
	"fmt"
	"time"

	"github.com/corral-dev/corral/scheduler"
)

// The leader's loop in miniature: build a snapshot from state, schedule the
// pending guests, then re-check each placement as the FSM does before
// committing it.
func Example() {
	snap, err := scheduler.NewSnapshot([]scheduler.Node{
		{ID: "n1", Status: scheduler.NodeUp, Drivers: []string{"qemu"}, CPUs: scheduler.CPUSet{0, 1, 2, 3},
			MemoryBytes: 8 << 30, ReservedCPUs: 1, ReservedMemoryBytes: 1 << 30, Labels: map[string]string{"rack": "a"}},
		{ID: "n2", Status: scheduler.NodeUp, Eligibility: scheduler.Draining, Drivers: []string{"qemu"},
			CPUs: scheduler.CPUSet{0, 1, 2, 3}, MemoryBytes: 8 << 30},
	})
	if err != nil {
		panic(err)
	}
	rackA, _ := scheduler.ParseConstraint("rack=a")
	pending := []scheduler.Guest{
		{Name: "web-1", Driver: "qemu", MemoryBytes: 4 << 30, VCPUs: 2, PinCPUs: 2, Constraints: []scheduler.Constraint{rackA}},
		{Name: "web-2", Driver: "qemu", MemoryBytes: 4 << 30, VCPUs: 1},
	}
	cfg := scheduler.DefaultConfig()
	plan, err := scheduler.Schedule(snap, pending, cfg, time.Unix(0, 0), 1)
	if err != nil {
		panic(err)
	}
	for _, p := range plan.Placements {
		fmt.Printf("%s -> %s cpus %s: %v\n", p.Guest.Name, p.Node, p.CPUs, scheduler.CheckPlacement(snap, p, cfg))
	}
	for _, f := range plan.Failures {
		fmt.Println(f)
	}
	fmt.Println(plan.Summary)
	// Output:
	// web-1 -> n1 cpus 1-2: <nil>
	// web-2: no node fits (of 2 nodes: draining 1, memory 1)
	//   node n1: needs 4096 MiB memory, 3072 MiB free
	//   node n2: draining
	// placed 1 of 2 guests, 1 pending
}
