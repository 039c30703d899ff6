package simtest

import (
	"math/rand/v2"
	"time"

	"github.com/hashicorp/raft"
)

// Partitions. Endpoints are named as on the [Bus] and the [Net]: a
// server's ID, a node's ID, or a client's name ("client" for
// [Cluster.Client]). A cut between two endpoints refuses everything
// between them, both ways: bus deliveries (requests, replies and
// messages), HTTP requests, and, between two servers, raft's transport.
// A cut outlives restarts: a server started while cut stays cut.

type cutPair [2]string

func pair(a, b string) cutPair {
	if a > b {
		a, b = b, a
	}
	return cutPair{a, b}
}

// Cut reports whether a and b cannot reach each other.
func (c *Cluster) Cut(a, b string) bool {
	if a == b || a == Observer || b == Observer {
		return false
	}
	c.cutMu.Lock()
	defer c.cutMu.Unlock()
	return c.isolated[a] || c.isolated[b] || c.cuts[pair(a, b)]
}

// Partition cuts a off b, both ways.
func (c *Cluster) Partition(a, b string) {
	c.cutMu.Lock()
	c.cuts[pair(a, b)] = true
	c.cutMu.Unlock()
	c.rewire()
}

// Heal undoes Partition(a, b).
func (c *Cluster) Heal(a, b string) {
	c.cutMu.Lock()
	delete(c.cuts, pair(a, b))
	c.cutMu.Unlock()
	c.rewire()
}

// PartitionServers splits the servers in two: those named in side, and
// the others.
func (c *Cluster) PartitionServers(side ...string) {
	in := map[string]bool{}
	for _, id := range side {
		in[id] = true
	}
	c.cutMu.Lock()
	for _, a := range c.servers {
		for _, b := range c.servers {
			if in[a.ID] && !in[b.ID] {
				c.cuts[pair(a.ID, b.ID)] = true
			}
		}
	}
	c.cutMu.Unlock()
	c.rewire()
}

// IsolateAgent cuts node id's agent off every server: no heartbeat,
// report, desired state or node update gets through.
func (c *Cluster) IsolateAgent(id string) {
	c.cutMu.Lock()
	for _, s := range c.servers {
		c.cuts[pair(id, s.ID)] = true
	}
	c.cutMu.Unlock()
}

// Isolate cuts endpoint name off everyone: how the harness models a
// long pause (SIGSTOP) of a daemon as the rest of the cluster sees it.
// Its own timers go on, which a paused process's would not.
func (c *Cluster) Isolate(name string) {
	c.cutMu.Lock()
	c.isolated[name] = true
	c.cutMu.Unlock()
	c.rewire()
}

// Rejoin undoes Isolate.
func (c *Cluster) Rejoin(name string) {
	c.cutMu.Lock()
	delete(c.isolated, name)
	c.cutMu.Unlock()
	c.rewire()
}

// HealAll removes every cut.
func (c *Cluster) HealAll() {
	c.cutMu.Lock()
	clear(c.cuts)
	clear(c.isolated)
	c.cutMu.Unlock()
	c.rewire()
}

// rewire makes raft's transports match the cuts: every pair of running
// servers is connected unless cut.
func (c *Cluster) rewire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range c.servers {
		for _, b := range c.servers {
			if a == b || a.trans == nil || b.trans == nil {
				continue
			}
			if c.Cut(a.ID, b.ID) {
				a.trans.Disconnect(raft.ServerAddress(b.RaftAddr))
			} else {
				a.trans.Connect(raft.ServerAddress(b.RaftAddr), b.trans)
			}
		}
	}
}

// refuse is the Net's hook: from may not reach the server serving host
// when they are cut.
func (c *Cluster) refuse(from, host string) bool {
	for _, s := range c.servers {
		if s.HTTPAddr == host {
			return c.Cut(from, s.ID)
		}
	}
	return false
}

// Chaos returns a bus fault that drops a delivery with probability drop,
// duplicates it with probability dup, and delays each copy by up to
// maxDelay, which reorders deliveries. Deliveries to and from the
// [Observer] are left alone.
func Chaos(drop, dup float64, maxDelay time.Duration) Fault {
	return func(d Delivery, rng *rand.Rand) Fate {
		if d.To == Observer || d.From == Observer {
			return Fate{}
		}
		var f Fate
		if rng.Float64() < drop {
			return Fate{Drop: true}
		}
		if rng.Float64() < dup {
			f.Copies = 1
		}
		if maxDelay > 0 {
			f.Delay = time.Duration(rng.Int64N(int64(maxDelay)))
		}
		return f
	}
}
