package main

import (
	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/events"
)

func (a *app) operatorCommand() *cobra.Command {
	op := groupCommand("operator", "Cluster-wide settings")
	sched := groupCommand("scheduler", "The placement policy")
	var cfg events.SchedulerConfig
	set := &cobra.Command{
		Use:   "set-config --algorithm binpack|spread [--cpu-overcommit R] [--memory-overcommit R]",
		Short: "Set how the scheduler ranks nodes and how far it may overcommit them",
		Long: `binpack (the default) fills the fullest nodes that fit first, keeping others
free; spread places each guest on the emptiest node. An overcommit ratio of 2
lets the vCPUs (or memory) placed on a node add up to twice what it has after
its reserve; pinned CPUs are never overcommitted. Ratios are at least 1.`,
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
			return printParams(a.stdout, [][2]string{
				{"algorithm", got.Algorithm},
				{"cpu_overcommit", formatRatio(got.CPUOvercommit)},
				{"memory_overcommit", formatRatio(got.MemoryOvercommit)},
			})
		},
	}
	sched.AddCommand(set, get)
	op.AddCommand(sched)
	return a.clientFlags(op)
}
