package nodeagent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/nodeagent/driver"
	"github.com/corral-dev/corral/nodeagent/driver/drivertest"
)

func TestMain(m *testing.M) {
	cgroupdriver.RunShimIfRequested()
	driver.RunInitIfRequested()
	os.Exit(m.Run())
}

const testNode = "node-1"

// host is one test's slice of the real host: a cgroup partition of its
// own, a short state directory and a fake coordinator.
type host struct {
	cg    *cgroupdriver.Driver
	set   *driver.Set
	state string
	coord *fakeCoordinator
}

func newHost(t *testing.T) *host {
	t.Helper()
	rep := cgrouptest.RequireHost(t)
	part := cgrouptest.NewPartition(t, rep)
	dcfg := drivertest.ConfigOn(t, part)
	set, err := driver.New(dcfg)
	if err != nil {
		t.Fatal(err)
	}
	// t.TempDir is too long for a QMP socket path below a guest directory.
	state, err := os.MkdirTemp("/tmp", "na")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	return &host{cg: dcfg.Cgroups, set: set, state: state, coord: newFakeCoordinator(t, testNode)}
}

func (h *host) config() Config {
	cfg := DefaultConfig()
	cfg.NodeID, cfg.StateDir = testNode, h.state
	cfg.HeartbeatInterval = 20 * time.Millisecond
	cfg.FenceTimeout = 300 * time.Millisecond
	cfg.UsageInterval = 100 * time.Millisecond
	cfg.ResyncInterval = 100 * time.Millisecond
	cfg.StopTimeout = 3 * time.Second
	return cfg
}

func (h *host) deps() Deps {
	return Deps{Coordinator: h.coord, Notifier: h.coord, Cgroups: h.cg, Drivers: HostDrivers{Set: h.set}}
}

// start runs an agent with the test configuration until the test ends
// and waits until it is ready.
func (h *host) start(t *testing.T) *Agent {
	t.Helper()
	return h.startWith(t, h.config())
}

// startWith runs an agent with cfg until the test ends and waits until it
// is ready.
func (h *host) startWith(t *testing.T, cfg Config) *Agent {
	t.Helper()
	a, err := New(cfg, h.deps())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(context.Background()) }()
	t.Cleanup(func() {
		a.Close()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-a.Ready():
	case err := <-done:
		t.Fatalf("Run ended before ready: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("agent not ready after 15s")
	}
	return a
}

// cleanup undefines every guest and waits until the agent removed them.
func (h *host) cleanup(t *testing.T) {
	t.Helper()
	h.coord.mu.Lock()
	guests := slices.Clone(h.coord.guests)
	h.coord.mu.Unlock()
	for _, g := range guests {
		h.coord.undefine(g.Name)
	}
	for _, g := range guests {
		h.waitGone(t, cgroupdriver.Guest{Kind: cgroupdriver.Kind(g.Definition.Driver), ID: g.Name})
	}
}

// waitGone waits until nothing of the guest is left: groups, state
// directory.
func (h *host) waitGone(t *testing.T, g cgroupdriver.Guest) {
	t.Helper()
	dirs, err := h.cg.Paths(g)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "guest "+g.ID+" gone", 15*time.Second, func() bool {
		for _, d := range append(dirs, filepath.Join(h.state, guestsDir, g.ID)) {
			if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
				return false
			}
		}
		return true
	})
}

func sleeper(name string) events.GuestDefined {
	return events.GuestDefined{Name: name, Driver: events.DriverProcess, MemoryBytes: 64 << 20, CPUShares: 1024,
		Command: []string{"sleep", "1000"}}
}

func groupFile(t *testing.T, dirs []string, file string) string {
	t.Helper()
	for _, d := range dirs {
		if b, err := os.ReadFile(filepath.Join(d, file)); err == nil {
			return strings.TrimSpace(string(b))
		}
	}
	t.Fatalf("no group of %v has %s", dirs, file)
	return ""
}

func freezerState(t *testing.T, dirs []string) string {
	t.Helper()
	for _, d := range dirs {
		if b, err := os.ReadFile(filepath.Join(d, "freezer.state")); err == nil {
			return strings.TrimSpace(string(b))
		}
	}
	if groupFile(t, dirs, "cgroup.freeze") == "1" {
		return "FROZEN"
	}
	return "THAWED"
}

func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func checkInGroups(t *testing.T, dirs []string, pid int) {
	t.Helper()
	if len(dirs) == 0 {
		t.Fatal("no cgroup paths reported")
	}
	for _, d := range dirs {
		procs := strings.Fields(groupFile(t, []string{d}, "cgroup.procs"))
		if !slices.Contains(procs, strconv.Itoa(pid)) {
			t.Errorf("%s/cgroup.procs = %v, lacks %d", d, procs, pid)
		}
	}
}

// TestAgentLifecycle: desired running → started with the PID in its
// groups; tuning → the cgroup file and a tuning-applied report; usage
// with growing CPU time; desired stopped → stopped and exited;
// undefined → nothing left.
func TestAgentLifecycle(t *testing.T) {
	h := newHost(t)
	a := h.start(t)
	if len(h.coord.registered) != 1 {
		t.Fatalf("registered %d times", len(h.coord.registered))
	}
	reg := h.coord.registered[0]
	if reg.ID != testNode || reg.CPUs < 1 || reg.MemoryBytes <= 0 || reg.CgroupMode == "" || len(reg.Controllers) == 0 || reg.Drivers["process"] == "" {
		t.Errorf("registration %+v", reg)
	}
	if fi, err := os.Stat(filepath.Join(h.state, secretFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("secret file: %v, %v", fi, err)
	}

	gen := h.coord.place(sleeper("web"))
	st := waitReport[*events.GuestStarted](t, h.coord, "web", nil)
	if st.Generation != gen || st.Node != testNode || st.PID <= 0 {
		t.Errorf("started %+v, generation %d", st, gen)
	}
	checkInGroups(t, st.Cgroups, st.PID)
	if got := groupFile(t, st.Cgroups, "memory.limit_in_bytes"); got != strconv.Itoa(64<<20) {
		t.Errorf("memory limit %s", got)
	}

	// The start reports what it wrote; a tuning reports the new value.
	initial := waitReport[*events.GuestTuningApplied](t, h.coord, "web", func(p *events.GuestTuningApplied) bool { return p.Knob == "cpu_shares" })
	if initial.Value != "1024" {
		t.Errorf("the start reported cpu_shares %s, want 1024", initial.Value)
	}
	h.coord.tune("web", "cpu_shares", "500")
	ta := waitReport[*events.GuestTuningApplied](t, h.coord, "web", func(p *events.GuestTuningApplied) bool { return p.Value == "500" })
	if ta.Knob != "cpu_shares" || ta.Value != "500" || ta.Generation != gen {
		t.Errorf("tuning applied %+v", ta)
	}
	if h.cg.Report().Mode != cgroupdriver.ModeV2 {
		if got := groupFile(t, st.Cgroups, "cpu.shares"); got != "500" {
			t.Errorf("cpu.shares = %s, want 500", got)
		}
	}

	// Drift: someone writes cpu.shares by hand; the agent puts it back.
	if h.cg.Report().Mode != cgroupdriver.ModeV2 {
		writeByHand(t, st.Cgroups, "cpu.shares", "700")
		dr := waitReport[*events.GuestDrift](t, h.coord, "web", nil)
		if dr.Knob != "cpu_shares" || dr.Found != "700" || dr.Expected != "500" || !dr.Corrected {
			t.Errorf("drift %+v", dr)
		}
		waitFor(t, "cpu.shares back at 500", 5*time.Second, func() bool { return groupFile(t, st.Cgroups, "cpu.shares") == "500" })
	}

	// Usage: a guest that burns CPU shows growing CPU time.
	burn := sleeper("burn")
	burn.Command = []string{"sh", "-c", "while :; do :; done"}
	h.coord.place(burn)
	waitReport[*events.GuestStarted](t, h.coord, "burn", nil)
	var first uint64
	waitFor(t, "usage with growing CPU time", 15*time.Second, func() bool {
		for _, u := range reportsOf[*events.NodeUsage](h.coord, "") {
			for _, g := range u.Guests {
				if g.Guest != "burn" {
					continue
				}
				if first == 0 {
					first = g.CPUNanos
				} else if g.CPUNanos > first && g.Pids > 0 && g.MemoryBytes > 0 {
					return true
				}
			}
		}
		return false
	})

	h.coord.setDesired("web", DesiredStopped)
	ex := waitReport[*events.GuestExited](t, h.coord, "web", nil)
	if ex.Generation != gen || ex.Error != "" {
		t.Errorf("exited %+v", ex)
	}
	waitFor(t, "web stopped", 5*time.Second, func() bool { return !alive(st.PID) })
	waitFor(t, "status exited", 5*time.Second, func() bool { return h.coord.status("web") == StatusExited })

	// Asked to run again: the same generation starts again, once.
	h.coord.setDesired("web", DesiredRunning)
	waitFor(t, "web started again", 15*time.Second, func() bool {
		return len(reportsOf[*events.GuestStarted](h.coord, "web")) == 2
	})

	h.cleanup(t)
	waitFor(t, "burn's process gone", 5*time.Second, func() bool {
		pids, _ := h.cg.Pids(cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "burn"})
		return len(pids) == 0
	})
	_ = a
}

// TestAgentFailedStart: a command that does not exist ends in a failed
// report with the reason, and the agent goes on starting other guests.
func TestAgentFailedStart(t *testing.T) {
	h := newHost(t)
	h.start(t)
	bad := sleeper("bad")
	bad.Command = []string{"/nonexistent/corral-no-such-command"}
	gen := h.coord.place(bad)
	ex := waitReport[*events.GuestExited](t, h.coord, "bad", nil)
	if ex.Error == "" || !strings.Contains(ex.Error, "corral-no-such-command") || ex.Generation != gen {
		t.Errorf("exited %+v, want a start failure naming the command", ex)
	}
	waitFor(t, "status failed", 5*time.Second, func() bool { return h.coord.status("bad") == StatusFailed })
	h.coord.place(sleeper("good"))
	waitReport[*events.GuestStarted](t, h.coord, "good", nil)
	// No retry of the failed start while the log says failed.
	waitFor(t, "several passes", 5*time.Second, func() bool { return len(reportsOf[*events.NodeUsage](h.coord, "")) >= 3 })
	if n := len(reportsOf[*events.GuestExited](h.coord, "bad")); n != 1 {
		t.Errorf("%d exit reports for the failed guest, want 1", n)
	}
	h.cleanup(t)
}

// TestAgentAdopt: an agent abandoned with running guests (as if killed
// with -9); a new agent on the same state directory adopts the same
// processes, starts no second copy, and destroys what the log no longer
// assigns to it.
func TestAgentAdopt(t *testing.T) {
	h := newHost(t)
	first, err := New(h.config(), h.deps())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- first.Run(context.Background()) }()
	<-first.Ready()
	h.coord.place(sleeper("keep"))
	h.coord.place(sleeper("drop"))
	keep := waitReport[*events.GuestStarted](t, h.coord, "keep", nil)
	drop := waitReport[*events.GuestStarted](t, h.coord, "drop", nil)
	first.Close() // lets go of the guests, as a killed agent would
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !alive(keep.PID) || !alive(drop.PID) {
		t.Fatal("guests did not outlive the agent")
	}
	h.coord.undefine("drop") // while no agent runs

	h.start(t)
	h.waitGone(t, cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "drop"})
	waitFor(t, "drop's process gone", 5*time.Second, func() bool { return !alive(drop.PID) })
	pids, err := h.cg.Pids(cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "keep"})
	if err != nil || len(pids) != 1 || pids[0] != keep.PID {
		t.Errorf("keep's group holds %v (%v), want only %d", pids, err, keep.PID)
	}
	if n := len(reportsOf[*events.GuestStarted](h.coord, "keep")); n != 1 {
		t.Errorf("%d started reports for keep, want 1 (no second copy)", n)
	}
	if len(h.coord.registered) != 2 {
		t.Errorf("registered %d times", len(h.coord.registered))
	}
	h.cleanup(t)
	waitFor(t, "keep's process gone", 5*time.Second, func() bool { return !alive(keep.PID) })
}

// TestAgentFence: heartbeats failing past the fence timeout freeze the
// guests and nothing is reported; back in touch, the agent thaws what
// the log still assigns and destroys the rest, though the update that
// moved a guest away was lost while it was cut off.
func TestAgentFence(t *testing.T) {
	h := newHost(t)
	a := h.start(t)
	h.coord.place(sleeper("web"))
	h.coord.place(sleeper("gone"))
	st := waitReport[*events.GuestStarted](t, h.coord, "web", nil)
	gst := waitReport[*events.GuestStarted](t, h.coord, "gone", nil)

	// Cut off: heartbeats, lists and reports fail, and the bus loses
	// every update meanwhile.
	h.coord.setLose(func(api.NodeUpdate) bool { return true })
	h.coord.setUnreachable(true)
	before := h.coord.reportCount()
	waitFor(t, "web frozen", 10*time.Second, func() bool { return freezerState(t, st.Cgroups) == "FROZEN" })
	waitFor(t, "gone frozen", 10*time.Second, func() bool { return freezerState(t, gst.Cgroups) == "FROZEN" })
	if n := h.coord.reportCount(); n != before {
		t.Errorf("%d reports while fenced", n-before)
	}
	// The coordinator moved it elsewhere meanwhile and the update saying
	// so is lost: the agent must notice (by the next update's Prev or the
	// heartbeat's node index) and list.
	h.coord.moveAway("gone")
	lists := a.Lists()
	h.coord.setUnreachable(false)
	h.coord.setLose(nil)

	waitFor(t, "web thawed", 10*time.Second, func() bool { return freezerState(t, st.Cgroups) == "THAWED" })
	h.waitGone(t, cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "gone"})
	if !alive(st.PID) || alive(gst.PID) {
		t.Errorf("after unfencing: web alive %v (want true), gone alive %v (want false)", alive(st.PID), alive(gst.PID))
	}
	if a.Lists() <= lists {
		t.Errorf("the agent learnt of the move without listing (%d lists, %d before)", a.Lists(), lists)
	}
	h.cleanup(t)
}

// TestAgentPause: a guest the log asks to suspend is frozen and thawed
// when asked to resume; its process lives on throughout.
func TestAgentPause(t *testing.T) {
	h := newHost(t)
	h.start(t)
	h.coord.place(sleeper("web"))
	st := waitReport[*events.GuestStarted](t, h.coord, "web", nil)
	h.coord.pause("web", true)
	waitFor(t, "web frozen", 10*time.Second, func() bool { return freezerState(t, st.Cgroups) == "FROZEN" })
	h.coord.pause("web", false)
	waitFor(t, "web thawed", 10*time.Second, func() bool { return freezerState(t, st.Cgroups) == "THAWED" })
	if !alive(st.PID) {
		t.Error("web did not live through its pause")
	}
	if n := len(reportsOf[*events.GuestStarted](h.coord, "web")); n != 1 {
		t.Errorf("%d started reports, want 1", n)
	}
	h.cleanup(t)
}

// TestAgentOrphans: groups and state directories the log does not name
// are removed and reported.
func TestAgentOrphans(t *testing.T) {
	h := newHost(t)
	stray := cgroupdriver.Guest{Kind: cgroupdriver.KindLXC, ID: "stray"}
	if err := h.cg.Create(stray); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(h.state, guestsDir, "old"), 0o700); err != nil {
		t.Fatal(err)
	}
	h.start(t)
	h.waitGone(t, stray)
	h.waitGone(t, cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "old"})
	c := waitReport[*events.NodeCleanup](t, h.coord, "", nil)
	if !slices.Contains(c.Removed, "cgroup lxc/stray") || !slices.Contains(c.Removed, "state directory guests/old") {
		t.Errorf("cleanup %+v", c)
	}
}

// TestAgentLimitHit: a guest that runs into its memory limit shows a
// rising limit-hit counter in its usage and a limit-hit report.
func TestAgentLimitHit(t *testing.T) {
	h := newHost(t)
	h.start(t)
	hog := sleeper("hog")
	hog.MemoryBytes = 16 << 20
	hog.Command = []string{"sh", "-c", "dd if=/dev/zero of=/dev/null bs=64M count=1 2>/dev/null; exec sleep 1000"}
	gen := h.coord.place(hog)
	lh := waitReport[*events.GuestLimitHit](t, h.coord, "hog", nil)
	if lh.Generation != gen || lh.LimitHits == 0 || lh.Delta == 0 {
		t.Errorf("limit hit %+v", lh)
	}
	h.cleanup(t)
}

// TestAgentDriftHealedByUsage: drift is checked in the usage pass, not by
// the resync: with the resync an hour away, a knob changed by hand is put
// back and reported within a usage interval or two.
func TestAgentDriftHealedByUsage(t *testing.T) {
	h := newHost(t)
	if h.cg.Report().Mode == cgroupdriver.ModeV2 {
		t.Skip("cpu.shares is v1's file")
	}
	cfg := h.config()
	cfg.ResyncInterval = time.Hour
	h.startWith(t, cfg)
	h.coord.place(sleeper("web"))
	st := waitReport[*events.GuestStarted](t, h.coord, "web", nil)
	waitReport[*events.GuestTuningApplied](t, h.coord, "web", func(p *events.GuestTuningApplied) bool { return p.Knob == "cpu_shares" })
	writeByHand(t, st.Cgroups, "cpu.shares", "700")
	dr := waitReport[*events.GuestDrift](t, h.coord, "web", nil)
	if dr.Knob != "cpu_shares" || dr.Found != "700" || dr.Expected != "1024" || !dr.Corrected {
		t.Errorf("drift %+v", dr)
	}
	waitFor(t, "cpu.shares back at 1024", 5*time.Second, func() bool { return groupFile(t, st.Cgroups, "cpu.shares") == "1024" })
	h.cleanup(t)
}

// TestAgentOrphanScan: a resync at rest does not search the host for
// orphans; a change does (here a guest placed), and so does a host at
// rest once OrphanInterval has passed since the last search.
func TestAgentOrphanScan(t *testing.T) {
	t.Run("on a change", func(t *testing.T) {
		h := newHost(t)
		cfg := h.config()
		cfg.ResyncInterval, cfg.OrphanInterval = 20*time.Millisecond, time.Hour
		a := h.startWith(t, cfg)
		stray := cgroupdriver.Guest{Kind: cgroupdriver.KindLXC, ID: "late-stray"}
		if err := h.cg.Create(stray); err != nil {
			t.Fatal(err)
		}
		passes := func() float64 {
			v, _ := sample(scrapeAgent(t, a), "corral_agent_reconcile_passes_total")
			return v
		}
		scans, before := a.scans.Load(), passes()
		waitFor(t, "five resyncs", 15*time.Second, func() bool { return passes() >= before+5 })
		if n := a.scans.Load(); n != scans {
			t.Errorf("%d orphan searches in five resyncs at rest, want none", n-scans)
		}
		if dirs, err := h.cg.Paths(stray); err != nil {
			t.Fatal(err)
		} else if _, err := os.Stat(dirs[0]); err != nil {
			t.Errorf("the stray went at rest: %v", err)
		}
		h.coord.place(sleeper("web"))
		h.waitGone(t, stray)
		h.cleanup(t)
	})
	t.Run("at rest", func(t *testing.T) {
		h := newHost(t)
		cfg := h.config()
		cfg.ResyncInterval, cfg.OrphanInterval = 20*time.Millisecond, 200*time.Millisecond
		h.startWith(t, cfg)
		stray := cgroupdriver.Guest{Kind: cgroupdriver.KindLXC, ID: "rest-stray"}
		if err := h.cg.Create(stray); err != nil {
			t.Fatal(err)
		}
		h.waitGone(t, stray)
		c := waitReport[*events.NodeCleanup](t, h.coord, "", nil)
		if !slices.Contains(c.Removed, "cgroup lxc/rest-stray") {
			t.Errorf("cleanup %+v", c)
		}
	})
}

// writeByHand writes value to the guest's file name in whichever of its
// group directories has it, as an operator changing a knob by hand would.
func writeByHand(t *testing.T, dirs []string, name, value string) {
	t.Helper()
	for _, d := range dirs {
		file := filepath.Join(d, name)
		if _, err := os.Stat(file); err == nil {
			if err := os.WriteFile(file, []byte(value), 0); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("no group of %v has %s", dirs, name)
}
