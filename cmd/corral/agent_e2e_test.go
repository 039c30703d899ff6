package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
)

func guestView(t *testing.T, p *devProcess, name string) *api.GuestView {
	t.Helper()
	var g api.GuestView
	if err := json.Unmarshal([]byte(p.ok("guest", "show", name, "-o", "json")), &g); err != nil {
		t.Fatal(err)
	}
	return &g
}

func waitGuest(t *testing.T, p *devProcess, name, what string, cond func(*api.GuestView) bool) *api.GuestView {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		g := guestView(t, p, name)
		if cond(g) {
			return g
		}
		if time.Now().After(deadline) {
			t.Fatalf("guest %s never %s: %+v", name, what, g.Guest)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// groupFile reads a file of the guest's group from the hierarchy that has
// it.
func groupFile(t *testing.T, dirs []string, file string) string {
	t.Helper()
	for _, d := range dirs {
		if b, err := os.ReadFile(filepath.Join(d, file)); err == nil {
			return strings.TrimSpace(string(b))
		}
	}
	t.Fatalf("no group of %v has %s", dirs, file)
	return ""
}

// TestDevAgentRunsGuests drives corral dev with its node agent on this
// host's real cgroups: a process guest runs in its groups with the asked
// cpu_shares and memory limit, schedinfo changes the file, usage flows,
// a guest that allocates past its limit is OOM-killed and says so, and
// destroy leaves nothing.
func TestDevAgentRunsGuests(t *testing.T) {
	p, cg := startAgentDev(t, []string{"web", "hog"}, "--usage-interval", "300ms")

	p.ok("guest", "create", "web", "--driver", "process", "--memory", "64MiB", "--cpu-shares", "1024", "--", "/bin/sleep", "1000")
	g := waitGuest(t, p, "web", "ran", func(g *api.GuestView) bool { return g.Status == api.StatusRunning && g.PID > 0 })
	dirs, err := cg.Paths(cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "web"})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		procs := strings.Fields(groupFile(t, []string{d}, "cgroup.procs"))
		if !slices.Contains(procs, strconv.Itoa(g.PID)) {
			t.Errorf("pid %d is not in %s/cgroup.procs %v", g.PID, d, procs)
		}
	}
	if v := groupFile(t, dirs, "cpu.shares"); v != "1024" {
		t.Errorf("cpu.shares = %s, want 1024", v)
	}
	if v := groupFile(t, dirs, "memory.limit_in_bytes"); v != strconv.Itoa(64<<20) {
		t.Errorf("memory.limit_in_bytes = %s, want %d", v, 64<<20)
	}

	// Tuning goes through the log to the file, and the agent says what it wrote.
	p.ok("schedinfo", "web", "--set", "cpu_shares=500")
	waitGuest(t, p, "web", "applied cpu_shares 500", func(g *api.GuestView) bool { return g.Applied["cpu_shares"] == "500" })
	if v := groupFile(t, dirs, "cpu.shares"); v != "500" {
		t.Errorf("cpu.shares after schedinfo = %s, want 500", v)
	}
	if out := p.ok("guest", "history", "web"); !strings.Contains(out, "1024 → 500") || !strings.Contains(out, "guest.tuning_applied") {
		t.Errorf("history lacks the tuning and its application:\n%s", out)
	}
	// Usage events flow for it.
	waitGuest(t, p, "web", "reported usage", func(g *api.GuestView) bool { return g.Usage != nil && g.Usage.MemoryBytes > 0 })

	// Suspend freezes the guest's groups; resume thaws them.
	p.ok("guest", "suspend", "web")
	waitFile(t, dirs, "freezer.state", "FROZEN")
	if g := guestView(t, p, "web"); !g.Paused {
		t.Error("guest show does not say the guest is paused")
	}
	p.ok("guest", "resume", "web")
	waitFile(t, dirs, "freezer.state", "THAWED")

	// A guest that allocates past its limit is OOM-killed, and says so.
	p.ok("guest", "create", "hog", "--driver", "process", "--memory", "16MiB", "--", "/bin/dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1")
	hog := waitGuest(t, p, "hog", "ended", func(g *api.GuestView) bool { return g.Status == api.StatusExited })
	if hog.LastExit == nil || !hog.LastExit.OOMKilled {
		t.Errorf("hog ended without an OOM kill: %+v", hog.LastExit)
	}

	// Stop, then destroy: the process ends and no group is left.
	p.ok("guest", "stop", "web")
	waitGuest(t, p, "web", "stopped", func(g *api.GuestView) bool { return g.Status == api.StatusExited })
	if err := syscall.Kill(g.PID, 0); err == nil {
		t.Errorf("pid %d still runs after stop", g.PID)
	}
	p.ok("guest", "destroy", "web")
	p.ok("guest", "destroy", "hog")
	deadline := time.Now().Add(waitTimeout)
	for _, d := range dirs {
		for {
			if _, err := os.Stat(d); os.IsNotExist(err) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("group %s left after destroy", d)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// waitFile waits until a file of the guest's group holds want.
func waitFile(t *testing.T, dirs []string, file, want string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		got := groupFile(t, dirs, file)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is %q, want %q", file, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// TestDevAgentBadGuests: a guest the host cannot start ends failed with the
// reason in an event, and the agent lives on to run the next one.
func TestDevAgentBadGuests(t *testing.T) {
	p, _ := startAgentDev(t, []string{"nocmd", "norootfs", "nokernel", "good"}, "--qemu-accel", "tcg")
	p.ok("operator", "scheduler", "set-config", "--cpu-overcommit", "8")
	p.ok("guest", "create", "nocmd", "--driver", "process", "--memory", "32MiB", "--", "/no/such/command")
	p.ok("guest", "create", "norootfs", "--driver", "lxc", "--memory", "32MiB", "--rootfs", "/no/such/rootfs", "--", "/bin/sh")
	p.ok("guest", "create", "nokernel", "--driver", "qemu", "--memory", "128MiB", "--kernel", "/no/such/vmlinuz")
	for _, n := range []string{"nocmd", "norootfs", "nokernel"} {
		g := waitGuest(t, p, n, "failed", func(g *api.GuestView) bool { return g.Status == api.StatusFailed })
		if g.LastExit == nil || g.LastExit.Error == "" {
			t.Errorf("%s failed without a reason: %+v", n, g.LastExit)
			continue
		}
		if out := p.ok("events", "--guest", n, "--type", "guest.exited", "-o", "json"); !strings.Contains(out, "no/such") {
			t.Errorf("%s: the exit event does not name what was missing: %s", n, out)
		}
	}
	p.ok("guest", "create", "good", "--driver", "process", "--memory", "32MiB", "--", "/bin/sleep", "1000")
	waitGuest(t, p, "good", "ran", func(g *api.GuestView) bool { return g.Status == api.StatusRunning })
}

// startAgentDev starts corral dev with its node agent on a fresh cgroup
// partition of this host, and returns it with a driver on that partition.
// When the test ends it destroys the named process guests, waits for their
// groups to go and stops corral dev, before the partition is checked.
func startAgentDev(t *testing.T, guests []string, extra ...string) (*devProcess, *cgroupdriver.Driver) {
	t.Helper()
	rep := cgrouptest.RequireHost(t)
	part := cgrouptest.NewPartition(t, rep)
	ccfg := cgroupdriver.DefaultConfig()
	ccfg.Partition, ccfg.Report = part, &rep
	cg, err := cgroupdriver.New(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	p := startDevWith(t, t.TempDir(), append([]string{"--cgroup-partition", part}, extra...)...)
	t.Cleanup(func() {
		for _, name := range guests {
			p.corral("guest", "destroy", name)
		}
		for _, name := range guests {
			waitGone(t, cg, name)
		}
		p.stop(syscall.SIGTERM, waitTimeout)
	})
	return p, cg
}

// TestDevAgentPinsCPUs: a guest created with --cpuset runs with exactly
// those CPUs in its cpuset group on this host, and a hand edit of the file
// is put back by the agent and recorded as drift.
func TestDevAgentPinsCPUs(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("needs two CPUs to pin one and move it to the other")
	}
	p, cg := startAgentDev(t, []string{"pinned"})
	p.ok("guest", "create", "pinned", "--driver", "process", "--memory", "32MiB", "--cpuset", "1", "--", "/bin/sleep", "1000")
	g := waitGuest(t, p, "pinned", "ran", func(g *api.GuestView) bool { return g.Status == api.StatusRunning && g.PID > 0 })
	if g.CPUs != "1" {
		t.Fatalf("the log placed the guest on CPUs %q, want 1", g.CPUs)
	}
	dirs, err := cg.Paths(cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "pinned"})
	if err != nil {
		t.Fatal(err)
	}
	waitFile(t, dirs, "cpuset.cpus", "1")
	if status, err := os.ReadFile("/proc/" + strconv.Itoa(g.PID) + "/status"); err != nil || !strings.Contains(string(status), "Cpus_allowed_list:\t1\n") {
		t.Errorf("pid %d may run on other CPUs than 1: %v\n%s", g.PID, err, status)
	}
	waitGuest(t, p, "pinned", "applied cpuset_cpus 1", func(g *api.GuestView) bool { return g.Applied["cpuset_cpus"] == "1" })

	var file string
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "cpuset.cpus")); err == nil {
			file = filepath.Join(d, "cpuset.cpus")
		}
	}
	if err := os.WriteFile(file, []byte("0"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFile(t, dirs, "cpuset.cpus", "1")
	var drift []string
	coordinator.WaitFor(t, waitTimeout, "a guest.drift event for cpuset_cpus", func() bool {
		drift = eventLines(t, p, "--guest", "pinned", "--type", "guest.drift")
		return len(drift) > 0
	})
	e := checkEventLine(t, drift[0])
	d, ok := e.Payload.(*events.GuestDrift)
	if !ok || d.Knob != "cpuset_cpus" || d.Expected != "1" || d.Found != "0" || !d.Corrected {
		t.Errorf("drift event = %s", drift[0])
	}
}

// TestDevAgentReserve: corral dev's agent with --reserve-memory and
// --reserve-cpus moves itself, and the fencer it starts, into
// <partition>/corral/agent, and caps the corral root that holds them and
// every guest at the host's memory and CPUs minus the reserve. Freezing the
// guests' kind directories, as the fencer does, leaves the agent and the
// fencer running; guests still get their own groups below the root; and
// the RESERVED column shows the reserve.
func TestDevAgentReserve(t *testing.T) {
	reserveCPUs := 1
	if runtime.NumCPU() < 2 {
		reserveCPUs = 0
	}
	p, cg := startAgentDev(t, []string{"web"}, "--reserve-memory", "1GiB", "--reserve-cpus", strconv.Itoa(reserveCPUs))
	if out := p.ok("node", "list"); !strings.Contains(out, "1GiB, "+strconv.Itoa(reserveCPUs)+" CPU") {
		t.Errorf("node list does not show the reserve:\n%s", out)
	}
	agentDirs := cg.AgentDirs()
	procsOf := func(dir string) []string { return strings.Fields(groupFile(t, []string{dir}, "cgroup.procs")) }
	var info struct {
		PID int `json:"pid"`
	}
	b, err := os.ReadFile(filepath.Join(p.dataDir, "agent", "fence", "fencer.json"))
	if err != nil || json.Unmarshal(b, &info) != nil || info.PID <= 0 {
		t.Fatalf("no fencer record (%v): %s", err, b)
	}
	for _, d := range agentDirs {
		procs := procsOf(d)
		for what, pid := range map[string]int{"the agent": p.cmd.Process.Pid, "the fencer": info.PID} {
			if !slices.Contains(procs, strconv.Itoa(pid)) {
				t.Errorf("%s (pid %d) is not in %s: %v", what, pid, d, procs)
			}
		}
	}

	roots := make([]string, len(agentDirs))
	for i, d := range agentDirs {
		roots[i] = filepath.Dir(d)
	}
	mem, err := hostMemory()
	if err != nil {
		t.Fatal(err)
	}
	page := int64(os.Getpagesize())
	if v, err := firstFile(roots, "memory.limit_in_bytes"); err != nil || v != strconv.FormatInt((mem-1<<30)/page*page, 10) {
		t.Errorf("memory.limit_in_bytes of the corral root = %q (%v), want host memory %d minus 1GiB", v, err, mem)
	}
	if v, err := firstFile(roots, "cpu.cfs_quota_us"); err == nil && reserveCPUs > 0 && v != strconv.Itoa((runtime.NumCPU()-reserveCPUs)*100000) {
		t.Errorf("cpu.cfs_quota_us of the corral root = %s, want %d CPUs' worth", v, runtime.NumCPU()-reserveCPUs)
	}

	p.ok("guest", "create", "web", "--driver", "process", "--memory", "32MiB", "--", "/bin/sleep", "1000")
	g := waitGuest(t, p, "web", "ran", func(g *api.GuestView) bool { return g.Status == api.StatusRunning && g.PID > 0 })
	dirs, err := cg.Paths(cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "web"})
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range dirs {
		if !strings.HasPrefix(d, roots[i]+"/process/") || !slices.Contains(procsOf(d), strconv.Itoa(g.PID)) {
			t.Errorf("the guest (pid %d) is not in its own group %s below %s", g.PID, d, roots[i])
		}
	}

	// Freeze the process kind directory as the fencer does: the guest
	// stops, the agent (with the server, under corral dev) and the fencer
	// do not.
	froze := false
	for _, root := range roots {
		kind := root + "/process/freezer.state"
		if _, err := os.Stat(kind); err != nil {
			continue
		}
		froze = true
		if err := os.WriteFile(kind, []byte("FROZEN"), 0); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.WriteFile(kind, []byte("THAWED"), 0) })
		waitFile(t, dirs, "freezer.state", "FROZEN")
		if v := groupFile(t, []string{root + "/agent"}, "freezer.state"); v != "THAWED" {
			t.Errorf("the agent's group is %s while the guests are frozen", v)
		}
		p.ok("node", "list") // answers: the agent's process is not frozen
		if err := syscall.Kill(info.PID, 0); err != nil {
			t.Errorf("the fencer is gone: %v", err)
		}
		if err := os.WriteFile(kind, []byte("THAWED"), 0); err != nil {
			t.Fatal(err)
		}
		waitFile(t, dirs, "freezer.state", "THAWED")
	}
	if !froze {
		t.Log("no v1 freezer hierarchy: freezing next to the agent's group is not tested here")
	}
	if b, err := os.ReadFile(p.logPath); err != nil || !strings.Contains(string(b), "every guest is capped") {
		t.Errorf("corral dev's log does not say what the reserve applied (%v)", err)
	} else if i := strings.Index(string(b), "the agent runs in its own group"); i >= 0 {
		line, _, _ := strings.Cut(string(b[i:]), "\n")
		t.Log(line)
	}
}

// firstFile reads the file from the first of dirs that has it.
func firstFile(dirs []string, file string) (string, error) {
	var err error
	for _, d := range dirs {
		var b []byte
		if b, err = os.ReadFile(filepath.Join(d, file)); err == nil {
			return strings.TrimSpace(string(b)), nil
		}
	}
	return "", err
}
