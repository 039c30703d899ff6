package coordinator

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corral-dev/corral/events"
)

// BenchmarkPlaceEndToEnd measures guests defined, placed and committed per
// second through raft on three servers with fsync on, with 1,000 simulated
// nodes (no agents, no real guests): 256 clients create guests while the
// leader's scheduler places them, and the clock stops when the last one is
// placed.
//
//	go test ./coordinator -run '^$' -bench PlaceEndToEnd -benchtime 1x
func BenchmarkPlaceEndToEnd(b *testing.B) {
	const nodes, guests, clients = 1000, 20000, 256
	for range b.N {
		c := newBenchCluster(b)
		_, leader := c.waitLeader()
		ctx := context.Background()
		for i := range nodes {
			n := events.NodeRegistered{ID: fmt.Sprintf("n%04d", i), CPUs: 16 << (i % 3), MemoryBytes: 32 << 30 << (i % 3),
				Drivers: map[string]string{"process": "1", "qemu": "1"}, Labels: map[string]string{"rack": fmt.Sprint("r", i%10)}}
			if _, err := leader.Submit(ctx, "", "bench", &RegisterNode{NodeRegistered: n}); err != nil {
				b.Fatal(err)
			}
		}
		var next atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := next.Add(1) - 1
					if i >= guests {
						return
					}
					g := &CreateGuest{Name: fmt.Sprintf("g%d", i), Driver: "process", Memory: "256MiB", VCPUs: 1, Command: []string{"/bin/true"}, NoStart: true}
					if i%3 == 0 {
						g.Constraints = []string{fmt.Sprintf("rack=r%d", i%10)}
					}
					o, err := leader.Submit(ctx, "", "bench", g)
					if err == nil && o.Err != nil {
						err = o.Err
					}
					if err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		created := time.Since(start)
		WaitFor(b, 2*time.Minute, "every guest placed", func() bool {
			var pending int
			leader.fsm.read(func(st *State) { pending = len(st.pending) })
			return pending == 0
		})
		el := time.Since(start)
		rate := float64(guests) / el.Seconds()
		fmt.Fprintf(os.Stdout, "\n%d guests created and placed on %d nodes through raft (3 servers, fsync on, %d clients): "+
			"created in %v, all placed in %v: %.0f guests/s (%d events)\n", guests, nodes, clients, created.Round(time.Millisecond), el.Round(time.Millisecond), rate, 2*guests)
		b.ReportMetric(rate, "guests/s")
		c.stopAll()
	}
}

// BenchmarkStateMemory measures the heap the coordinator's state holds per
// 100,000 guests (with 1,000 nodes).
//
//	go test ./coordinator -run '^$' -bench StateMemory -benchtime 1x
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
