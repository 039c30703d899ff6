package cgroupdriver

import (
	"errors"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The helpers below talk to cgroupfs with plain system calls: one open, one
// read or write, one close. Cgroup files are small, and the agent touches
// thousands of them per sampling interval.

// writeFile writes value to an existing cgroup file.
func writeFile(path, value string) error {
	fd, err := ignoringEINTR(func() (int, error) { return unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0) })
	if err != nil {
		return &fs.PathError{Op: "open", Path: path, Err: err}
	}
	_, err = ignoringEINTR(func() (int, error) { return unix.Write(fd, []byte(value)) })
	unix.Close(fd)
	if err != nil {
		return &fs.PathError{Op: "write", Path: path, Err: err}
	}
	return nil
}

// readFile returns the content of a cgroup file, trailing newline removed.
func readFile(path string) (string, error) {
	fd, err := ignoringEINTR(func() (int, error) { return unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0) })
	if err != nil {
		return "", &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var stack [512]byte
	buf := stack[:]
	n := 0
	for {
		m, err := ignoringEINTR(func() (int, error) { return unix.Read(fd, buf[n:]) })
		if err != nil {
			return "", &fs.PathError{Op: "read", Path: path, Err: err}
		}
		if m == 0 {
			break
		}
		n += m
		if n == len(buf) {
			buf = append(buf, make([]byte, len(buf))...)
		}
	}
	return strings.TrimRight(string(buf[:n]), "\n"), nil
}

// readUint reads a file holding one unsigned number ("max" reads as
// maxUint).
func readUint(path string) (uint64, error) { return readUintWith(readFile, path) }

func readUintWith(rd reader, path string) (uint64, error) {
	s, err := rd(path)
	if err != nil {
		return 0, err
	}
	if s == "max" {
		return maxUint, nil
	}
	v, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, &fs.PathError{Op: "parse", Path: path, Err: err}
	}
	return v, nil
}

const maxUint = ^uint64(0)

// mkdir creates one directory; an existing one is not an error.
func mkdir(path string) error {
	err := unix.Mkdir(path, 0o755)
	if err != nil && err != unix.EEXIST {
		return &fs.PathError{Op: "mkdir", Path: path, Err: err}
	}
	return nil
}

func ignoringEINTR(f func() (int, error)) (int, error) {
	for {
		n, err := f()
		if err != unix.EINTR {
			return n, err
		}
	}
}

// isErrno reports whether err is or wraps errno e.
func isErrno(err error, e unix.Errno) bool { return errors.Is(err, e) }

// subdirs lists the child groups of a cgroup directory.
func subdirs(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	return names, nil
}
