package driver

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// A guest writes its output (stdout and stderr of a process or container,
// the serial console and stderr of QEMU) straight into its log file, opened
// with O_APPEND: no pipe runs through the agent, so a guest keeps running,
// and never blocks or gets SIGPIPE, while its agent is down or restarting.
//
// The cap is enforced from outside: one loop for the host (logcaps.go)
// looks at a file's size when inotify says it grew, at most once per
// Config.LogCheckInterval, and when one is over its cap it drops the
// oldest part so that about half the cap, the newest output, remains.
// Where the file system supports it (ext4, xfs) the head is cut with
// fallocate(FALLOC_FL_COLLAPSE_RANGE), in whole blocks, atomically with
// respect to the guest's appends, so nothing the guest writes meanwhile is
// lost. Elsewhere (tmpfs) the tail is copied to the start and the file
// truncated; output written during that copy can be lost, and the file
// then begins with a line saying that output was dropped. Between two
// checks a guest may write past the cap: the file is bounded by the cap
// plus what the guest writes in about one interval.

// dropMarker starts a log whose head was cut by copying.
const dropMarker = "[corral: earlier output dropped to keep the log under its size cap]\n"

// openLog opens (creating) a guest's log for appending.
func openLog(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("corral: open guest log: %w", err)
	}
	return f, nil
}

// trimLog cuts the head of the log at path when it is larger than maxBytes,
// keeping about maxBytes/2 of its newest bytes. It returns how many bytes
// it dropped.
func trimLog(path string, maxBytes int64) (int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := st.Size()
	if size <= maxBytes {
		return 0, nil
	}
	drop := size - maxBytes/2
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &sfs); err == nil && sfs.Bsize > 0 {
		if blk := int64(sfs.Bsize); drop >= blk {
			cut := drop / blk * blk
			err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_COLLAPSE_RANGE, 0, cut)
			if err == nil {
				return cut, nil
			}
			if err != unix.EOPNOTSUPP && err != unix.EINVAL {
				return 0, fmt.Errorf("corral: trim guest log: %w", err)
			}
		}
	}
	return copyTrim(f, size, drop)
}

// copyTrim is the fallback of trimLog: move the tail to the front, then
// truncate.
func copyTrim(f *os.File, size, drop int64) (int64, error) {
	tail := make([]byte, size-drop)
	if _, err := f.ReadAt(tail, drop); err != nil && err != io.EOF {
		return 0, err
	}
	if err := f.Truncate(0); err != nil {
		return 0, err
	}
	// O_RDWR without O_APPEND: write at offset 0; the guest's own
	// descriptor appends after whatever is there.
	if _, err := f.WriteAt(append([]byte(dropMarker), tail...), 0); err != nil {
		return 0, err
	}
	return drop, nil
}
