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
