//go:build !race

package bus

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server/pse"
)

// TestStopSampler checks that the variable StopSampler changes is the one
// nats-server's sampler reads: pse.ProcUsage reads the same file, so it
// works before and fails after. A nats-server upgrade that renames the
// variable fails the build at the linkname; one that stops reading it
// fails here.
func TestStopSampler(t *testing.T) {
	saved := procStatFile
	t.Cleanup(func() { procStatFile = saved })
	var pcpu float64
	var rss, vss int64
	if err := pse.ProcUsage(&pcpu, &rss, &vss); err != nil {
		t.Fatalf("ProcUsage before StopSampler: %v", err)
	}
	if rss <= 0 {
		t.Fatalf("ProcUsage before StopSampler: rss %d, want > 0", rss)
	}
	StopSampler()
	if err := pse.ProcUsage(&pcpu, &rss, &vss); err == nil {
		t.Fatal("ProcUsage after StopSampler succeeded: the sampler reads another file than the one StopSampler changes")
	}
}
