package simtest

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing/synctest"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/bus"
	"github.com/corral-dev/corral/nodeagent"
)

// Agent is the node agent of one simulated [Host]. Its state directory
// and host outlive Stop, so a started-again agent adopts what it left.
type Agent struct {
	c        *Cluster
	ID       string
	Host     *Host
	StateDir string
	cfg      nodeagent.Config
	lease    time.Duration // the host's fencing lease; 0: none

	mu     sync.Mutex
	agent  *nodeagent.Agent
	link   *link
	conn   *Conn
	cancel context.CancelFunc
	done   chan error
}

func (c *Cluster) newAgent(n NodeConfig, cfg Config) *Agent {
	cpus, mem := n.CPUs, n.MemoryBytes
	if cpus == 0 {
		cpus = 4
	}
	if mem == 0 {
		mem = 8 << 30
	}
	a := &Agent{c: c, ID: n.ID, Host: NewHost(n.ID, cpus, mem), StateDir: filepath.Join(c.dir, "agent-"+n.ID)}
	ac := nodeagent.DefaultConfig()
	ac.NodeID, ac.StateDir, ac.Labels = n.ID, a.StateDir, n.Labels
	ac.CPUs, ac.MemoryBytes = cpus, mem
	ac.HeartbeatInterval, ac.FenceTimeout = HeartbeatInterval, FenceTimeout
	ac.ResyncInterval, ac.UsageInterval = ResyncInterval, UsageInterval
	ac.StopTimeout = time.Second
	if cfg.Agent != nil {
		cfg.Agent(&ac)
	}
	a.cfg = ac
	if !cfg.NoLease {
		a.lease = ac.FenceTimeout + LeaseMargin
	}
	// The secret is the node's identity in the log: drawn from the seed,
	// so that a replay registers the same node.
	var raw [32]byte
	for i := range raw {
		raw[i] = byte(c.rng.Uint32())
	}
	if err := os.MkdirAll(a.StateDir, 0o700); err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(a.StateDir, "secret"), []byte(hex.EncodeToString(raw[:])+"\n"), 0o600); err != nil {
		c.t.Fatal(err)
	}
	return a
}

// Agent returns the running nodeagent.Agent, nil when stopped.
func (a *Agent) Agent() *nodeagent.Agent {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.agent
}

// Running reports whether the agent runs.
func (a *Agent) Running() bool { return a.Agent() != nil }

// Requests returns the HTTP requests the agent made so far, by method and
// path.
func (a *Agent) Requests() Requests { return a.c.Net.Requests(a.ID) }

// Start runs a new agent on the host and state directory and returns
// once it follows the log: it is ready (it adopted what the host runs,
// registered, and made its first pass), its subscription to the node's
// updates is in place, and its one list, made after the subscription, is
// done. It must run inside [Run].
func (a *Agent) Start() error {
	if err := a.start(); err != nil {
		return err
	}
	deadline := time.Now().Add(StartTimeout)
	for {
		synctest.Wait() // the subscription, and the list it asks for
		if a.c.Bus.Subscribed(a.ID, bus.NodeSubject(a.ID)) {
			// What the lease froze while the agent was away and the
			// log still wants running here runs again.
			a.mu.Lock()
			l := a.link
			a.mu.Unlock()
			l.liftFence(a.c.ctx, a.ID)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("simtest: agent %s did not subscribe to its node's updates in %v", a.ID, StartTimeout)
		}
		time.Sleep(time.Millisecond)
	}
}

func (a *Agent) start() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.agent != nil {
		return fmt.Errorf("simtest: agent %s already runs", a.ID)
	}
	c := a.c
	addrs := make([]string, len(c.servers))
	for i, s := range c.servers {
		addrs[i] = s.HTTPAddr
	}
	client, err := api.NewClientWith(strings.Join(addrs, ","), c.Net.Client(a.ID))
	if err != nil {
		return err
	}
	client.Actor = "agent:" + a.ID
	client.Retry = 5 * time.Second
	conn := c.Bus.Conn(a.ID)
	l := &link{Remote: nodeagent.NewRemoteWith(client, conn), client: client, host: a.Host, lease: a.lease}
	log := c.log
	if log != nil {
		log = log.With("agent", a.ID)
	}
	ag, err := nodeagent.New(a.cfg, nodeagent.Deps{Coordinator: l, Notifier: l, Cgroups: a.Host, Drivers: a.Host, Logger: log})
	if err != nil {
		conn.Close()
		return fmt.Errorf("simtest: agent %s: %w", a.ID, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ag.Run(ctx) }()
	select {
	case <-ag.Ready():
	case err := <-done:
		cancel()
		conn.Close()
		return fmt.Errorf("simtest: agent %s ended before it was ready: %v", a.ID, err)
	case <-time.After(StartTimeout):
		ag.Close()
		cancel()
		<-done
		conn.Close()
		return fmt.Errorf("simtest: agent %s not ready after %v", a.ID, StartTimeout)
	}
	a.agent, a.link, a.conn, a.cancel, a.done = ag, l, conn, cancel, done
	return nil
}

// Stop stops the agent as a restart does: its guests run on, on the host.
// Stopping a stopped agent does nothing.
func (a *Agent) Stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.agent == nil {
		return
	}
	a.agent.Close()
	if err := <-a.done; err != nil && !errors.Is(err, context.Canceled) {
		a.c.t.Errorf("agent %s: Run: %v", a.ID, err)
	}
	a.cancel()
	a.conn.Close()
	a.agent, a.conn = nil, nil
}
