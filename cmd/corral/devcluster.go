package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/corral-dev/corral/coordinator"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/bus"
	"github.com/corral-dev/corral/coordinator/pki"
	"github.com/corral-dev/corral/events"
)

// corral dev --servers N runs N coordinator servers in one process, each
// with its own data directory (<data-dir>/s1, s2, …), its own raft,
// event store, HTTP API and embedded NATS, the NATS servers routed into one
// cluster. They share one CA, the dev user's certificate and management
// token in <data-dir>/tls and <data-dir>/acl-token, as a one-server corral
// dev keeps them, so the CLI finds them the same way.
//
// Server n (from 1) listens on BASE+10*(n-1) plus 0 (HTTP), 1 (raft),
// 2 (NATS) and 3 (NATS routes), as deploy/cluster3.sh lays them out;
// --port-base 0 takes free ports, for one run only (raft remembers its
// peers' addresses, so a restart needs the same ports).

// devPortBaseFile records the port base a multi-server data dir was
// started with.
const devPortBaseFile = "port-base"

// defaultDevPortBase puts server 1 on corral dev's usual 4646, where the
// CLI looks by default.
const defaultDevPortBase = 4646

// maxDevServers bounds --servers: raft wants an odd count, and more than
// five on one machine prove nothing three do not.
const maxDevServers = 5

// devPorts are one server's listeners under a port base.
type devPorts struct{ http, raft, nats, route int }

func devPortsOf(base, n int) devPorts {
	if base == 0 {
		return devPorts{0, 0, -1, -1}
	}
	p := base + 10*(n-1)
	return devPorts{p, p + 1, p + 2, p + 3}
}

// checkDevServers validates --servers and --port-base.
func checkDevServers(servers, base int) error {
	if servers < 1 || servers > maxDevServers || servers%2 == 0 {
		return usagef("--servers %d: give 1, 3 or 5 (raft needs an odd number of voters)", servers)
	}
	if base != 0 && (base < 1024 || base+10*(servers-1)+3 > 65535) {
		return usagef("--port-base %d: give 0 (free ports) or 1024 to %d (the servers take BASE to BASE+%d)", base, 65535-10*(servers-1)-3, 10*(servers-1)+3)
	}
	return nil
}

// devPortBase decides the port base of a multi-server dev cluster in dir:
// the one it was started with, which a new --port-base may not change.
func devPortBase(dir string, given int, explicit bool) (int, error) {
	path := filepath.Join(dir, devPortBaseFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if _, err := os.Stat(filepath.Join(dir, "raft.db")); err == nil {
			return 0, fmt.Errorf("%s holds a one-server corral dev: give --servers 3 another --data-dir", dir)
		}
		return given, nil
	}
	if err != nil {
		return 0, err
	}
	recorded, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a port base: remove %s to start the cluster afresh", path, b, dir)
	}
	switch {
	case recorded == 0:
		return 0, fmt.Errorf("%s was started with --port-base 0, on free ports its servers remember and cannot get again: remove %s to start afresh, or use another --data-dir", dir, dir)
	case explicit && given != recorded:
		return 0, fmt.Errorf("%s was started with --port-base %d, and its servers remember those ports: give --port-base %d, or another --data-dir", dir, recorded, recorded)
	}
	return recorded, nil
}

// runDevCluster is corral dev with o.servers > 1.
func (a *app) runDevCluster(ctx context.Context, o devOptions, log *slog.Logger, dir string, node events.NodeRegistered) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	base, err := devPortBase(dir, o.portBase, o.portBaseSet)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, devPortBaseFile), []byte(strconv.Itoa(base)+"\n"), 0o600); err != nil {
		return err
	}
	ids := make([]pki.Identity, o.servers)
	for i := range ids {
		ids[i] = pki.Identity{Role: pki.RoleServer, Name: fmt.Sprintf("s%d", i+1)}
	}
	nodeID := pki.Identity{Role: pki.RoleNode, Name: node.ID}
	files, err := pki.EnsureDir(devTLSDir(dir), append(ids, nodeID, devClient)...)
	if err != nil {
		return fmt.Errorf("corral dev's certificates in %s: %w", devTLSDir(dir), err)
	}
	caCert, caKey := pki.CAFileNames(devTLSDir(dir))
	ca, err := pki.LoadCA(caCert, caKey)
	if err != nil {
		return err
	}
	agentErr := error(nil)
	if !o.noAgent {
		agentErr = agentPossible(o.agent.partition)
		if agentErr != nil {
			log.Warn("running without a node agent: guests are placed but not run", "why", agentErr)
		}
	}

	_, err = os.Stat(filepath.Join(dir, ids[0].Name, "raft.db"))
	fresh := errors.Is(err, os.ErrNotExist)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c := newDevCluster(ctx, log)
	defer c.stop()
	for i, id := range ids {
		cfg := coordinator.DefaultConfig(filepath.Join(dir, id.Name))
		cfg.ID = id.Name
		p := devPortsOf(base, i+1)
		cfg.HTTPAddr = fmt.Sprintf("127.0.0.1:%d", p.http)
		cfg.RaftAddr = fmt.Sprintf("127.0.0.1:%d", p.raft)
		cfg.NATS = bus.EmbeddedConfig{Host: "127.0.0.1", Port: p.nats, ClusterPort: p.route}
		for j := range ids {
			if base != 0 && j != i {
				cfg.NATS.Routes = append(cfg.NATS.Routes, fmt.Sprintf("nats-route://127.0.0.1:%d", devPortsOf(base, j+1).route))
			}
		}
		if i > 0 {
			first := c.servers[0]
			cfg.Bootstrap = false
			cfg.Join = []string{first.HTTPAddr()}
			if base == 0 {
				// Free ports: route to the first server, whose NATS
				// tells the others of each other.
				cfg.NATS.Routes = []string{first.NATSClusterURL()}
			}
		}
		if o.noAgent || agentErr != nil {
			cfg.Nodes = []events.NodeRegistered{node}
		}
		if cfg.TLS, err = files[id].Load(); err != nil {
			return err
		}
		cfg.CA = ca
		cfg.Logger = log
		if err := c.start(cfg); err != nil {
			return err
		}
		if i == 0 && fresh {
			// The first server of a new cluster leads alone until the
			// others join: the management token is made then (only a
			// server may).
			if err := c.waitReady(ctx, 0); err != nil {
				return err
			}
			if err := a.devToken(ctx, c.servers[0], dir); err != nil {
				return err
			}
		}
	}
	// Restarted servers know a leader only once a majority of them runs.
	for i := range c.servers {
		if err := c.waitReady(ctx, i); err != nil {
			return err
		}
	}
	if err := a.devToken(ctx, c.leader(), dir); err != nil {
		return err // the token file was lost: the leader makes another
	}
	if err := c.waitVoters(ctx, dir, len(ids)); err != nil {
		return err
	}

	var apis, natsURLs, rafts []string
	for _, s := range c.servers {
		apis = append(apis, "https://"+s.HTTPAddr())
		natsURLs = append(natsURLs, s.NATSURL())
		rafts = append(rafts, s.RaftAddr())
	}
	fields := []string{"servers", strconv.Itoa(len(ids)), "api", strings.Join(apis, ","), "nats", strings.Join(natsURLs, ",")}
	var agentDone <-chan error
	if !o.noAgent && agentErr == nil {
		o.agent.nodeID = node.ID
		o.agent.tls = files[nodeID]
		if o.agent.stateDir == "" {
			o.agent.stateDir = filepath.Join(dir, "agent")
		}
		run, d, err := a.startAgent(ctx, o.agent, strings.Join(apis, ","), strings.Join(natsURLs, ","), log)
		if err != nil {
			return fmt.Errorf("node agent: %w", err)
		}
		defer run.close()
		select {
		case <-run.agent.Ready():
		case err := <-d:
			return fmt.Errorf("node agent: %w", err)
		}
		agentDone = d
		fields = append(fields, "node", node.ID)
	}
	fields = append(fields, "raft", strings.Join(rafts, ","), "data", dir)
	fmt.Fprintf(a.stdout, "corral dev: %s\n", strings.Join(fields, " "))
	a.printDevClientHint(dir, strings.Join(apis, ","))
	log.Info("ready", "servers", len(ids))

	select {
	case <-ctx.Done():
		return nil
	case err := <-c.failed:
		return err
	case err := <-agentDone:
		if err != nil && !errors.Is(err, context.Canceled) {
			return fmt.Errorf("node agent: %w", err)
		}
		return nil
	}
}

// devCluster is the servers of corral dev --servers N.
type devCluster struct {
	ctx     context.Context // the servers' Run context
	log     *slog.Logger
	servers []*coordinator.Server
	done    []chan error // each server's Run result
	failed  chan error   // the first server to stop by itself
	cancels []func()     // each server's Run context
}

func newDevCluster(ctx context.Context, log *slog.Logger) *devCluster {
	return &devCluster{ctx: ctx, log: log, failed: make(chan error, maxDevServers)}
}

// start creates a server and runs it in the background.
func (c *devCluster) start(cfg coordinator.Config) error {
	s, err := coordinator.New(cfg, coordinator.Deps{})
	if err != nil {
		return fmt.Errorf("server %s: %w", cfg.ID, err)
	}
	rctx, cancel := context.WithCancel(c.ctx)
	done := make(chan error, 1)
	c.servers, c.done, c.cancels = append(c.servers, s), append(c.done, done), append(c.cancels, cancel)
	go func() {
		err := s.Run(rctx)
		if rctx.Err() == nil {
			c.failed <- fmt.Errorf("server %s stopped: %v", cfg.ID, err)
		}
		done <- err
	}()
	c.log.Info("starting", "server", cfg.ID, "api", s.HTTPAddr(), "raft", s.RaftAddr(), "nats", s.NATSURL(), "data", cfg.DataDir)
	return nil
}

// waitReady waits until server i knows a leader and has caught up.
func (c *devCluster) waitReady(ctx context.Context, i int) error {
	select {
	case <-c.servers[i].Ready():
		return nil
	case err := <-c.failed:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// leader returns the server that leads, or the first when none does.
func (c *devCluster) leader() *coordinator.Server {
	for _, s := range c.servers {
		if s.IsLeader() {
			return s
		}
	}
	return c.servers[0]
}

// waitVoters waits until the first server lists n voters, asking it as
// the dev user does.
func (c *devCluster) waitVoters(ctx context.Context, dir string, n int) error {
	creds, err := devClientFiles(dir).Load()
	if err != nil {
		return err
	}
	client, err := api.NewClientTLS(c.servers[0].HTTPAddr(), creds.DialConfig())
	if err != nil {
		return err
	}
	token, err := os.ReadFile(devTokenFile(dir))
	if err != nil {
		return err
	}
	client.Token = strings.TrimSpace(string(token))
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		members, err := client.Members(ctx)
		voters := 0
		for _, m := range members {
			if m.Suffrage == "voter" {
				voters++
			}
		}
		if err == nil && voters == n {
			return nil
		}
		select {
		case err := <-c.failed:
			return err
		case <-ctx.Done():
			return fmt.Errorf("the %d servers did not become voters of one cluster in a minute (%d are): see the log above", n, voters)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stop stops every server, the later ones first so that the first, which
// most likely leads, hands over least. A stop never hangs past
// shutdownGrace (see serve).
func (c *devCluster) stop() {
	for i := len(c.servers) - 1; i >= 0; i-- {
		c.cancels[i]()
	}
	deadline := time.After(shutdownGrace)
	for i, d := range c.done {
		select {
		case err := <-d:
			if err != nil {
				c.log.Error("server stopped", "server", c.servers[i].ID(), "err", err)
			}
		case <-deadline:
			c.log.Error("shutdown did not finish in time (raft replication is stuck); exiting anyway: the raft logs are on disk", "grace", shutdownGrace)
			return
		}
	}
	c.log.Info("stopped")
}
