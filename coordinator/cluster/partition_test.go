package cluster

import (
	"testing"
	"time"

	"github.com/corral-dev/corral/events"
)

// A partition event concerns every node: each gets an update carrying the
// partition as it must hold it (or its removal), chained by its node
// index, and every node's desired state lists every partition.
func TestPartitionRoutesToEveryNode(t *testing.T) {
	st := NewState()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, id := range []string{"n1", "n2"} {
		e := events.New(t0, "test", &events.NodeRegistered{ID: id, CPUs: 2, MemoryBytes: 1 << 30, Drivers: map[string]string{"process": "1"}})
		e.Node = id
		mustApply(t, st, e)
	}
	_, routes, err := st.ApplyRouted(events.New(t0, "test", &events.PartitionSet{Name: "gold", Limits: map[string]string{"cpu_shares": "2048", "hard_limit": "1073741824"}}))
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) != 2 || routes[0].Node != "n1" || routes[1].Node != "n2" {
		t.Fatalf("routes = %+v, want one for n1 and one for n2", routes)
	}
	for _, r := range routes {
		if r.Partition == nil || r.Partition.Name != "gold" || r.Partition.Index != 3 || r.Prev == 0 {
			t.Fatalf("route %+v: want partition gold at index 3 after the node's own registration", r)
		}
		if r.Partition.Resources.CPUShares == nil || *r.Partition.Resources.CPUShares != 2048 ||
			r.Partition.Resources.MemoryHardLimit == nil || *r.Partition.Resources.MemoryHardLimit != 1<<30 {
			t.Fatalf("route %+v: resources do not carry the limits", r.Partition.Resources)
		}
	}
	d, err := st.Desired("n2")
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Partitions) != 1 || d.Partitions[0].Name != "gold" {
		t.Fatalf("desired partitions of n2 = %+v, want gold", d.Partitions)
	}
	_, routes, err = st.ApplyRouted(events.New(t0, "test", &events.PartitionDeleted{Name: "gold"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) != 2 || routes[0].PartitionRemoved != "gold" || routes[0].Prev != 3 || routes[0].Partition != nil {
		t.Fatalf("routes = %+v, want gold removed on both nodes, prev 3", routes)
	}
	if d, _ := st.Desired("n1"); len(d.Partitions) != 0 {
		t.Fatalf("desired partitions after delete = %+v", d.Partitions)
	}
}
