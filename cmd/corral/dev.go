package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/coordinator"
	"github.com/corral-dev/corral/coordinator/bus"
	"github.com/corral-dev/corral/coordinator/pki"
	"github.com/corral-dev/corral/events"
)

type devOptions struct {
	dataDir  string
	httpAddr string
	raftAddr string
	natsPort int
	nodeID   string
	logLevel string
	noAgent  bool
	agent    agentOptions
	// metricsToken is --metrics-require-token.
	metricsToken bool

	servers     int  // --servers: more than one runs runDevCluster
	portBase    int  // --port-base of a multi-server cluster
	portBaseSet bool // whether --port-base was given
}

func (a *app) devCommand() *cobra.Command {
	def := coordinator.DefaultConfig("")
	o := devOptions{httpAddr: def.HTTPAddr, raftAddr: def.RaftAddr, natsPort: def.NATS.Port}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a one-server cluster on this machine, for development",
		Long: `Run a whole corral cluster in one process: a single bootstrapped coordinator
server (raft on disk), an embedded NATS server, the HTTP API and the node agent
of this host, which runs the guests placed on it in their own cgroups (it needs
root). With --no-agent the host is registered as a node but nothing runs.
Stopping corral dev leaves running guests running: the next corral dev on the
same data dir adopts them. Destroy guests to stop them for good.

Data persists in --data-dir across restarts, including after kill -9. Once ready,
one line naming the listeners is printed to stdout, then how other clients use
its credentials; logs go to stderr.

corral dev is as locked down as any corral cluster: mutual TLS on every port
and ACL tokens on every route. On its first start it makes a CA and the
certificates of its server, its node and its user in <data-dir>/tls, and a
management token in <data-dir>/acl-token (0600). The CLI uses them by itself
when corral dev runs on its default data dir; otherwise export the variables
it prints.

--servers 3 runs three servers in this process instead, a real raft cluster
of three voters with their NATS servers routed together, each with its data
in <data-dir>/s1, s2, s3 and the same CA and token. Server N listens on
--port-base + 10*(N-1) + 0 (HTTP), 1 (raft), 2 (NATS) and 3 (NATS routes); the
base a data dir was started with is kept in <data-dir>/port-base. The local
agent talks to all three.
Ctrl-C or SIGTERM stops it cleanly.`,
		Example: `  corral dev
  corral dev --data-dir /tmp/corral --http-addr 127.0.0.1:0 --raft-addr 127.0.0.1:0 --nats-port -1
  corral dev --servers 3 --port-base 14600 --data-dir /tmp/corral3`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.portBaseSet = cmd.Flags().Changed("port-base")
			return a.runDev(cmd, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dataDir, "data-dir", "", "directory for raft and the event store (default $XDG_DATA_HOME/corral/dev or ~/.local/share/corral/dev)")
	f.StringVar(&o.httpAddr, "http-addr", o.httpAddr, "host:port of the HTTP API; port 0 picks a free one")
	f.StringVar(&o.raftAddr, "raft-addr", o.raftAddr, "host:port raft listens on; port 0 picks a free one")
	f.IntVar(&o.natsPort, "nats-port", o.natsPort, "client port of the embedded NATS server; -1 picks a free one")
	f.StringVar(&o.nodeID, "node-id", "", "ID this host registers as (default: the host name, lower-cased, or \"local\")")
	f.BoolVar(&o.noAgent, "no-agent", false, "run no node agent: register this host as a static node whose guests are placed but not run")
	f.IntVar(&o.servers, "servers", 1, "coordinator servers to run in this process (1, 3 or 5), each with its own data dir <data-dir>/sN; with more than one, --port-base sets the ports")
	f.IntVar(&o.portBase, "port-base", defaultDevPortBase, "with --servers: server N listens on BASE+10*(N-1) + 0 (HTTP), 1 (raft), 2 (NATS), 3 (NATS routes); 0 picks free ports")
	o.agent.flags(cmd, "")
	metricsTokenFlag(cmd, &o.metricsToken)
	logLevelFlag(cmd, &o.logLevel)
	return cmd
}

func (a *app) runDev(cmd *cobra.Command, o devOptions) error {
	log, err := newLogger(a.stderr, o.logLevel)
	if err != nil {
		return err
	}
	dir := o.dataDir
	if dir == "" {
		if dir, err = defaultDevDataDir(a.getenv); err != nil {
			return err
		}
	}
	node, err := a.localNode(o.nodeID)
	if err != nil {
		return err
	}
	if err := a.checkDevLayout(cmd, o, dir); err != nil {
		return err
	}
	if o.servers > 1 {
		return a.runDevCluster(cmd.Context(), o, log, dir, node)
	}
	cfg := coordinator.DefaultConfig(dir)
	cfg.HTTPAddr = o.httpAddr
	cfg.RaftAddr = o.raftAddr
	cfg.NATS = bus.EmbeddedConfig{Port: o.natsPort}
	cfg.Logger = log
	cfg.MetricsRequireToken = o.metricsToken
	// corral dev is secure like any cluster, and needs no step for it: its
	// CA, certificates and management token live in its data dir, where
	// the CLI finds them.
	nodeID := pki.Identity{Role: pki.RoleNode, Name: node.ID}
	files, err := pki.EnsureDir(devTLSDir(dir), pki.Identity{Role: pki.RoleServer, Name: cfg.ID}, nodeID, devClient)
	if err != nil {
		return fmt.Errorf("corral dev's certificates in %s: %w", devTLSDir(dir), err)
	}
	if cfg.TLS, err = files[pki.Identity{Role: pki.RoleServer, Name: cfg.ID}].Load(); err != nil {
		return err
	}
	caCert, caKey := pki.CAFileNames(devTLSDir(dir))
	if cfg.CA, err = pki.LoadCA(caCert, caKey); err != nil {
		return err
	}
	ready := func(ctx context.Context, s *coordinator.Server) error { return a.devToken(ctx, s, dir) }
	if o.noAgent {
		cfg.Nodes = []events.NodeRegistered{node}
		return a.serve(cmd.Context(), "corral dev", cfg, nil, ready)
	}
	if err := agentPossible(o.agent.partition); err != nil {
		// corral dev works anywhere; only running guests needs root.
		log.Warn("running without a node agent: guests are placed but not run", "why", err)
		cfg.Nodes = []events.NodeRegistered{node}
		return a.serve(cmd.Context(), "corral dev", cfg, nil, ready)
	}
	o.agent.nodeID = node.ID
	o.agent.tls = files[nodeID]
	if o.agent.stateDir == "" {
		abs, err := filepath.Abs(filepath.Join(dir, "agent"))
		if err != nil {
			return err
		}
		o.agent.stateDir = abs
	}
	return a.serve(cmd.Context(), "corral dev", cfg, func(ctx context.Context, s *coordinator.Server) (*agentRun, <-chan error, error) {
		return a.startAgent(ctx, o.agent, s.HTTPAddr(), s.NATSURL(), log)
	}, ready)
}

// localNode describes this host as corral dev registers it.
func (a *app) localNode(id string) (events.NodeRegistered, error) {
	if id == "" {
		host, _ := os.Hostname()
		id = nodeIDFromHostname(host)
	} else if err := events.ValidateID("node id", id); err != nil {
		return events.NodeRegistered{}, err
	}
	mem, err := hostMemory()
	if err != nil {
		return events.NodeRegistered{}, err
	}
	return events.NodeRegistered{
		ID:          id,
		Address:     "127.0.0.1",
		CPUs:        runtime.NumCPU(),
		MemoryBytes: mem,
		// It runs nothing, so it takes guests of every driver.
		Drivers: map[string]string{events.DriverProcess: "builtin", events.DriverLXC: "builtin", events.DriverQEMU: "builtin"},
	}, nil
}

// agentPossible reports why this host cannot run a node agent: it needs
// root and cgroups it can write.
func agentPossible(partition string) error {
	if os.Geteuid() != 0 {
		return errors.New("the node agent needs root")
	}
	ccfg := cgroupdriver.DefaultConfig()
	ccfg.Partition = partition
	_, err := cgroupdriver.New(ccfg)
	return err
}

// checkDevLayout refuses flags that do not fit --servers, and a data dir
// made for another number of servers.
func (a *app) checkDevLayout(cmd *cobra.Command, o devOptions, dir string) error {
	if err := checkDevServers(o.servers, o.portBase); err != nil {
		return err
	}
	if o.servers > 1 {
		for _, name := range []string{"http-addr", "raft-addr", "nats-port"} {
			if cmd.Flags().Changed(name) {
				return usagef("--%s is for one server: with --servers %d give --port-base", name, o.servers)
			}
		}
		return nil
	}
	if o.portBaseSet {
		return usagef("--port-base is for --servers 3 or 5: one server takes --http-addr, --raft-addr and --nats-port")
	}
	if _, err := os.Stat(filepath.Join(dir, devPortBaseFile)); err == nil {
		return fmt.Errorf("%s holds a corral dev of several servers: start it with --servers, or give one server another --data-dir", dir)
	}
	return nil
}
