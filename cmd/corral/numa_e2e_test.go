package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/nodeagent/driver/drivertest"
)

// TestDevNumatuneAndPins drives numatune, emulatorpin and vcpupin through
// corral dev's agent on this host's real cgroups: a 2-vCPU VM under TCG
// gets its nodeset in cpuset.mems of its group and of its vcpuN and
// emulator groups, and its pins in their cpuset.cpus; guest show lists
// each knob applied as desired and guest history the guest.tuned rows.
// A live mode change, a pin of a process guest and a memory node the host
// lacks are refused with no event. A process guest whose --config mode is
// preferred runs, after a restart, with that memory policy (numa_maps).
func TestDevNumatuneAndPins(t *testing.T) {
	if testing.Short() {
		t.Skip("starts corral dev as a process")
	}
	p, cg := startAgentDev(t, []string{"nvm", "nproc"}, "--qemu-accel", "tcg")
	p.ok("operator", "scheduler", "set-config", "--cpu-overcommit", "8")
	a := drivertest.VM(t)
	p.ok("guest", "create", "nvm", "--driver", "qemu", "--memory", "128MiB", "--vcpus", "2", "--kernel", a.Kernel, "--initrd", a.Initramfs)
	p.ok("guest", "create", "nproc", "--driver", "process", "--memory", "32MiB", "--", "/bin/sleep", "1000")
	waitGuest(t, p, "nvm", "ran", func(g *api.GuestView) bool { return g.Status == api.StatusRunning && g.PID > 0 })
	pr := waitGuest(t, p, "nproc", "ran", func(g *api.GuestView) bool { return g.Status == api.StatusRunning && g.PID > 0 })

	// The VM's cpuset group, found from its guest.started event.
	dir := ""
	for _, line := range eventLines(t, p, "--guest", "nvm", "--type", "guest.started") {
		s, ok := checkEventLine(t, line).Payload.(*events.GuestStarted)
		if !ok {
			continue
		}
		for _, d := range s.Cgroups {
			if _, err := os.Stat(filepath.Join(d, "cpuset.mems")); err == nil {
				dir = d
			}
		}
	}
	if dir == "" {
		t.Fatal("the VM's guest.started names no cpuset group")
	}
	if _, err := os.Stat(filepath.Join(dir, "vcpu1", "cpuset.cpus")); err != nil {
		t.Skipf("this host makes no per-vCPU groups to pin (%v)", err)
	}
	if ps, _ := cg.Paths(cgroupdriver.Guest{Kind: cgroupdriver.KindQEMU, ID: "nvm"}); !slices.Contains(ps, dir) {
		t.Errorf("guest.started names %s, not one of the driver's groups %v", dir, ps)
	}
	cpus := groupFile(t, []string{dir}, "cpuset.cpus")
	last, err := lastID(cpus)
	if err != nil {
		t.Fatalf("the VM's cpuset.cpus %q: %v", cpus, err)
	}

	out := p.ok("numatune", "nvm", "--nodeset", "0")
	if !containsRow(out, "numa_mode", ":", "strict") || !containsRow(out, "numa_nodeset", ":", "0") {
		t.Errorf("numatune --nodeset 0 printed\n%s", out)
	}
	out = p.ok("emulatorpin", "nvm", "0")
	if !containsRow(out, "*:", "0") {
		t.Errorf("emulatorpin nvm 0 printed\n%s", out)
	}
	out = p.ok("vcpupin", "nvm", "1", last)
	if !containsRow(out, "1", last) || !containsRow(out, "0", "*") {
		t.Errorf("vcpupin nvm 1 %s printed\n%s", last, out)
	}
	t.Logf("numatune, emulatorpin and vcpupin printed:\n%s", out)
	for _, f := range []string{"cpuset.mems", "vcpu0/cpuset.mems", "vcpu1/cpuset.mems", "emulator/cpuset.mems"} {
		waitFile(t, []string{dir}, f, "0")
	}
	waitFile(t, []string{dir}, "emulator/cpuset.cpus", "0")
	waitFile(t, []string{dir}, "vcpu1/cpuset.cpus", last)
	if got := groupFile(t, []string{dir}, "vcpu0/cpuset.cpus"); got != cpus {
		t.Errorf("vcpu0/cpuset.cpus = %s, want the unpinned guest's %s", got, cpus)
	}

	// numa_mode is not set: strict, virsh's default, which the agent applies
	// as cpuset.mems with the nodeset and reports as numa_nodeset.
	want := map[string]string{"numa_nodeset": "0", "emulatorpin": "0", "vcpupin": "1:" + last}
	g := waitGuest(t, p, "nvm", "applied the knobs", func(g *api.GuestView) bool {
		for k, v := range want {
			if g.Knob(k) != v || g.Applied[k] != v {
				return false
			}
		}
		return true
	})
	if g.Knob("numa_mode") != "strict" {
		t.Errorf("numa_mode = %q, want the default strict", g.Knob("numa_mode"))
	}
	show := p.ok("guest", "show", "nvm")
	t.Logf("guest show nvm:\n%s", show)
	if !containsRow(show, "numa_mode", "strict", "/") {
		t.Errorf("guest show lacks numa_mode strict:\n%s", show)
	}
	for k, v := range want {
		if !containsRow(show, k, v, "/", v) {
			t.Errorf("guest show lacks %s %s / %s:\n%s", k, v, v, show)
		}
	}
	hist := p.ok("guest", "history", "nvm")
	t.Logf("guest history nvm:\n%s", hist)
	for _, cells := range [][]string{
		{"guest.tuned", "numa_nodeset", "unset", "→", "0"},
		{"guest.tuned", "emulatorpin", "→", "0"},
		{"guest.tuned", "vcpupin", "→", "1:" + last},
		{"guest.tuning_applied", "vcpupin", "1:" + last, "on", "test-node"},
	} {
		if !containsRow(hist, cells...) {
			t.Errorf("guest history lacks %v:\n%s", cells, hist)
		}
	}

	// Refusals: nothing is recorded.
	before := lastIndex(t, p)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"numatune", "nvm", "--mode", "interleave", "--live"}, `guest "nvm" runs in numa mode strict: a running guest's mode cannot change`},
		{[]string{"emulatorpin", "nproc", "0"}, "only QEMU guests have an emulator and vCPU threads to pin; nproc is a process guest"},
		{[]string{"numatune", "nvm", "--nodeset", "7"}, "names memory nodes 7, which node test-node does not have"},
	} {
		r := p.corral(c.args...)
		if r.code != 1 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("corral %s: exit %d, stderr %q; want exit 1 and %q", strings.Join(c.args, " "), r.code, r.stderr, c.want)
		}
	}
	if after := lastIndex(t, p); after != before {
		t.Errorf("refused tunings appended %d events", after-before)
	}
	if n := len(eventLines(t, p, "--guest", "nvm", "--type", "guest.tuned")); n != 3 {
		t.Errorf("%d guest.tuned events of nvm, want 3 (nodeset, emulatorpin, vcpupin)", n)
	}
	if got := groupFile(t, []string{dir}, "cpuset.mems"); got != "0" {
		t.Errorf("cpuset.mems = %s after the refusals, want 0", got)
	}

	// preferred, with --config: the running guest keeps its policy; the
	// next start gets it, inherited from the launch shim.
	if policy := numaPolicy(t, pr.PID); strings.Contains(policy, "prefer") {
		t.Errorf("the process guest prefers a node before numatune: %s", policy)
	}
	out = p.ok("numatune", "nproc", "--mode", "preferred", "--config")
	if !containsRow(out, "numa_mode", ":", "preferred") {
		t.Errorf("numatune --mode preferred --config printed\n%s", out)
	}
	p.ok("guest", "stop", "nproc")
	waitGuest(t, p, "nproc", "stopped", func(g *api.GuestView) bool { return g.Status == api.StatusExited })
	p.ok("guest", "start", "nproc")
	pr2 := waitGuest(t, p, "nproc", "ran again", func(g *api.GuestView) bool {
		if g.Status == api.StatusFailed {
			t.Fatalf("the process guest failed to start with numa_mode preferred: %+v", g.LastExit)
		}
		return g.Status == api.StatusRunning && g.PID > 0 && g.PID != pr.PID
	})
	// The guest's pid is the launch shim's until it has set the policy and
	// exec'd the guest's program.
	var comm []byte
	waitFor(t, "the launch shim to exec the guest's sleep", func() bool {
		comm, _ = os.ReadFile("/proc/" + strconv.Itoa(pr2.PID) + "/comm")
		return strings.TrimSpace(string(comm)) == "sleep"
	}, func() string { return fmt.Sprintf("pid %d is %q", pr2.PID, comm) })
	if policy := numaPolicy(t, pr2.PID); !strings.Contains(policy, "prefer:0") {
		t.Errorf("the restarted process guest's numa_maps say %q, want prefer:0", policy)
	}
	show = p.ok("guest", "show", "nproc")
	t.Logf("guest show nproc:\n%s", show)
	if !containsRow(show, "numa_mode", "preferred", "/", "preferred") || !containsRow(show, "numa_nodeset", "unset", "/", "-") {
		t.Errorf("guest show lacks numa_mode preferred / preferred and numa_nodeset unset:\n%s", show)
	}
	hist = p.ok("guest", "history", "nproc")
	t.Logf("guest history nproc:\n%s", hist)
	if !containsRow(hist, "guest.tuned", "numa_mode", "strict", "→", "preferred", "(config", "only)") {
		t.Errorf("guest history lacks numa_mode strict → preferred (config only):\n%s", hist)
	}
	var j map[string]any
	if err := json.Unmarshal([]byte(p.ok("numatune", "nproc", "-o", "json")), &j); err != nil || j["numa_mode"] != "preferred" {
		t.Errorf("numatune -o json = %v (%v), want numa_mode preferred", j, err)
	}
}

// numaPolicy is the policy field of the first mapping in pid's numa_maps.
func numaPolicy(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/numa_maps")
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	if f := strings.Fields(first); len(f) > 1 {
		return f[1]
	}
	t.Fatalf("numa_maps of %d: %q", pid, b)
	return ""
}

// lastID is the last CPU of a cpuset list.
func lastID(list string) (string, error) {
	parts := strings.Split(strings.TrimSpace(list), ",")
	p := parts[len(parts)-1]
	if i := strings.LastIndex(p, "-"); i >= 0 {
		p = p[i+1:]
	}
	_, err := strconv.Atoi(p)
	return p, err
}
