package nodeagent

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// lonelyFencer starts a fencer (this test binary) on a fresh state
// directory, guarding a stand-in v1 freezer directory (plain files: the
// fencer only reads freezer.self_freezing and writes freezer.state), with
// the lease running for an hour. No agent, no cgroup: what the fencer
// does is all there is.
func lonelyFencer(t *testing.T) (f *fenceGuard, freezer string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	freezer = filepath.Join(t.TempDir(), "process")
	if err := os.Mkdir(freezer, 0o755); err != nil {
		t.Fatal(err)
	}
	for file, v := range map[string]string{"freezer.self_freezing": "0\n", "freezer.state": "THAWED\n"} {
		if err := os.WriteFile(filepath.Join(freezer, file), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(state, fenceDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	f = &fenceGuard{
		req:     fencerRequest{StateDir: state, Dirs: []FreezeDir{{Path: freezer, Version: 1}}, Poll: 20 * time.Millisecond, Version: fencerVersion},
		command: []string{exe, "-test.run=^TestFencerProcess$"}, dir: dir, log: slog.New(slog.DiscardHandler),
	}
	if !f.renew(now() + time.Hour.Nanoseconds()) {
		t.Fatal("the first renewal did not report the lease as new")
	}
	if err := f.ensure(); err != nil {
		t.Fatal(err)
	}
	info, err := readFencerInfo(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := StopFencer(state, 5*time.Second); err != nil {
			t.Error(err)
		}
		// StopFencer finds no fencer once the directory is gone, and a
		// failed test may have left this one running there.
		if alive(info.PID) {
			syscall.Kill(info.PID, syscall.SIGKILL)
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, fencerLog))
			t.Logf("fencer log:\n%s", b)
		}
	})
	return f, freezer
}

func frozenStandIn(t *testing.T, freezer string) bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(freezer, "freezer.state"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b)) == "FROZEN"
}

// TestFencerSleepsUntilTheDeadline: at rest the fencer does not poll. The
// agent's renewals (every 20 ms here) do not wake it; an hour's lease
// keeps it asleep. A renewal to an earlier deadline (an agent restarted
// with a shorter fence timeout) wakes it, and it freezes when that
// deadline passes, within a poll.
func TestFencerSleepsUntilTheDeadline(t *testing.T) {
	f, freezer := lonelyFencer(t)
	info, err := readFencerInfo(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	// A polling fencer (the 20 ms poll) switches 50 times or more a
	// second; one at rest, a few times (the Go runtime, nats-server's
	// sampler). A fresh process's first seconds are busier (its garbage
	// collector, the scavenger): up to ten seconds for a quiet one.
	var seen []int64
	for len(seen) < 10 {
		before := fencerSwitches(t, info.PID)
		for range 50 {
			f.renew(now() + time.Hour.Nanoseconds())
			<-time.After(20 * time.Millisecond) // an agent's heartbeats
		}
		seen = append(seen, fencerSwitches(t, info.PID)-before)
		if seen[len(seen)-1] < 25 {
			break
		}
	}
	if seen[len(seen)-1] >= 25 {
		t.Errorf("the fencer switched %v times in each second of renewals: it wakes without need", seen)
	}
	if frozenStandIn(t, freezer) {
		t.Fatal("frozen with the lease running")
	}

	deadline := now() + (200 * time.Millisecond).Nanoseconds()
	f.renew(deadline)
	waitFor(t, "the stand-in frozen", 10*time.Second, func() bool { return frozenStandIn(t, freezer) })
	if late := time.Duration(now() - deadline); late > f.req.Poll+time.Second {
		t.Errorf("frozen %v after the shortened lease's deadline, want within a poll (%v, with slack)", late, f.req.Poll)
	}
}

// TestFencerNoticesLeaseRemoved: a lease removed counts as run out at
// once, not when the deadline it held comes.
func TestFencerNoticesLeaseRemoved(t *testing.T) {
	f, freezer := lonelyFencer(t)
	if err := os.Remove(filepath.Join(f.dir, leaseFile)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the stand-in frozen", 10*time.Second, func() bool { return frozenStandIn(t, freezer) })
}

// TestFencerExitsWithStateDir: the state directory removed, the fencer
// freezes one last time and exits, though the lease it last read runs.
func TestFencerExitsWithStateDir(t *testing.T) {
	f, freezer := lonelyFencer(t)
	info, err := readFencerInfo(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(f.req.StateDir); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the fencer gone", 10*time.Second, func() bool { return !alive(info.PID) })
	if !frozenStandIn(t, freezer) {
		t.Error("the fencer exited without freezing")
	}
}

// fencerSwitches is the fencer's context switches so far, every thread's.
func fencerSwitches(t *testing.T, pid int) int64 {
	t.Helper()
	return procUsage(t, pid).switches
}

// TestLeaseFormats: the lease is written as a symlink, or as a file for
// an older fencer, over either, and read back in both forms; a symlink
// left half-way by a dead agent is replaced.
func TestLeaseFormats(t *testing.T) {
	state := t.TempDir()
	dir := filepath.Join(state, fenceDir)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, leaseFile)
	if err := os.Symlink("1", path+".link"); err != nil {
		t.Fatal(err)
	}
	for i, legacy := range []bool{false, true, false, false, true, true} {
		want := int64(1_000_000_000 + i)
		if err := writeLease(state, want, legacy); err != nil {
			t.Fatal(err)
		}
		st, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if link := st.Mode()&os.ModeSymlink != 0; link == legacy {
			t.Errorf("write %d (legacy %v): the lease is a symlink: %v", i, legacy, link)
		}
		if got, why := leaseDeadline(path); got != want || why != "" {
			t.Errorf("write %d (legacy %v): read %d (%s), want %d", i, legacy, got, why, want)
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 1 {
		t.Errorf("the fence directory holds %v (%v), want the lease alone", ents, err)
	}
}
