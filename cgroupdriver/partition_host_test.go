package cgroupdriver_test

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/corral-dev/corral/cgroupdriver"
)

// TestHostPartition: a partition's group exists on every hierarchy with
// its limits, a guest created in it runs beneath it (its /proc/PID/cgroup
// paths), a hand edit of cpu.shares shows as drift and ApplyPartition puts
// it back, RemovePartition refuses while the guest's group is there and
// then removes the partition's groups everywhere.
func TestHostPartition(t *testing.T) {
	d, _ := hostDriver(t)
	r := cgroupdriver.Resources{CPUShares: new(uint64(2048)), MemoryHardLimit: new(int64(64 << 20)), PidsMax: new(int64(32))}
	ws, err := d.ApplyPartition("gold", r)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 3 {
		t.Errorf("ApplyPartition wrote %+v, want three limits", ws)
	}
	dirs, err := d.PartitionDirs("gold")
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range dirs {
		if _, err := os.Stat(dir); err != nil {
			t.Fatalf("partition group missing: %v", err)
		}
		if !strings.HasSuffix(dir, "/corral/partitions/gold") {
			t.Errorf("partition group %s is not <root>/corral/partitions/gold", dir)
		}
	}
	for _, w := range ws {
		b, err := os.ReadFile(w.Path())
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(b)); got != w.Value {
			t.Errorf("%s = %q, want %q", w.Path(), got, w.Value)
		}
		t.Logf("%s = %s", w.Path(), w.Value)
	}
	// The files the host took: cgroup v1's where the controller is on v1.
	var sharesFile string
	for _, w := range ws {
		if w.Knob == "cpu_shares" {
			sharesFile = w.Path()
		}
	}
	if filepath.Base(sharesFile) == "cpu.shares" {
		checkFile(t, sharesFile, "2048")
	}
	for _, w := range ws {
		if w.File == "memory.limit_in_bytes" {
			checkFile(t, w.Path(), strconv.Itoa(64<<20))
		}
	}

	// A guest in the partition lives beneath it everywhere.
	g := cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "tenant", Partition: "gold"}
	if err := d.Create(g); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Remove(ctx(t), g) })
	cmd, _ := start(t, d, g, nil, "sleep", "1000")
	b, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	paths, err := d.Paths(g)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range paths {
		if !strings.HasPrefix(p, dirs[i]+"/process/") {
			t.Errorf("guest group %s is not beneath %s", p, dirs[i])
		}
	}
	beneath := 0
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if strings.Contains(line, "/corral/partitions/gold/process/tenant") {
			beneath++
		} else if strings.Contains(line, "/corral/") {
			t.Errorf("pid %d outside the partition: %s", cmd.Process.Pid, line)
		}
	}
	if beneath != len(paths) {
		t.Errorf("pid %d is beneath the partition in %d hierarchies, want %d:\n%s", cmd.Process.Pid, beneath, len(paths), b)
	}

	// Drift is seen, and repaired by applying again.
	if err := os.WriteFile(sharesFile, []byte("100"), 0o644); err != nil {
		t.Fatal(err)
	}
	obs, err := d.ObservePartition("gold", r)
	if err != nil {
		t.Fatal(err)
	}
	drifted := 0
	for _, o := range obs {
		if o.Drift {
			drifted++
			if o.Knob != "cpu_shares" {
				t.Errorf("drift in %s, which nobody touched: %+v", o.Knob, o)
			}
		}
	}
	if drifted != 1 {
		t.Errorf("ObservePartition after a hand edit of cpu shares: %+v, want one drift", obs)
	}
	if _, err := d.ApplyPartition("gold", r); err != nil {
		t.Fatal(err)
	}
	if obs, _ := d.ObservePartition("gold", r); len(obs) == 0 || obs[0].Drift {
		t.Errorf("after repair: %+v", obs)
	}

	// A partition with a guest in it stays.
	err = d.RemovePartition("gold")
	if !errors.Is(err, cgroupdriver.ErrPartitionInUse) || !strings.Contains(err.Error(), "process/tenant") {
		t.Fatalf("RemovePartition with a guest in it: %v, want ErrPartitionInUse naming process/tenant", err)
	}
	if names, err := d.Partitions(); err != nil || len(names) != 1 || names[0] != "gold" {
		t.Errorf("Partitions() = %v, %v, want [gold]", names, err)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if err := d.Remove(ctx(t), g); err != nil {
		t.Fatal(err)
	}
	if err := d.RemovePartition("gold"); err != nil {
		t.Fatal(err)
	}
	for _, dir := range dirs {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there after RemovePartition: %v", dir, err)
		}
	}
	if names, _ := d.Partitions(); len(names) != 0 {
		t.Errorf("Partitions() after removal = %v", names)
	}
	// The partitions' directory is neither an orphan nor removable as one.
	if orphans, err := d.Orphans(nil); err != nil || len(orphans) != 0 {
		t.Errorf("Orphans = %v, %v; the partitions' directory must not be one", orphans, err)
	}
}

// TestPartitionRefusesGuestKnobs: a partition takes only its knobs, and
// its name follows the guest ID rule.
func TestPartitionRefusesGuestKnobs(t *testing.T) {
	d, _ := hostDriver(t)
	if _, err := d.PlanPartition("gold", cgroupdriver.Resources{CPUQuotaUs: new(int64(50000))}); !errors.Is(err, cgroupdriver.ErrInvalidPartition) || !strings.Contains(err.Error(), "vcpu_quota") {
		t.Errorf("vcpu_quota on a partition: %v", err)
	}
	if _, err := d.PlanPartition("../x", cgroupdriver.Resources{}); !errors.Is(err, cgroupdriver.ErrInvalidPartition) {
		t.Errorf("partition ../x: %v", err)
	}
	if err := (cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "a", Partition: "A/b"}).Validate(); err == nil {
		t.Error("a guest in partition A/b validated")
	}
}

func checkFile(t *testing.T, path, want string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != want {
		t.Errorf("%s = %q, want %q", path, got, want)
	}
}
