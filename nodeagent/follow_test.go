package nodeagent

import (
	"strconv"
	"testing"
	"time"

	"github.com/corral-dev/corral/events"
)

// These tests run an agent on the real host and check how it follows its
// node's updates (list, then watch): it lists at start, folds updates
// afterwards, and lists again only for a gap or an update that never
// arrived.

// settled waits until the agent's subscription is in place and the list
// it asked for then is in, and returns the lists so far: from here on
// only a gap or a lost update makes it list.
func settled(t *testing.T, h *host, a *Agent) uint64 {
	t.Helper()
	waitFor(t, "the agent subscribed and listed", 15*time.Second, func() bool {
		_, _, readies := h.coord.counters()
		a.dmu.Lock()
		listed := a.listed
		a.dmu.Unlock()
		// ready relists before it returns, so a list in after it covers
		// everything since the subscription.
		return readies >= 1 && listed
	})
	return a.Lists()
}

// checkLists fails unless the agent and the coordinator both count want
// lists.
func checkLists(t *testing.T, h *host, a *Agent, want uint64, when string) {
	t.Helper()
	lists, _, _ := h.coord.counters()
	if a.Lists() != want || uint64(lists) != want {
		t.Errorf("%s: the agent counts %d lists, the coordinator %d; want %d", when, a.Lists(), lists, want)
	}
	if _, overflows := h.coord.losses(); overflows > 0 {
		t.Fatalf("%s: a watcher's buffer overflowed %d times: updates were lost that the test did not lose", when, overflows)
	}
}

// usageReports waits for n more usage reports: the agent's own reports,
// which come back to it as its node's updates.
func usageReports(t *testing.T, h *host, n int) {
	t.Helper()
	before := len(reportsOf[*events.NodeUsage](h.coord, ""))
	waitFor(t, strconv.Itoa(n)+" more usage reports", 15*time.Second, func() bool {
		return len(reportsOf[*events.NodeUsage](h.coord, "")) >= before+n
	})
}

// TestAgentFollowsUpdates: the agent lists its desired state when it
// starts (twice when its subscription came in after the first list) and
// then only folds its node's updates: creating, starting, tuning and
// stopping guests, its own reports and other nodes' events never make it
// list. A lost update shows as a gap at the next one and makes it list
// exactly once more.
func TestAgentFollowsUpdates(t *testing.T) {
	h := newHost(t)
	cfg := h.config()
	// A heartbeat that finds the state behind the node's last event lists
	// only when the next one still does: with heartbeats this far apart,
	// no update in flight is taken for a lost one, and only the gap can
	// make the agent list within the test's deadlines.
	cfg.HeartbeatInterval = 10 * time.Second
	cfg.FenceTimeout = time.Minute
	a := h.startWith(t, cfg)
	start := settled(t, h, a)
	if start != 1 {
		t.Fatalf("%d lists at start, want 1: the agent lists once its subscription is in place", start)
	}

	guests := []string{"web", "db", "cache"}
	for _, name := range guests {
		h.coord.place(sleeper(name))
	}
	for _, name := range guests {
		waitFor(t, name+" running", 15*time.Second, func() bool { return h.coord.status(name) == StatusRunning })
	}
	h.coord.elsewhere()
	h.coord.tune("web", "cpu_shares", "500")
	h.coord.elsewhere()
	h.coord.tune("db", "hard_limit", strconv.Itoa(128<<20))
	waitReport(t, h.coord, "web", func(p *events.GuestTuningApplied) bool { return p.Knob == "cpu_shares" && p.Value == "500" })
	waitReport(t, h.coord, "db", func(p *events.GuestTuningApplied) bool {
		return p.Knob == "hard_limit" && p.Value == strconv.Itoa(128<<20)
	})
	h.coord.setDesired("cache", DesiredStopped)
	waitFor(t, "cache exited", 15*time.Second, func() bool { return h.coord.status("cache") == StatusExited })
	usageReports(t, h, 2)
	checkLists(t, h, a, start, "after creating, starting, tuning and stopping guests")

	// The update placing extra is lost; the next one, whoever sends it,
	// names it as its Prev.
	h.coord.loseOnce(about("extra"))
	h.coord.place(sleeper("extra"))
	h.coord.tune("web", "cpu_shares", "600")
	waitReport[*events.GuestStarted](t, h.coord, "extra", nil)
	waitReport(t, h.coord, "web", func(p *events.GuestTuningApplied) bool { return p.Knob == "cpu_shares" && p.Value == "600" })
	if lost, _ := h.coord.losses(); len(lost) != 1 {
		t.Fatalf("lost updates %v, want one", lost)
	}
	checkLists(t, h, a, start+1, "after a gap")

	// And back to folding.
	h.coord.tune("web", "cpu_shares", "700")
	waitReport(t, h.coord, "web", func(p *events.GuestTuningApplied) bool { return p.Knob == "cpu_shares" && p.Value == "700" })
	usageReports(t, h, 2)
	checkLists(t, h, a, start+1, "after the gap was listed")
	h.cleanup(t)
}

// TestAgentLostLastUpdate: an update lost with none after it shows no
// gap; the heartbeat's node index does, and the agent lists again within
// a few heartbeat intervals: the first heartbeat that finds the state
// behind notes it, the next confirms it.
func TestAgentLostLastUpdate(t *testing.T) {
	h := newHost(t)
	cfg := h.config()
	cfg.HeartbeatInterval = 100 * time.Millisecond
	cfg.FenceTimeout = 10 * time.Second
	cfg.ResyncInterval = time.Hour // a resync never lists: only the heartbeat can tell
	a := h.startWith(t, cfg)
	base := settled(t, h, a)
	_, hb0, _ := h.coord.counters()

	// The agent runs nothing, so it reports nothing: no later update
	// can show the gap.
	h.coord.loseOnce(about("late"))
	h.coord.place(sleeper("late"))
	waitFor(t, "a list after the lost update", 20*cfg.HeartbeatInterval, func() bool { return a.Lists() > base })
	_, hb1, _ := h.coord.counters()
	if hb1-hb0 < 2 {
		t.Errorf("listed after %d heartbeats, want two: one finds the state behind, the next confirms", hb1-hb0)
	}
	waitReport[*events.GuestStarted](t, h.coord, "late", nil)

	// Once caught up, heartbeats find nothing missing.
	waitFor(t, "three more heartbeats", 15*time.Second, func() bool {
		_, hb, _ := h.coord.counters()
		return hb >= hb1+3
	})
	checkLists(t, h, a, base+1, "after the lost update was listed")
	h.cleanup(t)
}
