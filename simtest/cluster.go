package simtest

import (
	"context"
	"fmt"
	"log/slog"
	mathrand "math/rand"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/cryptotest"
	"testing/synctest"
	"time"

	"github.com/corral-dev/corral/coordinator"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/nodeagent"
)

// Config describes a simulated cluster.
type Config struct {
	// Seed drives the choices the harness makes: node secrets and the
	// bus's faults; [Run] seeds crypto/rand (request IDs) and math/rand
	// (raft's election timeouts) with it too. A seed replays a run's log;
	// see [Run] for what can still differ.
	Seed uint64
	// Servers is the number of coordinator servers, 3 when zero.
	Servers int
	// Nodes are the hosts, one agent each.
	Nodes []NodeConfig
	// Server and Agent, when set, adjust each daemon's configuration
	// after the harness filled it in.
	Server func(*coordinator.Config)
	Agent  func(*nodeagent.Config)
	// Logger, when set, is every daemon's logger (CORRAL_TEST_LOG=1 sends
	// everything to standard error instead).
	Logger *slog.Logger
	// NoLease runs the hosts without a fencing lease ([Host.RenewLease]):
	// only a live agent fences, as with no fencer configured.
	NoLease bool
}

// NodeConfig describes one simulated host.
type NodeConfig struct {
	ID string
	// CPUs and MemoryBytes are the host's hardware; 4 CPUs and 8 GiB when
	// zero.
	CPUs        int
	MemoryBytes int64
	Labels      map[string]string
}

// Timing of the simulated daemons. They are short so that a test covers
// many heartbeats and passes; under synctest they cost no wall time.
const (
	NodeDownTimeout   = 10 * time.Second
	HeartbeatInterval = 200 * time.Millisecond
	FenceTimeout      = 2 * time.Second
	ResyncInterval    = time.Second
	UsageInterval     = 2 * time.Second
	// LeaseMargin is how much longer than the fence timeout a host's
	// fencing lease lives ([Host.RenewLease]): the real fencer's longest
	// poll interval, nodeagent.MaxFencerPoll. The coordinator refuses a
	// node whose node-down timeout is not longer than its fence timeout
	// plus two heartbeat intervals plus that.
	LeaseMargin = nodeagent.MaxFencerPoll
	// StartTimeout bounds how long New and Start wait for a daemon to be
	// ready.
	StartTimeout = 30 * time.Second
)

// Cluster is a whole corral cluster in one process: coordinator servers
// on raft's in-memory transport and stores (with the real state machine,
// event store and HTTP API), node agents on simulated [Host]s, an
// in-memory [Bus] and HTTP [Net] between them. Servers and agents can be
// stopped and started again on what they left (raft's stores, the event
// store, the agent's state directory and host).
//
// Build it with [New] inside [Run], so that time is simulated. Its methods
// are called from the test's goroutine.
type Cluster struct {
	t    testing.TB
	ctx  context.Context
	seed uint64
	rng  *rand.Rand
	dir  string
	log  *slog.Logger

	Bus *Bus
	Net *Net

	servers []*Server
	agents  []*Agent

	mu sync.Mutex // guards the raft transports' connections

	cutMu    sync.Mutex // guards cuts and isolated; taken last
	cuts     map[cutPair]bool
	isolated map[string]bool
}

// Run runs f inside a testing/synctest bubble, so that the cluster's time
// is simulated: timeouts, heartbeats and raft elections happen in
// simulated time, a run takes the wall time its work takes, and waiting
// never depends on the machine's speed. crypto/rand is seeded from seed
// for the bubble's lifetime (request IDs), and so is math/rand's global
// source when the test binary sets //go:debug randseednop=0 (raft draws
// its election timeouts there; without it they are random). When f
// fails, the seed is logged to replay the run.
//
// What a seed does not fix is the order in which goroutines that are
// runnable at the same simulated instant run: two of raft's goroutines
// draw from math/rand at once when it starts, for one. A replay gives
// the same log, event for event, in most runs, not all, and its times
// may differ.
func Run(t *testing.T, seed uint64, f func(t *testing.T)) {
	t.Helper()
	synctest.Test(t, func(t *testing.T) {
		// Deferred: a failure in the bubble ends t's test once the
		// bubble is done, before Test returns.
		defer func() {
			if t.Failed() {
				t.Logf("simtest: seed %d", seed)
			}
		}()
		cryptotest.SetGlobalRandom(t, seed)
		// raft's election timeouts come from the global source. Seed is a
		// no-op unless the test binary sets //go:debug randseednop=0.
		mathrand.Seed(int64(seed))
		f(t)
	})
}

// New builds the cluster, starts every server and agent, and returns once
// the servers agree on their membership and every agent is ready. It
// stops everything when the test ends.
func New(t testing.TB, cfg Config) *Cluster {
	t.Helper()
	if cfg.Servers == 0 {
		cfg.Servers = 3
	}
	c := &Cluster{
		t: t, ctx: t.Context(), seed: cfg.Seed, dir: t.TempDir(),
		rng: rand.New(rand.NewPCG(cfg.Seed, 0x5eed)),
		Bus: NewBus(cfg.Seed), Net: NewNet(),
		cuts: map[cutPair]bool{}, isolated: map[string]bool{},
	}
	c.Bus.SetCut(c.Cut)
	c.Net.SetRefuse(c.refuse)
	c.log = cfg.Logger
	if os.Getenv("CORRAL_TEST_LOG") != "" {
		c.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	t.Cleanup(c.Close)
	for i := range cfg.Servers {
		c.servers = append(c.servers, c.newServer(i, cfg))
	}
	for _, n := range cfg.Nodes {
		c.agents = append(c.agents, c.newAgent(n, cfg))
	}
	for i, s := range c.servers {
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			c.WaitReady(s)
		}
	}
	c.Eventually(fmt.Sprintf("%d servers to be members", len(c.servers)), StartTimeout, func() bool {
		for _, s := range c.servers {
			select {
			case <-s.Coordinator().Ready():
			default:
				return false
			}
		}
		ms, err := c.Client().Members(c.ctx)
		if err != nil || len(ms) != len(c.servers) {
			return false
		}
		for _, m := range ms {
			if m.HTTPAddr == "" || m.Suffrage != "voter" {
				return false
			}
		}
		return true
	})
	for _, a := range c.agents {
		if err := a.Start(); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// Seed is the cluster's seed.
func (c *Cluster) Seed() uint64 { return c.seed }

// Context is the test's context, for calls to the API.
func (c *Cluster) Context() context.Context { return c.ctx }

// Close stops every agent, then every server. It runs when the test ends.
func (c *Cluster) Close() {
	for _, a := range c.agents {
		a.Stop()
	}
	for _, s := range c.servers {
		s.Stop()
	}
}

// Servers returns the servers, running or not.
func (c *Cluster) Servers() []*Server { return c.servers }

// Agents returns the agents, running or not.
func (c *Cluster) Agents() []*Agent { return c.agents }

// Server returns the server with the given ID, nil if none.
func (c *Cluster) Server(id string) *Server {
	for _, s := range c.servers {
		if s.ID == id {
			return s
		}
	}
	return nil
}

// Agent returns the agent of node id, nil if none.
func (c *Cluster) Agent(id string) *Agent {
	for _, a := range c.agents {
		if a.ID == id {
			return a
		}
	}
	return nil
}

// Leader returns the running server that is the raft leader, nil when
// none is.
func (c *Cluster) Leader() *Server {
	for _, s := range c.servers {
		if cs := s.Coordinator(); cs != nil && cs.IsLeader() {
			return s
		}
	}
	return nil
}

// WaitLeader waits until a server leads and returns it.
func (c *Cluster) WaitLeader() *Server {
	c.t.Helper()
	var l *Server
	c.Eventually("a leader", StartTimeout, func() bool {
		l = c.Leader()
		return l != nil
	})
	return l
}

// Follower returns a running server that is not the leader, nil when
// there is none.
func (c *Cluster) Follower() *Server {
	l := c.WaitLeader()
	for _, s := range c.servers {
		if s != l && s.Running() {
			return s
		}
	}
	return nil
}

// Client returns an API client that talks to the given servers (every
// server when none is given) over the cluster's network, as "client".
func (c *Cluster) Client(servers ...*Server) *api.Client {
	c.t.Helper()
	if len(servers) == 0 {
		servers = c.servers
	}
	addrs := make([]string, len(servers))
	for i, s := range servers {
		addrs[i] = s.HTTPAddr
	}
	cl, err := api.NewClientWith(strings.Join(addrs, ","), c.Net.Client("client"))
	if err != nil {
		c.t.Fatal(err)
	}
	cl.Actor = "simtest"
	return cl
}

// Eventually waits until cond holds, checking it every few (simulated)
// milliseconds, and fails the test when within passes first.
func (c *Cluster) Eventually(what string, within time.Duration, cond func() bool) {
	c.t.Helper()
	Eventually(c.t, what, within, cond)
}

// Eventually waits until cond holds, checking it every 10 simulated
// milliseconds, and fails t when within passes first. It must run inside
// [Run]: cond is checked only once everything else in the bubble is
// blocked, so that it sees the cluster settled at that instant, not half
// way through what the instant set off, and a run checks the same states
// each time.
func Eventually(t testing.TB, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		synctest.Wait()
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Advance lets d of simulated time pass and returns once the cluster has
// settled at the new instant: heartbeats, passes, usage reports and raft
// rounds due meanwhile have run. It must run inside [Run].
func (c *Cluster) Advance(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

// WaitReady waits until s is ready (it knows a leader and has applied what
// was committed).
func (c *Cluster) WaitReady(s *Server) {
	c.t.Helper()
	cs := s.Coordinator()
	if cs == nil {
		c.t.Fatalf("server %s is not running", s.ID)
	}
	select {
	case <-cs.Ready():
	case <-time.After(StartTimeout):
		c.t.Fatalf("server %s not ready after %v", s.ID, StartTimeout)
	}
}

// Describe says, in one line, what each server is doing: stopped, or
// its raft state and the index its state holds.
func (c *Cluster) Describe() string {
	var out []string
	for _, s := range c.servers {
		cs := s.Coordinator()
		switch {
		case cs == nil:
			out = append(out, s.ID+" stopped")
		case cs.IsLeader():
			out = append(out, fmt.Sprintf("%s leader at %d", s.ID, cs.AppliedIndex()))
		default:
			out = append(out, fmt.Sprintf("%s at %d", s.ID, cs.AppliedIndex()))
		}
	}
	return strings.Join(out, ", ")
}
