package main

import (
	"net"
	"time"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/nodeagent"
)

// migrationOptions are corral agent's live-migration flags.
type migrationOptions struct {
	host      string
	bandwidth int64 // MiB/s, as virsh migrate --bandwidth
	timeout   time.Duration
}

func (o *migrationOptions) flags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.host, "migration-host", "127.0.0.1", "address this node's incoming migrations listen on (a target QEMU's -incoming tcp:HOST:PORT), reachable from the other agents")
	f.Int64Var(&o.bandwidth, "migration-bandwidth", 0, "cap on an outgoing live migration's transfer in MiB/s, as virsh migrate --bandwidth; 0 leaves QEMU's default")
	f.DurationVar(&o.timeout, "migration-switch-timeout", 30*time.Second, "how long a source whose transfer completed waits for the target to switch over before it aborts the migration")
}

// apply puts the flags into cfg.
func (o *migrationOptions) apply(cfg *nodeagent.Config) error {
	if net.ParseIP(o.host) == nil {
		return usagef("--migration-host %q is not an IP address: give the address the other agents reach this host on, e.g. 127.0.0.1 on one host", o.host)
	}
	if o.bandwidth < 0 || o.bandwidth > 1<<20 {
		return usagef("--migration-bandwidth %d is out of range: give MiB/s from 1 to %d, or 0 for QEMU's default", o.bandwidth, 1<<20)
	}
	if o.timeout <= 0 {
		return usagef("--migration-switch-timeout %v must be positive, e.g. 30s", o.timeout)
	}
	cfg.MigrationHost, cfg.MigrationMaxBandwidth, cfg.MigrationSwitchTimeout = o.host, o.bandwidth<<20, o.timeout
	return nil
}
