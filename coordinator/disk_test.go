package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/corral-dev/corral/coordinator/api"
)

// mountTmpfs mounts a tmpfs of size bytes on a new directory and unmounts
// it when the test ends (after everything registered later, such as a
// server on it, has stopped).
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "disk")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		t.Skipf("cannot mount a tmpfs to fill (needs root): %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fillDisk writes a file in dir until the file system has no room left.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	for _, n := range []int{64 << 10, 4 << 10, 512} { // the last pages
		for {
			if _, err := f.Write(chunk[:n]); err != nil {
				break
			}
		}
	}
	return path
}

// TestDiskFullRefusesWritesAndRecovers: with the data directory's disk
// full, a write fails at once with a message naming the server and the
// directory, the leader keeps its leadership (no election storm), reads
// go on, and writes succeed again once there is room.
func TestDiskFullRefusesWritesAndRecovers(t *testing.T) {
	disk := mountTmpfs(t, 48<<20)
	var logs logBuffer
	cfg := TestConfig(t, "s1", disk)
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s, _ := runServer(t, cfg)

	var leaderChanges atomic.Int64
	obs := make(chan raft.Observation, 64)
	o := raft.NewObserver(obs, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	s.raft.RegisterObserver(o)
	go func() {
		for range obs {
			leaderChanges.Add(1)
		}
	}()
	defer func() {
		s.raft.DeregisterObserver(o)
		close(obs)
	}()

	c, _ := api.NewClient(s.HTTPAddr())
	c.Retry = 0
	ctx := context.Background()
	create := func(name string) error {
		_, err := c.CreateGuest(ctx, api.CreateGuest{Name: name, Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true})
		return err
	}
	if err := create("before"); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, 5*time.Second, "the leader to settle", func() bool { return s.IsLeader() })
	filler := fillDisk(t, disk)

	// Refused writes over several election timeouts: each fails at once,
	// and the leader stays.
	changes := leaderChanges.Load()
	window := time.Now().Add(3 * cfg.Raft.ElectionTimeout)
	n := 0
	for ; n < 10 || time.Now().Before(window); n++ {
		began := time.Now()
		err := create(fmt.Sprintf("full-%d", n))
		took := time.Since(began)
		if err == nil {
			t.Fatalf("write %d on a full disk succeeded", n)
		}
		if !errors.Is(err, api.ErrUnavailable) || !strings.Contains(err.Error(), "disk full on server s1: "+cfg.DataDir+" has no room left") {
			t.Fatalf("write %d on a full disk: %v", n, err)
		}
		if took > 500*time.Millisecond {
			t.Fatalf("write %d took %v to fail, want at once", n, took)
		}
	}
	if got := leaderChanges.Load() - changes; got != 0 || !s.IsLeader() {
		t.Fatalf("%d leader changes during %d refused writes (leader now: %v), want none", got, n, s.IsLeader())
	}
	if gs := listGuests(t, s); len(gs) != 1 || gs[0].Name != "before" {
		t.Fatalf("reads on a full disk: %v", gs)
	}
	if !strings.Contains(logs.String(), "disk full: refusing writes") {
		t.Fatalf("the server did not log the full disk:\n%s", logs.String())
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, 5*time.Second, "a write once there is room", func() bool { return create("after") == nil })
	if gs := listGuests(t, s); len(gs) != 2 {
		t.Fatalf("after recovery %d guests, want 2", len(gs))
	}
	if !strings.Contains(logs.String(), "disk has room again") {
		t.Fatalf("the server did not log the recovery:\n%s", logs.String())
	}
}

// failingLogStore fails every write with err.
type failingLogStore struct {
	raft.LogStore
	err error
}

func (f failingLogStore) StoreLogs([]*raft.Log) error { return f.err }

// TestDiskGuardNamesAFullDisk: a log write that fails with ENOSPC is
// reported as a full disk on this server, and the guard stays shut for a
// moment after it even when statfs shows room; other errors pass as they
// are.
func TestDiskGuardNamesAFullDisk(t *testing.T) {
	dir := t.TempDir()
	now := time.Unix(1000, 0)
	g := newDiskGuard("s9", dir)
	g.minFree = 1
	g.now = func() time.Time { return now }
	if err := g.room(); err != nil {
		t.Fatalf("room on an empty temp dir: %v", err)
	}
	ls := diskLogStore{LogStore: failingLogStore{raft.NewInmemStore(), &os.PathError{Op: "write", Path: dir + "/raft.db", Err: syscall.ENOSPC}}, g: g}
	err := ls.StoreLogs([]*raft.Log{{Index: 1}})
	if !errors.Is(err, ErrDiskFull) || !errors.Is(err, api.ErrUnavailable) || !errors.Is(err, syscall.ENOSPC) ||
		!strings.Contains(err.Error(), "disk full on server s9: "+dir+" has no room left") {
		t.Fatalf("ENOSPC from the log store: %v", err)
	}
	if err := g.room(); !errors.Is(err, ErrDiskFull) || !strings.Contains(err.Error(), "a write failed") {
		t.Fatalf("room right after a failed write: %v", err)
	}
	now = now.Add(diskFullHold)
	if err := g.room(); err != nil {
		t.Fatalf("room once the hold passed: %v", err)
	}
	other := errors.New("some other failure")
	ls.LogStore = failingLogStore{raft.NewInmemStore(), other}
	if err := ls.StoreLogs(nil); err != other {
		t.Fatalf("another error was changed: %v", err)
	}
	if err := g.room(); err != nil {
		t.Fatalf("room after another error: %v", err)
	}
	g.minFree = 1 << 62
	if err := g.room(); !errors.Is(err, ErrDiskFull) || !strings.Contains(err.Error(), "corral keeps") {
		t.Fatalf("room below the reserve: %v", err)
	}
	var nilGuard *diskGuard
	if nilGuard.room() != nil || nilGuard.failed(other) != other {
		t.Fatal("a nil guard must let everything pass")
	}
}

// TestDiskFullLeaderHandsOff: in a cluster, a leader whose disk fills
// refuses writes with the disk-full error and hands leadership to a
// server with room; writes go on there, and the full server catches up
// once there is room.
func TestDiskFullLeaderHandsOff(t *testing.T) {
	disks := make([]string, 3)
	c := newTestCluster(t, 3, func(i int, cfg *Config, _ []*Server) {
		disks[i] = mountTmpfs(t, 48<<20)
		cfg.DataDir = filepath.Join(disks[i], cfg.ID)
	})
	li, leader := c.waitLeader()
	c.waitConverged()
	filler := fillDisk(t, disks[li])
	lc, _ := api.NewClient(leader.HTTPAddr())
	lc.Retry = 0
	ctx := context.Background()
	g := api.CreateGuest{Name: "full", Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true}
	if _, err := lc.CreateGuest(ctx, g); !errors.Is(err, api.ErrUnavailable) || !strings.Contains(fmt.Sprint(err), "disk full on server "+leader.ID()) {
		t.Fatalf("write on the full leader: %v", err)
	}
	var addrs []string
	for i, s := range c.servers {
		if i != li {
			addrs = append(addrs, s.HTTPAddr())
		}
	}
	others, _ := api.NewClient(strings.Join(addrs, ","))
	WaitFor(t, 10*time.Second, "another server to lead and take a write", func() bool {
		_, err := others.CreateGuest(ctx, api.CreateGuest{Name: "moved", Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true})
		return err == nil
	})
	if nl, _ := c.leader(); nl == li {
		t.Fatalf("the full server %s still leads", leader.ID())
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	c.waitConverged()
}

// TestDiskFullRestart: a server restarted on a full disk comes up, leads,
// serves reads and refuses writes with the disk-full error.
func TestDiskFullRestart(t *testing.T) {
	disk := mountTmpfs(t, 48<<20)
	cfg := TestConfig(t, "s1", disk)
	s, stop := runServer(t, cfg)
	fillServer(t, s, 5)
	stop()
	fillDisk(t, disk)
	s, _ = runServer(t, cfg)
	WaitFor(t, 5*time.Second, "the restarted server to lead", s.IsLeader)
	if gs := listGuests(t, s); len(gs) != 5 {
		t.Fatalf("after a restart on a full disk %d guests, want 5", len(gs))
	}
	c, _ := api.NewClient(s.HTTPAddr())
	c.Retry = 0
	_, err := c.CreateGuest(context.Background(), api.CreateGuest{Name: "full", Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true})
	if !errors.Is(err, api.ErrUnavailable) || !strings.Contains(fmt.Sprint(err), "disk full on server s1") {
		t.Fatalf("write after a restart on a full disk: %v", err)
	}
}

// TestDiskFullAtFirstStart: a new server on a full disk stops at once and
// says the disk is full, where and what to do.
func TestDiskFullAtFirstStart(t *testing.T) {
	disk := mountTmpfs(t, 8<<20)
	cfg := TestConfig(t, "s1", disk)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	fillDisk(t, disk)
	s, err := New(cfg, Deps{})
	if err == nil {
		s.Close()
		t.Fatal("a server started on a full disk")
	}
	if !errors.Is(err, ErrDiskFull) || !strings.Contains(err.Error(), "disk full on server s1: "+cfg.DataDir+" has no room left") || !strings.Contains(err.Error(), "start the server again") {
		t.Fatalf("start on a full disk: %v", err)
	}
}
