package driver_test

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/nodeagent/driver"
	"github.com/corral-dev/corral/nodeagent/driver/drivertest"
)

// TestLXCInitPinned: a waiting spare init holds all its threads on one
// CPU (its exec is then cheap), and the container's command it becomes
// runs on the CPUs this process may use, as one started without a spare
// does, or on its cpuset's when it has one.
func TestLXCInitPinned(t *testing.T) {
	var mine unix.CPUSet
	if err := unix.SchedGetaffinity(0, &mine); err != nil {
		t.Fatal(err)
	}
	if mine.Count() < 2 {
		t.Skip("one CPU: nothing to pin")
	}
	want := cpusAllowed(t, "self")
	rootfs := drivertest.Rootfs(t)
	d := driver.NewLXC(drivertest.Config(t))
	t.Cleanup(d.Unprepare)
	ct := func(prefix string) driver.Spec {
		s := spec(t, cgroupdriver.KindLXC, prefix)
		s.Rootfs, s.MemoryBytes, s.Command = rootfs, 64<<20, []string{"/bin/sleep", "1000"}
		return s
	}
	fresh := start(t, d, ct("fresh"))
	if got := cpusAllowed(t, strconv.Itoa(fresh.PID())); got != want {
		t.Errorf("command of an init of its own may run on %q, want %q as this process", got, want)
	}
	d.Prepare()
	var pid int
	waitFor(t, "a spare init", 10*time.Second, func() bool { pid = driver.SparePID(d); return pid != 0 })
	waitFor(t, "the spare's threads on one CPU", 10*time.Second, func() bool {
		ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
		if err != nil || len(ents) == 0 {
			return false
		}
		for _, e := range ents {
			l := cpusAllowed(t, strconv.Itoa(pid)+"/task/"+e.Name())
			if strings.ContainsAny(l, ",-") {
				return false
			}
		}
		return true
	})
	spared := start(t, d, ct("spare"))
	if spared.PID() != pid {
		t.Fatalf("the container is pid %d, want the spare's %d", spared.PID(), pid)
	}
	if got := cpusAllowed(t, strconv.Itoa(pid)); got != want {
		t.Errorf("command of a spare may run on %q, want %q as this process", got, want)
	}

	// A guest pinned away from the CPU its spare holds runs where its
	// cpuset says.
	d.Prepare()
	waitFor(t, "another spare init", 10*time.Second, func() bool { pid = driver.SparePID(d); return pid != 0 })
	var held string
	waitFor(t, "the spare on one CPU", 10*time.Second, func() bool {
		held = cpusAllowed(t, strconv.Itoa(pid))
		return !strings.ContainsAny(held, ",-")
	})
	other := -1
	for c := range len(mine) * 64 {
		if mine.IsSet(c) && strconv.Itoa(c) != held {
			other = c
			break
		}
	}
	s := ct("pinned")
	s.Resources.CpusetCPUs = strconv.Itoa(other)
	pinned := start(t, d, s)
	if pinned.PID() != pid {
		t.Fatalf("the pinned container is pid %d, want the spare's %d", pinned.PID(), pid)
	}
	if got := cpusAllowed(t, strconv.Itoa(pid)); got != strconv.Itoa(other) {
		t.Errorf("command of a spare held on CPU %s with cpuset %d may run on %q, want %d", held, other, got, other)
	}
}

// cpusAllowed is /proc/<of>/status's Cpus_allowed_list.
func cpusAllowed(t *testing.T, of string) string {
	t.Helper()
	for l := range strings.Lines(readFile(t, "/proc/"+of+"/status")) {
		if v, ok := strings.CutPrefix(l, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no Cpus_allowed_list in /proc/%s/status", of)
	return ""
}
