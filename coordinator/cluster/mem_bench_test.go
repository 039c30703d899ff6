package cluster

import (
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/corral-dev/corral/events"
)

// BenchmarkStateMemory measures the heap the coordinator's state holds per
// 100,000 guests (with 1,000 nodes).
//
//	go test ./coordinator/cluster -run '^$' -bench StateMemory -benchtime 1x
func BenchmarkStateMemory(b *testing.B) {
	const guests = 100000
	for range b.N {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		st := NewState()
		now := time.Now()
		apply := func(e events.Event) {
			if _, err := st.Apply(e); err != nil {
				b.Fatal(err)
			}
		}
		for i := range 1000 {
			id := fmt.Sprintf("n%04d", i)
			apply(subject(events.New(now, "bench", &events.NodeRegistered{ID: id, CPUs: 128, MemoryBytes: 1 << 40,
				Drivers: map[string]string{"process": "1"}}), "", id))
		}
		for i := range guests {
			name := fmt.Sprintf("guest-%06d", i)
			apply(subject(events.New(now, "bench", &events.GuestDefined{Name: name, Driver: "process", MemoryBytes: 64 << 20, VCPUs: 1,
				CPUShares: 1024, Command: []string{"/bin/sleep", "1000"}, Labels: map[string]string{"app": "web"}}), name, ""))
			node := fmt.Sprintf("n%04d", i%1000)
			apply(subject(events.New(now, "bench", &events.GuestPlaced{Node: node}), name, node))
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		per := float64(after.HeapAlloc-before.HeapAlloc) / guests
		fmt.Fprintf(os.Stdout, "\nstate with %d guests on 1000 nodes: %.1f MiB heap, %.0f bytes per guest\n",
			guests, float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), per)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MiB/100k-guests")
		runtime.KeepAlive(st)
	}
}
