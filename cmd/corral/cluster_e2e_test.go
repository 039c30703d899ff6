package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/api"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
)

// daemon is a corral server or agent run as its own process.
type daemon struct {
	t    *testing.T
	cmd  *exec.Cmd
	done chan struct{}
	log  string
	name string
}

// daemons starts corral daemons and kills them all when the test ends,
// after every cleanup registered later (destroying guests needs them).
type daemons struct {
	t    *testing.T
	list []*daemon
}

func newDaemons(t *testing.T) *daemons {
	ds := &daemons{t: t}
	t.Cleanup(func() {
		for i := len(ds.list) - 1; i >= 0; i-- {
			d := ds.list[i]
			d.cmd.Process.Kill()
			<-d.done
			if t.Failed() || os.Getenv("CORRAL_TEST_DUMP") != "" {
				b, _ := os.ReadFile(d.log)
				t.Logf("%s log:\n%s", d.name, b)
			}
		}
	})
	return ds
}

// start runs corral with args and waits for its first stdout line.
func (ds *daemons) start(name string, args ...string) *daemon {
	ds.t.Helper()
	d, err := ds.tryStartWith(name, func(*syscall.SysProcAttr) {}, args...)
	if err != nil {
		ds.t.Fatal(err)
	}
	return d
}

func (d *daemon) signal(sig syscall.Signal) {
	d.cmd.Process.Signal(sig)
	select {
	case <-d.done:
	case <-time.After(waitTimeout):
		d.t.Fatalf("daemon did not exit after %v", sig)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	// The kernel may give the same free port to two listens in a row
	// once the first is closed: never hand out one twice in this test
	// binary, or two daemons of a test get the same port.
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if _, taken := portsGiven.LoadOrStore(port, true); !taken {
			return strconv.Itoa(port)
		}
	}
}

// portsGiven holds the ports freePort handed out.
var portsGiven sync.Map

// TestServerAndTwoAgents runs a server and two agents as separate
// processes, a1 enrolled with a one-time join token and a2 with a
// certificate made by corral tls: a guest survives its agent's kill -9
// (the restarted agent adopts the same process, no second copy, with the
// certificate it enrolled for), and guests freeze when the server is gone
// past the fence timeout and thaw when it is back.
func TestServerAndTwoAgents(t *testing.T) {
	rep := cgrouptest.RequireHost(t)
	dir := t.TempDir()
	http, raft, nats := "127.0.0.1:"+freePort(t), "127.0.0.1:"+freePort(t), freePort(t)
	certs := newTestPKI(t)
	serverArgs := append([]string{"server", "--id", "s1", "--bootstrap", "--data-dir", filepath.Join(dir, "server"),
		"--http-addr", http, "--raft-addr", raft, "--nats-port", nats, "--node-down-timeout", "10s", "--log-level", "debug",
		"--tls-ca-key", certs.caKey()}, // to sign the certificates of agents that enroll
		certs.serverArgs("s1")...)
	ds := newDaemons(t)
	server := ds.start("server", serverArgs...)
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
		id, part string
		args     []string
		cg       *cgroupdriver.Driver
		d        *daemon
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
		a := &agentInfo{id: id, part: part, cg: cg, args: []string{"agent", "--node-id", id, "--addr", http,
			"--nats-url", "tls://127.0.0.1:" + nats, "--state-dir", filepath.Join(dir, id), "--cgroup-partition", part,
			"--label", "name=" + id, "--fence-timeout", "2s", "--heartbeat-interval", "200ms", "--log-level", "debug"}}
		if id == "a1" {
			// The token is spent by the first start; the restart below
			// uses the certificate it got.
			a.args = append(a.args, "--tls-ca", certs.caCert(), "--join-token", joinToken(t, env, id))
		} else {
			a.args = append(a.args, certs.agentArgs(id)...)
		}
		a.d = ds.start(id, a.args...)
		agents[id] = a
	}
	enrolled := filepath.Join(dir, "a1", "tls", "node-a1.pem")
	if _, err := os.Stat(enrolled); err != nil {
		t.Fatalf("a1 enrolled but kept no certificate: %v", err)
	}
	// Stop the guests before the partitions are checked, whatever happens.
	t.Cleanup(func() {
		for _, id := range []string{"a1", "a2"} {
			runCorral(t, env, "guest", "destroy", "g-"+id)
		}
		for _, a := range agents {
			waitGone(t, a.cg, "g-"+a.id)
			a.d.signal(syscall.SIGTERM)
		}
		server.signal(syscall.SIGTERM)
	})

	pids := map[string]int{}
	for _, id := range []string{"a1", "a2"} {
		ok("guest", "create", "g-"+id, "--driver", "process", "--memory", "32MiB", "--constraint", "name="+id, "--", "/bin/sleep", "1000")
	}
	for _, id := range []string{"a1", "a2"} {
		g := waitView(t, env, "g-"+id, func(g *api.GuestView) bool { return g.Status == api.StatusRunning && g.PID > 0 })
		if g.Node != id {
			t.Fatalf("g-%s runs on %s", id, g.Node)
		}
		pids[id] = g.PID
	}

	// kill -9 the agent of a1 and start it again: it adopts the guest.
	a1 := agents["a1"]
	a1.d.signal(syscall.SIGKILL)
	if err := syscall.Kill(pids["a1"], 0); err != nil {
		t.Fatalf("the guest died with its agent: %v", err)
	}
	a1.d = ds.start("a1-again", a1.args...)
	dirs, _ := a1.cg.Paths(cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "g-a1"})
	procs := strings.Fields(groupFile(t, dirs, "cgroup.procs"))
	if len(procs) != 1 || procs[0] != strconv.Itoa(pids["a1"]) {
		t.Fatalf("after the agent restart the group holds %v, want only %d", procs, pids["a1"])
	}
	if g := waitView(t, env, "g-a1", func(*api.GuestView) bool { return true }); g.PID != pids["a1"] || g.Status != api.StatusRunning {
		t.Fatalf("after the agent restart: status %s pid %d, want running %d", g.Status, g.PID, pids["a1"])
	}
	if n := strings.Count(ok("events", "--guest", "g-a1", "--type", "guest.started", "-o", "json"), "\n"); n != 1 {
		t.Fatalf("g-a1 was reported started %d times", n)
	}

	// The server goes away for longer than the fence timeout: every guest
	// freezes. It comes back: they thaw.
	server.signal(syscall.SIGTERM)
	for _, a := range agents {
		d, _ := a.cg.Paths(cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "g-" + a.id})
		waitFile(t, d, "freezer.state", "FROZEN")
	}
	server = ds.start("server-again", serverArgs...)
	for _, a := range agents {
		d, _ := a.cg.Paths(cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "g-" + a.id})
		waitFile(t, d, "freezer.state", "THAWED")
	}
	for id, pid := range pids {
		if g := waitView(t, env, "g-"+id, func(*api.GuestView) bool { return true }); g.PID != pid {
			t.Errorf("g-%s has pid %d after the fence, want %d", id, g.PID, pid)
		}
	}
}

// joinToken creates a join token for node and returns its secret.
func joinToken(t *testing.T, env []string, node string) string {
	t.Helper()
	r := runCorral(t, env, "acl", "join-token", "create", "--node", node, "-o", "json")
	var j api.JoinToken
	if r.code != 0 || jsonUnmarshal(r.stdout, &j) != nil || j.Secret == "" || j.Node != node {
		t.Fatalf("acl join-token create --node %s: exit %d: %s %s", node, r.code, r.stdout, r.stderr)
	}
	return j.Secret
}

func waitView(t *testing.T, env []string, name string, cond func(*api.GuestView) bool) *api.GuestView {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		r := runCorral(t, env, "guest", "show", name, "-o", "json")
		var g api.GuestView
		if r.code == 0 {
			if err := jsonUnmarshal(r.stdout, &g); err == nil && cond(&g) {
				return &g
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("guest %s: condition not met in %v (last: %s %s)", name, waitTimeout, r.stdout, r.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitGone waits until a guest's groups are gone.
func waitGone(t *testing.T, cg *cgroupdriver.Driver, name string) {
	t.Helper()
	var dirs []string
	for _, k := range cgroupdriver.Kinds() {
		d, _ := cg.Paths(cgroupdriver.Guest{Kind: k, ID: name})
		dirs = append(dirs, d...)
	}
	deadline := time.Now().Add(waitTimeout)
	for _, d := range dirs {
		for {
			if _, err := os.Stat(d); os.IsNotExist(err) {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("group %s still there", d)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
