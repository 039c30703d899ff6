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

// TestLeaseFormats: the lease is written afresh as a file holding the
// deadline twice, or once for an older fencer, over either or over a
// version 2 agent's symlink, and read back in every form; a symlink left
// half-way by a dead version 2 agent is removed.
func TestLeaseFormats(t *testing.T) {
	state, dir, path := leaseDir(t)
	if err := os.Symlink("1", path+".link"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("999", path); err != nil {
		t.Fatal(err)
	}
	if got, why := leaseDeadline(path); got != 999 || why != "" {
		t.Errorf("a symlink's lease: read %d (%s), want 999", got, why)
	}
	for i, legacy := range []bool{false, true, false, false, true, true} {
		want := int64(1_000_000_000 + i)
		if err := writeLease(state, want, legacy); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if twice := len(strings.Fields(string(b))) >= 2; twice == legacy {
			t.Errorf("write %d (legacy %v): the lease holds %q", i, legacy, b)
		}
		if got, why := leaseDeadline(path); got != want || why != "" {
			t.Errorf("write %d (legacy %v): read %d (%s), want %d", i, legacy, got, why, want)
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 1 {
		t.Errorf("the fence directory holds %v (%v), want the lease alone", ents, err)
	}
	if bootID() == "" {
		t.Fatal("this host's boot ID is unreadable: /proc/sys/kernel/random/boot_id")
	}
	// Another boot's ID: this one's with its first digit changed.
	other := string("0123456789abcdef"[(strings.IndexByte("0123456789abcdef", bootID()[0])+1)%16]) + bootID()[1:]
	for _, c := range []struct {
		in   string
		want int64
		why  string
	}{
		{"0000000000000000042 0000000000000000042\n", 42, ""},
		{"42\n", 42, ""},
		{"0000000000000000043 0000000000000000042\n", 0, errTornLease}, // met a renewal half-way
		{"0000000000000000042 0000000000000000042 7\n", 0, `unreadable lease "0000000000000000042 0000000000000000042 7\n"`},
		{"0000000000000000042 0000000000000000042 " + bootID() + "\n", 42, ""},
		{"0000000000000000042 0000000000000000042 " + other + "\n", 0, "the lease was written in another boot (" + other + "; this one is " + bootID() + ")"},
		{"0000000000000000043 0000000000000000042 " + bootID() + "\n", 0, errTornLease},
		{"", 0, `unreadable lease ""`},
		{"x", 0, `unreadable lease "x"`},
	} {
		if got, why := parseLease([]byte(c.in)); got != c.want || why != c.why {
			t.Errorf("parseLease(%q) = %d, %q; want %d, %q", c.in, got, why, c.want, c.why)
		}
	}
}

// TestLeaseRenewedInPlace: once a fencer of this version guards, the
// agent renews the lease in place, on the file it made, and writes it
// afresh when the lease was removed, moved away or replaced, as a fencer
// would find it; every renewal reads back.
func TestLeaseRenewedInPlace(t *testing.T) {
	state, _, path := leaseDir(t)
	var l leaseProbe
	defer l.close()
	inode := func() uint64 {
		t.Helper()
		var st syscall.Stat_t
		if err := syscall.Lstat(path, &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	deadline := int64(1_000_000_000)
	renew := func(what string) {
		t.Helper()
		deadline++
		if err := l.write(state, deadline); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		for _, read := range []func(string) (int64, string){leaseDeadline, l.deadline} {
			if got, why := read(path); got != deadline || why != "" {
				t.Fatalf("%s: read %d (%s), want %d", what, got, why, deadline)
			}
		}
	}
	renew("the first renewal")
	ino := inode()
	renew("a renewal")
	if inode() != ino {
		t.Error("a renewal made a new file: want the lease written in place")
	}
	for _, c := range []struct {
		what  string
		do    func() error
		fresh bool // the lease is made anew, not the kept file
	}{
		{"removed", func() error { return os.Remove(path) }, true},
		{"moved away", func() error { return os.Rename(path, path+".old") }, true},
		{"replaced by a symlink", func() error { os.Remove(path); return os.Symlink("5", path) }, true},
		{"replaced by a file", func() error { return writeAtomic(path, []byte("5\n")) }, true},
		{"lengthened", func() error {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteString("7\n")
			return err
		}, true},
	} {
		if err := c.do(); err != nil {
			t.Fatal(err)
		}
		if got, why := l.deadline(path); why == "" && got == deadline {
			t.Errorf("lease %s: the kept file still reads %d", c.what, got)
		}
		renew("a renewal after the lease was " + c.what)
		ino = inode()
		renew("the next renewal")
		if inode() != ino {
			t.Errorf("lease %s: the renewal after the fresh one made a new file", c.what)
		}
	}
}

// leaseDir makes a state directory with its fence directory, and names
// the lease in it.
func leaseDir(t *testing.T) (state, dir, path string) {
	t.Helper()
	state = t.TempDir()
	dir = filepath.Join(state, fenceDir)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return state, dir, filepath.Join(dir, leaseFile)
}
