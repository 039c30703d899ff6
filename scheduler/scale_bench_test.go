package scheduler_test

import (
	"fmt"
	"math/rand/v2"
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

// rate schedules in.guests in one plan and returns placements per second
// and the plan's summary.
func (in scaleInput) rate(b *testing.B, cfg scheduler.Config) (float64, scheduler.Summary) {
	start := time.Now()
	plan, err := scheduler.Schedule(in.snap, in.guests, cfg, time.Time{}, 42)
	if err != nil {
		b.Fatal(err)
	}
	return float64(plan.Summary.Placed) / time.Since(start).Seconds(), plan.Summary
}

// BenchmarkScheduleScale places 10k, 100k and 1M guests onto empty
// clusters of 500, 5k and 50k nodes (20 guests per node, the mix of
// benchCluster and benchGuestList) in one plan each, and reports
// placements per second beside the 10k figure measured in the same
// sub-benchmark, and their ratio: 1 means the cost per placement is flat in
// cluster size.
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
				var got, base float64
				var sum scheduler.Summary
				for b.Loop() {
					var r float64
					r, sum = in.rate(b, cfg)
					got += r
					r, _ = ref.rate(b, cfg)
					base += r
				}
				n := float64(b.N)
				b.Logf("%s, %d nodes: %s", alg, size/scaleGuestsPerNode, sum)
				b.ReportMetric(got/n, "placements/s")
				b.ReportMetric(base/n, "ref-10k-placements/s")
				b.ReportMetric(got/base, "ratio")
			})
		}
	}
}
