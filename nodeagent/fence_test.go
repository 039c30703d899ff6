package nodeagent

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
)

// TestFencerProcess is not a test: the fence tests start this test binary
// with -test.run=^TestFencerProcess$ as the agent's fencer.
func TestFencerProcess(t *testing.T) {
	if os.Getenv(fencerEnv) == "" {
		t.Skip("the fencer process of the fence tests, started by them")
	}
	RunFencerIfRequested()
}

// fencerConfig is h's test configuration with a fencer: this test binary.
func fencerConfig(t *testing.T, h *host) Config {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg := h.config()
	cfg.Fencer = FencerConfig{Command: []string{exe, "-test.run=^TestFencerProcess$"}, Poll: 20 * time.Millisecond}
	t.Cleanup(func() {
		if err := StopFencer(h.state, 5*time.Second); err != nil {
			t.Error(err)
		}
	})
	return cfg
}

// runUntilKilled runs an agent until the returned kill is called, which
// ends Run without Close: the agent vanishes as under kill -9, leaving its
// guests and its fencer behind.
func runUntilKilled(t *testing.T, cfg Config, deps Deps) (*Agent, func()) {
	t.Helper()
	a, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var killed atomic.Bool
	kill := func() {
		if killed.Swap(true) {
			return
		}
		cancel()
		<-done
	}
	t.Cleanup(kill)
	select {
	case <-a.Ready():
	case err := <-done:
		t.Fatalf("Run ended before ready: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("agent not ready after 15s")
	}
	return a, kill
}

// beater is a guest that appends a line to a file every 10ms: the file
// grows exactly while the guest runs.
func beater(name, file string) events.GuestDefined {
	def := sleeper(name)
	def.Command = []string{"/bin/sh", "-c", "while :; do echo x >> " + file + "; sleep 0.01; done"}
	return def
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		if os.IsNotExist(err) {
			return 0
		}
		t.Fatal(err)
	}
	return st.Size()
}

// growing waits until the file grows.
func growing(t *testing.T, path string) {
	t.Helper()
	from := fileSize(t, path)
	waitFor(t, path+" growing", 10*time.Second, func() bool { return fileSize(t, path) > from })
}

// stillFor checks that the file does not grow for d: the guest makes no
// progress.
func stillFor(t *testing.T, path string, d time.Duration) int64 {
	t.Helper()
	size := fileSize(t, path)
	for end := time.Now().Add(d); time.Now().Before(end); <-time.After(10 * time.Millisecond) {
		if n := fileSize(t, path); n != size {
			t.Fatalf("%s grew from %d to %d bytes: the guest runs", path, size, n)
		}
	}
	return size
}

// TestFencerFreezesDeadAgentsGuests: the agent vanishes without Close
// (as under kill -9) and its fencer, a separate process, freezes the
// guest within the fence timeout and a poll; the guest makes no progress
// then. A new agent on the same state directory adopts the fencer; with
// the log saying the guest still runs here it thaws it (same process);
// after the next vanishing, with the log saying the guest moved away, the
// third agent destroys it without it ever running again.
func TestFencerFreezesDeadAgentsGuests(t *testing.T) {
	h := newHost(t)
	cfg := fencerConfig(t, h)
	beats := filepath.Join(t.TempDir(), "beats")
	g := cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "web"}

	_, kill := runUntilKilled(t, cfg, h.deps())
	h.coord.place(beater("web", beats))
	st := waitReport[*events.GuestStarted](t, h.coord, "web", nil)
	growing(t, beats)
	info, err := readFencerInfo(filepath.Join(h.state, fenceDir))
	if err != nil || !alive(info.PID) {
		t.Fatalf("no fencer runs (%+v, %v)", info, err)
	}

	killedAt := time.Now()
	kill()
	if !alive(st.PID) {
		t.Fatal("the guest died with its agent")
	}
	waitFor(t, "web frozen by the fencer", 10*time.Second, func() bool { return freezerState(t, st.Cgroups) == "FROZEN" })
	took := time.Since(killedAt)
	t.Logf("frozen %v after the agent vanished (fence timeout %v, poll %v)", took, cfg.FenceTimeout, cfg.Fencer.Poll)
	if limit := cfg.FenceTimeout + cfg.Fencer.Poll + time.Second; took > limit {
		t.Errorf("frozen after %v, want within the fence timeout and a poll (%v, with slack)", took, limit)
	}
	stats0, err := h.cg.Stats(g)
	if err != nil {
		t.Fatal(err)
	}
	stillFor(t, beats, 300*time.Millisecond)
	if stats1, err := h.cg.Stats(g); err != nil || stats1.CPU.TotalNs != stats0.CPU.TotalNs {
		t.Errorf("CPU time went on while frozen: %d → %d ns (%v)", stats0.CPU.TotalNs, stats1.CPU.TotalNs, err)
	}

	// Back, and the log still places it here: thawed, the same process.
	_, kill = runUntilKilled(t, cfg, h.deps())
	waitFor(t, "web thawed", 10*time.Second, func() bool { return freezerState(t, st.Cgroups) == "THAWED" })
	growing(t, beats)
	if again, err := readFencerInfo(filepath.Join(h.state, fenceDir)); err != nil || again.PID != info.PID {
		t.Errorf("fencer pid %d (%v) after the agent's restart, want the same %d (adopted)", again.PID, err, info.PID)
	}
	if n := len(reportsOf[*events.GuestStarted](h.coord, "web")); n != 1 {
		t.Errorf("%d started reports, want 1 (no second copy)", n)
	}

	// Gone again; meanwhile the log moves the guest away. The next agent
	// destroys it, and it never runs in between.
	kill()
	waitFor(t, "web frozen again", 10*time.Second, func() bool { return freezerState(t, st.Cgroups) == "FROZEN" })
	size := stillFor(t, beats, 100*time.Millisecond)
	h.coord.moveAway("web")
	h.startWith(t, cfg)
	h.waitGone(t, g)
	waitFor(t, "web's process gone", 5*time.Second, func() bool { return !alive(st.PID) })
	if n := fileSize(t, beats); n != size {
		t.Errorf("the guest ran again before it was destroyed: %s grew from %d to %d bytes", beats, size, n)
	}
}

// TestFencerRestarted: an agent starts a new fencer when its fencer died.
func TestFencerRestarted(t *testing.T) {
	h := newHost(t)
	cfg := fencerConfig(t, h)
	h.startWith(t, cfg)
	dir := filepath.Join(h.state, fenceDir)
	info, err := readFencerInfo(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := StopFencer(h.state, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a new fencer", 10*time.Second, func() bool {
		again, err := readFencerInfo(dir)
		return err == nil && again.PID != info.PID && alive(again.PID) && fencerAlive(dir)
	})
}

func TestFencerConfigValidate(t *testing.T) {
	cfg := DefaultConfig()
	cfg.NodeID, cfg.StateDir = "n1", "/tmp/x"
	cfg.Fencer.Command = []string{"/bin/corral"}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("default poll refused: %v", err)
	}
	for _, poll := range []time.Duration{0, -time.Millisecond, MaxFencerPoll + time.Millisecond} {
		cfg.Fencer.Poll = poll
		if err := cfg.Validate(); err == nil {
			t.Errorf("poll %v accepted", poll)
		}
	}
}

// TestFoldNodeDown: node.down in the node's updates marks the desired
// state down (the agent then starts and thaws nothing); node.up or a
// registration marks it up again; other updates keep it.
func TestFoldNodeDown(t *testing.T) {
	upd := func(idx uint64, p events.Payload) api.NodeUpdate {
		e := events.New(time.Unix(0, 0), "test", p)
		e.Index, e.Node = idx, testNode
		b, err := events.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		return api.NodeUpdate{Index: idx, Prev: idx - 1, Event: b}
	}
	d := Desired{Index: 1}
	steps := []struct {
		u    api.NodeUpdate
		down bool
	}{
		{upd(2, &events.NodeDown{}), true},
		{upd(3, &events.NodeUsage{}), true},
		{upd(4, &events.NodeUp{}), false},
		{upd(5, &events.NodeDown{}), true},
		{upd(6, &events.NodeRegistered{ID: testNode, CPUs: 1, MemoryBytes: 1 << 30}), false},
	}
	for _, s := range steps {
		next, ok := Fold(d, s.u)
		if !ok || next.NodeDown != s.down || next.Index != s.u.Index {
			t.Fatalf("fold %s: ok %v down %v index %d, want down %v", s.u.Event, ok, next.NodeDown, next.Index, s.down)
		}
		d = next
	}
}

// downCoordinator lists the desired state with the node down while down
// is set, as the coordinator does between node.down and node.up.
type downCoordinator struct {
	*fakeCoordinator
	down atomic.Bool
}

func (c *downCoordinator) Desired(ctx context.Context, node string) (Desired, error) {
	d, err := c.fakeCoordinator.Desired(ctx, node)
	d.NodeDown = c.down.Load()
	return d, err
}

// TestFencedAgentWaitsForNodeUp: an agent that comes back while the log
// has its node down (its guests may be placed elsewhere at any moment)
// leaves the guest the fencer froze frozen, though the log still places
// it here, and thaws it once node.up arrives.
func TestFencedAgentWaitsForNodeUp(t *testing.T) {
	h := newHost(t)
	cfg := fencerConfig(t, h)
	beats := filepath.Join(t.TempDir(), "beats")
	_, kill := runUntilKilled(t, cfg, h.deps())
	h.coord.place(beater("web", beats))
	st := waitReport[*events.GuestStarted](t, h.coord, "web", nil)
	growing(t, beats)
	kill()
	waitFor(t, "web frozen by the fencer", 10*time.Second, func() bool { return freezerState(t, st.Cgroups) == "FROZEN" })

	coord := &downCoordinator{fakeCoordinator: h.coord}
	coord.down.Store(true)
	h.coord.mu.Lock()
	h.coord.commit("", &events.NodeDown{})
	h.coord.mu.Unlock()
	deps := h.deps()
	deps.Coordinator = coord
	runUntilKilled(t, cfg, deps) // ready: one pass made, on a list with the node down
	stillFor(t, beats, 300*time.Millisecond)
	if s := freezerState(t, st.Cgroups); s != "FROZEN" {
		t.Fatalf("web is %s while the log has its node down, want FROZEN", s)
	}

	coord.down.Store(false)
	h.coord.mu.Lock()
	h.coord.commit("", &events.NodeUp{})
	h.coord.mu.Unlock()
	waitFor(t, "web thawed once the node is up", 10*time.Second, func() bool { return freezerState(t, st.Cgroups) == "THAWED" })
	growing(t, beats)
	if !alive(st.PID) {
		t.Error("web's process died")
	}
	h.cleanup(t)
}
