package main

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
	"github.com/corral-dev/corral/coordinator/api"
)

// TestGuestRestartPolicy runs a server and two agents as processes, each
// agent in a cgroup partition of its own. A process guest with
// --restart on-failure --restart-attempts 2 and a 16 MiB limit that
// allocates 64 MiB is OOM-killed on a1, restarted there twice (each
// restart an event with its reason and delay, in the exit's report),
// then rescheduled to a2 with the reason in its placement; on a2 the
// same happens, and with its one reschedule used it stays exited, desired
// running, and guest show says why. --restart always restarts a guest
// that exits 0; --restart no restarts nothing.
func TestGuestRestartPolicy(t *testing.T) {
	rep := cgrouptest.RequireHost(t)
	dir := t.TempDir()
	http, raft, nats := "127.0.0.1:"+freePort(t), "127.0.0.1:"+freePort(t), freePort(t)
	certs := newTestPKI(t)
	ds := newDaemons(t)
	server := ds.start("server", append([]string{"server", "--id", "s1", "--bootstrap", "--data-dir", filepath.Join(dir, "server"),
		"--http-addr", http, "--raft-addr", raft, "--nats-port", nats, "--node-down-timeout", "10s", "--log-level", "debug"},
		certs.serverArgs("s1")...)...)
	certs.bootstrap(http)
	env := append(certs.clientEnv(), "CORRAL_ADDR="+http)
	ok := func(args ...string) string {
		t.Helper()
		r := runCorral(t, env, args...)
		if r.code != 0 {
			t.Fatalf("corral %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
		}
		return r.stdout
	}

	type agentInfo struct {
		id   string
		args []string
		cg   *cgroupdriver.Driver
		d    *daemon
	}
	agents := map[string]*agentInfo{}
	for _, id := range []string{"a1", "a2"} {
		part := cgrouptest.NewPartition(t, rep)
		ccfg := cgroupdriver.DefaultConfig()
		ccfg.Partition, ccfg.Report = part, &rep
		cg, err := cgroupdriver.New(ccfg)
		if err != nil {
			t.Fatal(err)
		}
		agents[id] = &agentInfo{id: id, cg: cg, args: append([]string{"agent", "--node-id", id, "--addr", http,
			"--nats-url", "tls://127.0.0.1:" + nats, "--state-dir", filepath.Join(dir, id), "--cgroup-partition", part,
			"--fence-timeout", "2s", "--heartbeat-interval", "200ms", "--log-level", "debug"}, certs.agentArgs(id)...)}
	}
	guests := []string{"oom", "done", "plain"}
	t.Cleanup(func() {
		for _, g := range guests {
			runCorral(t, env, "guest", "destroy", g)
		}
		for _, a := range agents {
			for _, g := range guests {
				waitGone(t, a.cg, g)
			}
			if a.d != nil {
				a.d.signal(syscall.SIGTERM)
			}
		}
		server.signal(syscall.SIGTERM)
	})

	// Bad policies are refused before anything is written.
	for _, bad := range [][]string{
		{"--restart-attempts", "2"},
		{"--restart", "sometimes"},
		{"--restart", "always", "--restart-delay", "5m"},
	} {
		args := append([]string{"guest", "create", "bad", "--driver", "process", "--memory", "16MiB"}, bad...)
		if r := runCorral(t, env, append(args, "--", "/bin/true")...); r.code == 0 {
			t.Errorf("corral %s was taken", strings.Join(bad, " "))
		} else if !strings.Contains(r.stderr, "restart") {
			t.Errorf("corral %s: the error does not name the flag: %s", strings.Join(bad, " "), r.stderr)
		}
	}

	// Only a1 runs when oom is placed, so it starts there.
	agents["a1"].d = ds.start("a1", agents["a1"].args...)
	waitNodes(t, env, 1)
	ok("guest", "create", "oom", "--driver", "process", "--memory", "16MiB", "--restart", "on-failure", "--restart-attempts", "2",
		"--restart-delay", "200ms", "--", "/bin/dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1")
	if g := waitView(t, env, "oom", func(g *api.GuestView) bool { return g.Node != "" }); g.Node != "a1" {
		t.Fatalf("oom placed on %s, want a1", g.Node)
	}
	agents["a2"].d = ds.start("a2", agents["a2"].args...)
	waitNodes(t, env, 2)

	start := time.Now()
	moved := waitView(t, env, "oom", func(g *api.GuestView) bool { return g.Node == "a2" })
	movedAfter := time.Since(start)
	stuck := waitView(t, env, "oom", func(g *api.GuestView) bool { return g.Restarts.Stuck != "" })
	t.Logf("oom: on a2 %v after a2 was up, its policy used up there %v after", movedAfter, time.Since(start))
	if moved.Restarts.Total < 2 {
		t.Errorf("oom moved to a2 after %d restarts on a1, want 2", moved.Restarts.Total)
	}
	if stuck.Node != "a2" || stuck.Desired != api.DesiredRunning || (stuck.Status != api.StatusExited && stuck.Status != api.StatusFailed) {
		t.Errorf("oom after its policy: node %s desired %s status %s, want exited on a2, desired running", stuck.Node, stuck.Desired, stuck.Status)
	}
	if stuck.LastExit == nil || !stuck.LastExit.OOMKilled || stuck.Restarts.Total != 4 || len(stuck.Restarts.Reschedules) != 1 {
		t.Errorf("oom: last exit %+v, %d restarts, %d reschedules; want OOM-killed, 4 restarts, 1 reschedule", stuck.LastExit, stuck.Restarts.Total, len(stuck.Restarts.Reschedules))
	}
	hist := ok("guest", "history", "oom")
	for _, want := range []string{
		"node=a1 generation=", ": restart 1 of 2 in 200ms after OOM-killed",
		": restart 2 of 2 in 400ms after OOM-killed",
		"node=a1 generation=", "2 restarts in 5m0s used up, the last run ended: OOM-killed",
		`reason="rescheduled after 2 restarts on a1: OOM-killed"`,
		"guest.restarts_exhausted",
	} {
		if !strings.Contains(hist, want) {
			t.Errorf("guest history lacks %q:\n%s", want, hist)
		}
	}
	if n := strings.Count(hist, "guest.restarting"); n != 4 {
		t.Errorf("guest history has %d restarts, want 2 on each node:\n%s", n, hist)
	}
	show := ok("guest", "show", "oom")
	t.Logf("guest history oom:\n%s\nguest show oom:\n%s", hist, show)
	for _, want := range []string{"on-failure, 2 attempts per 5m0s, delay 200ms × 2", "Not restarted:", "its 1 reschedules per 1h0m0s are used", "corral guest start oom"} {
		if !strings.Contains(show, want) {
			t.Errorf("guest show lacks %q:\n%s", want, show)
		}
	}

	// always restarts a guest that exited 0; no restarts nothing.
	ok("guest", "create", "done", "--driver", "process", "--memory", "16MiB", "--restart", "always", "--restart-attempts", "1",
		"--restart-delay", "0s", "--reschedule-attempts", "0", "--", "/bin/true")
	ok("guest", "create", "plain", "--driver", "process", "--memory", "16MiB", "--", "/bin/sh", "-c", "exit 3")
	done := waitView(t, env, "done", func(g *api.GuestView) bool { return g.Restarts.Stuck != "" })
	if done.Restarts.Total != 1 || done.Restarts.Last == nil || done.Restarts.Last.Reason != "exit code 0" {
		t.Errorf("done: restarts %+v, want one after exit code 0", done.Restarts)
	}
	plain := waitView(t, env, "plain", func(g *api.GuestView) bool { return g.Status == api.StatusExited })
	if plain.LastExit == nil || plain.LastExit.Code != 3 {
		t.Errorf("plain: last exit %+v, want code 3", plain.LastExit)
	}
	// Its report came with its exit: had the agent restarted it, the
	// restart would be in the same entry.
	if h := ok("guest", "history", "plain"); strings.Contains(h, "guest.restarting") || strings.Contains(h, "restarts_exhausted") {
		t.Errorf("--restart no restarted the guest:\n%s", h)
	}
	if g := waitView(t, env, "plain", func(g *api.GuestView) bool { return true }); g.Restarts.Total != 0 || g.Status != api.StatusExited {
		t.Errorf("plain: %+v, want exited without restarts", g.Restarts)
	}
}

// waitNodes waits until n nodes are up.
func waitNodes(t *testing.T, env []string, n int) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		r := runCorral(t, env, "node", "list", "-o", "json")
		var nodes []api.Node
		up := 0
		if r.code == 0 && jsonUnmarshal(r.stdout, &nodes) == nil {
			for _, nd := range nodes {
				if nd.Status == api.NodeStatusUp {
					up++
				}
			}
		}
		if up >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d nodes up after %v, want %d: %s %s", up, waitTimeout, n, r.stdout, r.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
