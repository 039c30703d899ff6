package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/coordinator"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/nodeagent/driver/drivertest"
)

// TestDevSetmaxmem drives setmaxmem against corral dev's agent on this
// host's real cgroups: --live is refused, the change waits for the next
// start (the running guest keeps its hard limit), setmem above the
// running maximum is refused, and after a restart the guest's memory
// cgroup's hard limit is the new maximum; lowering the maximum below the
// persistent balloon target lowers the target with it.
func TestDevSetmaxmem(t *testing.T) {
	if testing.Short() {
		t.Skip("starts corral dev as a process")
	}
	p, cg := startAgentDev(t, []string{"mx"}, "--usage-interval", "300ms")
	p.ok("guest", "create", "mx", "--driver", "process", "--memory", "64MiB", "--", "/bin/sleep", "1000")
	gv := waitGuest(t, p, "mx", "ran", func(g *api.GuestView) bool { return g.Status == api.StatusRunning && g.PID > 0 })
	dirs, err := cg.Paths(cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "mx"})
	if err != nil {
		t.Fatal(err)
	}
	waitFile(t, dirs, "memory.limit_in_bytes", strconv.Itoa(64<<20))

	if r := p.corral("setmaxmem", "mx", "128MiB", "--live"); r.code != 1 || !strings.Contains(r.stderr, "cannot change live") || !strings.Contains(r.stderr, "--config") {
		t.Errorf("setmaxmem --live: exit %d, stderr %q; want refused, pointing at --config", r.code, r.stderr)
	}
	r := p.corral("setmaxmem", "mx", "131072") // KiB, as virsh reads a plain number
	if r.code != 0 || !containsRow(r.stdout, "max_memory", ":", "128MiB") || !containsRow(r.stdout, "running_max", ":", "64MiB") {
		t.Fatalf("setmaxmem mx 131072: exit %d, stdout\n%s\nstderr %q", r.code, r.stdout, r.stderr)
	}
	if out := p.ok("guest", "show", "mx"); !containsRow(out, "Max", "memory:", "64MiB", "(next", "start:", "128MiB)") {
		t.Errorf("guest show lacks the maximum waiting for the next start:\n%s", out)
	}
	if v := groupFile(t, dirs, "memory.limit_in_bytes"); v != strconv.Itoa(64<<20) {
		t.Errorf("the running guest's hard limit became %s; it keeps its maximum %d until it stops", v, 64<<20)
	}
	before := len(eventLines(t, p, "--guest", "mx"))
	if r := p.corral("setmem", "mx", "96MiB"); r.code != 1 || !strings.Contains(r.stderr, "at most the guest's maximum memory, 64MiB") {
		t.Errorf("setmem above the running maximum: exit %d, stderr %q", r.code, r.stderr)
	}
	if after := len(eventLines(t, p, "--guest", "mx")); after != before {
		t.Errorf("the refused setmem appended %d events", after-before)
	}
	if r := p.corral("setmem", "mx", "96MiB", "--config"); r.code != 0 {
		t.Errorf("setmem 96MiB --config (within the next start's maximum): exit %d, stderr %q", r.code, r.stderr)
	}

	p.ok("guest", "stop", "mx")
	waitGuest(t, p, "mx", "stopped", func(g *api.GuestView) bool { return g.Status == api.StatusExited || g.Status == api.StatusFailed })
	p.ok("guest", "start", "mx")
	gv = waitGuest(t, p, "mx", "ran again", func(g *api.GuestView) bool {
		return g.Status == api.StatusRunning && g.PID > 0 && g.PID != gv.PID
	})
	waitFile(t, dirs, "memory.limit_in_bytes", strconv.Itoa(128<<20))
	waitFile(t, dirs, "memory.soft_limit_in_bytes", strconv.Itoa(96<<20))
	if out := p.ok("guest", "show", "mx"); !containsRow(out, "Max", "memory:", "128MiB", "(corral", "setmaxmem)") ||
		!containsRow(out, "Current", "memory:", "96MiB", "(corral", "setmem)") {
		t.Errorf("guest show after the restart:\n%s", out)
	}

	// Lowered below the persistent target, the target follows.
	r = p.corral("setmaxmem", "mx", "80MiB", "--config")
	if r.code != 0 || !containsRow(r.stdout, "max_memory", ":", "80MiB") || !containsRow(r.stdout, "memory", ":", "80MiB") {
		t.Errorf("setmaxmem 80MiB: exit %d, stdout\n%s\nstderr %q", r.code, r.stdout, r.stderr)
	}
	hist := p.ok("guest", "history", "mx")
	if !containsRow(hist, "guest.tuned", "max_memory", "128MiB", "→", "80MiB") || !containsRow(hist, "guest.tuned", "memory", "96MiB", "→", "80MiB") {
		t.Errorf("history lacks the lowered maximum and target:\n%s", hist)
	}
}

// TestDevSetmemEnforce is the balloon's stick on this host: two process
// guests hold 64 MiB of page cache each (they have no balloon, so they
// never comply by themselves) and are ballooned to 16 MiB. The one with
// --enforce on is pressed by reclaim after the balloon timeout: its usage
// falls to the target, its report says how much came back, its hard limit
// is put back and it keeps running. The other is left as it is.
func TestDevSetmemEnforce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts corral dev as a process")
	}
	p, cg := startAgentDev(t, []string{"pc-on", "pc-off"}, "--usage-interval", "300ms", "--balloon-timeout", "1s")
	dir := t.TempDir() // on a disk, not tmpfs: its pages are reclaimable cache
	usage := func(name string) int64 {
		st, err := cg.Stats(cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: name})
		if err != nil {
			t.Fatal(err)
		}
		return int64(st.Memory.Usage)
	}
	for _, name := range []string{"pc-on", "pc-off"} {
		file := filepath.Join(dir, name)
		p.ok("guest", "create", name, "--driver", "process", "--memory", "128MiB", "--", "/bin/sh", "-c",
			"head -c 67108864 /dev/zero >"+file+" && sync && echo CACHED && exec sleep 1000")
		waitGuest(t, p, name, "ran", func(g *api.GuestView) bool { return g.Status == api.StatusRunning && g.PID > 0 })
		coordinator.WaitFor(t, waitTimeout, name+" to hold its page cache", func() bool { return usage(name) > 56<<20 })
	}
	if r := p.corral("setmem", "pc-on", "16MiB", "--enforce", "on"); r.code != 0 || !containsRow(r.stdout, "enforce", ":", "on") {
		t.Fatalf("setmem pc-on 16MiB --enforce on: exit %d, stdout\n%s\nstderr %q", r.code, r.stdout, r.stderr)
	}
	if r := p.corral("setmem", "pc-off", "16MiB"); r.code != 0 || !containsRow(r.stdout, "enforce", ":", "off") {
		t.Fatalf("setmem pc-off 16MiB: exit %d, stdout\n%s\nstderr %q", r.code, r.stdout, r.stderr)
	}
	on := waitGuest(t, p, "pc-on", "pressed", func(g *api.GuestView) bool { return g.BalloonNoncompliant != nil })
	n := on.BalloonNoncompliant
	t.Logf("pc-on: held %s, pressed to 16MiB: %s came back, %s left (%s)", formatBytes(n.Usage), formatBytes(n.Reclaimed), formatBytes(n.UsageAfter), n.ReclaimError)
	if !n.Enforced || n.ReclaimError != "" || n.Reclaimed < 40<<20 || n.UsageAfter > 16<<20+events.BalloonTolerance(16<<20) {
		t.Errorf("pc-on's noncompliance = %+v; want enforced, most of 64 MiB reclaimed, at the target after", n)
	}
	waitGuest(t, p, "pc-on", "compliant after the press", func(g *api.GuestView) bool {
		return g.Balloon != nil && g.Balloon.Compliant && g.BalloonNoncompliant == nil
	})
	dirs, _ := cg.Paths(cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "pc-on"})
	if v := groupFile(t, dirs, "memory.limit_in_bytes"); v != strconv.Itoa(128<<20) {
		t.Errorf("pc-on's hard limit after the press = %s, want its 128MiB back", v)
	}
	if g := guestView(t, p, "pc-on"); g.Status != api.StatusRunning || (g.LastExit != nil && g.LastExit.OOMKilled) {
		t.Errorf("pc-on after the press: status %s, last exit %+v; it must keep running", g.Status, g.LastExit)
	}
	lines := eventLines(t, p, "--guest", "pc-on", "--type", "guest.balloon_noncompliant")
	if len(lines) != 1 || !checkEventLine(t, lines[0]).Payload.(*events.GuestBalloonNoncompliant).Enforced {
		t.Errorf("pc-on's noncompliance events: %q", lines)
	}

	off := waitGuest(t, p, "pc-off", "reported noncompliant", func(g *api.GuestView) bool { return g.BalloonNoncompliant != nil })
	if off.BalloonNoncompliant.Enforced || off.BalloonNoncompliant.Reclaimed != 0 {
		t.Errorf("pc-off was pressed without --enforce: %+v", off.BalloonNoncompliant)
	}
	u := usage("pc-off")
	t.Logf("pc-off (no --enforce): holds %s after its noncompliance", formatBytes(u))
	if u < 56<<20 {
		t.Errorf("pc-off holds %s; nothing should have pressed it", formatBytes(u))
	}
	// The compliant report cleared the noncompliance; the knob stays.
	if out := p.ok("guest", "show", "pc-on"); !containsRow(out, "balloon_enforce", "on") || !containsRow(out, "compliant", "true") {
		t.Errorf("guest show pc-on lacks balloon_enforce on and its compliance:\n%s", out)
	}
}

// TestDevBalloonMemory: the scheduler's balloon_memory option, set and
// read through the CLI, makes node show's ALLOCATED count a ballooned
// guest's target instead of its maximum.
func TestDevBalloonMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("starts corral dev as a process")
	}
	p, _ := startAgentDev(t, []string{"bm"}, "--usage-interval", "300ms")
	p.ok("guest", "create", "bm", "--driver", "process", "--memory", "96MiB", "--", "/bin/sleep", "1000")
	waitGuest(t, p, "bm", "ran", func(g *api.GuestView) bool { return g.Status == api.StatusRunning && g.PID > 0 })
	p.ok("setmem", "bm", "32MiB")
	if out := p.ok("node", "show", "test-node"); !containsRow(out, "Capacity:", "96MiB", "of") {
		t.Errorf("node show without balloon_memory does not count the maximum:\n%s", out)
	}
	if out := p.ok("operator", "scheduler", "get-config"); !containsRow(out, "balloon_memory", ":", "false") {
		t.Errorf("get-config before:\n%s", out)
	}
	p.ok("operator", "scheduler", "set-config", "--algorithm", "binpack", "--balloon-memory")
	if out := p.ok("operator", "scheduler", "get-config"); !containsRow(out, "balloon_memory", ":", "true") {
		t.Errorf("get-config after --balloon-memory:\n%s", out)
	}
	if out := p.ok("node", "show", "test-node"); !containsRow(out, "Capacity:", "32MiB", "of") {
		t.Errorf("node show with balloon_memory does not count the target:\n%s", out)
	}
}

// TestDevQEMUMemoryLimits checks the balloon's cgroup model on a VM booted
// under TCG on this host: the hard limit of its memory group is its
// maximum memory plus QEMU's room, ballooned to 64 MiB its soft limit is
// the target plus that room and the guest's balloon complies; raised with
// setmaxmem --config, the next start gets QEMU's -m and the hard limit of
// the new maximum.
func TestDevQEMUMemoryLimits(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM under corral dev")
	}
	a := drivertest.VM(t)
	p, cg := startAgentDev(t, []string{"vmm"}, "--qemu-accel", "tcg", "--usage-interval", "300ms")
	g := cgroupdriver.Guest{Kind: cgroupdriver.KindQEMU, ID: "vmm"}
	p.ok("guest", "create", "vmm", "--driver", "qemu", "--memory", "128MiB", "--kernel", a.Kernel, "--initrd", a.Initramfs)
	v := waitGuest(t, p, "vmm", "ran", func(g *api.GuestView) bool { return g.Status == api.StatusRunning && g.PID > 0 })
	dirs := requireInGroups(t, cg, g, v.PID)
	waitFile(t, dirs, "memory.limit_in_bytes", strconv.FormatInt(events.QEMUMemoryLimit(128<<20), 10))
	if args := qemuArgs(t, v.PID); !strings.Contains(args, " -m 128 ") {
		t.Errorf("QEMU runs with %q, want -m 128", args)
	}

	r := p.corral("setmem", "vmm", "64MiB")
	if r.code != 0 {
		t.Fatalf("setmem vmm 64MiB: exit %d, stderr %q", r.code, r.stderr)
	}
	waitFile(t, dirs, "memory.soft_limit_in_bytes", strconv.FormatInt(events.QEMUMemoryLimit(64<<20), 10))
	if got := groupFile(t, dirs, "memory.limit_in_bytes"); got != strconv.FormatInt(events.QEMUMemoryLimit(128<<20), 10) {
		t.Errorf("the balloon moved the hard limit to %s; it stays at max memory + QEMU's room", got)
	}
	// The balloon driver loads late in the guest's boot under TCG.
	var b *events.GuestBalloon
	coordinator.WaitFor(t, 3*waitTimeout, "a compliant guest.balloon for 64MiB", func() bool {
		gv := guestView(t, p, "vmm")
		b = gv.Balloon
		return b != nil && b.Compliant && b.Target == 64<<20
	})
	t.Logf("VM 128MiB ballooned to 64MiB: actual %s, memory cgroup usage %s; hard limit %s, soft limit %s",
		formatBytes(b.Actual), formatBytes(b.Usage), groupFile(t, dirs, "memory.limit_in_bytes"), groupFile(t, dirs, "memory.soft_limit_in_bytes"))

	p.ok("setmaxmem", "vmm", "192MiB", "--config")
	p.ok("guest", "stop", "vmm")
	waitGuest(t, p, "vmm", "stopped", func(g *api.GuestView) bool { return g.Status == api.StatusExited || g.Status == api.StatusFailed })
	p.ok("guest", "start", "vmm")
	v = waitGuest(t, p, "vmm", "ran again", func(g *api.GuestView) bool {
		if g.Status == api.StatusFailed && g.LastExit != nil && g.LastExit.Error != "" {
			t.Fatalf("the restart failed: %+v", *g.LastExit)
		}
		return g.Status == api.StatusRunning && g.PID > 0 && g.PID != v.PID
	})
	dirs = requireInGroups(t, cg, g, v.PID)
	waitFile(t, dirs, "memory.limit_in_bytes", strconv.FormatInt(events.QEMUMemoryLimit(192<<20), 10))
	if args := qemuArgs(t, v.PID); !strings.Contains(args, " -m 192 ") {
		t.Errorf("QEMU restarted with %q, want -m 192", args)
	}
}

// qemuArgs returns a process's command line, its arguments space-separated.
func qemuArgs(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	return " " + strings.ReplaceAll(string(b), "\x00", " ")
}
