package cgroupdriver_test

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
)

// lockedThreads is the "threads N" helper: a stand-in for QEMU with N
// vCPU threads. It starts N goroutines, each locked to an OS thread of
// its own, prints each thread's id on a line of its own, and exits when
// its standard input closes.
func lockedThreads(args []string) int {
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 1 {
		fmt.Fprintln(os.Stderr, "threads: want a count, got", args)
		return 2
	}
	tids := make(chan int)
	for range n {
		go func() {
			runtime.LockOSThread()
			tids <- unix.Gettid()
			select {} // never unlocked: the thread stays this goroutine's
		}()
	}
	for range n {
		fmt.Println(<-tids)
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// TestPlaceThreadsV2Host builds a QEMU guest's per-vCPU groups on this
// host's cgroup2 with a driver that sees the unified hierarchy alone: the
// children are threaded groups, each vCPU's thread is alone in its vcpuN
// group (moved through cgroup.threads), every other thread is in
// emulator, the guest's group stays the domain that lists the process, and
// Remove takes the threaded subtree down, children first. cpu.max and
// cpuset.cpus in the children are not written here: this host's cgroup2
// offers no cpu or cpuset controller (see TestThreadsPlanGolden for them).
func TestPlaceThreadsV2Host(t *testing.T) {
	rep := cgrouptest.RequireHost(t)
	u, ok := rep.Unified()
	if !ok {
		t.Skip("skipping: this host has no cgroup2 hierarchy")
	}
	v2 := cgroupdriver.Report{Mode: cgroupdriver.ModeV2, Hierarchies: []cgroupdriver.Hierarchy{u}}
	d := hostDriverFor(t, v2)
	g := cgroupdriver.Guest{Kind: cgroupdriver.KindQEMU, ID: "threads"}
	if err := d.Create(g); err != nil {
		t.Fatalf("Create: %v", err)
	}
	dirs, err := d.Paths(g)
	if err != nil || len(dirs) != 1 {
		t.Fatalf("guest groups %v, %v; want one in the unified hierarchy", dirs, err)
	}
	dir := dirs[0]
	if got := readHost(t, dir+"/cgroup.type"); got != "domain" {
		t.Fatalf("%s/cgroup.type = %q before placing, want domain", dir, got)
	}

	const vcpus = 3
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, strconv.Itoa(vcpus))
	cmd.Env = append(os.Environ(), helperEnv+"=threads")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(cmd, g); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	threads := map[int]int{}
	sc := bufio.NewScanner(stdout)
	for n := range vcpus {
		if !sc.Scan() {
			t.Fatalf("helper printed %d thread ids of %d: %v", n, vcpus, sc.Err())
		}
		tid, err := strconv.Atoi(sc.Text())
		if err != nil {
			t.Fatalf("helper printed %q, want a thread id", sc.Text())
		}
		threads[n] = tid
	}
	pid := cmd.Process.Pid

	// A thread that is not the guest's is refused, and nothing moves.
	if err := d.PlaceThreads(g, map[int]int{0: threads[0], 1: unix.Gettid()}); err == nil || !strings.Contains(err.Error(), "refusing to move it") {
		t.Fatalf("PlaceThreads with a thread of the test itself = %v, want a refusal", err)
	}
	if got := fields(t, dir+"/cgroup.threads"); len(got) < vcpus+1 {
		t.Fatalf("%s/cgroup.threads = %v after a refused placement, want every thread of the helper still there", dir, got)
	}

	if err := d.PlaceThreads(g, threads); err != nil {
		t.Fatalf("PlaceThreads: %v", err)
	}
	check := func(when string) {
		t.Helper()
		for n, tid := range threads {
			sub := filepath.Join(dir, cgroupdriver.VCPUGroup(n))
			if got := fields(t, sub+"/cgroup.threads"); !slices.Equal(got, []string{strconv.Itoa(tid)}) {
				t.Errorf("%s: %s/cgroup.threads = %v, want exactly thread %d", when, sub, got, tid)
			}
		}
		for _, sub := range []string{cgroupdriver.VCPUGroup(0), cgroupdriver.VCPUGroup(vcpus - 1), cgroupdriver.EmulatorGroup} {
			if got := readHost(t, filepath.Join(dir, sub, "cgroup.type")); got != "threaded" {
				t.Errorf("%s: %s/cgroup.type = %q, want threaded", when, sub, got)
			}
		}
		if got := readHost(t, dir+"/cgroup.type"); got != "domain threaded" {
			t.Errorf("%s: %s/cgroup.type = %q, want domain threaded", when, dir, got)
		}
		if got := fields(t, dir+"/cgroup.threads"); len(got) != 0 {
			t.Errorf("%s: %s/cgroup.threads = %v, want no thread left in the guest's own group", when, dir, got)
		}
		// The process is accounted to the guest's group, the domain.
		if got := fields(t, dir+"/cgroup.procs"); !slices.Equal(got, []string{strconv.Itoa(pid)}) {
			t.Errorf("%s: %s/cgroup.procs = %v, want the helper %d", when, dir, got, pid)
		}
		emu := fields(t, filepath.Join(dir, cgroupdriver.EmulatorGroup, "cgroup.threads"))
		if len(emu) == 0 {
			t.Errorf("%s: emulator/cgroup.threads is empty, want the helper's other threads", when)
		}
		// The Go runtime may start threads meanwhile, from threads in
		// emulator: every thread that is not a vCPU's is there.
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range tasks {
			tid, _ := strconv.Atoi(e.Name())
			if slices.Contains(slices.Collect(maps.Values(threads)), tid) {
				continue
			}
			if !slices.Contains(fields(t, filepath.Join(dir, cgroupdriver.EmulatorGroup, "cgroup.threads")), e.Name()) {
				if _, err := os.Stat(fmt.Sprintf("/proc/%d/task/%s", pid, e.Name())); err == nil {
					t.Errorf("%s: thread %s of the helper is not in emulator (%v)", when, e.Name(), emu)
				}
			}
		}
	}
	check("placed")
	t.Logf("vCPU threads %v each alone in a threaded vcpuN group; emulator holds %v",
		threads, fields(t, filepath.Join(dir, cgroupdriver.EmulatorGroup, "cgroup.threads")))
	if pids, err := d.Pids(g); err != nil || !slices.Equal(pids, []int{pid}) {
		t.Errorf("Pids = %v, %v; want [%d] (threaded children are not read for processes)", pids, err, pid)
	}
	// Placing again, as for an adopted guest, changes nothing.
	if err := d.PlaceThreads(g, threads); err != nil {
		t.Fatalf("PlaceThreads again: %v", err)
	}
	check("placed twice")
	// What the plan writes there now, on a cgroup2 without cpu: nothing
	// for the vCPUs, and a clear refusal for a quota.
	var r cgroupdriver.Resources
	if err := r.SetKnob("vcpu_quota", "50000"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Plan(g, r); err == nil || !strings.Contains(err.Error(), "cpu") {
		t.Errorf("Plan vcpu_quota on a cgroup2 without cpu = %v, want a refusal naming the cpu controller", err)
	}

	// Remove kills the guest and removes its threaded subtree.
	if err := d.Remove(ctx(t), g); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	for _, p := range []string{filepath.Join(dir, cgroupdriver.EmulatorGroup), filepath.Join(dir, "vcpu0"), dir} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s after Remove: %v, want it gone", p, err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("helper %d still running 10s after Remove", pid)
	}
}

func fields(t testing.TB, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}
