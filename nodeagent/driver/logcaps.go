package driver

import (
	"errors"
	"os"
	"sync"
	"time"
)

// logCaps keeps the logs of every guest the drivers of a host watch under
// their caps, from one goroutine on one ticker for all of them: a host at
// rest wakes once per Config.LogCheckInterval however many guests it runs,
// and a check is one fstat per log, on a descriptor kept open while the
// guest is watched; only a log over its cap is trimmed (logcap.go). The
// goroutine runs while at least one guest is watched.
type logCaps struct {
	interval time.Duration

	// mu is held through a check, so that once remove returns the log is
	// no longer trimmed: a released guest's log may be adopted, and
	// trimmed, by the next agent.
	mu   sync.Mutex
	logs map[*Instance]*os.File // read-only, opened at the first check
	stop chan struct{}          // closed to end the loop; nil while none runs
}

func newLogCaps(interval time.Duration) *logCaps {
	return &logCaps{interval: interval, logs: map[*Instance]*os.File{}}
}

// add starts checking i's log.
func (c *logCaps) add(i *Instance) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.logs[i]; !ok {
		c.logs[i] = nil
	}
	if c.stop == nil {
		c.stop = make(chan struct{})
		go c.run(c.stop)
	}
}

// remove stops checking i's log and reports whether it was checked.
func (c *logCaps) remove(i *Instance) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, ok := c.logs[i]
	if !ok {
		return false
	}
	if f != nil {
		f.Close()
	}
	delete(c.logs, i)
	if len(c.logs) == 0 && c.stop != nil {
		close(c.stop)
		c.stop = nil
	}
	return true
}

func (c *logCaps) run(stop <-chan struct{}) {
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			c.check()
		}
	}
}

// check trims every watched log that is over its cap.
func (c *logCaps) check() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, f := range c.logs {
		if f == nil {
			var err error
			if f, err = os.Open(i.rec.LogPath); err != nil {
				if !errors.Is(err, os.ErrNotExist) {
					i.log.Warn("cap guest log", "err", err)
				}
				continue
			}
			c.logs[i] = f
		}
		// The trims keep the file (same inode): the descriptor sees
		// every size the guest's appends make.
		st, err := f.Stat()
		if err != nil {
			i.log.Warn("cap guest log", "err", err)
			continue
		}
		if st.Size() > i.rec.LogMaxBytes {
			i.trim()
		}
	}
}
