package main

import (
	"fmt"
	"strconv"
	"time"

	"github.com/corral-dev/corral/coordinator/api"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/events"
)

func (a *app) nodeCommand() *cobra.Command {
	cmd := groupCommand("node", "Inspect the hosts guests run on")
	cmd.AddCommand(&cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List nodes with their capacity and what is allocated on them",
		Example: "  corral node list\n  corral node list -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.readClient()
			if err != nil {
				return err
			}
			nodes, err := c.Nodes(cmd.Context())
			if err != nil {
				return err
			}
			if a.json() {
				return writeJSON(a.stdout, nodes)
			}
			t := nodeTable(a)
			for _, n := range nodes {
				nodeRow(t, &n)
			}
			return t.flush()
		},
	})
	cmd.AddCommand(a.nodeShowCommand(), a.nodeDrainCommand(), a.nodeEligibilityCommand())
	return a.clientFlags(cmd)
}

func nodeTable(a *app) *table {
	return newTable(a.stdout, "ID", "STATUS", "ELIGIBILITY", "CPUS", "MEMORY", "RESERVED", "ALLOCATED", "GUESTS")
}

func nodeRow(t *table, n *api.NodeView) {
	elig := n.Eligibility
	if n.Drain != nil && !n.Drain.Deadline.IsZero() {
		elig += " until " + formatTime(n.Drain.Deadline)
	}
	t.row(n.ID, n.Status, elig, strconv.Itoa(n.CPUs), formatBytes(n.MemoryBytes),
		fmt.Sprintf("%s, %d CPU", formatBytes(n.ReserveMemoryBytes), n.ReserveCPUs),
		fmt.Sprintf("%s/%s, %d/%d vCPU", formatBytes(n.AllocatedMemoryBytes), formatBytes(n.CapacityMemoryBytes), n.AllocatedVCPUs, n.CapacityVCPUs),
		strconv.Itoa(n.Guests))
}

func nodeID(args []string) (string, error) {
	if err := events.ValidateID("node id", args[0]); err != nil {
		return "", err
	}
	return args[0], nil
}

func (a *app) nodeShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "show ID",
		Short:   "Show a node: capacity, eligibility, and the guests it holds with their resources",
		Example: "  corral node show n1\n  corral node show n1 -o json",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := nodeID(args)
			if err != nil {
				return err
			}
			c, err := a.readClient()
			if err != nil {
				return err
			}
			n, err := c.Node(cmd.Context(), id)
			if err != nil {
				return err
			}
			if a.json() {
				return writeJSON(a.stdout, n)
			}
			t := nodeTable(a)
			nodeRow(t, &n.NodeView)
			if err := t.flush(); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Capacity: %s of %s memory, %d of %d vCPUs (%d CPUs less %d reserved, %s shared vCPUs per CPU; pinned CPUs are exclusive)\n",
				formatBytes(n.AllocatedMemoryBytes), formatBytes(n.CapacityMemoryBytes), n.AllocatedVCPUs, n.CapacityVCPUs,
				n.CPUs, n.ReserveCPUs, formatRatio(n.CPUOvercommit))
			if len(n.Labels) > 0 {
				fmt.Fprintln(a.stdout, "Labels:", formatMap(n.Labels))
			}
			if len(n.Drivers) > 0 {
				fmt.Fprintln(a.stdout, "Drivers:", formatMap(n.Drivers))
			}
			fmt.Fprintln(a.stdout)
			g := newTable(a.stdout, "GUEST", "DRIVER", "STATUS", "MEMORY", "VCPUS", "PINNED", "GENERATION")
			for _, x := range n.GuestList {
				g.row(x.Name, x.Driver, x.Status, formatBytes(x.MemoryBytes), strconv.Itoa(x.VCPUs), x.CPUs, formatUint(x.Generation))
			}
			return g.flush()
		},
	}
}

func (a *app) nodeDrainCommand() *cobra.Command {
	var (
		deadline    time.Duration
		maxParallel int
		cancel      bool
	)
	cmd := &cobra.Command{
		Use:   "drain ID",
		Short: "Move every guest off a node and keep new ones away",
		Long: `Drain a node: it takes no new guests, and its guests are placed elsewhere, at
most --max-parallel at a time (each counts until it reports started on its new
node), and all remaining ones at once when --deadline passes. When the node
holds no guest the drain ends and the node stays ineligible; make it eligible
again with "corral node eligibility ID --enable". --cancel stops a drain.`,
		Example: "  corral node drain n1\n  corral node drain n1 --max-parallel 1 --deadline 1h\n  corral node drain n1 --cancel",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := nodeID(args)
			if err != nil {
				return err
			}
			if deadline < 0 || maxParallel < 0 {
				return usagef("--deadline and --max-parallel must not be negative")
			}
			req := api.SetEligibility{ID: id, Eligibility: events.Draining, MaxParallel: maxParallel}
			if deadline > 0 {
				req.Deadline = time.Now().Add(deadline)
			}
			if cancel {
				if deadline > 0 || maxParallel > 0 {
					return usagef("--cancel takes no --deadline or --max-parallel")
				}
				req = api.SetEligibility{ID: id, Eligibility: events.Eligible, Reason: "drain cancelled"}
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			res, err := c.SetEligibility(cmd.Context(), req)
			if err != nil {
				return err
			}
			what := "node " + id + " draining"
			if cancel {
				what = "node " + id + " drain cancelled, eligible"
			}
			return a.printWrite(res, what)
		},
	}
	cmd.Flags().DurationVar(&deadline, "deadline", 0, "after this long, move all remaining guests at once (0: no deadline)")
	cmd.Flags().IntVar(&maxParallel, "max-parallel", 0, "guests moving at the same time (0: all at once)")
	cmd.Flags().BoolVar(&cancel, "cancel", false, "stop draining and make the node eligible again")
	return cmd
}

func (a *app) nodeEligibilityCommand() *cobra.Command {
	var enable, disable bool
	cmd := &cobra.Command{
		Use:     "eligibility ID --enable|--disable",
		Short:   "Allow or forbid placing new guests on a node (its guests stay)",
		Example: "  corral node eligibility n1 --disable\n  corral node eligibility n1 --enable",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := nodeID(args)
			if err != nil {
				return err
			}
			if enable == disable {
				return usagef("give exactly one of --enable or --disable")
			}
			el := events.Eligible
			if disable {
				el = events.Ineligible
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			res, err := c.SetEligibility(cmd.Context(), api.SetEligibility{ID: id, Eligibility: el})
			if err != nil {
				return err
			}
			return a.printWrite(res, "node "+id+" "+el)
		},
	}
	cmd.Flags().BoolVar(&enable, "enable", false, "let the scheduler place guests on the node")
	cmd.Flags().BoolVar(&disable, "disable", false, "keep new guests off the node")
	return cmd
}
