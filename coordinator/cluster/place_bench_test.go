package cluster

import (
	"context"
	"fmt"
	"runtime"
	"runtime/pprof"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/events"
)

// BenchmarkApplyPlacements is the state machine's side of placing guests:
// applying GuestPlaced events (the re-check against the node, then the
// update of the node's scheduler view) for 20 started guests per node on 500 and on 5,000 nodes, 10k and
// 100k guests in all. It reports µs per placement and the ratio against
// the 500-node figure measured in the same sub-benchmark: flat in cluster
// size, since a placement reads and rebuilds one node only.
//
// The reference runs around the big one, half of its runs before and half
// after, as many as apply together as many placements (at least one on each
// side), so both figures come from the same stretch of time on a shared
// machine. Each run starts timing after a collection, so that it pays for
// the garbage its own placements make and not for its setup's (defining
// 100k guests), nor runs under the heap goal a bigger run left behind.
// cpu-ratio is the same ratio by the process's CPU time, which leaves out
// time spent waiting for a core that others had.
//
//	go test ./coordinator/cluster -run '^$' -bench ApplyPlacements -benchtime 1x
func BenchmarkApplyPlacements(b *testing.B) {
	const refNodes = 500
	for _, nodes := range []int{refNodes, 5000} {
		b.Run(strconv.Itoa(nodes)+"-nodes", func(b *testing.B) {
			refRuns := max(1, nodes/refNodes/2)
			var got, ref, cpu, refCPU time.Duration
			var n, refN int
			runRef := func() {
				for range refRuns {
					k, d, c := applyPlacements(b, refNodes)
					refN, ref, refCPU = refN+k, ref+d, refCPU+c
				}
			}
			for b.Loop() {
				runRef()
				k, d, c := applyPlacements(b, nodes)
				n, got, cpu = n+k, got+d, cpu+c
				runRef()
			}
			perGot := float64(got.Microseconds()) / float64(n)
			perRef := float64(ref.Microseconds()) / float64(refN)
			b.ReportMetric(perGot, "µs/placement")
			b.ReportMetric(perRef, "ref-500-nodes-µs/placement")
			b.ReportMetric(perGot/perRef, "ratio")
			b.ReportMetric((cpu.Seconds()/float64(n))/(refCPU.Seconds()/float64(refN)), "cpu-ratio")
		})
	}
}

// applyPlacements defines and starts 20 guests per node and returns how many
// GuestPlaced events it applied and how long applying them took, by the
// wall clock and in the process's CPU time (the collector's included).
func applyPlacements(b *testing.B, nodes int) (int, time.Duration, time.Duration) {
	b.StopTimer()
	defer b.StartTimer()
	st := bigState(b, nodes)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	guests := 20 * nodes
	placed := make([]events.Event, guests)
	for i := range guests {
		name := fmt.Sprintf("g%07d", i)
		d := &events.GuestDefined{Name: name, Driver: "process", MemoryBytes: 64 << 20, VCPUs: 1, CPUShares: 1024, Command: []string{"/bin/true"}}
		// Started as create starts it, so that the placement holds capacity.
		for _, p := range []events.Payload{d, &events.GuestStartRequested{}} {
			if _, err := st.Apply(subject(events.New(now, "bench", p), name, "")); err != nil {
				b.Fatal(err)
			}
		}
		node := "n" + strconv.Itoa(i%nodes)
		placed[i] = subject(events.New(now, "scheduler", &events.GuestPlaced{Node: node}), name, node)
	}
	runtime.GC()
	b.StartTimer()
	cpu := cpuTime(b)
	start := time.Now()
	// The label lets a CPU profile tell the sizes apart:
	// go tool pprof -tagfocus nodes:5000n ...
	pprof.Do(context.Background(), pprof.Labels("nodes", strconv.Itoa(nodes)+"n"), func(context.Context) {
		for _, e := range placed {
			if _, err := st.Apply(e); err != nil {
				b.Fatal(err)
			}
		}
	})
	return guests, time.Since(start), cpuTime(b) - cpu
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
