package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/bus"
	"github.com/corral-dev/corral/coordinator/pki"
	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/nodeagent"
	"github.com/corral-dev/corral/nodeagent/driver"
	"github.com/corral-dev/corral/nodeagent/network"
)

// agentOptions are the flags of corral agent, and of the local agent of
// corral dev.
type agentOptions struct {
	nodeID        string
	stateDir      string
	partition     string
	labels        []string
	reserveCPUs   int
	reserveMemory string
	fence         time.Duration
	fencer        bool
	fencePoll     time.Duration
	heartbeat     time.Duration
	usage         time.Duration
	balloon       time.Duration
	accel         string
	tls           pki.Files
	joinToken     string
	shape         []string
	netClsMount   string
	network       networkOptions
	migration     migrationOptions
	metricsAddr   string
	metricsToken  string // --metrics-token-file
}

// defaultNetClsMount is where corral agent mounts net_cls by default.
const defaultNetClsMount = "/sys/fs/cgroup/net_cls,net_prio"

func (o *agentOptions) flags(cmd *cobra.Command, stateDirDefault string) {
	def := nodeagent.DefaultConfig()
	f := cmd.Flags()
	f.StringVar(&o.stateDir, "state-dir", stateDirDefault, "the agent's directory: node secret, one directory per guest (logs, records)")
	f.StringVar(&o.partition, "cgroup-partition", "", "cgroup path the agent's mini-hierarchy lives under (default: the agent's own group); the agent owns everything below <partition>/corral")
	f.StringArrayVar(&o.labels, "label", nil, "node label key=value, for placement constraints; repeat for more")
	f.IntVar(&o.reserveCPUs, "reserve-cpus", 0, "CPUs kept back for the host: the agent and its guests together get a CPU quota of the others")
	f.StringVar(&o.reserveMemory, "reserve-memory", "", "memory kept back for the host, e.g. 1GiB: the agent and its guests together get a memory hard limit of the rest")
	f.DurationVar(&o.fence, "fence-timeout", def.FenceTimeout, "freeze every guest when the coordinator has been unreachable this long; must stay below the servers' --node-down-timeout")
	f.BoolVar(&o.fencer, "fencer", true, "run a fencer process that freezes the guests when the agent itself dies or stalls; without it a dead agent's guests keep running while the cluster starts them elsewhere")
	f.DurationVar(&o.fencePoll, "fence-poll", def.Fencer.Poll, fmt.Sprintf("how often the fencer checks the agent's lease (at most %v)", nodeagent.MaxFencerPoll))
	f.DurationVar(&o.heartbeat, "heartbeat-interval", def.HeartbeatInterval, "how often the agent tells the coordinator it is alive")
	f.DurationVar(&o.usage, "usage-interval", def.UsageInterval, "how often one usage event for all guests is sent; the same pass checks their knobs for drift")
	f.DurationVar(&o.balloon, "balloon-timeout", def.BalloonTimeout, "report guest.balloon_noncompliant when a guest has not come within tolerance of its setmem target this long")
	f.StringVar(&o.accel, "qemu-accel", "auto", "qemu accelerator: kvm, tcg or auto (auto proves KVM runs a guest before using it)")
	f.StringVar(&o.netClsMount, "net-cls-mount", "", "where to mount the net_cls cgroup controller if the host has it unmounted (net_cls_classid, shaping on cgroup v1); empty mounts nothing")
	o.network.flags(cmd)
	o.migration.flags(cmd)
	f.StringVar(&o.metricsToken, "metrics-token-file", "", "with --metrics-addr: require scrapers to send the bearer token in this file (Authorization: Bearer …, Prometheus's bearer_token_file); empty requires none")
	f.StringVar(&o.metricsAddr, "metrics-addr", "", "host:port to serve the agent's Prometheus metrics on, at /metrics, in plain HTTP (they carry no secrets; bind loopback or a scrape network); port 0 picks one; empty serves none")
	f.StringArrayVar(&o.shape, "shape-interface", nil, "interface whose guests' traffic domiftune shapes (its root qdisc becomes the agent's HTB); repeat for more")
}

// tlsFlags adds the agent's credentials: its node certificate, or a join
// token to get one.
func (o *agentOptions) tlsFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.tls.CA, "tls-ca", "", "the cluster CA's certificate")
	f.StringVar(&o.tls.Cert, "tls-cert", "", "this node's certificate (corral tls cert create --node ID); default: the one enrollment stored in --state-dir")
	f.StringVar(&o.tls.Key, "tls-key", "", "this node's certificate's key")
	f.StringVar(&o.joinToken, "join-token", "", "one-time join token (corral acl join-token create --node ID): the servers sign this node's certificate, which is kept in --state-dir/tls (env CORRAL_JOIN_TOKEN)")
}

// agentRun holds what a running agent needs closed.
type agentRun struct {
	agent   *nodeagent.Agent
	bus     *bus.Conn
	metrics *metricsServer // nil without --metrics-addr
}

// startAgent builds the node agent for o against the API at addrs and
// NATS at natsURL, and runs it until ctx ends.
func (a *app) startAgent(ctx context.Context, o agentOptions, addrs, natsURL string, log *slog.Logger) (*agentRun, <-chan error, error) {
	if o.stateDir != "" {
		// The agent and its fencer keep the path; make a relative one whole.
		abs, err := filepath.Abs(o.stateDir)
		if err != nil {
			return nil, nil, err
		}
		o.stateDir = abs
	}
	cfg := nodeagent.DefaultConfig()
	cfg.NodeID, cfg.StateDir = o.nodeID, o.stateDir
	cfg.FenceTimeout, cfg.HeartbeatInterval, cfg.UsageInterval = o.fence, o.heartbeat, o.usage
	cfg.BalloonTimeout = o.balloon
	cfg.ReserveCPUs = o.reserveCPUs
	// The agent (the whole process, under corral dev) lives in
	// <partition>/corral/agent, below the cap the reserve sets.
	cfg.GroupPID = os.Getpid()
	cfg.Fencer.Poll = o.fencePoll
	if o.fencer {
		exe, err := os.Executable()
		if err != nil {
			return nil, nil, fmt.Errorf("the fencer is this binary, which cannot be found (%w): pass --fencer=false to run without one", err)
		}
		cfg.Fencer.Command = []string{exe}
	}
	if o.reserveMemory != "" {
		n, err := events.ParseSize("reserve-memory", o.reserveMemory)
		if err != nil {
			return nil, nil, err
		}
		cfg.ReserveMemoryBytes = n
	}
	labels, err := parseLabels(o.labels)
	if err != nil {
		return nil, nil, err
	}
	cfg.Labels = labels
	if cfg.Network, err = o.network.config(); err != nil {
		return nil, nil, err
	}
	if err := o.migration.apply(&cfg); err != nil {
		return nil, nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	if o.netClsMount != "" {
		// Before the driver detects the layout, so that it sees the mount.
		opts, err := cgroupdriver.MountNetCls(o.netClsMount, false)
		if err != nil {
			return nil, nil, err
		}
		if opts != "" {
			log.Info("mounted the net_cls controller", "dir", o.netClsMount, "options", opts)
		}
	}
	ccfg := cgroupdriver.DefaultConfig()
	ccfg.Partition = o.partition
	cg, err := cgroupdriver.New(ccfg)
	if err != nil {
		return nil, nil, fmt.Errorf("cgroups: %w (the agent needs root and writable cgroups)", err)
	}
	dcfg := driver.DefaultConfig()
	dcfg.Cgroups = cg
	dcfg.Logger = log
	if dcfg.QEMU.Accel, err = driver.ParseAccel(o.accel); err != nil {
		return nil, nil, err
	}
	drivers, err := driver.New(dcfg)
	if err != nil {
		return nil, nil, err
	}
	creds, err := a.nodeCredentials(ctx, o, addrs, log)
	if err != nil {
		return nil, nil, err
	}
	dial := []bus.DialOption{bus.WithTLS(creds.DialConfig()), bus.WithLogger(log)}
	bus, err := bus.Dial(natsURL, "corral-agent-"+o.nodeID, dial...)
	if err != nil {
		return nil, nil, err
	}
	client, err := api.NewClientTLS(addrs, creds.DialConfig())
	if err != nil {
		bus.Close()
		return nil, nil, err
	}
	client.Retry = 5 * time.Second
	remote := nodeagent.NewRemoteWith(client, bus)
	deps := nodeagent.Deps{Coordinator: remote, Notifier: remote, Cgroups: cg, Drivers: nodeagent.HostDrivers{Set: drivers}, Logger: log.With("agent", o.nodeID)}
	cfg.ShapeInterfaces, cfg.Shaping, deps.Shaper = newShaper(ctx, o, log)
	ag, err := nodeagent.New(cfg, deps)
	if err != nil {
		bus.Close()
		return nil, nil, err
	}
	run := &agentRun{agent: ag, bus: bus}
	if o.metricsAddr != "" {
		h := ag.MetricsHandler()
		if o.metricsToken != "" {
			if h, err = requireBearer(o.metricsToken, h); err != nil {
				bus.Close()
				return nil, nil, err
			}
		}
		if run.metrics, err = serveMetrics(o.metricsAddr, h, log); err != nil {
			bus.Close()
			return nil, nil, err
		}
	}
	done := make(chan error, 1)
	go func() { done <- ag.Run(ctx) }()
	return run, done, nil
}

func (r *agentRun) close() error {
	err := r.agent.Close()
	r.bus.Close()
	r.metrics.close()
	return err
}

// metricsAddr is where the agent serves its metrics, "" when it does not.
func (r *agentRun) metricsAddr() string {
	if r.metrics == nil {
		return ""
	}
	return r.metrics.addr()
}

func parseLabels(in []string) (map[string]string, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, l := range in {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return nil, usagef("label %q is not key=value", l)
		}
		out[k] = v
	}
	return out, events.ValidateLabels("label", out)
}

func (a *app) agentCommand() *cobra.Command {
	var o agentOptions
	var addrs, natsURL, logLevel string
	cmd := &cobra.Command{
		Use:   "agent --node-id ID --addr API --nats-url URL [flags]",
		Short: "Run the node agent: make this host run what the log places on it",
		Long: `Run the node agent of this host. It registers the node (CPUs, memory, reserve,
cgroup layout, drivers with versions, labels), sends heartbeats, follows the
log's events over NATS, and makes the host match its node's desired state:
it creates each guest's cgroups, starts, stops, tunes and destroys guests,
and reports started, exited, usage, limit hits and drift as events.

Stopping the agent (Ctrl-C, SIGTERM, even kill -9) leaves the guests running;
a restarted agent adopts them. An agent that cannot reach the coordinator for
--fence-timeout freezes its guests until it can. So does its fencer, a small
process of this binary the agent starts in a session of its own, when the
agent itself is dead or stalled: it freezes every guest once the lease the
agent renews after each heartbeat has run out, and never thaws; the next
agent thaws what the log still assigns to the node, after destroying what
the log moved away. The fencer writes its log to <state-dir>/fence/fencer.log.

--config FILE reads the flags from a file of key = value lines, a flag's name
without the dashes (deploy/corral-agent.conf is a full example); a flag on the
command line wins over the file.`,
		Example: `  corral agent --config /etc/corral/agent.conf
  # with a certificate made for this node (corral tls cert create --node n1)
  corral agent --node-id n1 --addr 10.0.0.1:4646 --nats-url tls://10.0.0.1:4222 \
      --tls-ca ca.pem --tls-cert node-n1.pem --tls-key node-n1-key.pem
  # or with a one-time join token (corral acl join-token create --node n2)
  corral agent --node-id n2 --addr s1:4646,s2:4646 --nats-url tls://s1:4222,tls://s2:4222 \
      --tls-ca ca.pem --join-token crl_... --label rack=a --reserve-memory 1GiB`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(a.stderr, logLevel)
			if err != nil {
				return err
			}
			if err := events.ValidateID("node id", o.nodeID); err != nil {
				return err
			}
			if a.process {
				nodeagent.TuneProcess(a.getenv)
			}
			run, done, err := a.startAgent(cmd.Context(), o, addrs, natsURL, log)
			if err != nil {
				return err
			}
			select {
			case <-run.agent.Ready():
				line := fmt.Sprintf("corral agent: node %s state %s", o.nodeID, o.stateDir)
				if m := run.metricsAddr(); m != "" {
					line += " metrics http://" + m + "/metrics"
				}
				fmt.Fprintln(a.stdout, line)
			case err := <-done:
				run.close()
				return err
			}
			err = <-done
			if cerr := run.close(); err == nil && !errors.Is(cerr, context.Canceled) {
				err = cerr
			}
			if errors.Is(err, context.Canceled) {
				err = nil
			}
			return err
		},
	}
	o.flags(cmd, "/var/lib/corral/agent")
	// corral agent mounts net_cls where the host left it out; corral dev
	// changes the host's mounts only when told to.
	nc := cmd.Flags().Lookup("net-cls-mount")
	nc.DefValue = defaultNetClsMount
	_ = nc.Value.Set(defaultNetClsMount)
	// Likewise the bridge: corral dev has none unless given one.
	br := cmd.Flags().Lookup("bridge")
	br.DefValue = network.DefaultBridge
	_ = br.Value.Set(network.DefaultBridge)
	o.tlsFlags(cmd)
	cmd.Flags().StringVar(&o.nodeID, "node-id", "", "this host's node ID ([a-z0-9][a-z0-9-]{0,62})")
	cmd.Flags().StringVar(&addrs, "addr", defaultAddr, "API address of the coordinator servers, comma-separated")
	cmd.Flags().StringVar(&natsURL, "nats-url", "nats://127.0.0.1:4222", "NATS the coordinator publishes to, comma-separated URLs")
	logLevelFlag(cmd, &logLevel)
	a.configFileFlag(cmd)
	cmd.MarkFlagRequired("node-id")
	return cmd
}
