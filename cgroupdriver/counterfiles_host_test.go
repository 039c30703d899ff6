package cgroupdriver_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
)

// openBelow counts this process's descriptors open on files in dirs.
func openBelow(t *testing.T, dirs []string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue
		}
		for _, d := range dirs {
			if strings.HasPrefix(target, d+"/") {
				n++
			}
		}
	}
	return n
}

// TestHostStatsKeepsFilesOpen: Stats keeps its counter files open between
// calls and still reads fresh values; a group removed behind the driver's
// back and created again under the same name is read afresh, not through
// the old descriptors; Remove closes them.
func TestHostStatsKeepsFilesOpen(t *testing.T) {
	d, _ := hostDriver(t)
	g := create(t, d, "counters")
	dirs, err := d.Paths(g)
	if err != nil {
		t.Fatal(err)
	}
	before, err := d.Stats(g)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	kept := openBelow(t, dirs)
	if kept == 0 {
		t.Fatalf("Stats kept no counter file open below %v", dirs)
	}
	cmd, _ := start(t, d, g, nil, "sh", "-c", "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done")
	if err := cmd.Wait(); err != nil {
		t.Fatalf("busy loop: %v", err)
	}
	after, err := d.Stats(g)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if after.CPU.TotalNs <= before.CPU.TotalNs || after.Memory.Peak == 0 {
		t.Errorf("kept descriptors read stale counters: cpu %d -> %d ns, memory peak %d", before.CPU.TotalNs, after.CPU.TotalNs, after.Memory.Peak)
	}
	if n := openBelow(t, dirs); n != kept {
		t.Errorf("a second Stats opened more files: %d, then %d", kept, n)
	}
	// Usage reads the same counters but block I/O's: the guest's CPU
	// stays what it was (it ended), its memory peak too.
	u, err := d.Usage(g)
	if err != nil {
		t.Fatalf("Usage: %v", err)
	}
	if u.CPU.TotalNs != after.CPU.TotalNs || u.Memory.Peak != after.Memory.Peak || u.IO != (cgroupdriver.IOStats{}) {
		t.Errorf("Usage = cpu %d ns, peak %d, io %+v; want Stats' cpu %d ns, peak %d and no I/O", u.CPU.TotalNs, u.Memory.Peak, u.IO, after.CPU.TotalNs, after.Memory.Peak)
	}

	// Behind the driver's back: the group goes and comes back empty.
	for _, dir := range dirs {
		if err := cgrouptest.RemoveTree(dir, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Create(g); err != nil {
		t.Fatal(err)
	}
	fresh, err := d.Stats(g)
	if err != nil {
		t.Fatalf("Stats of the group created again: %v", err)
	}
	if fresh.CPU.TotalNs >= after.CPU.TotalNs {
		t.Errorf("the new group reads %d ns of CPU, the removed one's %d: read through a stale descriptor?", fresh.CPU.TotalNs, after.CPU.TotalNs)
	}

	if err := d.Remove(context.Background(), g); err != nil {
		t.Fatal(err)
	}
	if n := openBelow(t, dirs); n != 0 {
		t.Errorf("%d counter files still open after Remove", n)
	}
	if _, err := d.Stats(g); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stats of a removed guest: %v, want ENOENT", err)
	}
	if n := openBelow(t, dirs); n != 0 {
		t.Errorf("%d counter files open after Stats of a removed guest", n)
	}
}
