package simtest

import (
	"context"
	"fmt"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/corral-dev/corral/coordinator"
)

// Server is one coordinator server of a [Cluster]. Its raft stores and
// data directory are its disk: they outlive Stop, and Start runs a new
// coordinator.Server on them.
type Server struct {
	c        *Cluster
	ID       string
	HTTPAddr string // host:port on the cluster's Net
	RaftAddr string // its raft transport's address
	cfg      coordinator.Config

	// Disk is the server's raft log and stable store; it can be made to
	// fail log writes.
	Disk  *Disk
	snaps *raft.InmemSnapshotStore

	mu     sync.Mutex
	srv    *coordinator.Server
	trans  *raft.InmemTransport
	conn   *Conn
	cancel context.CancelFunc
	done   chan error
}

func (c *Cluster) newServer(i int, cfg Config) *Server {
	id := fmt.Sprintf("s%d", i+1)
	s := &Server{c: c, ID: id, HTTPAddr: id + ":4646", RaftAddr: id + ":4647",
		Disk: newDisk(), snaps: raft.NewInmemSnapshotStore()}
	sc := coordinator.TestConfig(c.t, id, c.dir)
	sc.HTTPAddr, sc.RaftAddr = s.HTTPAddr, s.RaftAddr
	sc.Bootstrap = i == 0
	if i > 0 {
		sc.Join = []string{c.servers[0].HTTPAddr}
	}
	sc.NodeDownTimeout = NodeDownTimeout
	if c.log != nil {
		sc.Logger = c.log
	}
	if cfg.Server != nil {
		cfg.Server(&sc)
	}
	s.cfg = sc
	return s
}

// Coordinator returns the running coordinator.Server, nil when stopped.
func (s *Server) Coordinator() *coordinator.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv
}

// Running reports whether the server runs.
func (s *Server) Running() bool { return s.Coordinator() != nil }

// Start runs the server on its disk: a new raft transport connected to
// every running server's, its bus endpoint, its address on the Net.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return fmt.Errorf("simtest: server %s already runs", s.ID)
	}
	c := s.c
	_, trans := raft.NewInmemTransport(raft.ServerAddress(s.RaftAddr))
	conn := c.Bus.Conn(s.ID)
	srv, err := coordinator.New(s.cfg, coordinator.Deps{
		Transport: trans, LogStore: s.Disk, StableStore: s.Disk, Snapshots: s.snaps,
		Bus: conn, Listener: newListener(s.HTTPAddr), HTTPClient: c.Net.Client(s.ID),
	})
	if err != nil {
		conn.Close()
		trans.Close()
		return fmt.Errorf("simtest: start server %s: %w", s.ID, err)
	}
	c.connect(s, trans)
	c.Net.Serve(s.HTTPAddr, srv.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	s.srv, s.trans, s.conn, s.cancel, s.done = srv, trans, conn, cancel, done
	return nil
}

// Stop stops the server as a clean shutdown does: it leaves the network
// (requests in flight fail), stops, and leaves the bus and raft's
// transport. Its disk stays. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil {
		return
	}
	c := s.c
	c.Net.Unserve(s.HTTPAddr)
	s.cancel()
	if err := <-s.done; err != nil { // Run closed the server; this is Close's error
		c.t.Errorf("server %s: %v", s.ID, err)
	}
	s.conn.Close()
	c.disconnect(s)
	s.trans.Close()
	s.srv, s.trans, s.conn = nil, nil, nil
}

// connect joins trans, s's new transport, to the transports of the other
// running servers, both ways.
func (c *Cluster) connect(s *Server, trans *raft.InmemTransport) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, o := range c.servers {
		if o == s || o.trans == nil || c.Cut(s.ID, o.ID) {
			continue
		}
		trans.Connect(raft.ServerAddress(o.RaftAddr), o.trans)
		o.trans.Connect(raft.ServerAddress(s.RaftAddr), trans)
	}
}

// disconnect cuts the other servers' transports off s's.
func (c *Cluster) disconnect(s *Server) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, o := range c.servers {
		if o != s && o.trans != nil {
			o.trans.Disconnect(raft.ServerAddress(s.RaftAddr))
		}
	}
}
