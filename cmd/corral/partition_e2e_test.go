package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/coordinator"
	"github.com/corral-dev/corral/coordinator/api"
)

// TestDevPartition: a partition created through corral dev becomes a group
// under the agent's corral root on every controller, with its limits; a
// guest created in it runs beneath it; a hand edit of its cpu.shares is
// put back; it cannot be deleted while the guest is in it; once the guest
// is destroyed it is deleted and its group goes.
func TestDevPartition(t *testing.T) {
	p, cg := startAgentDev(t, []string{"tenant-web"}, "--usage-interval", "1s")
	p.ok("partition", "create", "gold", "--cpu-shares", "2048", "--memory", "64MiB", "--pids-max", "64")
	dirs, err := cg.PartitionDirs("gold")
	if err != nil {
		t.Fatal(err)
	}
	coordinator.WaitFor(t, waitTimeout, "the partition's groups", func() bool {
		for _, d := range dirs {
			if _, err := os.Stat(d); err != nil {
				return false
			}
		}
		return true
	})
	// This host's files: cgroup v1's where the controller is on v1.
	sharesFile, memFile, shares := "cpu.weight", "memory.max", strconv.FormatUint(cgroupdriver.SharesToWeight(2048), 10)
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "cpu.shares")); err == nil {
			sharesFile, shares = "cpu.shares", "2048"
		}
		if _, err := os.Stat(filepath.Join(d, "memory.limit_in_bytes")); err == nil {
			memFile = "memory.limit_in_bytes"
		}
	}
	const mem = "67108864"
	waitFile(t, dirs, sharesFile, shares)
	waitFile(t, dirs, memFile, mem)
	waitFile(t, dirs, "pids.max", "64")

	if r := p.corral("guest", "create", "lost", "--driver", "process", "--memory", "32MiB", "--partition", "nope", "--", "/bin/sleep", "1000"); r.code == 0 ||
		!strings.Contains(r.stderr, `partition "nope" does not exist`) {
		t.Errorf("guest create in a missing partition: exit %d, stderr %s", r.code, r.stderr)
	}
	p.ok("guest", "create", "tenant-web", "--driver", "process", "--memory", "32MiB", "--partition", "gold", "--", "/bin/sleep", "1000")
	g := waitGuest(t, p, "tenant-web", "ran", func(g *api.GuestView) bool { return g.Status == api.StatusRunning && g.PID > 0 })
	if g.Partition != "gold" {
		t.Errorf("guest show: partition %q, want gold", g.Partition)
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(g.PID) + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	in := 0
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || !strings.Contains(parts[2], "/corral/") {
			continue // a hierarchy the agent does not drive
		}
		if !strings.HasSuffix(parts[2], "/corral/partitions/gold/process/tenant-web") {
			t.Errorf("pid %d is not beneath the partition in %s", g.PID, line)
		}
		in++
	}
	if in == 0 {
		t.Errorf("pid %d is in no corral group:\n%s", g.PID, b)
	}

	// Drift: a hand edit of the partition's cpu.shares is put back.
	var file string
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, sharesFile)); err == nil {
			file = filepath.Join(d, sharesFile)
		}
	}
	if err := os.WriteFile(file, []byte("100"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFile(t, dirs, sharesFile, shares)

	// The node reports what it holds.
	coordinator.WaitFor(t, waitTimeout, "partition show lists the node's applied limits", func() bool {
		out := p.corral("partition", "show", "gold").stdout
		return strings.Contains(out, "test-node") && strings.Contains(out, "cpu_shares=2048")
	})
	if out := p.ok("partition", "list"); !strings.Contains(out, "gold") || !strings.Contains(out, "hard_limit=67108864") {
		t.Errorf("partition list:\n%s", out)
	}

	if r := p.corral("partition", "delete", "gold"); r.code == 0 || !strings.Contains(r.stderr, "tenant-web") {
		t.Errorf("partition delete with a guest in it: exit %d, stderr %s", r.code, r.stderr)
	}
	p.ok("guest", "destroy", "tenant-web")
	gdirs, _ := cg.Paths(cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "tenant-web", Partition: "gold"})
	waitNoDirs(t, gdirs)
	p.ok("partition", "delete", "gold")
	waitNoDirs(t, dirs)
	if r := p.corral("partition", "show", "gold"); r.code == 0 {
		t.Errorf("partition show after delete: exit 0\n%s", r.stdout)
	}
}

// waitNoDirs waits until none of dirs exists.
func waitNoDirs(t *testing.T, dirs []string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		left := ""
		for _, d := range dirs {
			if _, err := os.Stat(d); err == nil {
				left = d
			}
		}
		if left == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still exists", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
