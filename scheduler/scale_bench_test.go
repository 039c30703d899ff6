package scheduler_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime/pprof"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/scheduler"
	st "github.com/corral-dev/corral/scheduler/schedulertest"
)

// scaleGuestsPerNode is the ratio BenchmarkScheduleScale keeps while the
// cluster grows.
const scaleGuestsPerNode = 20

// scaleRef is the size the other sizes are compared with.
const scaleRef = 10_000

// scaleInput is one size's nodes and guests, built from fixed seeds.
type scaleInput struct {
	snap   *scheduler.Snapshot
	guests []scheduler.Guest
}

func newScaleInput(b testing.TB, guests int) scaleInput {
	r := rand.New(rand.NewPCG(7, uint64(guests)))
	nodes := benchClusterN(r, guests/scaleGuestsPerNode)
	return scaleInput{snap: st.Snapshot(b, nodes...), guests: benchGuestListN(r, guests)}
}

// run schedules in.guests in one plan and returns how many it placed, how
// long it took (wall clock and the process's CPU time, garbage collection
// included) and the plan's summary.
func (in scaleInput) run(b *testing.B, cfg scheduler.Config) (int, time.Duration, time.Duration, scheduler.Summary) {
	var plan scheduler.Plan
	var err error
	cpu := cpuTime(b)
	start := time.Now()
	// The label lets a CPU profile (-cpuprofile) tell the sizes apart:
	// go tool pprof -tagfocus guests:1000k ...
	pprof.Do(context.Background(), pprof.Labels("guests", strconv.Itoa(len(in.guests)/1000)+"k"), func(context.Context) {
		plan, err = scheduler.Schedule(in.snap, in.guests, cfg, time.Time{}, 42)
	})
	took := time.Since(start)
	cpu = cpuTime(b) - cpu
	if err != nil {
		b.Fatal(err)
	}
	return plan.Summary.Placed, took, cpu, plan.Summary
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkScheduleScale places 10k, 100k and 1M guests onto empty
// clusters of 500, 5k and 50k nodes (20 guests per node, the mix of
// benchCluster and benchGuestList) in one plan each, and reports
// placements per second beside the 10k figure measured in the same
// sub-benchmark, and their ratio: 1 means the cost per placement is flat in
// cluster size.
//
// The machine may be shared, so the reference is measured around the big
// plan: half of its runs just before it and half just after, as many runs
// as place together as many guests as the big plan (at least one on each
// side). Both figures then come from the same stretch of time and the same
// amount of work, and the ratio does not hang on one lucky or unlucky
// 40 ms reference run. cpu-ratio is the same ratio by CPU time (the
// process's, so the collector's work counts): it leaves out the time the
// benchmark waited for a core that others had, which the wall-clock ratio
// does not, and is the steadier of the two on a busy machine.
//
//	go test ./scheduler -run '^$' -bench ScheduleScale -benchtime 1x
func BenchmarkScheduleScale(b *testing.B) {
	ref := newScaleInput(b, scaleRef)
	for _, alg := range []scheduler.Algorithm{scheduler.Binpack, scheduler.Spread} {
		cfg := scheduler.DefaultConfig()
		cfg.Algorithm = alg
		cfg.CPUOvercommit = 2
		for _, size := range []int{scaleRef, 100_000, 1_000_000} {
			b.Run(fmt.Sprintf("%s/guests=%d", alg, size), func(b *testing.B) {
				in := ref
				if size != scaleRef {
					in = newScaleInput(b, size)
				}
				refRuns := max(1, size/scaleRef/2)
				var placed, refPlaced int
				var took, refTook, cpu, refCPU time.Duration
				var sum scheduler.Summary
				runRef := func() {
					for range refRuns {
						n, d, c, _ := ref.run(b, cfg)
						refPlaced, refTook, refCPU = refPlaced+n, refTook+d, refCPU+c
					}
				}
				for b.Loop() {
					runRef()
					n, d, c, s := in.run(b, cfg)
					placed, took, cpu, sum = placed+n, took+d, cpu+c, s
					runRef()
				}
				got := float64(placed) / took.Seconds()
				base := float64(refPlaced) / refTook.Seconds()
				cpuRatio := (float64(placed) / cpu.Seconds()) / (float64(refPlaced) / refCPU.Seconds())
				b.Logf("%s, %d nodes: %s; reference: %d runs of 10k", alg, size/scaleGuestsPerNode, sum, 2*refRuns*b.N)
				b.ReportMetric(got, "placements/s")
				b.ReportMetric(base, "ref-10k-placements/s")
				b.ReportMetric(got/base, "ratio")
				b.ReportMetric(cpuRatio, "cpu-ratio")
			})
		}
	}
}
