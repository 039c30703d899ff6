package nodeagent

import (
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/events"
)

// TestAgentRefusedTuning: a value the host refuses (a memory limit below
// what the guest holds, on a host without swap: the kernel answers EBUSY)
// is neither written again on every pass nor taken for drift; the next
// value the log asks for is applied as usual.
func TestAgentRefusedTuning(t *testing.T) {
	h := newHost(t)
	h.start(t)
	t.Cleanup(func() { h.cleanup(t) })
	def := sleeper("web")
	// Hold 24 MB of anonymous memory, then sleep.
	def.Command = []string{"/bin/sh", "-c", `x=$(head -c 24000000 /dev/zero | tr '\0' a); echo held; sleep 1000`}
	h.coord.place(def)
	waitReport[*events.GuestStarted](t, h.coord, "web", nil)
	waitFor(t, "the guest to hold its memory", 15*time.Second, func() bool {
		st, err := h.cg.Stats(cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "web"})
		return err == nil && st.Memory.Usage > 20<<20
	})

	h.coord.tune("web", "hard_limit", "4194304") // 4 MiB, below what it holds
	usageReports(t, h, 5)                        // the drift check runs every 100ms, as often as usage
	for _, d := range reportsOf[*events.GuestDrift](h.coord, "web") {
		t.Errorf("a refused value was reported as drift: %+v", d)
	}
	for _, ta := range reportsOf[*events.GuestTuningApplied](h.coord, "web") {
		if ta.Knob == "hard_limit" && ta.Value == "4194304" {
			t.Errorf("a refused value was reported as applied: %+v", ta)
		}
	}

	h.coord.tune("web", "hard_limit", "67108864")
	h.coord.tune("web", "cpu_shares", "600")
	waitReport[*events.GuestTuningApplied](t, h.coord, "web", func(p *events.GuestTuningApplied) bool {
		return p.Knob == "cpu_shares" && p.Value == "600"
	})
}
