// raft draws its election timeouts from math/rand's global source, which
// simtest.Run can seed only when Seed is not a no-op.
//
//go:debug randseednop=0

package simtest_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/bus"
	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/simtest"
)

// twoNodes is three servers and two agents, n1 and n2, of 4 CPUs each.
func twoNodes(seed uint64) simtest.Config {
	return simtest.Config{Seed: seed, Servers: 3, Nodes: []simtest.NodeConfig{{ID: "n1"}, {ID: "n2"}}}
}

func process(name string) api.CreateGuest {
	return api.CreateGuest{Name: name, Driver: "process", Memory: "64M", Command: []string{"/bin/sleep", "infinity"}}
}

// updates records, per receiving endpoint, the node updates the bus
// hands over.
type updates struct {
	mu sync.Mutex
	by map[string][]api.NodeUpdate
}

func watchUpdates(b *simtest.Bus) *updates {
	u := &updates{by: map[string][]api.NodeUpdate{}}
	b.Observe(func(d simtest.Delivery) {
		if !strings.HasPrefix(d.Subject, bus.NodePrefix) {
			return
		}
		var nu api.NodeUpdate
		if json.Unmarshal(d.Data, &nu) != nil {
			return
		}
		u.mu.Lock()
		u.by[d.To] = append(u.by[d.To], nu)
		u.mu.Unlock()
	})
	return u
}

// about returns the updates to node that concern guest.
func (u *updates) about(node, guest string) []api.NodeUpdate {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []api.NodeUpdate
	for _, nu := range u.by[node] {
		var e struct {
			Guest string `json:"guest"`
		}
		json.Unmarshal(nu.Event, &e)
		if e.Guest == guest || nu.Removed == guest || (nu.Guest != nil && nu.Guest.Name == guest) {
			out = append(out, nu)
		}
	}
	return out
}

func (u *updates) count(node string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.by[node])
}

// waitGuest waits until the API shows guest name in a state ok accepts.
func waitGuest(c *simtest.Cluster, cl *api.Client, name, what string, ok func(*api.GuestView) bool) *api.GuestView {
	var g *api.GuestView
	c.Eventually(name+" "+what, 20*time.Second, func() bool {
		var err error
		g, err = cl.Guest(c.Context(), name)
		return err == nil && ok(g)
	})
	return g
}

// history returns the guest's retained events.
func history(t *testing.T, c *simtest.Cluster, cl *api.Client, name string) []events.Event {
	t.Helper()
	var out []events.Event
	if err := cl.History(c.Context(), name, func(e events.Event) error {
		out = append(out, e)
		return nil
	}); err != nil {
		t.Fatalf("history of %s: %v", name, err)
	}
	return out
}

// lifecycle creates a process guest through a follower, waits until it is
// placed and running, destroys it, waits until it is gone from the log and
// the host, and checks what it cost the agents. It returns the cluster's
// log, one line per event.
func lifecycle(t *testing.T, seed uint64) []string {
	c := simtest.New(t, twoNodes(seed))
	ctx := c.Context()
	// Writes to a follower are forwarded to the leader.
	follower := c.Follower()
	cl := c.Client(follower)
	seen := watchUpdates(c.Bus)

	type before struct {
		lists     uint64
		reqs      simtest.Requests
		published int
	}
	was := map[string]before{}
	for _, a := range c.Agents() {
		was[a.ID] = before{lists: a.Agent().Lists(), reqs: a.Requests(), published: c.Bus.Stats(bus.NodeSubject(a.ID)).Published}
		if l := was[a.ID].lists; l != 1 {
			t.Errorf("agent %s listed its desired state %d times to start, want once", a.ID, l)
		}
	}

	if _, err := cl.CreateGuest(ctx, process("web")); err != nil {
		t.Fatalf("create: %v", err)
	}
	g := waitGuest(c, cl, "web", "placed", func(g *api.GuestView) bool { return g.Node != "" })
	host := c.Agent(g.Node)
	other := c.Agents()[0]
	if other == host {
		other = c.Agents()[1]
	}
	waitGuest(c, cl, "web", "running", func(g *api.GuestView) bool { return g.Status == api.StatusRunning })
	if !host.Host.Running("web") {
		t.Fatalf("the log says web runs on %s, but its host does not run it", host.ID)
	}
	if other.Host.Running("web") {
		t.Fatalf("web runs on %s too", other.ID)
	}
	var out strings.Builder
	if err := cl.Logs(ctx, "web", api.LogQuery{}, &out); err != nil || !strings.Contains(out.String(), "process/web started on "+host.ID) {
		t.Errorf("web's log through %s = %q, %v; want the line its host wrote", follower.ID, out.String(), err)
	}
	if n := c.Net.Requests(follower.ID)["POST /v1/guests"]; n != 1 {
		t.Errorf("follower %s forwarded the create %d times, want once", follower.ID, n)
	}
	// Let it run for a while: heartbeats, resyncs with their drift
	// checks and usage reports come and go, and none of them lists.
	c.Advance(3 * simtest.UsageInterval)

	if _, err := cl.GuestAction(ctx, "web", "destroy"); err != nil {
		t.Fatalf("destroy: %v", err)
	}
	c.Eventually("web gone from the log", 20*time.Second, func() bool {
		_, err := cl.Guest(ctx, "web")
		return errors.Is(err, api.ErrNotFound)
	})
	web := cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "web"}
	c.Eventually("web gone from "+host.ID, 20*time.Second, func() bool {
		_, grouped := host.Host.Group(web)
		return !host.Host.Running("web") && !grouped
	})

	// List, then watch: the guest's whole life reached the hosting agent
	// as node updates, and it never listed again.
	if got, want := host.Agent().Lists(), was[host.ID].lists; got != want {
		t.Errorf("agent %s listed its desired state %d times during web's life, want 0", host.ID, got-want)
	}
	spent := host.Requests().Sub(was[host.ID].reqs)
	report := "POST /v1/nodes/" + host.ID + "/report"
	t.Logf("HTTP requests of %s for web's life: %v", host.ID, spent)
	for k := range spent {
		if k != report {
			t.Errorf("agent %s sent %s %d times for web's life; want only %s", host.ID, k, spent[k], report)
		}
	}
	// One report for the start (with the values it wrote), one per usage
	// interval while it ran.
	if n, most := spent[report], 1+4; n < 1 || n > most {
		t.Errorf("agent %s reported %d times for web's life, want 1 to %d", host.ID, n, most)
	}
	if n := len(seen.about(host.ID, "web")); n < 3 {
		t.Errorf("agent %s received %d updates about web, want at least placed, started and undefined", host.ID, n)
	}

	// The other node heard nothing: no update, no request.
	if got := seen.about(other.ID, "web"); len(got) > 0 {
		t.Errorf("agent %s received %d updates about web, which it does not host: %+v", other.ID, len(got), got)
	}
	if n := seen.count(other.ID); n > 0 {
		t.Errorf("agent %s received %d node updates during web's life, want none", other.ID, n)
	}
	if n := c.Bus.Stats(bus.NodeSubject(other.ID)).Published - was[other.ID].published; n > 0 {
		t.Errorf("the leader published %d updates to %s during web's life, want none", n, other.ID)
	}
	if spent := other.Requests().Sub(was[other.ID].reqs); len(spent) > 0 {
		t.Errorf("agent %s made HTTP requests during web's life: %v", other.ID, spent)
	}
	if got := other.Agent().Lists(); got != was[other.ID].lists {
		t.Errorf("agent %s listed its desired state during web's life", other.ID)
	}

	var log []string
	if err := c.Client().Events(ctx, api.EventQuery{}, func(e events.Event) error {
		log = append(log, fmt.Sprintf("%d %s guest=%s node=%s actor=%s", e.Index, e.Type, e.Guest, e.Node, e.Actor))
		return nil
	}); err != nil {
		t.Fatalf("events: %v", err)
	}
	return log
}

// TestGuestLifecycle: a guest created, placed, started and destroyed
// across three servers and two agents, costing the agents only what list
// and watch need.
func TestGuestLifecycle(t *testing.T) {
	simtest.Run(t, 1, func(t *testing.T) {
		log := lifecycle(t, 1)
		var types []string
		for _, l := range log {
			types = append(types, strings.Fields(l)[1])
		}
		for _, want := range []string{"guest.defined", "guest.placed", "guest.started", "guest.undefined"} {
			if !slices.Contains(types, want) {
				t.Errorf("the log has no %s:\n%s", want, strings.Join(log, "\n"))
			}
		}
	})
}

// TestDeterministic: the same seed gives the same log, event for event.
// Times are left out: raft's first election timeout is drawn from the
// global math/rand source by two of raft's goroutines at once, so which
// draw it gets, and every time after it, can differ between runs.
func TestDeterministic(t *testing.T) {
	var logs [2][]string
	for i := range logs {
		simtest.Run(t, 7, func(t *testing.T) { logs[i] = lifecycle(t, 7) })
	}
	if !slices.Equal(logs[0], logs[1]) {
		t.Errorf("two runs with seed 7 differ:\nfirst:\n%s\nsecond:\n%s", strings.Join(logs[0], "\n"), strings.Join(logs[1], "\n"))
	}
}

// TestCPUSetAndDrift: a pinned guest's cpuset reaches its group, and a
// value changed behind the agent's back is put back and reported.
func TestCPUSetAndDrift(t *testing.T) {
	simtest.Run(t, 2, func(t *testing.T) {
		c := simtest.New(t, simtest.Config{Seed: 2, Nodes: []simtest.NodeConfig{{ID: "n1", CPUs: 2}, {ID: "n2", CPUs: 2}}})
		cl := c.Client()
		g := process("pinned")
		g.CPUSet = "1"
		if _, err := cl.CreateGuest(c.Context(), g); err != nil {
			t.Fatalf("create: %v", err)
		}
		v := waitGuest(c, cl, "pinned", "running", func(g *api.GuestView) bool { return g.Status == api.StatusRunning })
		host := c.Agent(v.Node).Host
		id := cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "pinned"}
		grp, ok := host.Group(id)
		if !ok || len(grp.Applied) == 0 {
			t.Fatalf("%s has no group for pinned", v.Node)
		}
		if got := grp.Applied[0].CpusetCPUs; got != "1" {
			t.Errorf("pinned started with cpuset %q, want 1", got)
		}
		if got := grp.Values["cpuset_cpus"]; got != "1" {
			t.Errorf("pinned's group holds cpuset %q, want 1", got)
		}

		if err := host.SetValue(id, "cpuset_cpus", "0"); err != nil {
			t.Fatal(err)
		}
		var drift *events.GuestDrift
		c.Eventually("drift of pinned reported", 20*time.Second, func() bool {
			for _, e := range history(t, c, cl, "pinned") {
				if d, ok := e.Payload.(*events.GuestDrift); ok && d.Knob == "cpuset_cpus" {
					drift = d
					return true
				}
			}
			return false
		})
		if drift.Expected != "1" || drift.Found != "0" || !drift.Corrected || drift.Node != v.Node {
			t.Errorf("drift = %+v, want cpuset_cpus expected 1, found 0, corrected, on %s", drift, v.Node)
		}
		if grp, _ := host.Group(id); grp.Values["cpuset_cpus"] != "1" {
			t.Errorf("after the drift, pinned's group holds cpuset %q, want 1 again", grp.Values["cpuset_cpus"])
		}
	})
}

// TestRestart: the harness's daemons restart on what they left. An agent
// that restarts adopts its running guest instead of starting it again;
// the cluster goes on without its stopped leader, and the old leader
// catches up when it comes back.
func TestRestart(t *testing.T) {
	simtest.Run(t, 3, func(t *testing.T) {
		c := simtest.New(t, twoNodes(3))
		ctx := c.Context()
		cl := c.Client()
		if _, err := cl.CreateGuest(ctx, process("db")); err != nil {
			t.Fatalf("create: %v", err)
		}
		g := waitGuest(c, cl, "db", "running", func(g *api.GuestView) bool { return g.Status == api.StatusRunning })
		host := c.Agent(g.Node)

		host.Stop()
		if !host.Host.Running("db") {
			t.Fatal("db stopped with its agent")
		}
		if err := host.Start(); err != nil {
			t.Fatal(err)
		}
		c.Advance(2 * simtest.ResyncInterval)
		if again, err := cl.Guest(ctx, "db"); err != nil || again.PID != g.PID || again.Generation != g.Generation || again.Status != api.StatusRunning {
			t.Errorf("after the agent's restart db is %+v (%v), want running as pid %d, generation %d", again, err, g.PID, g.Generation)
		}
		if !host.Host.Running("db") {
			t.Error("db does not run after the agent's restart")
		}

		old := c.WaitLeader()
		old.Stop()
		c.Eventually("a new leader", 20*time.Second, func() bool {
			l := c.Leader()
			return l != nil && l != old
		})
		if _, err := cl.CreateGuest(ctx, process("db2")); err != nil {
			t.Fatalf("create without the old leader: %v", err)
		}
		waitGuest(c, cl, "db2", "running", func(g *api.GuestView) bool { return g.Status == api.StatusRunning })
		if err := old.Start(); err != nil {
			t.Fatal(err)
		}
		c.Eventually(old.ID+" to catch up", 20*time.Second, func() bool {
			l := c.Leader()
			return l != nil && old.Coordinator().AppliedIndex() == l.Coordinator().AppliedIndex()
		})
		for _, name := range []string{"db", "db2"} {
			if _, err := cl.GuestAction(ctx, name, "destroy"); err != nil {
				t.Fatalf("destroy %s: %v", name, err)
			}
		}
		c.Eventually("every guest gone from the hosts", 20*time.Second, func() bool {
			for _, a := range c.Agents() {
				if len(a.Host.Groups()) > 0 {
					return false
				}
			}
			return true
		})
	})
}
