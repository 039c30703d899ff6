package nodeagent

import (
	"errors"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// The agent asks two things of the fence many times a minute at rest: is
// a fencer alive (before every pass, every usage report and every
// heartbeat), and is the fence up (before every pass). Each answer is a
// file's: the fencer's lock, the kind directories' freezer settings.
// Opening a file costs several times the question asked of it, so the
// agent keeps these few descriptors open; a descriptor that can no
// longer answer (its file removed, its group gone) is opened afresh
// once, so every answer is the one the path would give.

// lockProbe answers fencerAlive on a kept descriptor of the fence
// directory's lock file. Any goroutine may call it; the zero value is
// ready.
type lockProbe struct {
	mu   sync.Mutex
	fd   int
	open bool
}

// alive is fencerAlive(dir). The fencer never replaces its lock file,
// but a state directory made anew has another: a lock found free is
// asked again on a fresh descriptor before the answer counts, since only
// then could a kept one be stale.
func (p *lockProbe) alive(dir string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for fresh := !p.open; ; fresh = true {
		if !p.open {
			fd, err := unix.Open(filepath.Join(dir, lockFile), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return false
			}
			p.fd, p.open = fd, true
		}
		if held, err := lockHeld(p.fd); err == nil && (held || fresh) {
			return held
		}
		unix.Close(p.fd)
		p.open = false
		if fresh {
			return false
		}
	}
}

func (p *lockProbe) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.open {
		unix.Close(p.fd)
		p.open = false
	}
}

// lockHeld reports whether another open file holds fd's flock.
func lockHeld(fd int) (bool, error) {
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return true, nil
		}
		return false, err
	}
	unix.Flock(fd, unix.LOCK_UN)
	return false, nil
}

// freezeProbe answers selfFrozen for one fence directory on a kept
// descriptor of its freezer setting. Only the Run goroutine uses it; the
// zero value is ready.
type freezeProbe struct {
	fd   int
	open bool
}

// frozen is selfFrozen(d). A kept descriptor whose group was removed
// fails its read (ENODEV): the file is opened again, so a group made
// anew under the same name answers for itself.
func (p *freezeProbe) frozen(d FreezeDir) (bool, error) {
	var buf [16]byte
	for fresh := !p.open; ; fresh = true {
		if !p.open {
			fd, err := unix.Open(filepath.Join(d.Path, selfFreezeFile(d)), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return false, err
			}
			p.fd, p.open = fd, true
		}
		n, err := unix.Pread(p.fd, buf[:], 0)
		if err == nil {
			return strings.TrimSpace(string(buf[:n])) == "1", nil
		}
		unix.Close(p.fd)
		p.open = false
		if fresh {
			return false, err
		}
	}
}

func (p *freezeProbe) close() {
	if p.open {
		unix.Close(p.fd)
		p.open = false
	}
}

// leaseProbe renews the lease in place and reads it back on a kept
// descriptor of the lease file, once a fencer of this version guards
// (writeLease made the file). The descriptor is used only while it is
// the file at the lease's path (same device and inode): a lease removed,
// moved away or replaced is written afresh, as a fencer would find it
// missing. Any goroutine may call it; the zero value is ready.
type leaseProbe struct {
	mu   sync.Mutex
	fd   int
	open bool
}

// write renews the lease to deadline: in place when the kept descriptor
// is the lease's, else afresh (writeLease), keeping the new file's.
func (l *leaseProbe) write(stateDir string, deadline int64) error {
	path := filepath.Join(stateDir, fenceDir, leaseFile)
	l.mu.Lock()
	defer l.mu.Unlock()
	line := leaseLine(deadline)
	if l.isLease(path) {
		if n, err := unix.Pwrite(l.fd, line, 0); err == nil && n == len(line) {
			return nil
		}
	}
	l.closeLocked()
	if err := writeLease(stateDir, deadline, false); err != nil {
		return err
	}
	if fd, err := unix.Open(path, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err == nil {
		l.fd, l.open = fd, true
	}
	return nil
}

// deadline is leaseDeadline(path), read on the kept descriptor when it is
// the lease's.
func (l *leaseProbe) deadline(path string) (int64, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.isLease(path) {
		var buf [128]byte
		if n, err := unix.Pread(l.fd, buf[:], 0); err == nil {
			return parseLease(buf[:n]) // whole: only write writes it, under mu
		}
	}
	return leaseDeadline(path)
}

// isLease reports whether the kept descriptor is the file at path and
// holds one lease line's bytes and no more (a write in place never
// shortens the file: anything added after the line would make every read
// of it unreadable, so such a file is written afresh); mu is held.
func (l *leaseProbe) isLease(path string) bool {
	if !l.open {
		return false
	}
	var kept, at unix.Stat_t
	if unix.Fstat(l.fd, &kept) != nil || unix.Lstat(path, &at) != nil {
		return false
	}
	return kept.Dev == at.Dev && kept.Ino == at.Ino && kept.Size == int64(len(leaseLine(0)))
}

func (l *leaseProbe) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closeLocked()
}

func (l *leaseProbe) closeLocked() {
	if l.open {
		unix.Close(l.fd)
		l.open = false
	}
}
