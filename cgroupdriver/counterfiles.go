package cgroupdriver

import (
	"io/fs"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// counterFiles keeps open the counter files [Driver.Stats] reads, so that
// a usage pass costs one pread per file instead of an open, a read and a
// close: opening a cgroupfs file (path walk, kernfs and seq_file set-up)
// costs ten to twenty times the read itself, and the agent reads about ten
// files per guest every usage interval. A counter file read from offset 0
// is generated afresh, so a kept descriptor always reads the current
// value.
//
// A descriptor outlives nothing it should not: removing a guest's groups
// through the driver closes its files first, and a descriptor whose group
// was removed some other way (another agent process, an operator's rmdir)
// fails on its next read, is closed, and the file is opened again once:
// a group created anew under the same name is read correctly, a group that
// is gone reads as ENOENT, as without the cache. At most limit descriptors
// are kept; past that files are read the plain way.
type counterFiles struct {
	limit int

	mu   sync.Mutex
	dirs map[string]map[string]int // group directory -> file name -> fd
	n    int
}

// newCounterFiles keeps at most three quarters of the process's
// descriptor limit open (Go raises the soft limit to the hard one, 524288
// under systemd), so the agent's own descriptors, a pidfd and a log per
// guest, always find room.
func newCounterFiles() *counterFiles {
	limit := 1024
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err == nil && rl.Cur > 0 {
		limit = int(min(rl.Cur/4*3, 1<<20))
	}
	return &counterFiles{limit: limit, dirs: map[string]map[string]int{}}
}

// read returns the content of the counter file at path, trailing newline
// removed, as readFile does.
func (c *counterFiles) read(path string) (string, error) {
	if c == nil {
		return readFile(path)
	}
	i := strings.LastIndexByte(path, '/')
	if i <= 0 {
		return readFile(path)
	}
	dir, name := path[:i], path[i+1:]
	c.mu.Lock()
	defer c.mu.Unlock()
	fd, kept := c.dirs[dir][name]
	if !kept {
		if c.n >= c.limit {
			return readFile(path)
		}
		var err error
		if fd, err = c.open(dir, name, path); err != nil {
			return "", err
		}
	}
	s, err := preadAll(fd)
	if err == nil {
		return s, nil
	}
	// A descriptor of a group removed behind the driver's back: once more
	// with a fresh one.
	c.drop(dir, name)
	if fd, err = c.open(dir, name, path); err != nil {
		return "", err
	}
	if s, err = preadAll(fd); err != nil {
		c.drop(dir, name)
		return "", &fs.PathError{Op: "read", Path: path, Err: err}
	}
	return s, nil
}

// open opens path and keeps its descriptor; mu must be held.
func (c *counterFiles) open(dir, name, path string) (int, error) {
	fd, err := ignoringEINTR(func() (int, error) { return unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0) })
	if err != nil {
		return -1, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	files := c.dirs[dir]
	if files == nil {
		files = map[string]int{}
		c.dirs[dir] = files
	}
	files[name] = fd
	c.n++
	return fd, nil
}

// drop closes one kept descriptor; mu must be held.
func (c *counterFiles) drop(dir, name string) {
	files := c.dirs[dir]
	if fd, ok := files[name]; ok {
		unix.Close(fd)
		delete(files, name)
		c.n--
	}
	if len(files) == 0 {
		delete(c.dirs, dir)
	}
}

// forget closes the descriptors kept for dir and every group below it.
func (c *counterFiles) forget(dir string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for d, files := range c.dirs {
		if d != dir && !strings.HasPrefix(d, dir+"/") {
			continue
		}
		for _, fd := range files {
			unix.Close(fd)
			c.n--
		}
		delete(c.dirs, d)
	}
}

// preadAll reads a whole counter file from offset 0.
func preadAll(fd int) (string, error) {
	var stack [512]byte
	buf := stack[:]
	n := 0
	for {
		m, err := ignoringEINTR(func() (int, error) { return unix.Pread(fd, buf[n:], int64(n)) })
		if err != nil {
			return "", err
		}
		short := m < len(buf)-n
		n += m
		if short {
			// A cgroup file is one seq_file record: a read that did not
			// fill the buffer returned all of it.
			break
		}
		buf = append(buf, make([]byte, len(buf))...)
	}
	return strings.TrimRight(string(buf[:n]), "\n"), nil
}
