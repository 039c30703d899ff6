package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/nodeagent/driver"
	"github.com/corral-dev/corral/nodeagent/driver/drivertest"
)

// migrationCluster is a server and two agents, a1 and a2, each a process
// of its own in a cgroup partition of its own, with their own state
// directories; a target QEMU listens on 127.0.0.1.
type migrationCluster struct {
	t      *testing.T
	dir    string
	env    []string
	ds     *daemons
	agents map[string]*migrationAgent
}

type migrationAgent struct {
	id   string
	args []string
	cg   *cgroupdriver.Driver
	d    *daemon
}

// startMigrationCluster starts the server and both agents; extra are
// more flags for every agent. guests are destroyed when the test ends.
func startMigrationCluster(t *testing.T, guests []string, extra ...string) *migrationCluster {
	rep := cgrouptest.RequireHost(t)
	dir := t.TempDir()
	http, raft, nats := "127.0.0.1:"+freePort(t), "127.0.0.1:"+freePort(t), freePort(t)
	certs := newTestPKI(t)
	c := &migrationCluster{t: t, dir: dir, ds: newDaemons(t), agents: map[string]*migrationAgent{}}
	server := c.ds.start("server", append([]string{"server", "--id", "s1", "--bootstrap", "--data-dir", filepath.Join(dir, "server"),
		"--http-addr", http, "--raft-addr", raft, "--nats-port", nats, "--node-down-timeout", "30s", "--log-level", "debug"},
		certs.serverArgs("s1")...)...)
	certs.bootstrap(http)
	c.env = append(certs.clientEnv(), "CORRAL_ADDR="+http)
	for _, id := range []string{"a1", "a2"} {
		part := cgrouptest.NewPartition(t, rep)
		ccfg := cgroupdriver.DefaultConfig()
		ccfg.Partition, ccfg.Report = part, &rep
		cg, err := cgroupdriver.New(ccfg)
		if err != nil {
			t.Fatal(err)
		}
		args := append([]string{"agent", "--node-id", id, "--addr", http,
			"--nats-url", "tls://127.0.0.1:" + nats, "--state-dir", filepath.Join(dir, id), "--cgroup-partition", part,
			"--qemu-accel", "tcg", "--migration-host", "127.0.0.1", "--log-level", "debug"}, extra...)
		c.agents[id] = &migrationAgent{id: id, cg: cg, args: append(args, certs.agentArgs(id)...)}
	}
	t.Cleanup(func() {
		for _, g := range guests {
			runCorral(t, c.env, "guest", "destroy", g)
		}
		for _, a := range c.agents {
			for _, g := range guests {
				waitGone(t, a.cg, g)
			}
			if a.d != nil {
				a.d.signal(syscall.SIGTERM)
			}
		}
		server.signal(syscall.SIGTERM)
	})
	return c
}

func (c *migrationCluster) startAgent(id string) {
	c.t.Helper()
	a := c.agents[id]
	a.d = c.ds.start(id, a.args...)
}

func (c *migrationCluster) ok(args ...string) string {
	c.t.Helper()
	r := runCorral(c.t, c.env, args...)
	if r.code != 0 {
		c.t.Fatalf("corral %s: exit %d: %s %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// qemus returns the pids of the QEMU processes on the host that run out
// of this test's agents' state directories (other tests on this host may
// run guests named vm too).
func (c *migrationCluster) qemus() []string {
	out, _ := exec.Command("pgrep", "-f", "qemu-system").Output()
	var pids []string
	for _, pid := range strings.Fields(string(out)) {
		b, err := os.ReadFile("/proc/" + pid + "/cmdline")
		if err == nil && strings.Contains(string(b), c.dir+string(filepath.Separator)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// guestDir is the guest's state directory on node id.
func (c *migrationCluster) guestDir(id, guest string) string {
	return filepath.Join(c.dir, id, "guests", guest)
}

// procsIn returns the processes in the guest's groups on node id (its
// first hierarchy's cgroup.procs), none when the group is gone.
func (c *migrationCluster) procsIn(id string, g cgroupdriver.Guest) []string {
	paths, _ := c.agents[id].cg.Paths(g)
	var out []string
	for _, p := range paths {
		b, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if err == nil {
			out = strings.Fields(string(b))
			if len(out) > 0 {
				return out
			}
		}
	}
	return out
}

// agentLogValue returns the value of key in agent id's log's last line
// that has it.
func (c *migrationCluster) agentLogValue(id, key string) string {
	b, _ := os.ReadFile(c.agents[id].d.log)
	v := "?"
	for _, line := range strings.Split(string(b), "\n") {
		if _, rest, ok := strings.Cut(line, " "+key+"="); ok {
			v, _, _ = strings.Cut(rest, " ")
		}
	}
	return v
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// console is one corral guest console session.
type console struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   syncBuffer
	err   syncBuffer
	done  chan error
}

func openConsole(t *testing.T, env []string, name string) *console {
	t.Helper()
	c := &console{t: t, cmd: exec.Command(corralBin, "guest", "console", name), done: make(chan error, 1)}
	c.cmd.Env = append(childEnv(), env...)
	c.cmd.Stdout, c.cmd.Stderr = &c.out, &c.err
	var err error
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.done <- c.cmd.Wait() }()
	t.Cleanup(func() { _ = c.cmd.Process.Kill() })
	// Input typed before the shell reads is lost: probe until it answers.
	last := time.Time{}
	n := 0
	waitFor(t, "the guest's shell to answer through corral guest console", func() bool {
		if time.Since(last) > time.Second {
			n++
			_, _ = io.WriteString(c.stdin, "echo READY-$((1000+"+strconv.Itoa(n)+"))\n")
			last = time.Now()
		}
		return strings.Contains(c.out.String(), "READY-10")
	}, c.describe)
	return c
}

func (c *console) describe() string {
	return "console output: " + tail(c.out.String(), 2000) + "\nstderr: " + c.err.String()
}

// run types line and returns what the shell printed between two markers
// the line is wrapped in.
func (c *console) run(what, line string) string {
	c.t.Helper()
	key := strconv.FormatInt(time.Now().UnixNano()%1000000, 10)
	from := len(c.out.String())
	_, _ = io.WriteString(c.stdin, "echo B-$(("+key+"+1)); "+line+"; echo E-$(("+key+"+1))\n")
	begin, end := "B-"+strconv.Itoa(mustAtoi(key)+1), "E-"+strconv.Itoa(mustAtoi(key)+1)
	var got string
	waitFor(c.t, what, func() bool {
		s := c.out.String()[from:]
		i := strings.Index(s, begin+"\r\n")
		if i < 0 {
			i = strings.Index(s, begin+"\n")
		}
		if i < 0 {
			return false
		}
		rest := s[i+len(begin):]
		j := strings.Index(rest, "\n"+end)
		if j < 0 {
			j = strings.Index(rest, "\r\n"+end)
		}
		if j < 0 {
			return false
		}
		got = strings.TrimSpace(strings.ReplaceAll(rest[:j], "\r", ""))
		return true
	}, c.describe)
	return got
}

func mustAtoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// detach sends Ctrl-] and waits for the session to end.
func (c *console) detach() {
	c.t.Helper()
	_, _ = c.stdin.Write([]byte{0x1d})
	select {
	case <-c.done:
	case <-time.After(waitTimeout):
		c.t.Fatalf("corral guest console did not end after Ctrl-]; %s", c.describe())
	}
}

// historyTypes returns the guest's event types in order.
func historyTypes(t *testing.T, env []string, name string) []string {
	t.Helper()
	r := runCorral(t, env, "guest", "history", name, "-o", "json")
	if r.code != 0 {
		t.Fatalf("guest history %s: %s", name, r.stderr)
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var e struct {
			Type string `json:"type"`
		}
		if jsonUnmarshal(line, &e) == nil {
			out = append(out, e.Type)
		}
	}
	return out
}

// inOrder reports whether want appear in got in that order.
func inOrder(got, want []string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}

// TestGuestMigrateLive migrates a TCG QEMU guest with a disk over a raw
// base image from a1 to a2 with corral guest migrate --to a2. Before, a
// marker goes into the guest's RAM and a sector onto its disk; after,
// through the console on a2, the marker is still there, the uptime kept
// growing and a2's serial log has no boot banner (the guest never
// rebooted), the sector reads back after the guest dropped its caches,
// exactly one QEMU runs (a1's is gone), and the guest's events are
// requested → target ready → progress → switched → migrated. Downtime and
// total time are logged.
func TestGuestMigrateLive(t *testing.T) {
	a := drivertest.VM(t)
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skipf("skipping: %v (deploy/testassets.sh installs qemu-utils)", err)
	}
	const pattern = "CORRAL-MIGRATE-BASE"
	base := filepath.Join(t.TempDir(), "base.raw")
	img := make([]byte, 1<<20)
	copy(img, pattern)
	if err := os.WriteFile(base, img, 0o644); err != nil {
		t.Fatal(err)
	}
	// One bridge per agent (two agents' IPAMs on one bridge would hand
	// out the same addresses), over the same range: the guest's network
	// is one L2 segment on every node, as a real cluster's would be.
	var rb [3]byte
	_, _ = rand.Read(rb[:])
	bridges := map[string]string{"a1": "cmg1" + hex.EncodeToString(rb[:]), "a2": "cmg2" + hex.EncodeToString(rb[:])}
	cidr := fmt.Sprintf("10.%d.%d.0/24", 200+rb[0]%50, rb[1])
	for _, br := range bridges {
		t.Cleanup(func() {
			if _, err := os.Stat("/sys/class/net/" + br); err == nil {
				if out, err := exec.Command("ip", "link", "del", br).CombinedOutput(); err != nil {
					t.Errorf("removing the bridge %s: %v: %s", br, err, out)
				}
			}
		})
	}
	c := startMigrationCluster(t, []string{"vm"})
	for id, br := range bridges {
		c.agents[id].args = append(c.agents[id].args, "--bridge", br, "--bridge-cidr", cidr)
	}
	c.startAgent("a1")
	waitNodes(t, c.env, 1)
	c.ok("operator", "scheduler", "set-config", "--cpu-overcommit", "8")
	c.ok("guest", "create", "vm", "--driver", "qemu", "--memory", "128MiB", "--kernel", a.Kernel, "--initrd", a.Initramfs,
		"--disk", base+",format=raw,cache=writeback", "--network", "bridge")
	before := waitView(t, c.env, "vm", func(g *api.GuestView) bool { return g.Status == api.StatusRunning && g.PID > 0 })
	if before.Node != "a1" || len(before.Addresses) != 1 {
		t.Fatalf("vm placed on %s with addresses %v, want a1 and one address", before.Node, before.Addresses)
	}
	tap1, tap2 := driver.HostInterface(bridges["a1"], "vm"), driver.HostInterface(bridges["a2"], "vm")
	if m, err := os.Readlink("/sys/class/net/" + tap1 + "/master"); err != nil || filepath.Base(m) != bridges["a1"] {
		t.Fatalf("vm's tap %s is not on a1's bridge %s: %q %v", tap1, bridges["a1"], m, err)
	}
	c.startAgent("a2")
	waitNodes(t, c.env, 2)
	srcLog := filepath.Join(c.guestDir("a1", "vm"), "guest.log")
	readLog := func(p string) string { b, _ := os.ReadFile(p); return string(b) }
	waitFor(t, "the VM's shell on its serial console", func() bool { return strings.Contains(readLog(srcLog), "CORRAL-GUEST-SHELL") },
		func() string { return "serial log tail: " + tail(readLog(srcLog), 2000) })

	con := openConsole(t, c.env, "vm")
	marker := strconv.FormatInt(time.Now().UnixNano()%1000000007, 10)
	sector := "SECTOR-" + marker
	con.run("the marker written", "echo "+marker+" > /tmp/marker")
	con.run("the sector written", "echo "+sector+" | dd of=/dev/vda bs=512 seek=100 conv=notrunc,fsync 2>/dev/null")
	up1 := con.run("the uptime before", "cut -d' ' -f1 /proc/uptime")
	con.detach()
	upBefore, err := strconv.ParseFloat(up1, 64)
	if err != nil {
		t.Fatalf("uptime before %q: %v", up1, err)
	}

	start := time.Now()
	r := runCorral(t, c.env, "guest", "migrate", "vm", "--to", "a2", "--wait", "2m")
	total := time.Since(start)
	t.Logf("corral guest migrate vm --to a2 (%v):\n%s%s", total.Round(time.Millisecond), r.stdout, r.stderr)
	if r.code != 0 {
		t.Fatalf("guest migrate: exit %d", r.code)
	}
	after := waitView(t, c.env, "vm", func(g *api.GuestView) bool {
		return g.Node == "a2" && g.Migration == nil && g.LastMigration != nil && g.Status == api.StatusRunning
	})
	lm := after.LastMigration
	if lm.Phase != api.MigrationDone || lm.From != "a1" || lm.To != "a2" || lm.Progress == nil {
		t.Fatalf("last migration %+v, want done from a1 to a2 with its progress", lm)
	}
	t.Logf("migration: QEMU downtime %d ms, QEMU total %d ms, RAM %d bytes sent; paused on a2 from the stream's end to cont %s ms; request to migrated %v",
		lm.Progress.DowntimeMs, lm.Progress.ElapsedMs, lm.Progress.TransferredBytes, c.agentLogValue("a2", "paused_here_ms"), total.Round(time.Millisecond))
	if lm.Progress.Status != "completed" || lm.Progress.ElapsedMs <= 0 {
		t.Errorf("last progress %+v, want completed with a total time", lm.Progress)
	}
	vm := cgroupdriver.Guest{Kind: cgroupdriver.KindQEMU, ID: "vm"}
	waitFor(t, "a1's QEMU to be gone", func() bool { return len(c.procsIn("a1", vm)) == 0 },
		func() string { return "a1 still has " + strings.Join(c.procsIn("a1", vm), " ") })
	if p := c.procsIn("a2", vm); len(p) != 1 || p[0] != strconv.Itoa(after.PID) {
		t.Errorf("a2's group holds %v, want one QEMU, pid %d", p, after.PID)
	}
	if pids := c.qemus(); len(pids) != 1 {
		t.Errorf("this test's QEMUs on the host: %v, want one", pids)
	}

	// Its NIC moved with it: QEMU on a2 holds a tap on a2's bridge, a1's
	// is gone, and the guest keeps its address and MAC.
	if m, err := os.Readlink("/sys/class/net/" + tap2 + "/master"); err != nil || filepath.Base(m) != bridges["a2"] {
		t.Errorf("after the migration vm's tap %s is not on a2's bridge %s: %q %v", tap2, bridges["a2"], m, err)
	}
	waitFor(t, "a1's tap to be gone", func() bool { _, err := os.Stat("/sys/class/net/" + tap1); return os.IsNotExist(err) },
		func() string { return tap1 + " is still there" })
	if strings.Join(after.Addresses, ",") != strings.Join(before.Addresses, ",") || after.MAC != before.MAC {
		t.Errorf("network after the migration %v %s, want %v %s", after.Addresses, after.MAC, before.Addresses, before.MAC)
	}
	t.Logf("network: address %v, MAC %s; tap %s on %s, then %s on %s", after.Addresses, after.MAC, tap1, bridges["a1"], tap2, bridges["a2"])

	con = openConsole(t, c.env, "vm")
	if got := con.run("the marker read back", "cat /tmp/marker"); got != marker {
		t.Errorf("the marker in the guest's RAM reads %q after the migration, want %q", got, marker)
	}
	up2 := con.run("the uptime after", "cut -d' ' -f1 /proc/uptime")
	if upAfter, err := strconv.ParseFloat(up2, 64); err != nil || upAfter <= upBefore {
		t.Errorf("uptime %q after the migration, %v before: the guest rebooted", up2, upBefore)
	}
	// The kernel may print its drop_caches note between the lines.
	got := lastLine(con.run("the sector read back", "echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vda bs=512 skip=100 count=1 2>/dev/null | head -n1"))
	if got != sector {
		t.Errorf("disk sector 100 reads %q after the migration, want %q", got, sector)
	}
	if got := con.run("the base read back", "dd if=/dev/vda bs=19 count=1 2>/dev/null; echo"); got != pattern {
		t.Errorf("the disk's first bytes read %q after the migration, want the base's %q", got, pattern)
	}
	con.detach()
	dstLog := readLog(filepath.Join(c.guestDir("a2", "vm"), "guest.log"))
	if strings.Contains(dstLog, "Linux version") || strings.Contains(dstLog, "CORRAL-GUEST-SHELL") {
		t.Errorf("a2's serial log has a boot banner: the guest booted again:\n%s", tail(dstLog, 2000))
	}
	if n := strings.Count(readLog(srcLog), "Linux version"); n > 1 {
		t.Errorf("a1's serial log has %d boot banners, want 1", n)
	}
	types := historyTypes(t, c.env, "vm")
	want := []string{"guest.migration_requested", "guest.migration_target_ready", "guest.migration_progress", "guest.migration_switched", "guest.migrated"}
	if !inOrder(types, want) {
		t.Errorf("guest history: %v, want %v in order", types, want)
	}
	for _, bad := range []string{"guest.migration_aborted", "guest.exited"} {
		for _, ty := range types {
			if ty == bad {
				t.Errorf("guest history has %s: %v", bad, types)
			}
		}
	}
	if b, err := os.ReadFile(base); err != nil || string(b[:len(pattern)]) != pattern || strings.Contains(string(b), sector) {
		t.Errorf("the base image was written (%v)", err)
	}
}

// TestGuestMigrateOffline moves a process guest with corral guest
// migrate --offline --to a2: a1 stops it cleanly (its TERM trap runs),
// a2 starts it, and one copy runs.
func TestGuestMigrateOffline(t *testing.T) {
	c := startMigrationCluster(t, []string{"job"})
	c.startAgent("a1")
	waitNodes(t, c.env, 1)
	tag := "corral-migrate-offline-" + strconv.Itoa(os.Getpid())
	stopped := filepath.Join(c.dir, "stopped")
	script := "trap 'echo clean >> " + stopped + "; exit 0' TERM; while :; do sleep 0.1; done; : " + tag
	c.ok("guest", "create", "job", "--driver", "process", "--memory", "32MiB", "--", "/bin/sh", "-c", script)
	before := waitView(t, c.env, "job", func(g *api.GuestView) bool { return g.Status == api.StatusRunning && g.PID > 0 })
	if before.Node != "a1" {
		t.Fatalf("job placed on %s, want a1", before.Node)
	}
	c.startAgent("a2")
	waitNodes(t, c.env, 2)

	start := time.Now()
	r := runCorral(t, c.env, "guest", "migrate", "job", "--offline", "--to", "a2", "--wait", "1m")
	t.Logf("corral guest migrate job --offline --to a2 (%v):\n%s%s", time.Since(start).Round(time.Millisecond), r.stdout, r.stderr)
	if r.code != 0 {
		t.Fatalf("guest migrate --offline: exit %d", r.code)
	}
	after := waitView(t, c.env, "job", func(g *api.GuestView) bool {
		return g.Node == "a2" && g.Status == api.StatusRunning && g.PID > 0 && g.PID != before.PID
	})
	if lm := after.LastMigration; lm == nil || lm.Phase != api.MigrationDone || !lm.Offline || lm.From != "a1" || lm.To != "a2" {
		t.Errorf("last migration %+v, want an offline one done from a1 to a2", after.LastMigration)
	}
	if b, _ := os.ReadFile(stopped); string(b) != "clean\n" {
		t.Errorf("the guest's TERM trap wrote %q, want one clean stop", b)
	}
	job := cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "job"}
	waitFor(t, "a1's group to empty", func() bool { return len(c.procsIn("a1", job)) == 0 },
		func() string { return "a1 still has " + strings.Join(c.procsIn("a1", job), " ") })
	if p := c.procsIn("a2", job); len(p) == 0 || p[0] != strconv.Itoa(after.PID) {
		t.Errorf("a2's group holds %v, want the guest, pid %d", p, after.PID)
	}
	if copies := topmostMatching(tag); len(copies) != 1 {
		t.Errorf("copies of the guest on the host: pids %v, want one", copies)
	}
	types := historyTypes(t, c.env, "job")
	if !inOrder(types, []string{"guest.migration_requested", "guest.exited", "guest.started"}) {
		t.Errorf("guest history %v: want the request, the stop and a start", types)
	}
}

// TestGuestMigrateTargetKilled kills a2, the target of a live migration
// capped at 1 MiB/s, with SIGKILL once the transfer is under way, and
// restarts it: the migration is aborted with the reason, the guest runs
// on on a1 in the same QEMU (the only one), and nothing of it is left on
// a2.
func TestGuestMigrateTargetKilled(t *testing.T) {
	a := drivertest.VM(t)
	c := startMigrationCluster(t, []string{"vm"}, "--migration-bandwidth", "1")
	c.startAgent("a1")
	waitNodes(t, c.env, 1)
	c.ok("operator", "scheduler", "set-config", "--cpu-overcommit", "8")
	c.ok("guest", "create", "vm", "--driver", "qemu", "--memory", "128MiB", "--kernel", a.Kernel, "--initrd", a.Initramfs)
	before := waitView(t, c.env, "vm", func(g *api.GuestView) bool { return g.Status == api.StatusRunning && g.PID > 0 })
	c.startAgent("a2")
	waitNodes(t, c.env, 2)

	c.ok("guest", "migrate", "vm", "--to", "a2", "--detach")
	sending := waitView(t, c.env, "vm", func(g *api.GuestView) bool {
		return g.Migration != nil && g.Migration.Progress != nil && g.Migration.Progress.TransferredBytes > 0
	})
	t.Logf("killing a2 with %s of %s sent", formatBytes(sending.Migration.Progress.TransferredBytes), formatBytes(sending.Migration.Progress.TotalBytes))
	vm := cgroupdriver.Guest{Kind: cgroupdriver.KindQEMU, ID: "vm"}
	if len(c.procsIn("a2", vm)) != 1 {
		t.Fatalf("a2 runs no incoming QEMU: %v", c.procsIn("a2", vm))
	}
	d := c.agents["a2"].d
	_ = d.cmd.Process.Kill()
	<-d.done
	c.startAgent("a2")

	after := waitView(t, c.env, "vm", func(g *api.GuestView) bool { return g.Migration == nil && g.LastMigration != nil })
	lm := after.LastMigration
	t.Logf("migration ended: %s: %s", lm.Phase, lm.Reason)
	if lm.Phase != api.MigrationAborted || lm.Reason == "" {
		t.Errorf("last migration %+v, want aborted with a reason", lm)
	}
	if after.Node != "a1" || after.PID != before.PID {
		t.Errorf("guest on %s pid %d after the abort, want a1 pid %d", after.Node, after.PID, before.PID)
	}
	waitFor(t, "a2's incoming QEMU to be gone", func() bool { return len(c.procsIn("a2", vm)) == 0 },
		func() string { return "a2 still has " + strings.Join(c.procsIn("a2", vm), " ") })
	if _, err := os.Stat(c.guestDir("a2", "vm")); !os.IsNotExist(err) {
		t.Errorf("a2 kept the guest's state directory (%v)", err)
	}
	if pids := c.qemus(); len(pids) != 1 {
		t.Errorf("this test's QEMUs on the host: %v, want one", pids)
	}
	// The source runs on, not paused by the cancelled transfer.
	waitView(t, c.env, "vm", func(g *api.GuestView) bool { return g.Status == api.StatusRunning && g.Node == "a1" })
	con := openConsole(t, c.env, "vm")
	if got := con.run("the guest to answer after the abort", "echo $((20+22))"); got != "42" {
		t.Errorf("the guest answered %q after the abort, want 42", got)
	}
	con.detach()
	if types := historyTypes(t, c.env, "vm"); !inOrder(types, []string{"guest.migration_requested", "guest.migration_target_ready", "guest.migration_aborted"}) {
		t.Errorf("guest history %v: want requested, target ready, aborted", types)
	}
}

// topmostMatching lists the processes whose command line holds tag and
// whose parent's does not: a shell guest forks for each command it runs,
// and for a moment the child carries the same command line, which is not
// a second copy of the guest.
func topmostMatching(tag string) []string {
	out, _ := exec.Command("pgrep", "-f", tag).Output()
	pids := strings.Fields(string(out))
	var top []string
	for _, pid := range pids {
		stat, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			continue // gone since pgrep listed it
		}
		// The parent is the second field after the command's closing parenthesis.
		rest := string(stat[strings.LastIndexByte(string(stat), ')')+1:])
		if f := strings.Fields(rest); len(f) > 1 && slices.Contains(pids, f[1]) {
			continue
		}
		top = append(top, pid)
	}
	return top
}
