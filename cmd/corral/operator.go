package main

import (
	"strconv"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/events"
)

func (a *app) operatorCommand() *cobra.Command {
	op := groupCommand("operator", "Cluster-wide settings")
	sched := groupCommand("scheduler", "The placement policy")
	var cfg events.SchedulerConfig
	set := &cobra.Command{
		Use:   "set-config --algorithm binpack|spread [--cpu-overcommit R] [--memory-overcommit R] [--balloon-memory]",
		Short: "Set how the scheduler ranks nodes and how far it may overcommit them",
		Long: `binpack (the default) fills the fullest nodes that fit first, keeping others
free; spread places each guest on the emptiest node. An overcommit ratio of 2
lets the vCPUs (or memory) placed on a node add up to twice what it has after
its reserve; pinned CPUs are never overcommitted. Ratios are at least 1.

--balloon-memory counts a guest's memory for placement as its balloon target
(corral setmem) rather than its maximum (corral setmaxmem), so a node whose
guests gave memory back takes more. It is off by default: a guest may take
its maximum back when its target is raised, and a raise that no longer fits
its node is then refused. node show's ALLOCATED counts the same way.`,
		Example: "  corral operator scheduler set-config --algorithm spread\n  corral operator scheduler set-config --algorithm binpack --cpu-overcommit 4",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.Validate(); err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			res, err := c.SetSchedulerConfig(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			return a.printWrite(res, "scheduler set to "+cfg.Algorithm)
		},
	}
	set.Flags().StringVar(&cfg.Algorithm, "algorithm", "binpack", "binpack or spread")
	set.Flags().Float64Var(&cfg.CPUOvercommit, "cpu-overcommit", 4, "shared vCPUs per allocatable host CPU, at least 1 (pinned CPUs are never overcommitted)")
	set.Flags().Float64Var(&cfg.MemoryOvercommit, "memory-overcommit", 1, "guest memory per allocatable byte, at least 1")
	set.Flags().BoolVar(&cfg.BalloonMemory, "balloon-memory", false, "count a ballooned guest's target, not its maximum, for placement")
	get := &cobra.Command{
		Use:     "get-config",
		Short:   "Print the placement policy in force",
		Example: "  corral operator scheduler get-config",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.readClient()
			if err != nil {
				return err
			}
			got, err := c.SchedulerConfig(cmd.Context())
			if err != nil {
				return err
			}
			if a.json() {
				return writeJSON(a.stdout, got)
			}
			return printAligned(a.stdout, [][2]string{
				{"algorithm", got.Algorithm},
				{"cpu_overcommit", formatRatio(got.CPUOvercommit)},
				{"memory_overcommit", formatRatio(got.MemoryOvercommit)},
				{"balloon_memory", strconv.FormatBool(got.BalloonMemory)},
			})
		},
	}
	sched.AddCommand(set, get)
	op.AddCommand(sched)
	return a.clientFlags(op)
}
