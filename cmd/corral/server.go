package main

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/coordinator"
	"github.com/corral-dev/corral/coordinator/bus"
)

type serverOptions struct {
	id               string
	dataDir          string
	raftAddr         string
	httpAddr         string
	bootstrap        bool
	join             []string
	natsURL          string
	natsHost         string
	natsPort         int
	natsClusterPort  int
	natsRoutes       []string
	retainEvents     uint64
	retainAge        time.Duration
	checkpointEvery  uint64
	maxAppendEntries int
	schedAlgorithm   string
	nodeDownTimeout  time.Duration
	logLevel         string
	security         securityOptions
}

func (a *app) serverCommand() *cobra.Command {
	def := coordinator.DefaultConfig("")
	o := serverOptions{
		raftAddr: def.RaftAddr, httpAddr: def.HTTPAddr, natsHost: "127.0.0.1", natsPort: def.NATS.Port,
		checkpointEvery: def.Store.CheckpointEvery, maxAppendEntries: def.Raft.MaxAppendEntries,
	}
	cmd := &cobra.Command{
		Use:   "server --id ID --data-dir DIR [flags]",
		Short: "Run one coordinator server of a cluster",
		Long: `Run one coordinator server: raft with its log and snapshots under --data-dir,
the event store, the HTTP API and, unless --nats-url names an external NATS
cluster, an embedded NATS server.

Start the first server of a new cluster with --bootstrap and the others with
--join pointing at the HTTP address of any running server. A server restarted on
its data directory rejoins by itself; --bootstrap is then ignored.

Every listener speaks only mutual TLS: --tls-ca, --tls-cert and --tls-key are
required (make them with corral tls). Then run corral acl bootstrap once to get
the first management token.

--config FILE reads the flags from a file of key = value lines, a flag's name
without the dashes (deploy/corral-server.conf is a full example); a flag on the
command line wins over the file.

Once ready, one line naming the listeners is printed to stdout; logs go to stderr.
Ctrl-C or SIGTERM stops it cleanly.`,
		Example: `  corral server --config /etc/corral/server.conf

  # certificates first (once, for the whole cluster)
  corral tls ca create --dir tls
  corral tls cert create --server s1 --dir tls
  corral tls cert create --server s2 --dir tls

  # three servers on one machine, NATS clustered between them
  corral server --id s1 --data-dir /var/lib/corral/s1 --bootstrap \
      --tls-ca tls/ca.pem --tls-cert tls/server-s1.pem --tls-key tls/server-s1-key.pem \
      --http-addr 127.0.0.1:4646 --raft-addr 127.0.0.1:4647 \
      --nats-port 4222 --nats-cluster-port 6222
  corral server --id s2 --data-dir /var/lib/corral/s2 --join 127.0.0.1:4646 \
      --tls-ca tls/ca.pem --tls-cert tls/server-s2.pem --tls-key tls/server-s2-key.pem \
      --http-addr 127.0.0.1:5646 --raft-addr 127.0.0.1:5647 \
      --nats-port 5222 --nats-cluster-port 7222 --nats-routes nats-route://127.0.0.1:6222`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(a.stderr, o.logLevel)
			if err != nil {
				return err
			}
			cfg := coordinator.DefaultConfig(o.dataDir)
			cfg.ID = o.id
			cfg.RaftAddr = o.raftAddr
			cfg.HTTPAddr = o.httpAddr
			cfg.Bootstrap = o.bootstrap
			cfg.Join = o.join
			cfg.NATSURL = o.natsURL
			cfg.NATS = bus.EmbeddedConfig{Host: o.natsHost, Port: o.natsPort, ClusterPort: o.natsClusterPort, Routes: o.natsRoutes}
			cfg.Store.MaxEvents = o.retainEvents
			cfg.Store.MaxAge = o.retainAge
			cfg.Store.CheckpointEvery = o.checkpointEvery
			cfg.Raft.MaxAppendEntries = o.maxAppendEntries
			cfg.SchedulerAlgorithm = o.schedAlgorithm
			cfg.NodeDownTimeout = o.nodeDownTimeout
			cfg.Logger = log
			if err := o.security.apply(&cfg); err != nil {
				return err
			}
			return a.serve(cmd.Context(), "corral server", cfg, nil)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.id, "id", "", "server ID, unique in the cluster ([a-z0-9][a-z0-9-]{0,62})")
	f.StringVar(&o.dataDir, "data-dir", "", "directory for raft, snapshots and the event store")
	f.StringVar(&o.raftAddr, "raft-addr", o.raftAddr, "host:port raft listens on and advertises; port 0 picks a free one")
	f.StringVar(&o.httpAddr, "http-addr", o.httpAddr, "host:port of the HTTP API; port 0 picks a free one")
	f.BoolVar(&o.bootstrap, "bootstrap", false, "make this server the first member of a new cluster")
	f.StringSliceVar(&o.join, "join", nil, "HTTP addresses of running servers to join through, comma-separated")
	f.StringVar(&o.natsURL, "nats-url", "", "use this external NATS cluster instead of an embedded server")
	f.StringVar(&o.natsHost, "nats-host", o.natsHost, "address the embedded NATS server listens on")
	f.IntVar(&o.natsPort, "nats-port", o.natsPort, "client port of the embedded NATS server; -1 picks a free one")
	f.IntVar(&o.natsClusterPort, "nats-cluster-port", 0, "route port that clusters the embedded NATS servers; 0 = not clustered, -1 = any free port")
	f.StringSliceVar(&o.natsRoutes, "nats-routes", nil, "route URLs of the other servers' embedded NATS (nats-route://host:port), comma-separated")
	f.Uint64Var(&o.retainEvents, "retain-events", 0, "keep at most this many events in the event store (0 = no limit)")
	f.DurationVar(&o.retainAge, "retain-age", 0, "drop events older than this, e.g. 72h (0 = no limit)")
	f.Uint64Var(&o.checkpointEvery, "checkpoint-every", o.checkpointEvery, "store a state checkpoint every this many events (time travel replays at most this many)")
	f.IntVar(&o.maxAppendEntries, "max-append-entries", o.maxAppendEntries, "raft batching: commands written with one fsync and sent in one message")
	f.DurationVar(&o.nodeDownTimeout, "node-down-timeout", def.NodeDownTimeout, "declare a node down, and place its guests elsewhere, after this long without a heartbeat from its agent; agents' --fence-timeout must be well below it")
	f.StringVar(&o.schedAlgorithm, "scheduler-algorithm", "", "binpack or spread, for a new cluster; later changes go through corral operator scheduler set-config")
	logLevelFlag(cmd, &o.logLevel)
	o.security.flags(cmd)
	a.configFileFlag(cmd)
	cmd.MarkFlagRequired("id")
	cmd.MarkFlagRequired("data-dir")
	cmd.MarkFlagsMutuallyExclusive("bootstrap", "join")
	for _, embedded := range []string{"nats-host", "nats-port", "nats-cluster-port", "nats-routes"} {
		cmd.MarkFlagsMutuallyExclusive("nats-url", embedded)
	}
	return cmd
}
