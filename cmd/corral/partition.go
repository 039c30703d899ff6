package main

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
)

// partition: cluster-wide groups (a tenant or a tier, like libvirt's
// resource partitions) that every node holds, with limits named and
// measured as a guest's: cpu_shares and global_period/global_quota as
// schedinfo, hard_limit and soft_limit as memtune (KiB, or a unit),
// blkio_weight as blkiotune, and pids_max.

func (a *app) partitionCommand() *cobra.Command {
	cmd := groupCommand("partition", "Create, change, inspect and delete cluster-wide partitions (tenant or tier groups with limits)")
	cmd.AddCommand(
		a.partitionSetCommand(true),
		a.partitionSetCommand(false),
		a.partitionListCommand(),
		a.partitionShowCommand(),
		a.partitionDeleteCommand(),
	)
	return a.clientFlags(cmd)
}

// partitionFlags are the limits a partition command takes.
type partitionFlags struct {
	cpuShares, globalPeriod, globalQuota, pidsMax, blkioWeight string
	hardLimit, softLimit                                       string
	cpus                                                       float64
	unset                                                      []string
	reason                                                     string
}

func (o *partitionFlags) register(cmd *cobra.Command, set bool) {
	f := cmd.Flags()
	f.StringVar(&o.cpuShares, "cpu-shares", "", "relative CPU weight of the whole partition, 2 to 262144 (schedinfo cpu_shares)")
	f.StringVar(&o.globalPeriod, "global-period", "", "CFS period of the partition's CPU cap, 1000 to 1000000 microseconds (schedinfo global_period)")
	f.StringVar(&o.globalQuota, "global-quota", "", "CPU time per period for all its guests together, microseconds, -1 = unlimited (schedinfo global_quota)")
	f.Float64Var(&o.cpus, "cpus", 0, "cap the partition at this many CPUs' worth (sets global_quota, with global_period 100000 unless given)")
	f.StringVar(&o.hardLimit, "hard-limit", "", "memory limit of all its guests together, KiB or a size with a unit (1GiB), -1 = unlimited (memtune hard_limit)")
	f.StringVar(&o.hardLimit, "memory", "", "the same as --hard-limit")
	f.StringVar(&o.softLimit, "soft-limit", "", "memory the kernel reclaims down to first under pressure, KiB or a size, -1 = unlimited (memtune soft_limit)")
	f.StringVar(&o.pidsMax, "pids-max", "", "the most tasks all its guests together may have, or unlimited")
	f.StringVar(&o.blkioWeight, "blkio-weight", "", "relative I/O weight of the partition, 100 to 1000 (blkiotune weight)")
	f.StringVar(&o.reason, "reason", "", "why, for the event log")
	if set {
		f.StringArrayVar(&o.unset, "unset", nil, "stop managing a limit (a knob name such as pids_max); repeat for more")
	}
}

// limits returns the knob=value pairs the flags given name.
func (o *partitionFlags) limits(cmd *cobra.Command) (map[string]string, error) {
	out := map[string]string{}
	changed := cmd.Flags().Changed
	for flag, kv := range map[string][2]string{
		"cpu-shares": {"cpu_shares", o.cpuShares}, "global-period": {"global_period", o.globalPeriod},
		"global-quota": {"global_quota", o.globalQuota}, "pids-max": {"pids_max", o.pidsMax},
		"blkio-weight": {"blkio_weight", o.blkioWeight},
	} {
		if changed(flag) {
			out[kv[0]] = kv[1]
		}
	}
	var err error
	if changed("hard-limit") || changed("memory") {
		if out["hard_limit"], err = parseKiB("hard_limit", o.hardLimit); err != nil {
			return nil, err
		}
	}
	if changed("soft-limit") {
		if out["soft_limit"], err = parseKiB("soft_limit", o.softLimit); err != nil {
			return nil, err
		}
	}
	if changed("cpus") {
		if changed("global-quota") {
			return nil, usagef("give either --cpus or --global-quota, not both")
		}
		period := uint64(100000)
		if changed("global-period") {
			if period, err = strconv.ParseUint(o.globalPeriod, 10, 64); err != nil || period == 0 {
				return nil, &events.FieldError{Field: "global_period", Value: o.globalPeriod, Want: "1000 to 1000000 microseconds"}
			}
		}
		if o.cpus <= 0 || math.IsInf(o.cpus, 0) || math.IsNaN(o.cpus) {
			return nil, &events.FieldError{Field: "cpus", Value: fmt.Sprint(o.cpus), Want: "a positive number of CPUs, such as 2 or 0.5"}
		}
		out["global_period"] = strconv.FormatUint(period, 10)
		out["global_quota"] = strconv.FormatInt(int64(math.Round(o.cpus*float64(period))), 10)
	}
	return events.CanonicalPartitionLimits(out)
}

func (a *app) partitionSetCommand(create bool) *cobra.Command {
	var o partitionFlags
	use, short := "set NAME [limits]", "Change a partition's limits (only those named)"
	if create {
		use, short = "create NAME [limits]", "Create a partition on every node, with its limits"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Long: short + `.

A partition is a group on every node, under the agent's corral root, at
corral/partitions/NAME on each controller; guests created in it (guest create
--partition NAME) live beneath it, so its limits cap them all together, on top
of each guest's own. The limits mean what the guest knobs of the same names mean:
cpu_shares and global_period/global_quota as schedinfo, hard_limit and soft_limit
as memtune (a plain number is KiB), blkio_weight as blkiotune, and pids_max.
Limits not named are not managed. Each node applies them and repairs drift; a
node whose host refuses one reports it (partition show).`,
		Example: `  corral partition create gold --cpu-shares 2048 --memory 4GiB --cpus 2
  corral partition set gold --hard-limit 8GiB --unset pids_max`,
		Args: onePartition,
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := events.ValidateID("partition name", name); err != nil {
				return err
			}
			limits, err := o.limits(cmd)
			if err != nil {
				return err
			}
			if !create && len(limits) == 0 && len(o.unset) == 0 {
				return usagef("name at least one limit to change (%s), or --unset one", strings.Join(events.PartitionKnobNames(), ", "))
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			req := api.SetPartition{Name: name, Limits: limits, Unset: o.unset, Reason: o.reason}
			var res api.WriteResult
			if create {
				res, err = c.CreatePartition(cmd.Context(), req)
			} else {
				res, err = c.SetPartition(cmd.Context(), req)
			}
			if err != nil {
				return err
			}
			verb := "limits set"
			if create {
				verb = "created"
			}
			return a.printWrite(res, "partition "+name+" "+verb)
		},
	}
	o.register(cmd, !create)
	return cmd
}

func (a *app) partitionListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the partitions with their limits and guests",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.readClient()
			if err != nil {
				return err
			}
			ps, err := c.Partitions(cmd.Context())
			if err != nil {
				return err
			}
			if a.json() {
				return writeJSON(a.stdout, ps)
			}
			t := newTable(a.stdout, "NAME", "LIMITS", "GUESTS", "NODES")
			for _, p := range ps {
				t.row(p.Name, limitsText(p.Limits), strconv.Itoa(len(p.Guests)), nodesText(&p.Partition))
			}
			return t.flush()
		},
	}
}

func (a *app) partitionShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show a partition: its limits, its guests, and what each node applied",
		Args:  oneName,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.readClient()
			if err != nil {
				return err
			}
			p, err := c.Partition(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if a.json() {
				return writeJSON(a.stdout, p)
			}
			t := newTable(a.stdout, "Name:", p.Name)
			t.row("Created:", "index "+formatUint(p.CreateIndex))
			t.row("Modified:", "index "+formatUint(p.ModifyIndex))
			t.row("Guests:", strings.Join(p.Guests, ", "))
			if err := t.flush(); err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, "Limits:")
			t = newTable(a.stdout, "  KNOB", "DESIRED")
			for _, k := range slices.Sorted(maps.Keys(p.Limits)) {
				t.row("  "+k, p.Limits[k])
			}
			if err := t.flush(); err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, "Nodes:")
			t = newTable(a.stdout, "  NODE", "INDEX", "APPLIED", "ERROR")
			for _, n := range slices.Sorted(maps.Keys(p.Nodes)) {
				r := p.Nodes[n]
				idx := formatUint(r.Index)
				if r.Index != p.ModifyIndex {
					idx += " (behind)"
				}
				t.row("  "+n, idx, limitsText(r.Applied), r.Error)
			}
			return t.flush()
		},
	}
}

func (a *app) partitionDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a partition no guest uses; every node removes its group",
		Args:  oneName,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := events.ValidateID("partition name", args[0]); err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			res, err := c.DeletePartition(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.printWrite(res, "partition "+args[0]+" deleted")
		},
	}
}

func limitsText(m map[string]string) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, k+"="+m[k])
	}
	return strings.Join(out, " ")
}

// nodesText says how many nodes report the partition's current limits.
func nodesText(p *api.Partition) string {
	cur, failed := 0, 0
	for _, r := range p.Nodes {
		if r.Index == p.ModifyIndex {
			cur++
		}
		if r.Error != "" {
			failed++
		}
	}
	s := strconv.Itoa(cur) + " current"
	if failed > 0 {
		s += fmt.Sprintf(", %d refused", failed)
	}
	return s
}

// onePartition is the Args check of commands that take one partition NAME.
func onePartition(cmd *cobra.Command, args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("give exactly one partition NAME (got %d arguments)", len(args))
	}
	return nil
}
