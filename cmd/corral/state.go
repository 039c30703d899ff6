package main

import (
	"fmt"
	"maps"
	"slices"

	"github.com/corral-dev/corral/coordinator/api"

	"github.com/spf13/cobra"
)

func (a *app) stateCommand() *cobra.Command {
	var at uint64
	cmd := &cobra.Command{
		Use:   "state [--at N]",
		Short: "Print the cluster's state now, or as it was right after event N",
		Long: `Print the cluster's servers, nodes and guests as they are now or, with --at N,
as they were right after event index N: the server rebuilds that state from its
nearest checkpoint plus the events after it. With -o json the whole state is
printed as one JSON object.`,
		Example: "  corral state\n  corral state --at 42\n  corral state --at 42 -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.readClient()
			if err != nil {
				return err
			}
			var atp *uint64
			if cmd.Flags().Changed("at") {
				atp = &at
			}
			st, err := c.State(cmd.Context(), atp)
			if err != nil {
				return err
			}
			if a.json() {
				return writeJSON(a.stdout, st)
			}
			return printState(a, st)
		},
	}
	cmd.Flags().Uint64Var(&at, "at", 0, "show the state right after this event index")
	return a.clientFlags(cmd)
}

func printState(a *app, st *api.State) error {
	fmt.Fprintf(a.stdout, "State at index %d\n\nSERVERS\n", st.Index)
	t := newTable(a.stdout, "ID", "RAFT", "HTTP")
	for _, id := range slices.Sorted(maps.Keys(st.Servers)) {
		s := st.Servers[id]
		t.row(s.ID, s.RaftAddr, s.HTTPAddr)
	}
	if err := t.flush(); err != nil {
		return err
	}

	fmt.Fprintf(a.stdout, "\nNODES\n")
	t = nodeTable(a)
	for _, n := range st.Nodes {
		nodeRow(t, &n)
	}
	if err := t.flush(); err != nil {
		return err
	}

	fmt.Fprintf(a.stdout, "\nGUESTS\n")
	t = newTable(a.stdout, "NAME", "DRIVER", "DESIRED", "STATUS", "NODE", "MEMORY", "VCPUS", "CPU_SHARES")
	for _, g := range st.Guests {
		t.row(g.Name, g.Driver, g.Desired, g.Status, g.Node, formatBytes(g.MemoryBytes), fmt.Sprint(g.VCPUs), g.Knob("cpu_shares"))
	}
	return t.flush()
}
