package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/nodeagent"
)

// TestFenceDeadAgent: a server and two agents as processes, a guest on
// a1. kill -9 of a1's agent leaves its guest behind, and its fencer
// freezes it; the server declares a1 down and the guest starts on a2.
// Sampled every ~20ms on the host (the guest's processes and freezer
// state on both nodes) from the kill until a2's copy has run a while, no
// sample has both copies running. a2's agent stalled (SIGSTOP) past the
// fence timeout has its guest frozen by its fencer, and thawed once it
// continues. a1's agent, back, destroys its copy without thawing it and
// adopts its fencer.
func TestFenceDeadAgent(t *testing.T) {
	rep := cgrouptest.RequireHost(t)
	dir := t.TempDir()
	http, raft, nats := "127.0.0.1:"+freePort(t), "127.0.0.1:"+freePort(t), freePort(t)
	const fence, beat, nodeDown = time.Second, 100 * time.Millisecond, 3 * time.Second
	ds := newDaemons(t)
	certs := newTestPKI(t)
	ds.start("server", append([]string{"server", "--id", "s1", "--bootstrap", "--data-dir", filepath.Join(dir, "server"),
		"--http-addr", http, "--raft-addr", raft, "--nats-port", nats, "--node-down-timeout", nodeDown.String(), "--log-level", "debug"},
		certs.serverArgs("s1")...)...)
	certs.bootstrap(http)
	env := append(certs.clientEnv(), "CORRAL_ADDR="+http)

	type node struct {
		id, state string
		args      []string
		cg        *cgroupdriver.Driver
		d         *daemon
	}
	nodes := map[string]*node{}
	for _, id := range []string{"a1", "a2"} {
		part := cgrouptest.NewPartition(t, rep)
		ccfg := cgroupdriver.DefaultConfig()
		ccfg.Partition, ccfg.Report = part, &rep
		cg, err := cgroupdriver.New(ccfg)
		if err != nil {
			t.Fatal(err)
		}
		n := &node{id: id, state: filepath.Join(dir, id), cg: cg}
		// nats://, not tls://: the agent's TLS upgrades the connection
		// the server requires it on.
		n.args = append([]string{"agent", "--node-id", id, "--addr", http, "--nats-url", "nats://127.0.0.1:" + nats,
			"--state-dir", n.state, "--cgroup-partition", part, "--fence-timeout", fence.String(),
			"--heartbeat-interval", beat.String(), "--fence-poll", "20ms", "--log-level", "debug"},
			certs.agentArgs(id)...)
		nodes[id] = n
	}
	a1, a2 := nodes["a1"], nodes["a2"]
	t.Cleanup(func() {
		for _, n := range nodes {
			if b, err := os.ReadFile(filepath.Join(n.state, "fence", "fencer.log")); t.Failed() && err == nil {
				t.Logf("%s fencer log:\n%s", n.id, b)
			}
		}
		runCorral(t, env, "guest", "destroy", "g")
		for _, n := range nodes {
			waitGone(t, n.cg, "g")
			if n.d != nil {
				n.d.signal(syscall.SIGTERM)
			}
			if err := nodeagent.StopFencer(n.state, 5*time.Second); err != nil {
				t.Error(err)
			}
		}
	})

	// Only a1 is up when the guest is placed.
	a1.d = ds.start("a1", a1.args...)
	if r := runCorral(t, env, "guest", "create", "g", "--driver", "process", "--memory", "32MiB", "--", "/bin/sleep", "1000"); r.code != 0 {
		t.Fatalf("guest create: exit %d: %s", r.code, r.stderr)
	}
	onA := waitView(t, env, "g", func(g *api.GuestView) bool { return g.Status == api.StatusRunning && g.PID > 0 })
	if onA.Node != "a1" {
		t.Fatalf("g runs on %s, want a1", onA.Node)
	}
	a2.d = ds.start("a2", a2.args...)
	fencerA := fencerPID(t, a1.state)

	guest := cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "g"}
	dirsA, err := a1.cg.Paths(guest)
	if err != nil {
		t.Fatal(err)
	}
	// running: a process of the copy exists, its group is not FROZEN and
	// it is not being killed (the v1 freezer lets a frozen task die only
	// once thawed, so a destroy sends SIGKILL and then thaws: such a task
	// never returns to user space).
	runningA := func() bool {
		return procAlive(onA.PID) && freezer(dirsA) != "FROZEN" && !killPending(onA.PID)
	}
	dirsB, _ := a2.cg.Paths(guest)
	runningB := func() bool {
		pids, err := a2.cg.Pids(guest)
		if err != nil || len(pids) == 0 {
			return false
		}
		live := false
		for _, p := range pids {
			live = live || (procAlive(p) && !killPending(p))
		}
		return live && freezer(dirsB) != "FROZEN"
	}

	killed := time.Now()
	a1.d.signal(syscall.SIGKILL)
	a1.d = nil
	var lastA, frozenA, firstB time.Time
	samples := 0
	deadline := killed.Add(nodeDown + 30*time.Second)
	for {
		now := time.Now()
		ra, rb := runningA(), runningB()
		samples++
		if ra && rb {
			t.Fatalf("sample %d, %v after the kill: both copies run (a1 pid %d %s, a2 %s)", samples, now.Sub(killed), onA.PID, freezer(dirsA), freezer(dirsB))
		}
		switch {
		case ra:
			lastA = now
		case frozenA.IsZero():
			frozenA = now
		}
		if rb && firstB.IsZero() {
			firstB = now
		}
		// Go on sampling for a while once a2's copy runs.
		if !firstB.IsZero() && now.Sub(firstB) > 500*time.Millisecond {
			break
		}
		if now.After(deadline) {
			t.Fatalf("the guest did not start on a2 within %v of the kill (a1's copy: %s)", deadline.Sub(killed), freezer(dirsA))
		}
		time.Sleep(20 * time.Millisecond) // the sampling period
	}
	if !procAlive(onA.PID) {
		t.Errorf("a1's copy died: the fencer should freeze it, not kill it")
	}
	t.Logf("%d samples; a1's copy last ran %v after the kill and was FROZEN by %v; a2's copy first ran %v after the kill: gap %v (fence %v, node-down %v)",
		samples, lastA.Sub(killed), frozenA.Sub(killed), firstB.Sub(killed), firstB.Sub(lastA), fence, nodeDown)
	if onB := waitView(t, env, "g", func(g *api.GuestView) bool { return g.Status == api.StatusRunning }); onB.Node != "a2" {
		t.Errorf("g runs on %s after a1 went down, want a2", onB.Node)
	}

	// a2's agent stalls (SIGSTOP) past the fence timeout but not the
	// node-down timeout: its fencer freezes the guest; continued, the
	// agent lifts the fence and thaws the same process.
	pidB := waitView(t, env, "g", func(g *api.GuestView) bool { return g.Node == "a2" && g.PID > 0 }).PID
	stopped := a2.d
	t.Cleanup(func() { stopped.cmd.Process.Signal(syscall.SIGCONT) })
	stoppedAt := time.Now()
	stopped.cmd.Process.Signal(syscall.SIGSTOP)
	for freezer(dirsB) != "FROZEN" {
		if time.Since(stoppedAt) > fence+2*time.Second {
			stopped.cmd.Process.Signal(syscall.SIGCONT)
			t.Fatalf("a2's guest not frozen %v after its agent stopped", time.Since(stoppedAt))
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("a2's guest FROZEN %v after its agent was stopped", time.Since(stoppedAt))
	stopped.cmd.Process.Signal(syscall.SIGCONT)
	for end := time.Now().Add(waitTimeout); freezer(dirsB) != "THAWED"; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("a2's guest still %s %v after its agent continued", freezer(dirsB), waitTimeout)
		}
	}
	if !procAlive(pidB) {
		t.Errorf("a2's copy (pid %d) died while its agent was stopped", pidB)
	}
	if g := waitView(t, env, "g", func(*api.GuestView) bool { return true }); g.Node != "a2" || g.PID != pidB {
		t.Errorf("after the stall g runs on %s pid %d, want a2 pid %d", g.Node, g.PID, pidB)
	}

	// a1's agent is back: it destroys its copy, never thawing it, and
	// adopts its fencer.
	a1.d = ds.start("a1-again", a1.args...)
	for end := time.Now().Add(waitTimeout); procAlive(onA.PID); time.Sleep(5 * time.Millisecond) {
		if runningA() && runningB() {
			t.Fatalf("a1's returning agent let its stale copy run (pid %d, %s) while a2's runs", onA.PID, freezer(dirsA))
		}
		if time.Now().After(end) {
			t.Fatalf("a1's stale copy (pid %d) still exists %v after its agent came back", onA.PID, waitTimeout)
		}
	}
	waitGone(t, a1.cg, "g")
	if got := fencerPID(t, a1.state); got != fencerA {
		t.Errorf("a1's fencer is pid %d after the agent's return, want the same %d (adopted)", got, fencerA)
	}
}

func fencerPID(t *testing.T, state string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(state, "fence", "fencer.json"))
	if err != nil {
		t.Fatalf("no fencer: %v", err)
	}
	var info struct {
		PID int `json:"pid"`
	}
	if err := jsonUnmarshal(string(b), &info); err != nil || info.PID <= 0 || !procAlive(info.PID) {
		t.Fatalf("fencer.json %s: %v, or the fencer is not running", b, err)
	}
	return info.PID
}

// freezer is the guest group's freezer state, FROZEN or THAWED (v1
// freezer.state, v2 cgroup.events), or "gone".
func freezer(dirs []string) string {
	for _, d := range dirs {
		if b, err := os.ReadFile(filepath.Join(d, "freezer.state")); err == nil {
			return strings.TrimSpace(string(b))
		}
		if b, err := os.ReadFile(filepath.Join(d, "cgroup.events")); err == nil {
			if strings.Contains(string(b), "frozen 1") {
				return "FROZEN"
			}
			return "THAWED"
		}
	}
	return "gone"
}

// killPending reports whether pid has SIGKILL pending: it dies the next
// time it is scheduled, without running any more of its own code.
func killPending(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "SigPnd" && k != "ShdPnd") {
			continue
		}
		if mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64); err == nil && mask&(1<<(syscall.SIGKILL-1)) != 0 {
			return true
		}
	}
	return false
}

// procAlive reports whether pid exists and is not a zombie.
func procAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
