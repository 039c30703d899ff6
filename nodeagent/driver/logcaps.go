package driver

import (
	"encoding/binary"
	"errors"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// logCaps keeps the logs of every guest the drivers of a host watch under
// their caps, from one goroutine for all of them, which runs while at least
// one guest is watched. It wakes when a log grows, not on a timer: one
// inotify descriptor watches every log for IN_MODIFY, so a host whose
// guests write nothing never wakes for their logs, however many it runs.
// When logs grow, the loop checks those that grew, one fstat each on a
// descriptor kept open while the guest is watched, at most once per
// Config.LogCheckInterval: what is written in between waits in the kernel's
// queue, where the events of one log coalesce, and is read in one go. Only
// a log over its cap is trimmed (logcap.go). A log is also checked when it
// is added, so one adopted over its cap is cut at once.
//
// A log inotify cannot watch (no inotify, the watch limit reached, the
// file missing) is polled instead: checked every interval, and watched as
// soon as that succeeds. An overflow of the kernel's queue checks every
// log. Either way a log stays within its cap plus what its guest writes in
// about one interval.
type logCaps struct {
	interval time.Duration

	// mu is held through a check, so that once remove returns the log is
	// no longer trimmed: a released guest's log may be adopted, and
	// trimmed, by the next agent.
	mu   sync.Mutex
	logs map[*Instance]*capLog
	wds  map[int32]*Instance // the inotify watches of the running loop
	// in is the running loop's inotify descriptor, fd its number (never
	// in.Fd(), which would take it out of the poller); nil when inotify
	// is unavailable or no loop runs.
	in     *os.File
	fd     int
	polled int           // logs without a watch
	stop   chan struct{} // closed to end the loop; nil while none runs
}

// capLog is one watched log.
type capLog struct {
	f     *os.File // read-only; nil until the log could be opened
	wd    int32    // its inotify watch; -1 for none: polled
	grew  bool     // an IN_MODIFY came since its last check
	stats int      // fstats of it, for the tests
}

func newLogCaps(interval time.Duration) *logCaps {
	return &logCaps{interval: interval, logs: map[*Instance]*capLog{}, wds: map[int32]*Instance{}}
}

// add starts checking i's log, and checks it once.
func (c *logCaps) add(i *Instance) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.logs[i]; ok {
		return
	}
	if c.stop == nil {
		c.stop = make(chan struct{})
		c.in, c.fd = openInotify()
		go c.run(c.stop, c.in)
	}
	l := &capLog{wd: -1}
	c.logs[i] = l
	c.polled++
	c.arm(i, l)
	c.checkOne(i, l)
	if l.wd < 0 && c.in != nil {
		// The loop may be waiting without a deadline: have it set one.
		_ = c.in.SetReadDeadline(time.Now())
	}
}

// openInotify returns a non-blocking inotify descriptor in the runtime's
// poller, or nil when the host has none to give.
func openInotify() (*os.File, int) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, -1
	}
	return os.NewFile(uintptr(fd), "inotify"), fd
}

// arm watches l for growth when it is polled and inotify can; c.mu is held.
// The watch comes before the log's next fstat, so no growth falls between
// the two.
func (c *logCaps) arm(i *Instance, l *capLog) {
	if l.wd >= 0 || c.in == nil {
		return
	}
	wd, err := unix.InotifyAddWatch(c.fd, i.rec.LogPath, unix.IN_MODIFY)
	if err != nil {
		return // ENOENT, ENOSPC (the watch limit): polled, tried again at every check
	}
	if other, ok := c.wds[int32(wd)]; ok && other != i {
		// The same file twice (two instances of one log): one watch, and
		// the other is polled.
		return
	}
	l.wd = int32(wd)
	c.wds[l.wd] = i
	c.polled--
}

// remove stops checking i's log and reports whether it was checked.
func (c *logCaps) remove(i *Instance) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, ok := c.logs[i]
	if !ok {
		return false
	}
	if l.f != nil {
		l.f.Close()
	}
	if l.wd >= 0 {
		if c.in != nil {
			_, _ = unix.InotifyRmWatch(c.fd, uint32(l.wd))
		}
		delete(c.wds, l.wd)
	} else {
		c.polled--
	}
	delete(c.logs, i)
	if len(c.logs) == 0 && c.stop != nil {
		close(c.stop)
		c.stop = nil
		if c.in != nil {
			c.in.Close() // wakes the loop; its watches go with it
			c.in, c.fd = nil, -1
		}
		c.wds = map[int32]*Instance{}
	}
	return true
}

// run is the loop: wait for a log to grow (or, with logs polled, for the
// next poll), check, and wait out the rest of the interval before reading
// more, so that a busy log costs one check per interval. in is the loop's
// inotify descriptor, nil to poll every log.
func (c *logCaps) run(stop <-chan struct{}, in *os.File) {
	var (
		rc   syscall.RawConn
		buf  = make([]byte, 64<<10)
		last = time.Now()
	)
	if in != nil {
		var err error
		if rc, err = in.SyscallConn(); err != nil {
			rc = nil
		}
	}
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	for {
		all := false
		if rc == nil {
			if !sleepUntil(stop, last.Add(c.interval)) {
				return
			}
			all = true
		} else {
			// Under mu, so that an add of a polled log, which sets a
			// deadline of now, cannot fall before this.
			c.mu.Lock()
			var deadline time.Time // none: only growth wakes the loop
			if c.polled > 0 {
				deadline = last.Add(c.interval)
			}
			_ = in.SetReadDeadline(deadline)
			c.mu.Unlock()
			if stopped() {
				return
			}
			// Read until the queue has something; a deadline passing (a
			// poll due) or the descriptor closed (remove) ends the wait.
			var n int
			err := rc.Read(func(fd uintptr) bool {
				var rerr error
				n, rerr = unix.Read(int(fd), buf)
				return rerr != unix.EAGAIN
			})
			if stopped() {
				return
			}
			if err == nil && n > 0 {
				all = c.grown(buf[:n])
				// Let what else grows meanwhile gather in the queue,
				// then take it all in.
				if !sleepUntil(stop, last.Add(c.interval)) {
					return
				}
				all = c.drain(rc, buf) || all
			} else if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				rc = nil // a broken descriptor: poll every log from now on
			}
		}
		c.check(all)
		last = time.Now()
	}
}

// sleepUntil waits until t and reports whether the loop goes on.
func sleepUntil(stop <-chan struct{}, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		select {
		case <-stop:
			return false
		default:
			return true
		}
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-stop:
		return false
	case <-tm.C:
		return true
	}
}

// drain reads what the queue holds without waiting; it reports whether
// every log is to be checked (an overflow).
func (c *logCaps) drain(rc syscall.RawConn, buf []byte) bool {
	all := false
	for {
		var n int
		var rerr error
		if err := rc.Control(func(fd uintptr) { n, rerr = unix.Read(int(fd), buf) }); err != nil || rerr != nil || n <= 0 {
			return all
		}
		all = c.grown(buf[:n]) || all
	}
}

// grown marks the logs named by the inotify events in b; it reports
// whether the queue overflowed, so that every log is to be checked.
func (c *logCaps) grown(b []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	overflow := false
	for len(b) >= unix.SizeofInotifyEvent {
		wd := int32(binary.NativeEndian.Uint32(b[0:4]))
		mask := binary.NativeEndian.Uint32(b[4:8])
		size := unix.SizeofInotifyEvent + int(binary.NativeEndian.Uint32(b[12:16]))
		if size > len(b) {
			break
		}
		b = b[size:]
		if mask&unix.IN_Q_OVERFLOW != 0 {
			overflow = true
			continue
		}
		i, ok := c.wds[wd]
		if !ok {
			continue // a watch removed since
		}
		l := c.logs[i]
		if mask&unix.IN_IGNORED != 0 {
			// The kernel dropped the watch (the file system went): poll.
			delete(c.wds, wd)
			l.wd = -1
			c.polled++
		}
		l.grew = true
	}
	return overflow
}

// check checks the logs that grew and those polled, or with all every
// log, and trims those over their caps.
func (c *logCaps) check(all bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, l := range c.logs {
		if !all && !l.grew && l.wd >= 0 {
			continue
		}
		c.arm(i, l)
		c.checkOne(i, l)
	}
}

// checkOne trims i's log when it is over its cap; c.mu is held.
func (c *logCaps) checkOne(i *Instance, l *capLog) {
	l.grew = false
	if l.f == nil {
		f, err := os.Open(i.rec.LogPath)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				i.log.Warn("cap guest log", "err", err)
			}
			return
		}
		l.f = f
	}
	// The trims keep the file (same inode): the descriptor sees every
	// size the guest's appends make.
	l.stats++
	st, err := l.f.Stat()
	if err != nil {
		i.log.Warn("cap guest log", "err", err)
		return
	}
	if st.Size() > i.rec.LogMaxBytes {
		i.trim()
	}
}
