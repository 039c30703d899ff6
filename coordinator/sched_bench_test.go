package coordinator

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/cluster"

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
			if _, err := leader.Submit(ctx, "", "bench", &cluster.RegisterNode{NodeRegistered: n}); err != nil {
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
					g := &cluster.CreateGuest{CreateGuest: api.CreateGuest{Name: fmt.Sprintf("g%d", i), Driver: "process", Memory: "256MiB", VCPUs: 1, Command: []string{"/bin/true"}, NoStart: true}}
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
			leader.fsm.read(func(st *cluster.State) { pending = len(st.Pending()) })
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
