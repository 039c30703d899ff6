package cluster

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/corral-dev/corral/events"
)

// BenchmarkApplyPlacements is the state machine's side of placing guests:
// applying GuestPlaced events (the re-check against the node, then
// refreshNode) for 20 guests per node on 500 and on 5,000 nodes, 10k and
// 100k guests in all. It reports µs per placement and the ratio against
// the 500-node figure measured in the same sub-benchmark: flat in cluster
// size, since a placement reads and rebuilds one node only.
//
//	go test ./coordinator/cluster -run '^$' -bench ApplyPlacements -benchtime 1x
func BenchmarkApplyPlacements(b *testing.B) {
	for _, nodes := range []int{500, 5000} {
		b.Run(strconv.Itoa(nodes)+"-nodes", func(b *testing.B) {
			var got, ref float64
			for b.Loop() {
				got += applyPlacements(b, nodes)
				ref += applyPlacements(b, 500)
			}
			b.ReportMetric(got/float64(b.N), "µs/placement")
			b.ReportMetric(ref/float64(b.N), "ref-500-nodes-µs/placement")
			b.ReportMetric(got/ref, "ratio")
		})
	}
}

// applyPlacements defines 20 guests per node and returns the µs per
// placement that applying their GuestPlaced events took.
func applyPlacements(b *testing.B, nodes int) float64 {
	b.StopTimer()
	defer b.StartTimer()
	st := bigState(b, nodes)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	guests := 20 * nodes
	placed := make([]events.Event, guests)
	for i := range guests {
		name := fmt.Sprintf("g%07d", i)
		d := &events.GuestDefined{Name: name, Driver: "process", MemoryBytes: 64 << 20, VCPUs: 1, CPUShares: 1024, Command: []string{"/bin/true"}}
		if _, err := st.Apply(subject(events.New(now, "bench", d), name, "")); err != nil {
			b.Fatal(err)
		}
		node := "n" + strconv.Itoa(i%nodes)
		placed[i] = subject(events.New(now, "scheduler", &events.GuestPlaced{Node: node}), name, node)
	}
	b.StartTimer()
	start := time.Now()
	for _, e := range placed {
		if _, err := st.Apply(e); err != nil {
			b.Fatal(err)
		}
	}
	return float64(time.Since(start).Microseconds()) / float64(guests)
}
