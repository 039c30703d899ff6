package coordinator

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/raft"

	"github.com/corral-dev/corral/coordinator/api"
)

// ErrDiskFull is wrapped by every error that a server returns because its
// data directory has no room.
var ErrDiskFull = errors.New("corral: disk full")

// minFreeDisk is the room a leader keeps in its data directory: below it,
// commands are refused before they reach raft. What remains is for raft's
// own entries (a new term's no-op, membership changes), its votes and
// snapshots, so that a full disk never makes the leader fail a log write
// and step down.
const minFreeDisk = 16 << 20

// diskFullHold is how long a write that failed for want of room keeps the
// guard shut even when statfs shows room again (deleted files that are
// still open, reserved blocks, a quota): a retry every hold, not a storm.
const diskFullHold = time.Second

// diskGuard tells whether a server's data directory has room for a write.
//
// Why before raft and not only on failure: hashicorp/raft's leader steps
// down when its log store fails a write (Raft.dispatchLogs), and a lone
// server then elects itself again, fails its no-op and steps down again:
// an election storm in which every write waits for a leader. A command
// refused before raft.Apply keeps the leader in place and tells the client
// at once.
type diskGuard struct {
	server, dir string
	minFree     uint64
	now         func() time.Time

	mu       sync.Mutex
	failedAt time.Time // when a write last failed with ENOSPC
	failure  error
	logged   bool // the current full spell was logged
	onChange func(full bool, err error)
}

func newDiskGuard(server, dir string) *diskGuard {
	return &diskGuard{server: server, dir: dir, minFree: minFreeDisk, now: time.Now}
}

// room returns nil when the data directory has room for a write, else an
// error that wraps api.ErrUnavailable and ErrDiskFull and says which server
// and directory, how much is free and what to do.
func (g *diskGuard) room() error {
	if g == nil {
		return nil
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(g.dir, &st); err != nil {
		return nil // cannot tell: let the write find out
	}
	free := st.Bavail * uint64(st.Bsize)
	g.mu.Lock()
	defer g.mu.Unlock()
	var why string
	switch {
	case free < g.minFree:
		why = fmt.Sprintf("%s free, corral keeps %s for raft", bytesText(free), bytesText(g.minFree))
	case st.Files > 0 && st.Ffree == 0:
		why = "no free inodes"
	case g.failure != nil && g.now().Sub(g.failedAt) < diskFullHold:
		why = fmt.Sprintf("a write failed %v ago: %v", g.now().Sub(g.failedAt).Round(time.Millisecond), g.failure)
	}
	if why == "" {
		g.failure = nil
		g.change(false, nil)
		return nil
	}
	err := fmt.Errorf("%w: %w on server %s: %s has no room left (%s); free space there (or move the data dir to a larger disk) and writes resume by themselves",
		api.ErrUnavailable, ErrDiskFull, g.server, g.dir, why)
	g.change(true, err)
	return err
}

// change reports a transition between full and not; g.mu is held.
func (g *diskGuard) change(full bool, err error) {
	if full == g.logged {
		return
	}
	g.logged = full
	if g.onChange != nil {
		g.onChange(full, err)
	}
}

// failed records a write to the data directory that failed; it returns the
// error to pass on, naming the server and directory when the disk is full.
func (g *diskGuard) failed(err error) error {
	if g == nil || err == nil || !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EDQUOT) {
		return err
	}
	g.mu.Lock()
	g.failedAt, g.failure = g.now(), err
	g.mu.Unlock()
	return fmt.Errorf("%w: %w on server %s: %s has no room left (%w); free space there (or move the data dir to a larger disk) and writes resume by themselves",
		api.ErrUnavailable, ErrDiskFull, g.server, g.dir, err)
}

// opening passes on an error from opening a store in the data directory,
// saying so when the disk is full.
func (g *diskGuard) opening(err error) error {
	if err == nil || !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EDQUOT) {
		return err
	}
	return fmt.Errorf("%w on server %s: %s has no room left to open its stores (%w); free space there (or move the data dir to a larger disk) and start the server again",
		ErrDiskFull, g.server, g.dir, err)
}

func bytesText(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

// diskLogStore passes a log store's write failures through the guard, so
// that a full disk is reported as such (and noted, see diskFullHold)
// instead of as a bbolt error.
//
// On a follower a failed append is retried until it succeeds: raft has
// then already deleted the entries the leader's replaced, and an append it
// gave up on would leave its idea of its last index wrong, so it would
// reject the leader until restarted. A leader returns the error (and steps
// down, as raft does).
type diskLogStore struct {
	raft.LogStore
	g    *diskGuard
	wait func(error) bool // nil: never retry
}

func (d diskLogStore) StoreLog(l *raft.Log) error { return d.StoreLogs([]*raft.Log{l}) }

func (d diskLogStore) StoreLogs(ls []*raft.Log) error {
	for {
		err := d.g.failed(d.LogStore.StoreLogs(ls))
		if err == nil || d.wait == nil || !d.wait(err) {
			return err
		}
	}
}

// waitForRoom is diskLogStore's retry rule: on a follower that is not
// stopping, it logs the failure once in a while, waits a moment and says to
// try again.
func (s *Server) waitForRoom(err error) bool {
	if s.leading.Load() {
		return false
	}
	select {
	case <-s.done:
		return false
	case <-time.After(appendRetry):
	}
	if now := time.Now(); now.Sub(s.lastAppendWarn) > 10*time.Second {
		s.lastAppendWarn = now
		s.log.Error("cannot append to the raft log; retrying until it works (a follower must not give up here)", "err", err)
	}
	return true
}

// appendRetry is how often a follower retries a failed log append.
const appendRetry = 100 * time.Millisecond

func (d diskLogStore) DeleteRange(min, max uint64) error {
	return d.g.failed(d.LogStore.DeleteRange(min, max))
}

// diskStableStore does the same for raft's term and vote.
type diskStableStore struct {
	raft.StableStore
	g *diskGuard
}

func (d diskStableStore) Set(k, v []byte) error { return d.g.failed(d.StableStore.Set(k, v)) }

func (d diskStableStore) SetUint64(k []byte, v uint64) error {
	return d.g.failed(d.StableStore.SetUint64(k, v))
}

// DiskRoom returns nil when this server's data directory has room for a
// write, else an error wrapping api.ErrUnavailable and ErrDiskFull that
// names the server and the directory. The leader checks it before it
// proposes anything.
func (s *Server) DiskRoom() error { return s.store.disk.room() }

// handOffWhileDiskFull gives leadership to another voter while this
// leader's data directory has no room, retrying every second until it no
// longer leads, there is room again, or the server closes: a follower with
// room can take the writes this one refuses, and this one keeps following
// (heartbeats need no disk). A lone server keeps leading and refusing.
func (s *Server) handOffWhileDiskFull() {
	for {
		if s.raft == nil || !s.IsLeader() || s.DiskRoom() == nil {
			return
		}
		f := s.raft.GetConfiguration()
		if f.Error() != nil {
			return
		}
		others := 0
		for _, m := range f.Configuration().Servers {
			if m.Suffrage == raft.Voter && m.ID != raft.ServerID(s.cfg.ID) {
				others++
			}
		}
		if others == 0 {
			s.log.Warn("disk full on a lone server: it keeps leading and refuses writes until there is room")
			return
		}
		err := s.raft.LeadershipTransfer().Error()
		if err == nil {
			s.log.Warn("disk full: handed leadership to another server")
			return
		}
		s.log.Warn("disk full: cannot hand leadership to another server yet; retrying", "err", err)
		select {
		case <-s.done:
			return
		case <-time.After(time.Second):
		}
	}
}
