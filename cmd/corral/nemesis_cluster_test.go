package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
)

// nemesisCluster is three servers and three agents run as processes.
type nemesisCluster struct {
	t *testing.T
	// stopped is set once stopAll ran: nothing is restarted after.
	stopped bool
	// knownBugs are failures caused by bugs already reported elsewhere.
	knownBugs []string
	ds        *daemons
	net       *nemesisNet
	certs     *testPKI
	servers   []*nemServer
	agents    []*nemAgent
}

type nemServer struct {
	id, http, raft string
	args           []string
	group          *os.File // cgroup v2 directory the process starts in, or nil
	groupPath      string   // for nft: relative to /sys/fs/cgroup
	mu             sync.Mutex
	d              *daemon
}

func (s *nemServer) daemon() *daemon {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.d
}

type nemAgent struct {
	started int  // how many times its process was started
	stuck   bool // its last start never became ready: not restarted again
	id      string
	dir     string // state directory
	args    []string
	cg      *cgroupdriver.Driver
	d       *daemon
}

func startNemesisCluster(t *testing.T, rep cgroupdriver.Report, net *nemesisNet) *nemesisCluster {
	t.Helper()
	dir := t.TempDir()
	c := &nemesisCluster{t: t, net: net, certs: newTestPKI(t)}
	type ports struct{ http, raft, nats, route string }
	var ps []ports
	for range 3 {
		ps = append(ps, ports{"127.0.0.1:" + freePort(t), "127.0.0.1:" + freePort(t), freePort(t), freePort(t)})
	}
	var natsURLs []string
	for _, p := range ps {
		natsURLs = append(natsURLs, "tls://127.0.0.1:"+p.nats)
	}
	for i, p := range ps {
		s := &nemServer{id: fmt.Sprintf("s%d", i+1), http: p.http, raft: p.raft}
		var routes []string
		for j, q := range ps {
			if j != i {
				routes = append(routes, "nats-route://127.0.0.1:"+q.route)
			}
		}
		s.args = []string{"server", "--id", s.id, "--data-dir", filepath.Join(dir, s.id),
			"--http-addr", p.http, "--raft-addr", p.raft, "--nats-port", p.nats,
			"--nats-cluster-port", p.route, "--nats-routes", strings.Join(routes, ","),
			"--node-down-timeout", nemesisNodeDown.String(), "--log-level", "info"}
		s.args = append(s.args, c.certs.serverArgs(s.id)...)
		if i == 0 {
			s.args = append(s.args, "--bootstrap")
		} else {
			s.args = append(s.args, "--join", ps[0].http)
		}
		if net != nil {
			s.group, s.groupPath = net.serverGroup(s.id)
		}
		c.servers = append(c.servers, s)
	}
	// The daemons are killed before the groups they live in are removed.
	c.ds = newDaemons(t)
	for _, s := range c.servers {
		c.startServer(s)
	}
	var httpAddrs []string
	for _, s := range c.servers {
		httpAddrs = append(httpAddrs, s.http)
	}
	c.certs.bootstrap(strings.Join(httpAddrs, ","))
	c.waitMembers()

	for i := range 3 {
		part := cgrouptest.NewPartition(t, rep)
		ccfg := cgroupdriver.DefaultConfig()
		ccfg.Partition, ccfg.Report = part, &rep
		cg, err := cgroupdriver.New(ccfg)
		if err != nil {
			t.Fatal(err)
		}
		// Each agent lists the servers starting with a different one, so
		// every server is some agent's first address.
		var addrs []string
		for j := range 3 {
			addrs = append(addrs, c.servers[(i+j)%3].http)
		}
		id := fmt.Sprintf("a%d", i+1)
		state := filepath.Join(dir, id)
		a := &nemAgent{id: id, dir: state, cg: cg, args: []string{"agent", "--node-id", id,
			"--addr", strings.Join(addrs, ","), "--nats-url", strings.Join(natsURLs, ","),
			"--state-dir", state, "--cgroup-partition", part,
			"--fence-timeout", "2s", "--heartbeat-interval", "200ms", "--log-level", "info"}}
		a.args = append(a.args, c.certs.agentArgs(id)...)
		c.agents = append(c.agents, a)
		c.startAgent(a)
	}
	c.waitNodesUp()
	// Every guest must fit on two of the three hosts (2 CPUs each), and
	// each host should hold some: spread, and vCPUs overcommitted.
	ctx, cancel := context.WithTimeout(context.Background(), nemesisSettle)
	defer cancel()
	cl := c.client(c.servers[0])
	cl.Retry = nemesisSettle
	if _, err := cl.SetSchedulerConfig(ctx, events.SchedulerConfig{Algorithm: "spread", CPUOvercommit: 100, MemoryOvercommit: 1}); err != nil {
		t.Fatalf("set the scheduler config: %v", err)
	}
	// Stop every guest before the partitions are checked, whatever happens;
	// this runs before newDaemons' cleanup kills the daemons.
	t.Cleanup(func() {
		if c.stopped {
			return // the test got to the end: destroyAll did it
		}
		c.heal()
		c.destroyAll()
		c.stopAll()
		c.checkNoStrays()
	})
	return c
}

// heal undoes every fault: partitions healed, paused servers continued,
// dead daemons restarted.
func (c *nemesisCluster) heal() {
	if c.net != nil {
		c.net.heal()
	}
	for _, s := range c.servers {
		if d := s.daemon(); d == nil || exited(d) {
			if err := c.tryStartServer(s); err != nil {
				c.t.Errorf("heal: %v", err)
			}
		} else {
			d.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	for _, a := range c.agents {
		if !a.stuck && (a.d == nil || exited(a.d)) {
			if err := c.tryStartAgent(a); err != nil {
				c.t.Errorf("heal: %v", err)
			}
		}
	}
}

// stopAll stops the agents, then the servers, with SIGTERM.
func (c *nemesisCluster) stopAll() {
	c.stopped = true
	for _, a := range c.agents {
		c.stop(a.id, a.d)
	}
	for _, s := range c.servers {
		c.stop(s.id, s.daemon())
	}
}

// stop ends d with SIGTERM; one that hangs is made to print its
// goroutines into its log (SIGQUIT) and killed.
func (c *nemesisCluster) stop(name string, d *daemon) {
	if exited(d) {
		return
	}
	d.cmd.Process.Signal(syscall.SIGCONT)
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		// A daemon whose raft shutdown hung exits by itself after its
		// grace period and says so: a known hashicorp/raft pipeline
		// deadlock, bounded by the daemon, nothing lost.
		if dump, _ := os.ReadFile(d.log); bytes.Contains(dump, []byte("shutdown did not finish within")) {
			c.t.Logf("%s: its raft shutdown hung (hashicorp/raft pipeline); it exited after its grace period", name)
		}
		return
	case <-time.After(15 * time.Second):
	}
	d.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-d.done:
	case <-time.After(5 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
	}
	dump, _ := os.ReadFile(d.log)
	if raftPipelineDeadlock(dump) {
		c.t.Logf("%s did not exit within 10s of SIGTERM: raft.Shutdown waits on a replication pipeline that deadlocked "+
			"(netPipeline.AppendEntries parked on inprogressCh, decodeResponses parked on doneCh; hashicorp/raft v1.7.3 with MaxRPCsInFlight 2); its goroutines are in its log", name)
		c.knownBugs = append(c.knownBugs, name+": raft pipeline deadlock on shutdown")
		return
	}
	c.t.Errorf("%s did not exit within 10s of SIGTERM; its goroutines follow in its log", name)
}

// raftPipelineDeadlock reports whether a goroutine dump shows
// hashicorp/raft's pipeline deadlock: pipelineDecode gone after a failed
// append, the sender parked handing a request to decodeResponses, which is
// parked handing the previous answer to nobody; replication to that peer
// stops and Raft.Shutdown never returns.
func raftPipelineDeadlock(dump []byte) bool {
	for _, frame := range []string{"raft.(*netPipeline).AppendEntries", "raft.(*netPipeline).decodeResponses", "raft.(*shutdownFuture).Error"} {
		if !bytes.Contains(dump, []byte(frame)) {
			return false
		}
	}
	return !bytes.Contains(dump, []byte("raft.(*Raft).pipelineDecode"))
}

// checkNoStrays removes the agents' state directories, which ends what
// they left to guard their hosts, and then fails unless no process of the
// binary under test is left. It returns how many were.
func (c *nemesisCluster) checkNoStrays() int {
	t := c.t
	for _, a := range c.agents {
		if err := os.RemoveAll(a.dir); err != nil {
			t.Errorf("remove %s: %v", a.dir, err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := processesOf(corralBin)
		if len(left) == 0 {
			c.unfence()
			return 0
		}
		if time.Now().After(deadline) {
			c.unfence()
			if c.stuckAgent() {
				// A guest start the stuck agent blocked in (the cgroup shim
				// waiting to enter a frozen group) is that same known bug;
				// thawed now, the partitions' cleanup kills it.
				t.Logf("orphans left by the agent that never became ready: %s", strings.Join(left, "; "))
				return len(left)
			}
			t.Errorf("orphans: %d processes of %s outlived the cluster: %s", len(left), corralBin, strings.Join(left, "; "))
			return len(left)
		}
		<-time.After(50 * time.Millisecond)
	}
}

func (c *nemesisCluster) stuckAgent() bool {
	for _, a := range c.agents {
		if a.stuck {
			return true
		}
	}
	return false
}

// unfence thaws the kind directories a fencer may have frozen on its way
// out, so that the partitions' cleanup can kill what is left in them.
func (c *nemesisCluster) unfence() {
	for _, a := range c.agents {
		for _, root := range a.cg.RootDirs() {
			for _, kind := range []string{"process", "lxc", "qemu"} {
				dir := filepath.Join(root, kind)
				_ = os.WriteFile(filepath.Join(dir, "freezer.state"), []byte("THAWED"), 0)
				_ = os.WriteFile(filepath.Join(dir, "cgroup.freeze"), []byte("0"), 0)
			}
		}
	}
}

// processesOf lists the live processes running bin, as "pid: cmdline".
func processesOf(bin string) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		pid := e.Name()
		if pid[0] < '0' || pid[0] > '9' {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", pid, "exe"))
		if err != nil || exe != bin {
			continue
		}
		if st, err := os.ReadFile(filepath.Join("/proc", pid, "stat")); err == nil {
			if _, rest, ok := strings.Cut(string(st), ") "); ok && strings.HasPrefix(rest, "Z") {
				continue // a zombie its parent has yet to reap
			}
		}
		cmd, _ := os.ReadFile(filepath.Join("/proc", pid, "cmdline"))
		out = append(out, pid+": "+strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " ")))
	}
	return out
}

func exited(d *daemon) bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

func (c *nemesisCluster) startServer(s *nemServer) {
	c.t.Helper()
	if err := c.tryStartServer(s); err != nil {
		c.t.Fatal(err)
	}
}

func (c *nemesisCluster) tryStartServer(s *nemServer) error {
	d, err := c.tryStartDaemon(s.id, s.group, s.args...)
	s.mu.Lock()
	s.d = d
	s.mu.Unlock()
	return err
}

// startAgent starts a's agent. One restarted on its state directory that
// never becomes ready is a bug reported elsewhere: the test stops there,
// skipped with its name, unless something failed before.
func (c *nemesisCluster) startAgent(a *nemAgent) {
	t := c.t
	t.Helper()
	err := c.tryStartAgent(a)
	switch {
	case err == nil:
	case errors.Is(err, errNotReady) && !t.Failed() && a.started > 1:
		t.Skipf("known bug: %v: an agent restarted on its state directory after kill -9 registers, "+
			"thaws a guest and then completes no pass (nodeagent Run, fence lifting); nothing checked so far failed", err)
	default:
		t.Fatal(err)
	}
}

func (c *nemesisCluster) tryStartAgent(a *nemAgent) error {
	d, err := c.tryStartDaemon(a.id, nil, a.args...)
	a.d = d
	a.started++
	a.stuck = errors.Is(err, errNotReady)
	return err
}

// tryStartDaemon is daemons.start, optionally cloning the process straight
// into a cgroup v2 group so that every socket it opens belongs to it.
func (c *nemesisCluster) tryStartDaemon(name string, group *os.File, args ...string) (*daemon, error) {
	c.t.Helper()
	return c.ds.tryStartWith(name, func(cmd *syscall.SysProcAttr) {
		if group != nil {
			cmd.UseCgroupFD, cmd.CgroupFD = true, int(group.Fd())
		}
	}, args...)
}

// pickServer draws a server, the leader half of the time.
func (c *nemesisCluster) pickServer(rng *rand.Rand) *nemServer {
	if rng.IntN(2) == 0 {
		if l := c.leader(); l != nil {
			return l
		}
	}
	return c.servers[rng.IntN(len(c.servers))]
}

func (c *nemesisCluster) client(s *nemServer) *api.Client {
	cl := c.certs.clientWith(s.http, nemesisOpTimeout)
	cl.Retry = time.Second
	return cl
}

func (c *nemesisCluster) leader() *nemServer {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, s := range c.servers {
		ms, err := c.client(s).Members(ctx)
		if err != nil {
			continue
		}
		for _, m := range ms {
			if m.Leader {
				for _, x := range c.servers {
					if x.id == m.ID {
						return x
					}
				}
			}
		}
	}
	return nil
}

// agentDown kills a's agent and keeps it dead until the log has declared
// its node down and placed its guests elsewhere, then restarts it: the
// returning agent must stop what the log moved away. The copy monitor
// watches the whole time.
func (c *nemesisCluster) agentDown(a *nemAgent, names func() []string, mon func()) {
	t := c.t
	t.Helper()
	onHost := func() (running, frozen []string) {
		for _, name := range names() {
			switch {
			case runningOn(a.cg, name):
				running = append(running, name)
			case frozenOn(a.cg, name):
				frozen = append(frozen, name)
			}
		}
		return running, frozen
	}
	// The guests the log has on a's node when it dies are those that
	// move: each must never run here and on its new node at once.
	var moved []string
	waitUntil(t, nemesisSettle, "the guests on "+a.id, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		n, err := c.client(c.servers[0]).Node(ctx, a.id)
		if err != nil {
			return false, err.Error()
		}
		moved = nil
		for _, g := range n.GuestList {
			moved = append(moved, g.Name)
		}
		return true, ""
	})
	running, _ := onHost()
	a.d.cmd.Process.Kill()
	<-a.d.done
	killed := time.Now()
	waitUntil(t, nemesisSettle, "node "+a.id+" to be declared down", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		n, err := c.client(c.servers[0]).Node(ctx, a.id)
		if err != nil {
			return false, err.Error()
		}
		return n.Status == "down", n.Status
	})
	waitUntil(t, nemesisSettle, "the guests of "+a.id+" to be placed elsewhere", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		n, err := c.client(c.servers[0]).Node(ctx, a.id)
		if err != nil {
			return false, err.Error()
		}
		var left []string
		for _, g := range n.GuestList {
			why := ""
			if v, err := c.client(c.servers[0]).Guest(ctx, g.Name); err == nil && len(v.Unplaced) > 0 {
				why = " (unplaced: " + strings.Join(v.Unplaced, "; ") + ")"
			}
			left = append(left, g.Name+"="+g.Status+why)
		}
		return len(left) == 0, strings.Join(left, " ")
	})
	// Let the new copies start, so that an old copy still running here
	// is seen beside them.
	waitUntil(t, nemesisSettle, "the guests moved off "+a.id+" to run on their new nodes", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var not []string
		for _, name := range moved {
			g, err := c.client(c.servers[0]).Guest(ctx, name)
			if err != nil || g.Node == a.id || g.Status != api.StatusRunning {
				not = append(not, fmt.Sprintf("%s=%+v", name, g))
			}
		}
		return len(not) == 0, strings.Join(not, " ")
	})
	mon()
	runningThen, frozenThen := onHost()
	t.Logf("nemesis: agent %s: the log had %d guests on its node and %d ran on its host when it was killed; %v later its node is down and they run elsewhere: still running on its host %v, frozen %v",
		a.id, len(moved), len(running), time.Since(killed).Round(100*time.Millisecond), runningThen, frozenThen)
	c.startAgent(a)
	// Nothing the log moved away may run here once the agent is back.
	waitUntil(t, nemesisSettle, "agent "+a.id+" to stop the guests moved away", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var still []string
		for _, name := range moved {
			if !runningOn(a.cg, name) && !frozenOn(a.cg, name) {
				continue
			}
			if g, err := c.client(c.servers[0]).Guest(ctx, name); err != nil || g.Node != a.id {
				still = append(still, name)
			}
		}
		return len(still) == 0, strings.Join(still, " ")
	})
}

// waitOneCopyEach waits until every acknowledged guest runs on exactly one
// host: every host converged to the log.
func (c *nemesisCluster) waitOneCopyEach(acked []string) {
	t := c.t
	t.Helper()
	deadline := time.Now().Add(nemesisSettle)
	for {
		var off []string
		for _, name := range acked {
			var on []string
			for _, a := range c.agents {
				if runningOn(a.cg, name) {
					on = append(on, a.id)
				}
			}
			if len(on) != 1 {
				off = append(off, fmt.Sprintf("%s on %v", name, on))
			}
		}
		if len(off) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("hosts did not converge in %v: %d guests do not run exactly once: %s", nemesisSettle, len(off), strings.Join(off, "; "))
			return
		}
		<-time.After(100 * time.Millisecond)
	}
}

// waitMajorityLeader waits until the servers other than cut agree on a
// leader among themselves.
func (c *nemesisCluster) waitMajorityLeader(cut *nemServer) {
	t := c.t
	t.Helper()
	waitUntil(t, nemesisSettle, fmt.Sprintf("the servers partitioned from %s to elect a leader", cut.id), func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var seen []string
		for _, s := range c.servers {
			if s == cut {
				continue
			}
			ms, err := c.client(s).Members(ctx)
			if err != nil {
				return false, err.Error()
			}
			for _, m := range ms {
				if m.Leader {
					seen = append(seen, m.ID)
				}
			}
		}
		return len(seen) == 2 && seen[0] == seen[1] && seen[0] != cut.id, fmt.Sprintf("leaders seen: %v", seen)
	})
}

// waitMembers waits until all three servers are voters.
func (c *nemesisCluster) waitMembers() {
	t := c.t
	t.Helper()
	waitUntil(t, nemesisSettle, "three voting servers", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		ms, err := c.client(c.servers[0]).Members(ctx)
		if err != nil {
			return false, err.Error()
		}
		n := 0
		for _, m := range ms {
			if m.Suffrage == "voter" || m.Suffrage == "Voter" {
				n++
			}
		}
		return n == 3, fmt.Sprintf("%+v", ms)
	})
}

func (c *nemesisCluster) waitNodesUp() {
	t := c.t
	t.Helper()
	waitUntil(t, nemesisSettle, "three nodes up", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		ns, err := c.client(c.servers[0]).Nodes(ctx)
		if err != nil {
			return false, err.Error()
		}
		up := 0
		var st []string
		for _, n := range ns {
			st = append(st, n.ID+"="+n.Status)
			if n.Status == "up" {
				up++
			}
		}
		return up == 3, strings.Join(st, " ")
	})
}

// waitHealthy waits until every server answers a consistent read.
func (c *nemesisCluster) waitHealthy(after string) {
	t := c.t
	t.Helper()
	for _, s := range c.servers {
		waitUntil(t, nemesisSettle, fmt.Sprintf("server %s to answer a consistent read after %s", s.id, after), func() (bool, string) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err := c.client(s).Guest(ctx, "nemesis-probe")
			var ae *api.APIError
			if errors.As(err, &ae) && ae.Code == api.CodeNotFound {
				return true, ""
			}
			return false, fmt.Sprint(err)
		})
	}
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s; last: %s", d, what, last)
		}
		<-time.After(50 * time.Millisecond)
	}
}

// checkAckedEverywhere reads every acknowledged guest on every server with
// a default (consistent) read and returns how many were missing.
func (c *nemesisCluster) checkAckedEverywhere(acked []string) int {
	t := c.t
	lost := 0
	for _, s := range c.servers {
		cl := c.client(s)
		cl.Retry = 5 * time.Second
		for _, name := range acked {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := cl.Guest(ctx, name)
			cancel()
			if err != nil {
				lost++
				t.Errorf("acknowledged guest %s: consistent read on %s: %v", name, s.id, err)
			}
		}
	}
	return lost
}

// checkLogs compares the event logs of the servers: each dense, all equal
// on their common prefix, and each holding at least every acknowledged
// index. It returns how many servers disagree with the first.
func (c *nemesisCluster) checkLogs(ackedIndex uint64) int {
	t := c.t
	logs := make([][]events.Event, len(c.servers))
	for i, s := range c.servers {
		// A consistent read first, so that the log is caught up.
		c.waitHealthy("the run, before reading " + s.id + "'s log")
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := c.client(s).Events(ctx, api.EventQuery{}, func(e events.Event) error {
			logs[i] = append(logs[i], e)
			return nil
		})
		cancel()
		if err != nil {
			t.Errorf("events of %s: %v", s.id, err)
		}
	}
	divergent := 0
	for i, l := range logs {
		id := c.servers[i].id
		if len(l) == 0 {
			t.Errorf("server %s returned no events", id)
			divergent++
			continue
		}
		for j := 1; j < len(l); j++ {
			if l[j].Index != l[j-1].Index+1 {
				t.Errorf("server %s: event log not dense: index %d follows %d", id, l[j].Index, l[j-1].Index)
				break
			}
		}
		if last := l[len(l)-1].Index; last < ackedIndex {
			t.Errorf("server %s: log ends at %d, before the acknowledged index %d", id, last, ackedIndex)
		}
		if i == 0 {
			continue
		}
		if d := firstDifference(logs[0], l); d != "" {
			t.Errorf("servers %s and %s disagree: %s", c.servers[0].id, id, d)
			divergent++
		}
	}
	return divergent
}

func firstDifference(a, b []events.Event) string {
	byIndex := map[uint64][]byte{}
	for _, e := range a {
		j, _ := json.Marshal(e)
		byIndex[e.Index] = j
	}
	for _, e := range b {
		ja, ok := byIndex[e.Index]
		if !ok {
			continue
		}
		jb, _ := json.Marshal(e)
		if !bytes.Equal(ja, jb) {
			return fmt.Sprintf("index %d: %s vs %s", e.Index, ja, jb)
		}
	}
	if len(a) > 0 && len(b) > 0 && a[0].Index != b[0].Index {
		return fmt.Sprintf("the logs start at %d and %d", a[0].Index, b[0].Index)
	}
	return ""
}

// destroyAll destroys every guest the cluster knows, waits until no
// guest group is left on any agent's host and returns how many were.
func (c *nemesisCluster) destroyAll() int {
	t := c.t
	ctx, cancel := context.WithTimeout(context.Background(), nemesisSettle)
	defer cancel()
	var cl *api.Client
	for _, s := range c.servers {
		cl = c.client(s)
		cl.Retry = 10 * time.Second
		if _, err := cl.Guests(ctx); err == nil {
			break
		}
	}
	gs, err := cl.Guests(ctx)
	if err != nil {
		t.Errorf("cleanup: list guests: %v", err)
	}
	for _, g := range gs {
		if _, err := cl.GuestAction(ctx, g.Name, "destroy"); err != nil {
			t.Errorf("cleanup: destroy %s: %v", g.Name, err)
		}
	}
	deadline := time.Now().Add(nemesisSettle)
	for {
		var left []string
		for _, a := range c.agents {
			if exited(a.d) {
				continue // a dead agent cleans nothing; the partition's cleanup does
			}
			for _, root := range a.cg.RootDirs() {
				for _, kind := range []string{"process", "lxc", "qemu"} {
					ents, _ := os.ReadDir(filepath.Join(root, kind))
					for _, e := range ents {
						if e.IsDir() {
							left = append(left, filepath.Join(root, kind, e.Name()))
						}
					}
				}
			}
		}
		if len(left) == 0 {
			return 0
		}
		if time.Now().After(deadline) {
			t.Errorf("orphans: %d guest groups left %v after destroying every guest: %v", len(left), nemesisSettle, left)
			return len(left)
		}
		<-time.After(50 * time.Millisecond)
	}
}
