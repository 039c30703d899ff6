package simtest

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// Disk is a server's raft log and stable store, in memory, with switches
// that make log writes fail as a failing or full disk does. Reads and
// stable-store writes go on working (raft panics when it cannot save its
// term). [Disk.SetFailing] fails every log write, appends and deletes
// alike; [Disk.SetFull] fails appends only, as a full disk under bbolt
// can: deleting reuses pages the file has, appending needs new ones.
type Disk struct {
	*raft.InmemStore
	failing atomic.Bool
	full    atomic.Bool
	failed  atomic.Int64
}

// ErrDiskWrite is what a failing [Disk] returns for a log write.
var ErrDiskWrite = errors.New("simtest: disk write failed (injected): no space left on device")

var (
	_ raft.LogStore    = (*Disk)(nil)
	_ raft.StableStore = (*Disk)(nil)
)

func newDisk() *Disk { return &Disk{InmemStore: raft.NewInmemStore()} }

// SetFailing makes every log write fail (true) or succeed again (false).
func (d *Disk) SetFailing(on bool) { d.failing.Store(on) }

// SetFull makes log appends fail (true) or succeed again (false), while
// deletes go on working.
func (d *Disk) SetFull(on bool) { d.full.Store(on) }

// Failing reports whether log writes fail.
func (d *Disk) Failing() bool { return d.failing.Load() || d.full.Load() }

// FailedWrites counts the log writes that failed.
func (d *Disk) FailedWrites() int64 { return d.failed.Load() }

// StoreLog stores one entry unless the disk fails.
func (d *Disk) StoreLog(l *raft.Log) error { return d.StoreLogs([]*raft.Log{l}) }

// StoreLogs stores entries unless the disk fails.
func (d *Disk) StoreLogs(logs []*raft.Log) error {
	if d.failing.Load() || d.full.Load() {
		d.failed.Add(1)
		if len(logs) == 0 {
			return ErrDiskWrite
		}
		return fmt.Errorf("store raft log %d-%d: %w", logs[0].Index, logs[len(logs)-1].Index, ErrDiskWrite)
	}
	return d.InmemStore.StoreLogs(logs)
}

// DeleteRange deletes entries unless every log write fails.
func (d *Disk) DeleteRange(min, max uint64) error {
	if d.failing.Load() {
		d.failed.Add(1)
		return fmt.Errorf("delete raft log %d-%d: %w", min, max, ErrDiskWrite)
	}
	return d.InmemStore.DeleteRange(min, max)
}
